package raftnode

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/skiffhq/skiff/ca"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// testCA is a new cluster CA.
func testCA(t testing.TB, clusterID string) *ca.Authority {
	t.Helper()
	a, err := ca.NewAuthority(clusterID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// testKeypair is a certificate of a for node id in role, loaded the way a
// node loads its own: from a bundle, with the CA after the certificate.
func testKeypair(t testing.TB, a *ca.Authority, id string, role ca.Role) *ca.Keypair {
	t.Helper()
	certPEM, keyPEM, err := a.Issue(ca.Identity{NodeID: id, Role: role, ClusterID: a.ClusterID()}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.Bundle{CA: a.CertPEM, Cert: certPEM, Key: keyPEM}.Keypair()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// managerTLS is the transport credentials of manager id of a's cluster.
func managerTLS(t testing.TB, a *ca.Authority, id string) *TLS {
	t.Helper()
	return &TLS{Pool: a.Pool(), Keypair: testKeypair(t, a, id, ca.RoleManager)}
}

// openCluster opens one member per id on loopback, over TLS under a (plain
// TCP when a is nil), and bootstraps them all with the same configuration,
// so that the first leader is elected over the transport.
func openCluster(t testing.TB, a *ca.Authority, ids ...string) ([]*Node, []*state.Store) {
	t.Helper()
	var nodes []*Node
	var stores []*state.Store
	var boot raft.Configuration
	for _, id := range ids {
		cfg := testConfig(id, t.TempDir(), freeAddr(t), false)
		// Snapshots are not what these members exercise, and one landing
		// in some benchmark runs and not others would skew them.
		cfg.SnapshotThreshold = 1 << 40
		if a != nil {
			cfg.TLS = managerTLS(t, a, id)
		}
		s := state.New()
		n := open(t, cfg, s)
		nodes, stores = append(nodes, n), append(stores, s)
		boot.Servers = append(boot.Servers, raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(n.Addr()), Suffrage: raft.Voter})
	}
	for _, n := range nodes {
		if err := n.raft.BootstrapCluster(boot).Error(); err != nil {
			t.Fatalf("bootstrap %s: %v", n.cfg.ID, err)
		}
	}
	return nodes, stores
}

// leaderOf waits until one of nodes leads and returns it.
func leaderOf(t testing.TB, nodes []*Node) *Node {
	t.Helper()
	var leader *Node
	waitFor(t, 15*time.Second, func() error {
		for _, n := range nodes {
			if n.IsLeader() {
				leader = n
				return nil
			}
		}
		return errors.New("no leader")
	})
	return leader
}

// proposeOnLeader commits cmd through whichever of nodes leads, trying
// again if leadership moves before the command reaches Raft (ErrNotLeader:
// nothing was committed).
func proposeOnLeader(t *testing.T, nodes []*Node, cmd *skiffpb.Command) {
	t.Helper()
	waitFor(t, 15*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := leaderOf(t, nodes).Propose(ctx, cmd)
		if err != nil && !errors.Is(err, ErrNotLeader) {
			t.Fatalf("Propose: %v", err)
		}
		return err
	})
}

// TestTLSClusterElectsAndReplicates: three members over mutual TLS elect a
// leader and replicate to both followers; when the leader goes, the other
// two elect another and go on committing.
func TestTLSClusterElectsAndReplicates(t *testing.T) {
	nodes, stores := openCluster(t, testCA(t, "cluster-1"), "m1", "m2", "m3")
	proposeOnLeader(t, nodes, putStack("s1", "first"))
	for _, s := range stores {
		waitStacks(t, s, 1)
	}

	leader := leaderOf(t, nodes)
	if err := leader.Close(); err != nil {
		t.Fatalf("close leader: %v", err)
	}
	i := slices.Index(nodes, leader)
	rest := slices.Delete(slices.Clone(nodes), i, i+1)
	restStores := slices.Delete(slices.Clone(stores), i, i+1)
	proposeOnLeader(t, rest, putStack("s2", "second"))
	for _, s := range restStores {
		waitStacks(t, s, 2)
	}
}

// dialStream is a raft.StreamLayer that dials with dial: a Raft client with
// credentials of the test's choosing. Its listener is there only because a
// StreamLayer must have one.
type dialStream struct {
	net.Listener
	dial func(addr string, timeout time.Duration) (net.Conn, error)
}

func (s dialStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return s.dial(string(addr), timeout)
}

// requestVote sends target a RequestVote from candidate id through stream,
// as a peer's Raft would.
func requestVote(t *testing.T, stream raft.StreamLayer, target, id string) error {
	t.Helper()
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: 1, Timeout: 10 * time.Second, Logger: hclog.NewNullLogger(),
	})
	defer trans.Close()
	req := &raft.RequestVoteRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id), Addr: []byte(stream.Addr().String())},
		// A term far ahead, which would depose the leader if it counted;
		// the candidate is not in the configuration, so it does not.
		Term: 1 << 40,
	}
	var resp raft.RequestVoteResponse
	return trans.RequestVote(raft.ServerID("m1"), raft.ServerAddress(target), req, &resp)
}

