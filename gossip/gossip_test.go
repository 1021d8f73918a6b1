package gossip

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// The tests run real memberlist pools on loopback. Each member binds port 0:
// memberlist then picks one port free for both TCP and UDP and advertises
// it, so the tests need no port guessing and can run in parallel with
// anything else on the host.

const (
	// waitTimeout bounds every wait for the pool to converge. Gossip on
	// loopback converges in a few hundred milliseconds; the margin is for
	// slow, -race instrumented runs.
	waitTimeout = 10 * time.Second
	// leaveTimeout is what the tests give Shutdown. A graceful leave on
	// loopback takes a few gossip intervals (100 ms each).
	leaveTimeout = 3 * time.Second
)

// TestMain fails the run if a goroutine of memberlist or of this package
// outlives the tests: every pool must be shut down and every loop stopped.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := waitForGoroutines(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines left running after the tests:\n\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// waitForGoroutines waits until no goroutine runs memberlist or gossip code
// (the test main excepted) and returns the stacks of those still running
// when timeout passes.
func waitForGoroutines(timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			if strings.Contains(g, "gossip.TestMain") || strings.Contains(g, "gossip.waitForGoroutines") {
				continue
			}
			if strings.Contains(g, "hashicorp/memberlist") || strings.Contains(g, "skiff/gossip.") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// eventually polls cond every 10 ms until it returns nil, and fails the test
// with cond's last error if that does not happen within timeout.
func eventually(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testDelegate is a memberlist.Delegate that records the user messages it
// is handed.
type testDelegate struct {
	mu   sync.Mutex
	msgs []string
}

var _ memberlist.Delegate = (*testDelegate)(nil)

func (d *testDelegate) NodeMeta(limit int) []byte { return nil }

func (d *testDelegate) NotifyMsg(b []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.msgs = append(d.msgs, string(b)) // b is memberlist's buffer: copy it
}

func (d *testDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *testDelegate) LocalState(join bool) []byte                { return nil }
func (d *testDelegate) MergeRemoteState(buf []byte, join bool)     {}

func (d *testDelegate) received() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.msgs)
}

// eventLog records the events a pool emits.
type eventLog struct {
	mu     sync.Mutex
	events []Event
}

func (l *eventLog) record(ev Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, ev)
}

func (l *eventLog) all() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

// logRecorder is a slog.Handler that keeps the messages logged, memberlist's
// included.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	line := rec.Message
	rec.Attrs(func(a slog.Attr) bool {
		line += " " + a.String()
		return true
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, line)
	return nil
}

func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

// find returns the lines that contain every one of parts.
func (r *logRecorder) find(parts ...string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, l := range r.lines {
		if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(l, p) }) {
			out = append(out, l)
		}
	}
	return out
}

// testMember is a running pool with what the tests observe of it.
type testMember struct {
	*Pool
	meta     Meta
	addr     string // host:port where others join it
	delegate *testDelegate
	events   *eventLog
	logs     *logRecorder
	stopOnce sync.Once
	stopErr  error
	cancel   context.CancelFunc
}

// start starts a member on loopback that joins the given addresses; the
// test's cleanup shuts it down if the test did not.
func start(t *testing.T, meta Meta, join ...string) *testMember {
	t.Helper()
	return startWith(t, meta, nil, join...)
}

// startWith is start for a member with gossip keys (none for nil).
func startWith(t *testing.T, meta Meta, keys [][]byte, join ...string) *testMember {
	t.Helper()
	meta.Addr = "127.0.0.1"
	m := &testMember{meta: meta, delegate: &testDelegate{}, events: &eventLog{}, logs: &logRecorder{}}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	p, err := Start(ctx, Config{
		Meta:     meta,
		BindAddr: "127.0.0.1",
		Join:     join,
		Keys:     keys,
		Delegate: m.delegate,
		OnEvent:  m.events.record,
		Logger:   slog.New(m.logs),
	})
	if err != nil {
		cancel()
		t.Fatalf("start %s: %v", meta.memberName(), err)
	}
	m.Pool = p
	m.addr = p.Memberlist().LocalNode().Address()
	t.Cleanup(m.kill)
	return m
}

