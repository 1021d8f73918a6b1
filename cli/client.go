package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	skiffpb "github.com/skiffhq/skiff/proto"
)

const (
	// defaultManager is where the CLI looks when neither --manager nor
	// SKIFF_MANAGER says otherwise: a manager on this host.
	defaultManager = "127.0.0.1:4242"
	// dialTimeout bounds the wait for one address, so that a host whose
	// link is down (no RST, just silence) costs seconds, not minutes,
	// before the next address is tried.
	dialTimeout = 2 * time.Second
	// callTimeout bounds one request-response call that has no deadline
	// of its own. Every Control API call answers quickly unless the cluster
	// cannot commit, and then the user is better told than left waiting.
	callTimeout = 30 * time.Second
	// electionWait is how long a call that found no leader is retried: an
	// election takes about a second, so a longer wait means quorum is
	// lost, which the user is better told of.
	electionWait = 5 * time.Second
	// electionRetry is the pause between those tries.
	electionRetry = 200 * time.Millisecond
)

// parseManagers splits --manager's comma-separated HOST:PORT list.
func parseManagers(s string) ([]string, error) {
	var out []string
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(part); err != nil {
			return nil, fmt.Errorf("invalid manager address %q: use HOST:PORT, e.g. %s", part, defaultManager)
		}
		out = append(out, part)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no manager address given: use --manager HOST:PORT[,HOST:PORT...]")
	}
	return out, nil
}

// failoverConn is a grpc.ClientConnInterface over several managers. Each
// call goes to the manager that last answered and moves on to the next
// address when that one is down or has no leader, so that a generated
// skiffpb.ControlClient fails over without knowing it. Any manager serves
// the whole API (followers forward to the leader), so which one answers
// never changes the result.
type failoverConn struct {
	addrs []string
	creds credentials.TransportCredentials

	mu      sync.Mutex
	conns   []*grpc.ClientConn
	dialErr []error // the last dial error per address, for messages
	current int
}

var _ grpc.ClientConnInterface = (*failoverConn)(nil)

func newFailoverConn(addrs []string, creds credentials.TransportCredentials) *failoverConn {
	return &failoverConn{addrs: addrs, creds: creds, conns: make([]*grpc.ClientConn, len(addrs)), dialErr: make([]error, len(addrs))}
}

// Close closes the connections that were opened.
func (f *failoverConn) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, c := range f.conns {
		if c != nil {
			c.Close()
			f.conns[i] = nil
		}
	}
}

// currentAddr is the address of the manager that answered last.
func (f *failoverConn) currentAddr() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addrs[f.current]
}

// rotate makes the next call start at the next address. A stream that
// broke with Unavailable calls it, so that a re-subscription does not keep
// asking a manager that lost its leader.
func (f *failoverConn) rotate() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.current = (f.current + 1) % len(f.addrs)
}

// order is the addresses' indexes, starting at the current one.
func (f *failoverConn) order() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]int, len(f.addrs))
	for i := range out {
		out[i] = (f.current + i) % len(f.addrs)
	}
	return out
}

func (f *failoverConn) settle(i int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.current = i
}

// conn returns the connection to address i, creating it on first use.
func (f *failoverConn) conn(i int) (*grpc.ClientConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conns[i] != nil {
		return f.conns[i], nil
	}
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: dialTimeout}
		c, err := d.DialContext(ctx, "tcp", addr)
		f.mu.Lock()
		f.dialErr[i] = err
		f.mu.Unlock()
		return c, err
	}
	// passthrough: the address goes to the dialer as given, with no
	// resolver in between whose errors would hide the dialer's.
	c, err := grpc.NewClient("passthrough:///"+f.addrs[i],
		grpc.WithTransportCredentials(f.creds),
		grpc.WithContextDialer(dial),
		// Keepalives notice a manager whose host vanished while a watch
		// or a log stream was quiet.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 5 * time.Second, Timeout: 3 * time.Second}),
	)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", f.addrs[i], err)
	}
	f.conns[i] = c
	return c, nil
}

// ready returns the connection to address i once it is up, or why it did
// not come up within dialTimeout.
func (f *failoverConn) ready(ctx context.Context, i int) (*grpc.ClientConn, error) {
	c, err := f.conn(i)
	if err != nil {
		return nil, err
	}
	c.Connect()
	wctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	for {
		s := c.GetState()
		switch s {
		case connectivity.Ready:
			return c, nil
		case connectivity.TransientFailure, connectivity.Shutdown:
			return nil, f.downReason(i, nil)
		}
		if !c.WaitForStateChange(wctx, s) {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("no answer within %s", dialTimeout)
		}
	}
}