// isTimeout reports an error that is a deadline passing.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// TestTLSRefusesOutsiders: the Raft port of a TLS member refuses, at the
// handshake, a client without TLS, without a certificate, with a worker's
// certificate, with a manager certificate of another cluster's CA, and a
// client of another protocol; it closes the connection, and Raft never
// sees their RPCs. A manager of the cluster gets through, which shows
// that the observer would have seen the others'.
func TestTLSRefusesOutsiders(t *testing.T) {
	a := testCA(t, "cluster-1")
	cfg := testConfig("m1", t.TempDir(), freeAddr(t), true)
	cfg.TLS = managerTLS(t, a, "m1")
	n := open(t, cfg, state.New())
	waitLeader(t, n)
	target := n.Addr()

	votes := make(chan raft.Observation, 16)
	obs := raft.NewObserver(votes, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.RequestVoteRequest)
		return ok
	})
	n.raft.RegisterObserver(obs)
	defer n.raft.DeregisterObserver(obs)

	manager := testKeypair(t, a, "m9", ca.RoleManager)
	grpcClient := ca.ClientConfig(a.Pool(), manager, ca.RoleManager)
	grpcClient.NextProtos = []string{"h2"}
	cases := []struct {
		name string
		tls  *tls.Config // nil: plain TCP
	}{
		{"plain TCP", nil},
		{"no certificate", ca.ClientConfig(a.Pool(), nil, ca.RoleManager)},
		{"worker certificate", ca.ClientConfig(a.Pool(), testKeypair(t, a, "w1", ca.RoleWorker), ca.RoleManager)},
		{"admin certificate", ca.ClientConfig(a.Pool(), testKeypair(t, a, "admin", ca.RoleAdmin), ca.RoleManager)},
		{"another CA's manager certificate", ca.ClientConfig(a.Pool(), testKeypair(t, testCA(t, "cluster-2"), "m1", ca.RoleManager), ca.RoleManager)},
		{"another protocol", grpcClient},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			stream := dialStream{Listener: ln, dial: func(addr string, timeout time.Duration) (net.Conn, error) {
				if tc.tls == nil {
					return net.DialTimeout("tcp", addr, timeout)
				}
				d := tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: tc.tls}
				return d.Dial("tcp", addr)
			}}
			err = requestVote(t, stream, target, "intruder")
			if err == nil {
				t.Fatal("the RPC was answered")
			}
			if isTimeout(err) {
				t.Fatalf("the Raft port left the client hanging instead of refusing it: %v", err)
			}

			// On the wire: the server ends the connection itself.
			raw, err := net.Dial("tcp", target)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			if err := raw.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
				t.Fatal(err)
			}
			if tc.tls == nil {
				if _, err := raw.Write([]byte("not a TLS record\n")); err != nil {
					t.Fatal(err)
				}
			} else {
				// Under TLS 1.3 the client's side of the handshake ends
				// before the server has judged its certificate; the
				// verdict comes on the first read.
				c := tls.Client(raw, tc.tls)
				if err := c.Handshake(); err == nil {
					if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
						t.Fatalf("read after the handshake = %v, want a refusal", err)
					}
				}
			}
			if _, err := io.Copy(io.Discard, raw); isTimeout(err) {
				t.Fatalf("the server kept the connection open: %v", err)
			}
		})
	}

	// A manager of the cluster is heard. Raft observes RPCs in the order
	// it takes them, so if this is the first it observed, it took none of
	// the refused clients'.
	control, err := newTLSStream("127.0.0.1:0", nil, managerTLS(t, a, "m2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := requestVote(t, control, target, "control"); err != nil {
		t.Fatalf("a manager's RPC: %v", err)
	}
	select {
	case o := <-votes:
		if id := string(o.Data.(raft.RequestVoteRequest).ID); id != "control" {
			t.Fatalf("raft took a RequestVote from %q", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("raft did not observe the manager's RequestVote")
	}
	if !n.IsLeader() {
		t.Errorf("the member stopped leading (%s)", n.State())
	}
}

// TestTLSSilentClientsDoNotStallRaft: clients that connect to the Raft
// ports and never speak, queued ahead of the leader's connections, do not
// keep a follower from joining and replicating while they stay connected.
func TestTLSSilentClientsDoNotStallRaft(t *testing.T) {
	a := testCA(t, "cluster-1")
	config := func(id string, bootstrap bool) Config {
		cfg := testConfig(id, t.TempDir(), freeAddr(t), bootstrap)
		cfg.TLS = managerTLS(t, a, id)
		// Longer than the test: the silent clients stay for as long as the
		// peers need the ports.
		cfg.TLS.HandshakeTimeout = time.Hour
		return cfg
	}
	s2 := state.New()
	leader := open(t, config("m1", true), state.New())
	follower := open(t, config("m2", false), s2)
	var silent []net.Conn
	for range 4 {
		for _, n := range []*Node{leader, follower} {
			c, err := net.Dial("tcp", n.Addr())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			silent = append(silent, c)
		}
	}

	waitLeader(t, leader)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := leader.AddVoter(ctx, "m2", follower.Addr()); err != nil {
		t.Fatalf("AddVoter: %v", err)
	}
	propose(t, leader, putStack("s1", "through"))
	waitStacks(t, s2, 1)

	for i, c := range silent {
		if err := c.SetReadDeadline(time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
			t.Fatalf("silent client %d: read = %v; it was not connected all along", i, err)
		}
	}
}

// TestTLSHandshakeDeadline: an accepted connection whose client says
// nothing fails its first read once the handshake timeout passes, and the
// client is disconnected; closing the stream ends pending handshakes at
// once.
func TestTLSHandshakeDeadline(t *testing.T) {
	a := testCA(t, "cluster-1")
	listen := func(timeout time.Duration) (*tlsStream, net.Conn, net.Conn) {
		tc := managerTLS(t, a, "m1")
		tc.HandshakeTimeout = timeout
		s, err := newTLSStream("127.0.0.1:0", nil, tc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		client, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close() })
		// Accept returns although the client has sent nothing.
		server, err := s.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { server.Close() })
		return s, client, server
	}

	t.Run("timeout", func(t *testing.T) {
		_, client, server := listen(50 * time.Millisecond)
		if _, err := server.Read(make([]byte, 1)); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("server read = %v, want the handshake deadline", err)
		}
		if err := client.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := client.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("client read = %v, want EOF", err)
		}
	})
	t.Run("close", func(t *testing.T) {
		s, _, server := listen(time.Hour)
		errc := make(chan error, 1)
		go func() {
			_, err := server.Write([]byte("x"))
			errc <- err
		}()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("server write = %v, want the stream's end", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the handshake outlived the stream")
		}
	})
}

