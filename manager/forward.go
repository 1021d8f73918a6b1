package manager

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	// The import also registers the descriptors the forwarder looks up.
	skiffpb "github.com/skiffhq/skiff/proto"
)

// controlPrefix selects the calls a follower forwards: the whole Control
// API. Serving reads on the leader too is what gives a client that wrote and
// then reads its own write, whichever manager it talks to; it is also what
// Docker Swarm does.
const controlPrefix = "/skiff.v1.Control/"

// forwarder sends Control API calls that reach a follower on to the leader,
// as they are: it looks up each method's message types in the protobuf
// registry, so it needs no code per method.
type forwarder struct {
	// creds are this manager's: the leader sees a forwarded call as the
	// manager's, after this manager checked the caller's own.
	creds      credentials.TransportCredentials
	isLeader   func() bool
	leaderAddr func() (string, error)

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newForwarder(creds credentials.TransportCredentials, isLeader func() bool, leaderAddr func() (string, error)) *forwarder {
	return &forwarder{creds: creds, isLeader: isLeader, leaderAddr: leaderAddr, conns: map[string]*grpc.ClientConn{}}
}

// conn returns a connection to the current leader, reusing one per address.
func (f *forwarder) conn() (*grpc.ClientConn, error) {
	addr, err := f.leaderAddr()
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(f.creds),
		// A forwarded reply is passed on whole, and a listing of a big
		// cluster's tasks is far beyond gRPC's default 4 MiB: the limit is
		// for the client that asked, not for this relay.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxForwardedMessage)),
		// A leader that just died does not refuse connections, it drops
		// them: without a short connect timeout (gRPC's default is 20 s) a
		// call forwarded at that moment would hang instead of failing and
		// being retried against the new leader.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: leaderConnectTimeout}))
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "connect to leader %s: %v", addr, err)
	}
	f.conns[addr] = c
	return c, nil
}

// retain closes every connection but the one to keep (none when keep is
// empty). A call forwarded to a leader that has since died would otherwise
// wait on a connection whose packets vanish, until the client gives up,
// long after a new leader could have taken it: closed, it fails at once
// with Unavailable and the client tries again.
func (f *forwarder) retain(keep string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for addr, c := range f.conns {
		if addr != keep {
			c.Close()
			delete(f.conns, addr)
		}
	}
}

func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for addr, c := range f.conns {
		c.Close()
		delete(f.conns, addr)
	}
}

// maxForwardedMessage bounds a reply the forwarder relays: a million tasks
// listed take about 250 MiB.
const maxForwardedMessage = 1 << 30

// forwardedHeader marks a forwarded call, so that two managers that each
// think the other leads (briefly, during an election) cannot bounce a call
// between them forever.
const forwardedHeader = "skiff-forwarded"

// localMethods are answered by whichever manager is asked: cluster info
// must work exactly when there is no leader to forward to, to show why.
var localMethods = map[string]bool{controlPrefix + "ClusterInfo": true}

// issueMethod is forwarded too: a join writes the new node to the store.
// Renewal is not: the leader must see the renewing node's own certificate,
// so nodes ask the leader directly.
const issueMethod = "/skiff.v1.NodeCA/IssueCertificate"

func (f *forwarder) shouldForward(ctx context.Context, method string) (bool, error) {
	if !(strings.HasPrefix(method, controlPrefix) || method == issueMethod) || localMethods[method] || f.isLeader() {
		return false, nil
	}
	if md, ok := metadataFrom(ctx); ok && len(md.Get(forwardedHeader)) > 0 {
		return false, skiffpb.NoLeaderError("no leader: the manager this call was forwarded to is not the leader either; retry in a moment")
	}
	return true, nil
}