// downReason says briefly why address i is down: the dialer's error when
// there was one, else the RPC's.
func (f *failoverConn) downReason(i int, rpcErr error) error {
	f.mu.Lock()
	dialErr := f.dialErr[i]
	f.mu.Unlock()
	var opErr *net.OpError
	var dnsErr *net.DNSError
	switch {
	case dialErr == nil && rpcErr != nil:
		return errors.New(status.Convert(rpcErr).Message())
	case dialErr == nil:
		return errors.New("the connection failed")
	case errors.As(dialErr, &dnsErr):
		return fmt.Errorf("no such host %s", dnsErr.Name)
	case isTimeout(dialErr):
		return fmt.Errorf("no answer within %s", dialTimeout)
	case errors.As(dialErr, &opErr) && opErr.Err != nil:
		// "connect: connection refused" without the repeated address.
		return errors.New(strings.TrimPrefix(opErr.Err.Error(), "connect: "))
	default:
		return dialErr
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// idempotent marks a call that may be sent again after it was cut off
// mid-flight, when it may or may not have taken effect, because applying it
// twice is the same as applying it once: setting a service's replicas,
// deploying a stack's spec.
func idempotent() grpc.CallOption { return idempotentOption{} }

type idempotentOption struct{ grpc.EmptyCallOption }

// Invoke implements grpc.ClientConnInterface: the call goes to the first
// manager that is up, and on to the next when one answers Unavailable (it
// has no leader, or lost its connection to it). When every manager that
// answered had no leader to take the call (an election is under way), the
// call was not applied anywhere, and it is sent again for up to
// electionWait; an idempotent call is also sent again when it was cut off
// with the leader.
func (f *failoverConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, callTimeout)
		defer cancel()
	}
	repeatable := slices.ContainsFunc(opts, func(o grpc.CallOption) bool { _, ok := o.(idempotentOption); return ok })
	var leaderless time.Time
	for {
		noLeader, err := f.invokeRound(ctx, method, args, reply, opts...)
		cutOff := repeatable && err != nil && !noLeader && isAnsweredUnavailable(err)
		if !noLeader && !cutOff {
			return err
		}
		if leaderless.IsZero() {
			leaderless = time.Now()
		}
		if time.Since(leaderless) >= electionWait {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(electionRetry):
		}
	}
}

// isAnsweredUnavailable: a manager answered Unavailable (rather than none
// being reachable).
func isAnsweredUnavailable(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.code == codes.Unavailable
}

// invokeRound tries each manager once. noLeader says the call failed only
// because none had a leader, so it may be sent again as it is.
func (f *failoverConn) invokeRound(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) (noLeader bool, err error) {
	var tried []attempt
	var answered error
	for _, i := range f.order() {
		c, err := f.ready(ctx, i)
		if err != nil {
			if ctx.Err() != nil {
				return false, fromRPC(status.FromContextError(ctx.Err()).Err())
			}
			tried = append(tried, attempt{addr: f.addrs[i], err: err})
			continue
		}
		err = c.Invoke(ctx, method, args, reply, opts...)
		if notGRPC(err) {
			tried = append(tried, attempt{addr: f.addrs[i], err: errNotManager})
			continue
		}
		if status.Code(err) == codes.Unavailable && ctx.Err() == nil {
			if transportFailure(c, err) {
				tried = append(tried, attempt{addr: f.addrs[i], err: f.downReason(i, err)})
			} else if answered == nil || skiffpb.IsNoLeader(answered) {
				// An answer that may have taken effect is kept over
				// one that surely did not.
				answered = err
			}
			continue
		}
		f.settle(i)
		return false, fromRPC(err)
	}
	if answered != nil {
		return skiffpb.IsNoLeader(answered), fromRPC(answered)
	}
	return false, &unreachableError{tried: tried}
}

// NewStream implements grpc.ClientConnInterface. Only opening the stream
// fails over; a stream that breaks later is the caller's to re-open (see
// wait.go), because only the caller knows whether it can resume.
func (f *failoverConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	var tried []attempt
	for _, i := range f.order() {
		c, err := f.ready(ctx, i)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fromRPC(status.FromContextError(ctx.Err()).Err())
			}
			tried = append(tried, attempt{addr: f.addrs[i], err: err})
			continue
		}
		s, err := c.NewStream(ctx, desc, method, opts...)
		if notGRPC(err) {
			tried = append(tried, attempt{addr: f.addrs[i], err: errNotManager})
			continue
		}
		if status.Code(err) == codes.Unavailable && ctx.Err() == nil {
			tried = append(tried, attempt{addr: f.addrs[i], err: f.downReason(i, err)})
			continue
		}
		if err != nil {
			return nil, fromRPC(err)
		}
		f.settle(i)
		return cleanStream{s}, nil
	}
	return nil, &unreachableError{tried: tried}
}

// errNotManager is the reason given for an address where something other
// than a gRPC server answers, such as a web server or a proxy.
var errNotManager = errors.New("it answers, but not as a skiff manager (is this the manager's API port?)")

// notGRPC reports whether a call reached an HTTP server that does not
// speak gRPC: gRPC then reports the HTTP status it got instead.
func notGRPC(err error) bool {
	msg := status.Convert(err).Message()
	return err != nil && (strings.Contains(msg, "unexpected HTTP status code") || strings.Contains(msg, "malformed header"))
}

// transportFailure tells a manager that went away mid-call from one that
// answered Unavailable itself (no leader, no quorum): only the latter has
// something to say to the user.
func transportFailure(c *grpc.ClientConn, err error) bool {
	if c.GetState() != connectivity.Ready {
		return true
	}
	msg := status.Convert(err).Message()
	for _, s := range []string{"connection error", "error reading from server", "transport is closing", "connection closed", "connection is draining"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// cleanStream converts a stream's errors as Invoke converts a call's.
type cleanStream struct{ grpc.ClientStream }

func (s cleanStream) RecvMsg(m any) error { return fromRPC(s.ClientStream.RecvMsg(m)) }
func (s cleanStream) SendMsg(m any) error { return fromRPC(s.ClientStream.SendMsg(m)) }