// TestTLSDialTimeout: Dial's timeout covers the handshake, so a peer that
// accepts TCP and never answers does not hold it.
func TestTLSDialTimeout(t *testing.T) {
	a := testCA(t, "cluster-1")
	// The kernel completes the TCP connect; nobody ever speaks TLS.
	mute, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	s, err := newTLSStream("127.0.0.1:0", nil, managerTLS(t, a, "m1"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	errc := make(chan error, 1)
	go func() {
		c, err := s.Dial(raft.ServerAddress(mute.Addr().String()), 100*time.Millisecond)
		if c != nil {
			c.Close()
		}
		errc <- err
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), mute.Addr().String()) {
			t.Fatalf("Dial = %v, want the deadline, naming the peer", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Dial outlived its timeout")
	}
}

// TestTLSDialRefusesNonManagers: a member dials only managers of its own
// cluster.
func TestTLSDialRefusesNonManagers(t *testing.T) {
	a := testCA(t, "cluster-1")
	s, err := newTLSStream("127.0.0.1:0", nil, managerTLS(t, a, "m1"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for name, server := range map[string]*tls.Config{
		"worker":                    ca.ServerConfig(a.Pool(), testKeypair(t, a, "w1", ca.RoleWorker)),
		"another cluster's manager": ca.ServerConfig(a.Pool(), testKeypair(t, testCA(t, "cluster-2"), "m2", ca.RoleManager)),
	} {
		t.Run(name, func(t *testing.T) {
			ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan struct{})
			defer func() { ln.Close(); <-served }()
			go func() {
				defer close(served)
				c, err := ln.Accept()
				if err == nil {
					_ = c.(*tls.Conn).Handshake()
					c.Close()
				}
			}()
			c, err := s.Dial(raft.ServerAddress(ln.Addr().String()), 10*time.Second)
			if err == nil {
				c.Close()
				t.Fatal("dialled")
			}
			var verr *tls.CertificateVerificationError
			if !errors.As(err, &verr) {
				t.Fatalf("Dial = %v, want a certificate verification error", err)
			}
		})
	}
}

// TestOpenTLSErrors: Open refuses credentials that could never work before
// it touches the disk, and an advertise address peers cannot dial.
func TestOpenTLSErrors(t *testing.T) {
	a := testCA(t, "cluster-1")
	manager := testKeypair(t, a, "m1", ca.RoleManager)
	cases := []struct {
		name    string
		tls     *TLS
		wantErr string
	}{
		{"no pool", &TLS{Keypair: manager}, "CA pool"},
		{"no certificate", &TLS{Pool: a.Pool()}, "no certificate"},
		{"worker certificate", &TLS{Pool: a.Pool(), Keypair: testKeypair(t, a, "w1", ca.RoleWorker)}, "manager"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "raft")
			cfg := testConfig("m1", dir, freeAddr(t), true)
			cfg.TLS = tc.tls
			n, err := Open(cfg, state.New())
			if err == nil {
				n.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not mention %q", err, tc.wantErr)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("Open created %s: %v", dir, err)
			}
		})
	}
	t.Run("unspecified advertise address", func(t *testing.T) {
		cfg := testConfig("m1", t.TempDir(), "0.0.0.0:0", true)
		cfg.TLS = &TLS{Pool: a.Pool(), Keypair: manager}
		n, err := Open(cfg, state.New())
		if err == nil {
			n.Close()
			t.Fatal("Open succeeded")
		}
		if !strings.Contains(err.Error(), "listen") {
			t.Errorf("error %q does not mention listen", err)
		}
	})
}
