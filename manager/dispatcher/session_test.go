package dispatcher

import (
	"bytes"
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/skiffhq/skiff/ca"
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

// openSession serves d's Dispatcher API on a loopback port, over mutual
// TLS, and opens a session for the node named name, registered with a
// worker certificate of that node; both end with the test.
func openSession(t *testing.T, d *Dispatcher, name string) grpc.BidiStreamingClient[skiffpb.AgentMessage, skiffpb.ManagerMessage] {
	t.Helper()
	p := newPKI(t)
	return p.session(t, d, p.worker(t, d, name), name)
}

// pki is a test CA with the dispatcher's server certificate.
type pki struct {
	auth   *ca.Authority
	server *ca.Keypair
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	auth, err := ca.NewAuthority("c1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{auth: auth}
	p.server = p.keypair(t, ca.Identity{NodeID: "m1", Role: ca.RoleManager, ClusterID: "c1"})
	return p
}

func (p *pki) keypair(t *testing.T, id ca.Identity) *ca.Keypair {
	t.Helper()
	cert, key, err := p.auth.Issue(id, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.Bundle{CA: p.auth.CertPEM, Cert: cert, Key: key}.Keypair()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// worker records a node named name, as a join does, and issues its worker
// certificate.
func (p *pki) worker(t *testing.T, d *Dispatcher, name string) *ca.Keypair {
	t.Helper()
	id := state.NewID()
	if _, err := d.cfg.Raft.Propose(context.Background(), &skiffpb.Command{Actions: []*skiffpb.StoreAction{{Action: &skiffpb.StoreAction_PutNode{PutNode: &skiffpb.Node{
		Id: id, Meta: &skiffpb.Meta{}, Name: name, Spec: &skiffpb.NodeSpec{}, Status: &skiffpb.NodeStatus{},
		Certified: []skiffpb.NodeRole{skiffpb.NodeRole_NODE_ROLE_WORKER},
	}}}}}); err != nil {
		t.Fatal(err)
	}
	return p.keypair(t, ca.Identity{NodeID: id, Role: ca.RoleWorker, ClusterID: "c1"})
}

// session opens a session presenting kp (none when nil) and registers as
// name.
func (p *pki) session(t *testing.T, d *Dispatcher, kp *ca.Keypair, name string) grpc.BidiStreamingClient[skiffpb.AgentMessage, skiffpb.ManagerMessage] {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(ca.ServerConfig(p.auth.Pool(), p.server))))
	skiffpb.RegisterDispatcherServer(srv, d)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientConfig(p.auth.Pool(), kp, ca.RoleManager))))
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

// TestSessionIdentityComesFromTheCertificate: an agent registers as the
// node its certificate names, and no other; without a certificate, or once
// its node is removed, it gets no session.
func TestSessionIdentityComesFromTheCertificate(t *testing.T) {
	store := state.New()
	d := New(Config{Store: store, Raft: &fakeRaft{store: store}, HeartbeatPeriod: 50 * time.Millisecond})
	term, endTerm := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); d.Run(term) }()
	defer func() { endTerm(); <-ran }()
	waitRunning(t, d)
	p := newPKI(t)
	h1 := p.worker(t, d, "h1")
	p.worker(t, d, "h2")

	if m, err := p.session(t, d, h1, "h1").Recv(); err != nil || m.GetAccepted() == nil {
		t.Fatalf("h1 as h1: %v, %v; want SessionAccepted", m, err)
	}
	for name, c := range map[string]struct {
		kp   *ca.Keypair
		as   string
		want codes.Code
	}{
		"h1's certificate as h2": {h1, "h2", codes.PermissionDenied},
		"no certificate":         {nil, "h1", codes.Unauthenticated},
		"a node never recorded":  {p.keypair(t, ca.Identity{NodeID: "ghost", Role: ca.RoleWorker, ClusterID: "c1"}), "ghost", codes.PermissionDenied},
	} {
		if _, err := p.session(t, d, c.kp, c.as).Recv(); status.Code(err) != c.want {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	if _, err := d.cfg.Raft.Propose(context.Background(), &skiffpb.Command{Actions: []*skiffpb.StoreAction{{Action: &skiffpb.StoreAction_DeleteNode{DeleteNode: h1.Identity().NodeID}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.session(t, d, h1, "h1").Recv(); status.Code(err) != codes.PermissionDenied {
		t.Errorf("h1 after node rm: %v, want PermissionDenied", err)
	}
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

// TestGossipKeysReachTheAgents: a session hears the cluster's gossip
// keyring first, before its assignments, and again at each change of the
// keyring, but not when something else in the cluster object changes.
func TestGossipKeysReachTheAgents(t *testing.T) {
	store := state.New()
	fr := &fakeRaft{store: store}
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	var version uint64
	putCluster := func(keys [][]byte, expiry int64) {
		t.Helper()
		if _, err := fr.Propose(context.Background(), &skiffpb.Command{Actions: []*skiffpb.StoreAction{{Action: &skiffpb.StoreAction_PutCluster{
			PutCluster: &skiffpb.Cluster{Id: "c1", Meta: &skiffpb.Meta{Version: version}, GossipKeys: keys, CertExpiry: expiry},
		}}}}); err != nil {
			t.Fatal(err)
		}
		store.View(func(tx state.ReadTx) { version = tx.Cluster().GetMeta().GetVersion() })
	}
	putCluster([][]byte{k1}, 0)
	d := New(Config{Store: store, Raft: fr, HeartbeatPeriod: 50 * time.Millisecond, DownGrace: time.Hour})
	runTerm(t, d)
	stream := openSession(t, d, "h1")
	// next returns the next message that is not a heartbeat's answer.
	next := func() *skiffpb.ManagerMessage {
		t.Helper()
		for {
			m, err := stream.Recv()
			if err != nil {
				t.Fatalf("session: %v", err)
			}
			if m.GetHeartbeatAck() == nil && m.GetDownNodes() == nil {
				return m
			}
		}
	}
	if m := next(); m.GetAccepted() == nil {
		t.Fatalf("first message %v, want SessionAccepted", m)
	}
	if m := next(); !slices.EqualFunc(m.GetGossipKeys().GetKeys(), [][]byte{k1}, bytes.Equal) {
		t.Fatalf("second message %v, want the keyring [k1]", m)
	}
	if m := next(); m.GetAssignments() == nil {
		t.Fatalf("third message %v, want the assignments", m)
	}
	// A change that leaves the keyring as it is sends nothing: the next
	// keyring the session hears is the rotation's.
	putCluster([][]byte{k1}, int64(time.Hour))
	putCluster([][]byte{k1, k2}, int64(time.Hour))
	if m := next(); !slices.EqualFunc(m.GetGossipKeys().GetKeys(), [][]byte{k1, k2}, bytes.Equal) {
		t.Fatalf("after the new key was installed, %v; want the keyring [k1 k2]", m)
	}
	putCluster([][]byte{k2}, int64(time.Hour))
	if m := next(); !slices.EqualFunc(m.GetGossipKeys().GetKeys(), [][]byte{k2}, bytes.Equal) {
		t.Fatalf("after the old key was removed, %v; want the keyring [k2]", m)
	}
}
