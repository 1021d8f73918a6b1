package dispatcher

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// TestSessionEndsWithTheTerm: when the leader's term ends, an agent's
// session ends at once, even while the agent keeps heartbeating: a deposed
// leader must not go on acknowledging heartbeats, or the agent would never
// look for the new leader, and the new leader would mark its node down.
func TestSessionEndsWithTheTerm(t *testing.T) {
	store := state.New()
	d := New(Config{Store: store, Raft: &fakeRaft{store: store}, HeartbeatPeriod: 50 * time.Millisecond})
	term, endTerm := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); d.Run(term) }()
	defer func() { endTerm(); <-ran }()
	waitRunning(t, d)

	stream := openSession(t, d, "h1")
	ctx := stream.Context()
	if m, err := stream.Recv(); err != nil || m.GetAccepted() == nil {
		t.Fatalf("first message %v, %v; want SessionAccepted", m, err)
	}

	// The agent heartbeats on its own schedule throughout.
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if stream.Send(&skiffpb.AgentMessage{Msg: &skiffpb.AgentMessage_Heartbeat{Heartbeat: &skiffpb.Heartbeat{}}}) != nil {
				return
			}
		}
	}()
	acked := func() bool {
		for {
			m, err := stream.Recv()
			if err != nil {
				return false
			}
			if m.GetHeartbeatAck() != nil {
				return true
			}
		}
	}
	if !acked() {
		t.Fatal("no heartbeat was acknowledged while the term ran")
	}

	endTerm()
	ended := time.Now()
	for {
		m, err := stream.Recv()
		if err != nil {
			break
		}
		if m.GetHeartbeatAck() != nil && time.Since(ended) > time.Second {
			t.Fatalf("a heartbeat was acknowledged %s after the term ended", time.Since(ended).Round(time.Millisecond))
		}
	}
	if took := time.Since(ended); took > 2*time.Second {
		t.Errorf("the session ended %s after the term", took.Round(time.Millisecond))
	}
}

// openSession serves d's Dispatcher API on a loopback port and opens a
// session for the node named name, registered; both end with the test.
func openSession(t *testing.T, d *Dispatcher, name string) grpc.BidiStreamingClient[skiffpb.AgentMessage, skiffpb.ManagerMessage] {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	skiffpb.RegisterDispatcherServer(srv, d)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	stream, err := skiffpb.NewDispatcherClient(conn).Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&skiffpb.AgentMessage{Msg: &skiffpb.AgentMessage_Register{Register: &skiffpb.Register{Name: name}}}); err != nil {
		t.Fatal(err)
	}
	return stream
}

// waitRunning waits until Run has started the term.
func waitRunning(t *testing.T, d *Dispatcher) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d.mu.Lock()
		started := d.running != nil
		d.mu.Unlock()
		if started {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("Run did not start")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestDownNodesReachTheAgents: a session hears which nodes are Down when it
// starts, and again whenever the leader's judgement changes, so its agent
// can stop sending traffic to a dead host's tasks.
func TestDownNodesReachTheAgents(t *testing.T) {
	store := state.New()
	fr := &fakeRaft{store: store}
	setState := func(st skiffpb.NodeState) {
		t.Helper()
		if _, err := fr.Propose(context.Background(), &skiffpb.Command{Actions: []*skiffpb.StoreAction{{Action: &skiffpb.StoreAction_NodeStatus{
			NodeStatus: &skiffpb.NodeStatusUpdate{NodeId: "n2", Status: &skiffpb.NodeStatus{State: st}},
		}}}}); err != nil {
			t.Fatal(err)
		}
	}
	putNode(t, fr, "n2", "h2", skiffpb.NodeState_NODE_STATE_DOWN)
	d := New(Config{Store: store, Raft: fr, HeartbeatPeriod: 50 * time.Millisecond, DownGrace: time.Hour})
	runTerm(t, d)
	stream := openSession(t, d, "h1")
	// nextDown returns the names of the next DownNodes message.
	nextDown := func() []string {
		t.Helper()
		for {
			m, err := stream.Recv()
			if err != nil {
				t.Fatalf("session: %v", err)
			}
			if dn := m.GetDownNodes(); dn != nil {
				return dn.GetNames()
			}
		}
	}
	if got := nextDown(); len(got) != 1 || got[0] != "h2" {
		t.Fatalf("first DownNodes %v, want [h2]", got)
	}
	setState(skiffpb.NodeState_NODE_STATE_READY)
	if got := nextDown(); len(got) != 0 {
		t.Fatalf("DownNodes %v after h2 came back, want none", got)
	}
	setState(skiffpb.NodeState_NODE_STATE_DOWN)
	if got := nextDown(); len(got) != 1 || got[0] != "h2" {
		t.Fatalf("DownNodes %v after h2 went down again, want [h2]", got)
	}
}
