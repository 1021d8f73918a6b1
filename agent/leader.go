package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"google.golang.org/grpc"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// Finding the leader. A session ends when its leader is lost (3 heartbeat
// periods of silence), is deposed, or when Discovery announces a newer
// leader elsewhere. The agent then registers with every manager it knows at
// once: followers answer with a redirect and the leader accepts, so a
// manager that is dead or cut off costs nothing but its own attempt, where
// trying them in turn waited out a connect timeout on each. A leader
// announced by gossip wakes an agent waiting out its backoff, and cuts short
// a registration still waiting on a manager that cannot answer (the old
// leader, cut off, costs a whole connect timeout), so a healthy agent has a
// session with a new leader within a gossip round or two of the election.

// registerTimeout bounds one registration attempt: the connect and the
// leader's answer.
const registerTimeout = 5 * time.Second

// established is a session the leader has accepted.
type established struct {
	addr   string
	client skiffpb.DispatcherClient
	stream grpc.BidiStreamingClient[skiffpb.AgentMessage, skiffpb.ManagerMessage]
	acc    *skiffpb.SessionAccepted
	// cancel ends the stream.
	cancel context.CancelFunc
}

// close ends the session; the connection stays for the next one (see
// managerConns).
func (e *established) close() {
	e.cancel()
}

// attempt is the outcome of registering with one manager.
type attempt struct {
	addr     string
	est      *established
	redirect string
	err      error
}

// lostLeader is the manager whose session just ended, and the newest term
// gossip had announced when it did.
type lostLeader struct {
	addr string
	term uint64
}

// connect finds the leader and opens a session with it: the leader gossip
// announces first, alone, unless it is the one just lost; then every known
// manager at once, then any leader they named that was not among them.
func (a *Agent) connect(ctx context.Context, lost lostLeader) (*established, error) {
	desc, err := a.cfg.Executor.Describe(ctx)
	if err != nil {
		return nil, fmt.Errorf("describe node: %w", err)
	}
	desc.Addr = a.cfg.AdvertiseAddr
	if desc.EngineLabels == nil && len(a.cfg.Labels) > 0 {
		desc.EngineLabels = map[string]string{}
	}
	for k, v := range a.cfg.Labels {
		desc.EngineLabels[k] = v
	}
	a.mu.Lock()
	reg := &skiffpb.Register{NodeId: a.nodeID, Name: a.cfg.Name, Description: desc}
	a.mu.Unlock()

	leader, term := a.discovery.Leader()
	// A session that ended without news of a newer term leaves gossip
	// still naming the lost leader: asking it alone would wait out
	// announcedLeaderWait on a manager that is dead or cut off, which is
	// the whole grace a new leader gives this node.
	stale := leader == lost.addr && term <= lost.term
	if leader != "" && !stale {
		// The leader gossip announces first, alone: every attempt is a TLS
		// handshake, and a thousand agents asking every manager at once
		// after a leader change make the survivors spend their CPU on
		// handshakes only to redirect. Everyone is asked if it does not
		// answer soon.
		est, _, err := a.registerAny(ctx, []string{leader}, reg, term, announcedLeaderWait)
		if est != nil || errors.Is(err, errNewLeader) {
			return est, err
		}
	}
	addrs := a.candidates()
	a.conns.retain(addrs)
	if len(addrs) == 0 {
		return nil, errors.New("no manager known yet: gossip has not found one")
	}
	tried := map[string]bool{}
	var errs []error
	for round := 0; round < 2 && len(addrs) > 0; round++ {
		for _, addr := range addrs {
			tried[addr] = true
		}
		est, redirects, err := a.registerAny(ctx, addrs, reg, term, 0)
		if est != nil {
			return est, nil
		}
		if errors.Is(err, errNewLeader) {
			return nil, err
		}
		errs = append(errs, err)
		addrs = slices.DeleteFunc(redirects, func(addr string) bool { return tried[addr] })
	}
	return nil, errors.Join(errs...)
}

// announcedLeaderWait bounds the attempt with the announced leader alone
// before every manager is asked.
const announcedLeaderWait = time.Second

// errNewLeader ends a registration round early: gossip announced a leader
// in a newer term than the round started with, so the candidates are
// stale and the agent should ask again at once.
var errNewLeader = errors.New("gossip announced a new leader during registration")

