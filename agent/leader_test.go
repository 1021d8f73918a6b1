package agent

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/skiffhq/skiff/ca"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// fakeDiscovery is a Discovery the test steers.
type fakeDiscovery struct {
	mu       sync.Mutex
	managers []string
	leader   string
	term     uint64
	// asked counts the calls to Leader, so that a test can wait until the
	// agent has read an announcement.
	asked int
	news  chan struct{}
}

func newFakeDiscovery(managers ...string) *fakeDiscovery {
	return &fakeDiscovery{managers: managers, news: make(chan struct{}, 1)}
}

func (d *fakeDiscovery) ManagerAPIAddrs() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.managers)
}

func (d *fakeDiscovery) Leader() (string, uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.asked++
	return d.leader, d.term
}

// waitAsked waits until Leader has been called n times.
func (d *fakeDiscovery) waitAsked(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		d.mu.Lock()
		asked := d.asked
		d.mu.Unlock()
		if asked >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Leader called %d times, want %d", asked, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func (d *fakeDiscovery) LeaderNews() <-chan struct{} { return d.news }

// announce makes addr the leader in term and sends the news, as gossip
// would, without blocking.
func (d *fakeDiscovery) announce(addr string, term uint64) {
	d.mu.Lock()
	d.leader, d.term = addr, term
	d.mu.Unlock()
	select {
	case d.news <- struct{}{}:
	default:
	}
}

func testAgent(t *testing.T, d Discovery, managers ...string) *Agent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return newAgent(ctx, Config{Name: "h1", DataDir: t.TempDir(), Discovery: d, Managers: managers}, slog.New(slog.DiscardHandler))
}

// TestCandidatesStartWithTheAnnouncedLeader: the leader Discovery announces
// comes first, then every other manager it or the configuration names,
// once each.
func TestCandidatesStartWithTheAnnouncedLeader(t *testing.T) {
	d := newFakeDiscovery("m1:4242", "m2:4242")
	d.announce("m2:4242", 5)
	a := testAgent(t, d, "m3:4242", "m1:4242")
	got := a.candidates()
	if len(got) == 0 || got[0] != "m2:4242" {
		t.Fatalf("candidates %v, want m2:4242 first", got)
	}
	slices.Sort(got)
	if want := []string{"m1:4242", "m2:4242", "m3:4242"}; !slices.Equal(got, want) {
		t.Errorf("candidates %v, want each of %v once", got, want)
	}
}

// TestCandidatesWithoutDiscovery: an agent without Discovery, as simulated
// agents run, tries the managers it was given.
func TestCandidatesWithoutDiscovery(t *testing.T) {
	a := testAgent(t, nil, "m1:4242")
	if got := a.candidates(); !slices.Equal(got, []string{"m1:4242"}) {
		t.Errorf("candidates %v, want [m1:4242]", got)
	}
}