// unary is a grpc.UnaryServerInterceptor.
func (f *forwarder) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	fwd, err := f.shouldForward(ctx, info.FullMethod)
	if err != nil || !fwd {
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
	md, err := methodOf(info.FullMethod)
	if err != nil {
		return nil, err
	}
	reply, err := newMessage(md.Output())
	if err != nil {
		return nil, err
	}
	c, err := f.ready(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.Invoke(outgoing(ctx), info.FullMethod, req, reply); err != nil {
		return nil, relayErr(ctx, c, err)
	}
	return reply, nil
}

// stream is a grpc.StreamServerInterceptor; the Control API's streams are
// server-streaming (one request, many replies).
func (f *forwarder) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	fwd, err := f.shouldForward(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	if !fwd {
		return handler(srv, ss)
	}
	md, err := methodOf(info.FullMethod)
	if err != nil {
		return err
	}
	req, err := newMessage(md.Input())
	if err != nil {
		return err
	}
	if err := ss.RecvMsg(req); err != nil {
		return err
	}
	c, err := f.ready(ss.Context())
	if err != nil {
		return err
	}
	desc := &grpc.StreamDesc{StreamName: string(md.Name()), ServerStreams: true}
	cs, err := c.NewStream(outgoing(ss.Context()), desc, info.FullMethod)
	if err != nil {
		return relayErr(ss.Context(), c, err)
	}
	if err := cs.SendMsg(req); err != nil {
		return err
	}
	if err := cs.CloseSend(); err != nil {
		return err
	}
	for {
		reply, err := newMessage(md.Output())
		if err != nil {
			return err
		}
		if err := cs.RecvMsg(reply); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return relayErr(ss.Context(), c, err)
		}
		if err := ss.SendMsg(reply); err != nil {
			return err
		}
	}
}

// relayErr is the leader's answer as the client gets it, except when the
// call died on the way while the client still waited: the connection to the
// leader was closed under it (see retain), which gRPC reports as Canceled,
// or broke, which it reports as Unavailable with words about the
// connection that the client would take for its own. Either way the client
// must hear that the leader was lost: Unavailable, the code it tries
// another manager on, with ReasonLeaderLost, which tells it the call may
// have taken effect.
func relayErr(ctx context.Context, c *grpc.ClientConn, err error) error {
	if ctx.Err() != nil {
		return err
	}
	lost := status.Code(err) == codes.Canceled ||
		status.Code(err) == codes.Unavailable && !skiffpb.IsNoLeader(err) && c.GetState() != connectivity.Ready
	if lost {
		return skiffpb.LeaderLostError("the leader was lost while it handled this call, which may or may not have taken effect: check, and retry")
	}
	return err
}

// ready returns the connection to the leader once it is up. A leader that
// cannot be reached within leaderConnectTimeout has had nothing sent to it,
// so the call is refused as for want of a leader: the client may send it
// again as it is.
func (f *forwarder) ready(ctx context.Context) (*grpc.ClientConn, error) {
	c, err := f.conn()
	if err != nil {
		return nil, err
	}
	c.Connect()
	wctx, cancel := context.WithTimeout(ctx, leaderConnectTimeout)
	defer cancel()
	for {
		st := c.GetState()
		switch st {
		case connectivity.Ready:
			return c, nil
		case connectivity.TransientFailure, connectivity.Shutdown:
			return nil, skiffpb.NoLeaderError("no leader reachable: the leader does not answer; retry in a moment")
		}
		if !c.WaitForStateChange(wctx, st) {
			if ctx.Err() != nil {
				return nil, status.FromContextError(ctx.Err()).Err()
			}
			return nil, skiffpb.NoLeaderError("no leader reachable: the leader did not answer within " + leaderConnectTimeout.String() + "; retry in a moment")
		}
	}
}

// leaderConnectTimeout bounds the wait for a connection to the leader, as
// the connection's own MinConnectTimeout does.
const leaderConnectTimeout = 2 * time.Second

func methodOf(fullMethod string) (protoreflect.MethodDescriptor, error) {
	// "/skiff.v1.Control/DeployStack" → "skiff.v1.Control.DeployStack"
	name := strings.Replace(strings.TrimPrefix(fullMethod, "/"), "/", ".", 1)
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		return nil, status.Errorf(codes.Unimplemented, "forward %s: %v", fullMethod, err)
	}
	md, ok := d.(protoreflect.MethodDescriptor)
	if !ok {
		return nil, status.Errorf(codes.Unimplemented, "forward %s: not a method", fullMethod)
	}
	return md, nil
}

func newMessage(d protoreflect.MessageDescriptor) (proto.Message, error) {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(d.FullName())
	if err != nil {
		return nil, fmt.Errorf("forward: message type %s: %w", d.FullName(), err)
	}
	return mt.New().Interface(), nil
}

func metadataFrom(ctx context.Context) (metadata.MD, bool) { return metadata.FromIncomingContext(ctx) }

// outgoing marks the call as forwarded; the caller's deadline travels with
// the context.
func outgoing(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, forwardedHeader, "1")
}