// registerAny registers with every manager in addrs at once and returns
// the first session accepted; the other attempts are abandoned. Without
// one, it returns the leaders the managers named. It gives up early with
// errNewLeader when gossip announces a leader in a term after term.
func (a *Agent) registerAny(ctx context.Context, addrs []string, reg *skiffpb.Register, term uint64, wait time.Duration) (*established, []string, error) {
	results := make(chan attempt, len(addrs))
	for _, addr := range addrs {
		go func() { results <- a.register(ctx, addr, reg) }()
	}
	// abandon closes the attempts still out as they come in: a late
	// acceptance is a deposed leader that does not know it yet, or one the
	// agent no longer wants. Each ends within registerTimeout, and so does
	// this drain.
	abandon := func(left int) {
		go func() {
			for range left {
				if late := <-results; late.est != nil {
					late.est.close()
				}
			}
		}()
	}
	var redirects []string
	var errs []error
	// gaveUp fires after wait, when wait is set: the attempts still out are
	// abandoned, and their late sessions closed.
	var gaveUp <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		gaveUp = t.C
	}
	for received := 1; received <= len(addrs); received++ {
		var r attempt
		select {
		case <-gaveUp:
			abandon(len(addrs) - received + 1)
			return nil, nil, fmt.Errorf("no answer within %s", wait)
		case r = <-results:
		case <-a.discovery.LeaderNews():
			if _, now := a.discovery.Leader(); now > term {
				abandon(len(addrs) - received + 1)
				return nil, nil, errNewLeader
			}
			received--
			continue
		}
		switch {
		case r.est != nil:
			abandon(len(addrs) - received)
			return r.est, nil, nil
		case r.redirect != "":
			redirects = append(redirects, r.redirect)
		case r.err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", r.addr, r.err))
		}
		// A redirect that names no leader is a manager waiting for an
		// election, which is not an error of its own.
	}
	if len(errs) == 0 {
		errs = append(errs, errors.New("no manager leads yet (an election is under way)"))
	}
	return nil, redirects, errors.Join(errs...)
}

// register opens a session stream with the manager at addr and registers.
func (a *Agent) register(ctx context.Context, addr string, reg *skiffpb.Register) attempt {
	conn, err := a.conns.get(addr)
	if err != nil {
		return attempt{addr: addr, err: fmt.Errorf("dial: %w", err)}
	}
	ctx, cancel := context.WithCancel(ctx)
	fail := func(err error) attempt {
		cancel()
		// The connection may be dead without a word (a host cut off after
		// the handshake), which only a failed call shows: the next attempt
		// dials afresh, with a connect timeout. A live manager that failed
		// the call costs one handshake.
		a.conns.drop(addr)
		return attempt{addr: addr, err: err}
	}
	// Only the registration is bounded; an accepted session lives on.
	timer := time.AfterFunc(registerTimeout, cancel)
	client := skiffpb.NewDispatcherClient(conn)
	stream, err := client.Session(ctx)
	if err != nil {
		return fail(fmt.Errorf("open session: %w", err))
	}
	if err := stream.Send(&skiffpb.AgentMessage{Msg: &skiffpb.AgentMessage_Register{Register: reg}}); err != nil {
		return fail(fmt.Errorf("register: %w", err))
	}
	first, err := stream.Recv()
	if !timer.Stop() && err == nil {
		err = errors.New("registration timed out")
	}
	if err != nil {
		return fail(fmt.Errorf("register: %w", err))
	}
	if r := first.GetRedirect(); r != nil {
		cancel()
		return attempt{addr: addr, redirect: r.GetLeaderAddr()}
	}
	acc := first.GetAccepted()
	if acc == nil {
		return fail(fmt.Errorf("register: unexpected first message %T", first.GetMsg()))
	}
	return attempt{addr: addr, est: &established{addr: addr, client: client, stream: stream, acc: acc, cancel: cancel}}
}

// candidates lists the manager API addresses to try: the leader Discovery
// announces first, then the other managers it sees alive and those the last
// leader listed, in random order so that a thousand agents do not all start
// with the same one.
func (a *Agent) candidates() []string {
	var out []string
	if leader, _ := a.discovery.Leader(); leader != "" {
		out = append(out, leader)
	}
	rest := a.discovery.ManagerAPIAddrs()
	a.mu.Lock()
	rest = append(rest, a.managers...)
	a.mu.Unlock()
	rand.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
	for _, s := range rest {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// watchLeader ends a session with the manager at addr when Discovery
// announces a leader elsewhere in a term newer than any announced when the
// session began: that manager was deposed, or cut off, and the agent would
// otherwise learn of it only when its heartbeats went unanswered.
func (a *Agent) watchLeader(ctx context.Context, addr string) error {
	_, known := a.discovery.Leader()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.discovery.LeaderNews():
		}
		leader, term := a.discovery.Leader()
		if term <= known {
			continue
		}
		if leader != addr {
			return fmt.Errorf("gossip announces a new leader at %s (term %d)", leader, term)
		}
		known = term
	}
}
