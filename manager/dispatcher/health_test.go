package dispatcher

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/skiffhq/skiff/gossip"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// fakeRaft applies proposals to the store at once, standing in for Raft's
// commit in-process.
type fakeRaft struct {
	store *state.Store
	mu    sync.Mutex
	index uint64
}

func (f *fakeRaft) Propose(ctx context.Context, cmd *skiffpb.Command) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index++
	return f.index, f.store.Apply(f.index, cmd)
}

func (f *fakeRaft) ProposeAsync(ctx context.Context, cmd *skiffpb.Command) func() (uint64, error) {
	idx, err := f.Propose(ctx, cmd)
	return func() (uint64, error) { return idx, err }
}

func (f *fakeRaft) IsLeader() bool { return true }

// nodeState reads a node's state.
func nodeState(s *state.Store, id string) skiffpb.NodeState {
	var st skiffpb.NodeState
	s.View(func(tx state.ReadTx) { st = tx.Node(id).GetStatus().GetState() })
	return st
}

// TestNodeHealth: with a long grace, a node is marked Down only when gossip
// declares it dead; an unknown name changes nothing.
// putNode stores a node in the given state, through fr.
func putNode(t *testing.T, fr *fakeRaft, id, name string, st skiffpb.NodeState) {
	t.Helper()
	if _, err := fr.Propose(context.Background(), &skiffpb.Command{Actions: []*skiffpb.StoreAction{{Action: &skiffpb.StoreAction_PutNode{PutNode: &skiffpb.Node{
		Id: id, Meta: &skiffpb.Meta{}, Name: name, Status: &skiffpb.NodeStatus{State: st},
	}}}}}); err != nil {
		t.Fatal(err)
	}
}

// runTerm runs d for one term, until the test ends, and returns once the
// term has started.
func runTerm(t *testing.T, d *Dispatcher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return")
		}
	})
	waitRunning(t, d)
}

func TestNodeHealth(t *testing.T) {
	store := state.New()
	fr := &fakeRaft{store: store}
	putNode(t, fr, "n1", "h1", skiffpb.NodeState_NODE_STATE_READY)
	putNode(t, fr, "n2", "h2", skiffpb.NodeState_NODE_STATE_READY)
	d := New(Config{Store: store, Raft: fr, HeartbeatPeriod: 10 * time.Millisecond, DownGrace: time.Hour})
	// The term seeds every node's clock when it starts.
	runTerm(t, d)

	d.AgentDead("nobody")
	d.AgentDead("h1")
	deadline := time.Now().Add(10 * time.Second)
	for nodeState(store, "n1") != skiffpb.NodeState_NODE_STATE_DOWN {
		if time.Now().After(deadline) {
			t.Fatal("n1 not marked down after gossip declared it dead")
		}
		time.Sleep(time.Millisecond)
	}
	var msg string
	store.View(func(tx state.ReadTx) { msg = tx.Node("n1").GetStatus().GetMessage() })
	if msg != "heartbeat failure" {
		t.Errorf("down message %q", msg)
	}
	if st := nodeState(store, "n2"); st != skiffpb.NodeState_NODE_STATE_READY {
		t.Errorf("n2 is %v within its grace", st)
	}
}