// stop leaves the pool gracefully with Shutdown and ends the member's join
// loop. It returns Shutdown's error. Unlike Shutdown (whose second call
// panics in memberlist's Leave), it may be called again, and after kill.
func (m *testMember) stop() error {
	m.end(func() { m.stopErr = m.Shutdown(leaveTimeout) })
	return m.stopErr
}

// kill stops the member without leaving, as a crash would; the tests' cleanup
// uses it because by then nobody needs to hear of the leave, and a graceful
// leave takes several gossip intervals, longer if the peers are leaving too.
func (m *testMember) kill() {
	m.end(func() { _ = m.Memberlist().Shutdown() })
}

func (m *testMember) end(shutdown func()) {
	m.stopOnce.Do(func() {
		m.cancel()
		shutdown()
	})
}

// liveMember is what Members should report for a live member with meta.
func liveMember(meta Meta) Member { return Member{Meta: meta, Alive: true} }

// waitMembers waits until every one of pools lists exactly want.
func waitMembers(t *testing.T, want []Member, pools ...*testMember) {
	t.Helper()
	for _, p := range pools {
		eventually(t, waitTimeout, func() error {
			if got := p.Members(); !slices.Equal(got, want) {
				return fmt.Errorf("%s's members:\n got %+v\nwant %+v", p.meta.memberName(), got, want)
			}
			return nil
		})
	}
}

// startThree starts a manager and two agents that join through it, and
// returns them with what Members should list once the pool has converged.
// The manager and agent a0 share a node name, as on one host, and agent
// a1's name sorts after it, so that the order of Members depends on both
// name and role.
func startThree(t *testing.T) (mgr, a0, a1 *testMember, all []Member) {
	t.Helper()
	mgr = start(t, Meta{Name: "n0", Role: RoleManager, APIAddr: "127.0.0.1:4242"})
	a1 = start(t, Meta{Name: "n1", Role: RoleAgent}, mgr.addr)
	a0 = start(t, Meta{Name: "n0", Role: RoleAgent}, mgr.addr)
	all = []Member{liveMember(a0.meta), liveMember(mgr.meta), liveMember(a1.meta)}
	return mgr, a0, a1, all
}

// TestMembersListsWholePool checks that a manager and two agents that join
// through it all end up listing the three members, each with the Meta it
// advertised and Alive set, sorted by name and then role; that every member
// emitted MemberJoined for all three (itself included); and that
// ManagerAPIAddrs returns only the manager's API address.
func TestMembersListsWholePool(t *testing.T) {
	mgr, a0, a1, want := startThree(t)
	if want[1].APIAddr == "" || want[0].Addr != "127.0.0.1" {
		t.Fatalf("test setup: metadata not as expected: %+v", want)
	}
	waitMembers(t, want, mgr, a0, a1)

	for _, p := range []*testMember{mgr, a0, a1} {
		// The members are kept in a map, whose order changes from one
		// iteration to the next: an answer in order by luck would not
		// come many times in a row.
		for range 50 {
			if got := p.Members(); !slices.Equal(got, want) {
				t.Fatalf("%s: Members() = %+v, want %+v", p.meta.memberName(), got, want)
			}
		}
		if got := p.ManagerAPIAddrs(); !slices.Equal(got, []string{"127.0.0.1:4242"}) {
			t.Errorf("%s: ManagerAPIAddrs() = %q, want only the manager's", p.meta.memberName(), got)
		}
		// The event delegate updates the members before it emits the
		// event, hence eventually.
		eventually(t, waitTimeout, func() error {
			var joined []Member
			for _, ev := range p.events.all() {
				if ev.Kind == MemberJoined {
					joined = append(joined, ev.Member)
				}
			}
			for _, w := range want {
				if !slices.Contains(joined, w) {
					return fmt.Errorf("%s: no MemberJoined for %+v in %+v", p.meta.memberName(), w, joined)
				}
			}
			return nil
		})
	}
}