// TestWatchLeaderEndsOnANewerLeaderElsewhere: news of the session's own
// leader in a newer term keeps the session; a newer leader elsewhere ends
// it.
func TestWatchLeaderEndsOnANewerLeaderElsewhere(t *testing.T) {
	d := newFakeDiscovery()
	d.announce("m1:4242", 1)
	<-d.news // the session begins after this announcement
	a := testAgent(t, d)
	done := make(chan error, 1)
	go func() { done <- a.watchLeader(context.Background(), "m1:4242") }()
	d.waitAsked(t, 1) // the term the session began in

	d.announce("m1:4242", 2)
	d.waitAsked(t, 2) // read before m2 is announced
	d.announce("m2:4242", 3)
	select {
	case err := <-done:
		// Had the session ended on its own leader's term 2, the error
		// would name m1.
		if err == nil || !strings.Contains(err.Error(), "m2:4242 (term 3)") {
			t.Errorf("watchLeader ended with %v, want the news of m2:4242 in term 3", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a newer leader elsewhere did not end the session")
	}
}

// noLeaderDispatcher answers every registration with a redirect that names
// no leader, as a manager does while an election is under way.
type noLeaderDispatcher struct {
	skiffpb.UnimplementedDispatcherServer
}

func (noLeaderDispatcher) Session(stream grpc.BidiStreamingServer[skiffpb.AgentMessage, skiffpb.ManagerMessage]) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	return stream.Send(&skiffpb.ManagerMessage{Msg: &skiffpb.ManagerMessage_Redirect{Redirect: &skiffpb.Redirect{}}})
}

// TestConnectDuringAnElection: managers that know of no leader make
// connect say an election is under way, not report them as failures.
func TestConnectDuringAnElection(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	client := serveDispatcher(t, lis, noLeaderDispatcher{})

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cfg := Config{Name: "h1", DataDir: t.TempDir(), Managers: []string{lis.Addr().String()}, Executor: describeOnly{}, Creds: client}
	a := newAgent(ctx, cfg, slog.New(slog.DiscardHandler))
	_, err = a.connect(ctx, lostLeader{})
	if err == nil || err.Error() != "no manager leads yet (an election is under way)" {
		t.Errorf("connect: %v, want that no manager leads yet", err)
	}
}

// acceptingDispatcher accepts every registration, as a leader does.
type acceptingDispatcher struct {
	skiffpb.UnimplementedDispatcherServer
}

func (acceptingDispatcher) Session(stream grpc.BidiStreamingServer[skiffpb.AgentMessage, skiffpb.ManagerMessage]) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	if err := stream.Send(&skiffpb.ManagerMessage{Msg: &skiffpb.ManagerMessage_Accepted{Accepted: &skiffpb.SessionAccepted{NodeId: "n1"}}}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

// TestConnectSkipsTheLostLeader: when a session ends on the leader's
// silence and gossip still names that leader, the agent asks every manager
// at once rather than waiting on the lost one alone. Waiting cost a second
// of a new leader's grace (CI, issue 19's failover test).
func TestConnectSkipsTheLostLeader(t *testing.T) {
	// The lost leader: connections are queued by the kernel and never
	// answered, as with a host cut off after the handshake's SYN-ACK.
	lostLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lostLis.Close() })
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	client := serveDispatcher(t, lis, acceptingDispatcher{})

	lost, leader := lostLis.Addr().String(), lis.Addr().String()
	d := newFakeDiscovery(lost, leader)
	d.announce(lost, 4)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cfg := Config{Name: "h1", DataDir: t.TempDir(), Discovery: d, Executor: describeOnly{}, Creds: client}
	a := newAgent(ctx, cfg, slog.New(slog.DiscardHandler))

	start := time.Now()
	est, err := a.connect(ctx, lostLeader{addr: lost, term: 4})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer est.close()
	if est.addr != leader {
		t.Errorf("session with %s, want the live manager %s", est.addr, leader)
	}
	if took := time.Since(start); took >= announcedLeaderWait {
		t.Errorf("connect took %s: it waited on the lost leader alone", took)
	}
}

// serveDispatcher serves d on lis under a test CA's manager certificate
// until the test ends, and returns a worker's client credentials of that
// CA.
func serveDispatcher(t *testing.T, lis net.Listener, d skiffpb.DispatcherServer) credentials.TransportCredentials {
	t.Helper()
	server, client := testCreds(t)
	srv := grpc.NewServer(grpc.Creds(server))
	skiffpb.RegisterDispatcherServer(srv, d)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return client
}

// describeOnly is an Executor that can only describe its node.
type describeOnly struct{ Executor }

func (describeOnly) Describe(context.Context) (*skiffpb.NodeDescription, error) {
	return &skiffpb.NodeDescription{}, nil
}

// testCreds are a manager's server credentials and a worker's client
// credentials under a test CA.
func testCreds(t *testing.T) (server, client credentials.TransportCredentials) {
	t.Helper()
	a, err := ca.NewAuthority("c1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kp := func(role ca.Role) *ca.Keypair {
		cert, key, err := a.Issue(ca.Identity{NodeID: "n-" + string(role), Role: role, ClusterID: "c1"}, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		k, err := ca.Bundle{CA: a.CertPEM, Cert: cert, Key: key}.Keypair()
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	return credentials.NewTLS(ca.ServerConfig(a.Pool(), kp(ca.RoleManager))),
		credentials.NewTLS(ca.ClientConfig(a.Pool(), kp(ca.RoleWorker), ca.RoleManager))
}