// TestSilentNodesGoDown: with a short grace, nodes that never heartbeat are
// marked Down; a node added during the term gets a full grace from when it
// is first seen.
func TestSilentNodesGoDown(t *testing.T) {
	store := state.New()
	fr := &fakeRaft{store: store}
	put := func(id string) {
		t.Helper()
		if _, err := fr.Propose(context.Background(), &skiffpb.Command{Actions: []*skiffpb.StoreAction{{Action: &skiffpb.StoreAction_PutNode{PutNode: &skiffpb.Node{
			Id: id, Meta: &skiffpb.Meta{}, Name: "host-" + id, Status: &skiffpb.NodeStatus{State: skiffpb.NodeState_NODE_STATE_READY},
		}}}}}); err != nil {
			t.Fatal(err)
		}
	}
	put("n1")
	d := New(Config{Store: store, Raft: fr, HeartbeatPeriod: 10 * time.Millisecond, DownGrace: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	defer func() { cancel(); <-done }()
	put("n2")
	waitDown := func(id string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for nodeState(store, id) != skiffpb.NodeState_NODE_STATE_DOWN {
			if time.Now().After(deadline) {
				t.Fatalf("%s not marked down", id)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitDown("n1")
	waitDown("n2")
}

// TestHeartbeatPeriodStretches: the period is the configured one until the
// sessions' heartbeats would exceed the rate, then grows with them, with
// the grace in proportion; it never shrinks within a term.
func TestHeartbeatPeriodStretches(t *testing.T) {
	d := New(Config{Store: state.New(), HeartbeatPeriod: 500 * time.Millisecond, MaxHeartbeatRate: 2000})
	d.health.period = d.cfg.HeartbeatPeriod
	withSessions := func(n int) (time.Duration, time.Duration) {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.sessions = map[string]*session{}
		for i := range n {
			d.sessions[strconv.Itoa(i)] = &session{}
		}
		return d.heartbeatPeriodLocked(), d.graceLocked()
	}
	cases := []struct {
		sessions           int
		wantPeriod, wantGr time.Duration
	}{
		{0, 500 * time.Millisecond, 2 * time.Second},
		{1000, 500 * time.Millisecond, 2 * time.Second},
		{4000, 2 * time.Second, 8 * time.Second},
		{10000, 5 * time.Second, 20 * time.Second},
		// Agents leaving do not shorten it: some still heartbeat slowly.
		{10, 5 * time.Second, 20 * time.Second},
	}
	for _, tc := range cases {
		period, grace := withSessions(tc.sessions)
		if period != tc.wantPeriod || grace != tc.wantGr {
			t.Errorf("%d sessions: period %s grace %s, want %s and %s", tc.sessions, period, grace, tc.wantPeriod, tc.wantGr)
		}
	}

	// A new term with 10,000 nodes in the store gives them the long grace
	// before any of them has reconnected.
	d = New(Config{Store: state.New(), HeartbeatPeriod: 500 * time.Millisecond, MaxHeartbeatRate: 2000})
	d.health.period, d.health.nodesAtStart = d.cfg.HeartbeatPeriod, 10000
	if period, grace := withSessions(0); period != 5*time.Second || grace != 20*time.Second {
		t.Errorf("new term of 10,000 nodes: period %s grace %s, want 5s and 20s", period, grace)
	}
}

// TestGossipDeathBeforeTheTerm: a node gossip declared dead before this
// leader took office starts the term with its grace over; the others get a
// whole grace.
func TestGossipDeathBeforeTheTerm(t *testing.T) {
	store := state.New()
	fr := &fakeRaft{store: store}
	putNode(t, fr, "n1", "h1", skiffpb.NodeState_NODE_STATE_READY)
	putNode(t, fr, "n2", "h2", skiffpb.NodeState_NODE_STATE_READY)
	d := New(Config{Store: store, Raft: fr, HeartbeatPeriod: 10 * time.Millisecond, DownGrace: time.Hour,
		Membership: &fakeMembership{dead: []string{"h2", "nobody"}}})
	runTerm(t, d)

	deadline := time.Now().Add(10 * time.Second)
	for nodeState(store, "n2") != skiffpb.NodeState_NODE_STATE_DOWN {
		if time.Now().After(deadline) {
			t.Fatal("n2, dead by gossip before the term, was not marked down")
		}
		time.Sleep(time.Millisecond)
	}
	if st := nodeState(store, "n1"); st != skiffpb.NodeState_NODE_STATE_READY {
		t.Errorf("n1 is %v within its grace", st)
	}
}

// fakeMembership gives fixed opinions of gossip's, standing in for the
// manager's view of the pool.
type fakeMembership struct {
	noMembership
	dead     []string
	opinions map[string]gossip.Opinion
	mu       sync.Mutex
	probed   map[string]int
}

func (f *fakeMembership) DeadAgents(time.Duration) []string { return f.dead }

func (f *fakeMembership) ProbeAgent(name string) gossip.Opinion {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.probed == nil {
		f.probed = map[string]int{}
	}
	f.probed[name]++
	return f.opinions[name]
}

// downAt polls until node id is Down and returns when, failing after
// limit.
func downAt(t *testing.T, s *state.Store, id string, limit time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(limit)
	for nodeState(s, id) != skiffpb.NodeState_NODE_STATE_DOWN {
		if time.Now().After(deadline) {
			t.Fatalf("%s not marked down within %s", id, limit)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Now()
}

// TestGossipsSecondOpinion: a new term's nodes without a session are
// probed. One whose agent gossip still hears keeps its node Ready past the
// grace, up to twice the grace; one that answers no probe is marked Down
// long before the grace; one gossip knows nothing of is judged by the
// grace alone.
func TestGossipsSecondOpinion(t *testing.T) {
	store := state.New()
	fr := &fakeRaft{store: store}
	putNode(t, fr, "n1", "heard", skiffpb.NodeState_NODE_STATE_READY)
	putNode(t, fr, "n2", "silent", skiffpb.NodeState_NODE_STATE_READY)
	putNode(t, fr, "n3", "unknown", skiffpb.NodeState_NODE_STATE_READY)
	const period, grace = 20 * time.Millisecond, 400 * time.Millisecond
	m := &fakeMembership{opinions: map[string]gossip.Opinion{"heard": gossip.Heard, "silent": gossip.Silent}}
	d := New(Config{Store: store, Raft: fr, HeartbeatPeriod: period, DownGrace: grace, Membership: m})
	start := time.Now()
	runTerm(t, d)

	silent := downAt(t, store, "n2", 10*time.Second).Sub(start)
	if silent >= grace {
		t.Errorf("the node gossip cannot reach went down after %s, not before the grace (%s)", silent, grace)
	}
	unknown := downAt(t, store, "n3", 10*time.Second).Sub(start)
	if unknown < grace {
		t.Errorf("the node gossip knows nothing of went down after %s, within its grace (%s)", unknown, grace)
	}
	if st := nodeState(store, "n1"); st != skiffpb.NodeState_NODE_STATE_READY {
		t.Fatalf("the node gossip hears is %v at %s, within twice its grace", st, time.Since(start))
	}
	heard := downAt(t, store, "n1", 10*time.Second).Sub(start)
	if heard < 2*grace {
		t.Errorf("the node gossip hears went down after %s, before twice the grace (%s)", heard, 2*grace)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.probed["silent"] < condemningProbes {
		t.Errorf("the silent node was probed %d times before its verdict, want at least %d", m.probed["silent"], condemningProbes)
	}
}