// TestShutdownReportedAsLeft checks that a member that shuts down (a
// graceful leave, marked Leaving beforehand) is reported to the others as
// MemberLeft, with Leaving set and Alive false, not as MemberFailed, and
// that it disappears from their Members.
func TestShutdownReportedAsLeft(t *testing.T) {
	mgr, a0, a1, all := startThree(t)
	waitMembers(t, all, mgr, a0, a1)

	if err := a0.stop(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	left := a0.meta
	left.Leaving = true
	wantGone := Event{Kind: MemberLeft, Member: Member{Meta: left, Alive: false}}
	wantMembers := []Member{liveMember(mgr.meta), liveMember(a1.meta)}
	for _, p := range []*testMember{mgr, a1} {
		// Wait for the event that a0 is gone, whichever it is; the event
		// delegate forgets a0 before it emits the event.
		var gone []Event
		eventually(t, waitTimeout, func() error {
			gone = slices.DeleteFunc(p.events.all(), func(ev Event) bool {
				return ev.Member.memberName() != a0.meta.memberName() || ev.Member.Alive
			})
			if len(gone) == 0 {
				return fmt.Errorf("%s: no event that %s is gone in %+v", p.meta.memberName(), a0.meta.memberName(), p.events.all())
			}
			return nil
		})
		if !slices.Equal(gone, []Event{wantGone}) {
			t.Errorf("%s: %s's leave reported as %+v, want %+v", p.meta.memberName(), a0.meta.memberName(), gone, wantGone)
		}
		if got := p.Members(); !slices.Equal(got, wantMembers) {
			t.Errorf("%s: after %s left, Members() = %+v, want %+v", p.meta.memberName(), a0.meta.memberName(), got, wantMembers)
		}
	}
}

// sendDirect sends msg straight to the member named to, as SendToAgents
// would, whatever its role.
func sendDirect(t *testing.T, from *testMember, to string, msg string) {
	t.Helper()
	m, ok := from.snapshot()[to]
	if !ok {
		t.Fatalf("%s does not know %s", from.meta.memberName(), to)
	}
	node := &memberlist.Node{Name: to, Addr: m.addr, Port: m.port}
	if err := from.Memberlist().SendBestEffort(node, []byte(msg)); err != nil {
		t.Fatalf("send %q to %s: %v", msg, to, err)
	}
}

// waitReceived waits until m's delegate has been handed msg.
func waitReceived(t *testing.T, m *testMember, msg string) {
	t.Helper()
	eventually(t, waitTimeout, func() error {
		if got := m.delegate.received(); !slices.Contains(got, msg) {
			return fmt.Errorf("%s has not received %q; got %q", m.meta.memberName(), msg, got)
		}
		return nil
	})
}

// TestSendToAgentsReachesOnlyAgents checks that SendToAgents hands the
// message to the Delegate.NotifyMsg of every other agent, and neither to a
// manager nor back to the sender. That a member did not get the message is
// established with a barrier: after SendToAgents, the sender sends that
// member a message of its own, from the same UDP socket. Loopback keeps the
// two in order and memberlist hands user messages to the delegate in order,
// so once the barrier is in, the first message would be in too had it been
// sent.
func TestSendToAgentsReachesOnlyAgents(t *testing.T) {
	mgr, a0, a1, all := startThree(t)
	waitMembers(t, all, mgr, a0, a1)

	// From the manager: both agents get it.
	mgr.SendToAgents([]byte("from manager"))
	waitReceived(t, a0, "from manager")
	waitReceived(t, a1, "from manager")
	sendDirect(t, mgr, mgr.meta.memberName(), "barrier from manager")
	waitReceived(t, mgr, "barrier from manager")

	// From an agent: the other agent gets it, the manager does not, and
	// neither does the sender.
	a0.SendToAgents([]byte("from a0"))
	waitReceived(t, a1, "from a0")
	sendDirect(t, a0, mgr.meta.memberName(), "barrier from a0")
	sendDirect(t, a0, a0.meta.memberName(), "barrier from a0")
	waitReceived(t, mgr, "barrier from a0")
	waitReceived(t, a0, "barrier from a0")

	for _, c := range []struct {
		m    *testMember
		want []string
	}{
		{mgr, []string{"barrier from manager", "barrier from a0"}},
		{a0, []string{"from manager", "barrier from a0"}},
		{a1, []string{"from manager", "from a0"}},
	} {
		if got := c.m.delegate.received(); !slices.Equal(got, c.want) {
			t.Errorf("%s received %q, want %q", c.m.meta.memberName(), got, c.want)
		}
	}
}

// readMembers calls Members and ManagerAPIAddrs on p in a loop until the
// test ends, checking that every answer is well formed, and returns the
// number of calls made so far. Run under -race, it checks that the pool's
// copy of the members is safe against the event delegate's updates.
func readMembers(t *testing.T, p *testMember) *atomic.Int64 {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var calls atomic.Int64
	go func() {
		defer close(done)
		for {
			ms := p.Members()
			if !slices.IsSortedFunc(ms, byNameRole) {
				t.Errorf("%s: Members() not sorted: %+v", p.meta.memberName(), ms)
				return
			}
			for _, m := range ms {
				if !m.Alive || m.Name == "" || m.Addr != "127.0.0.1" {
					t.Errorf("%s: Members() has a malformed member: %+v", p.meta.memberName(), m)
					return
				}
			}
			if addrs := p.ManagerAPIAddrs(); len(addrs) > 1 {
				t.Errorf("%s: ManagerAPIAddrs() = %q with one manager", p.meta.memberName(), addrs)
				return
			}
			calls.Add(1)
			// A short pause leaves the CPU to memberlist: starved, it
			// misses its 250 ms probe timeouts and declares live members
			// dead. The race detector needs no tight loop, only calls
			// unordered with the updates.
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return &calls
}

// byNameRole orders members as Members promises: by name, then role.
func byNameRole(a, b Member) int {
	return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Role, b.Role))
}

// TestMembersConcurrentWithChurn checks that Members and ManagerAPIAddrs
// can be called at any time while members join and leave: readers loop on
// every pool while three rounds of agents join the manager and leave again.
// The -race detector does the checking; the readers also check each answer
// is sorted and holds only live members.
func TestMembersConcurrentWithChurn(t *testing.T) {
	mgr := start(t, Meta{Name: "m", Role: RoleManager, APIAddr: "127.0.0.1:4242"})
	mgrCalls := readMembers(t, mgr)

	for round := range 3 {
		var agents []*testMember
		want := []Member{liveMember(mgr.meta)}
		for i := range 3 {
			a := start(t, Meta{Name: fmt.Sprintf("r%d-a%d", round, i), Role: RoleAgent}, mgr.addr)
			readMembers(t, a)
			agents = append(agents, a)
			want = append(want, liveMember(a.meta))
		}
		slices.SortFunc(want, byNameRole)
		// Every agent must know the others before it leaves: one that has
		// not yet merged the manager's answer to its join believes itself
		// alone and leaves without telling anyone.
		waitMembers(t, want, append([]*testMember{mgr}, agents...)...)

		// Leave all at once, while the readers run. Each agent gossips to
		// at most three peers a round, so with three agents the manager
		// hears every leave first hand.
		errs := make([]error, len(agents))
		var wg sync.WaitGroup
		for i, a := range agents {
			wg.Go(func() { errs[i] = a.stop() })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("round %d: Shutdown: %v", round, err)
		}
		waitMembers(t, []Member{liveMember(mgr.meta)}, mgr)
	}
	if mgrCalls.Load() == 0 {
		t.Fatal("the reader never ran")
	}
}
