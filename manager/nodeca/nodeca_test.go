package nodeca_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/skiffhq/skiff/ca"
	"github.com/skiffhq/skiff/identity"
	"github.com/skiffhq/skiff/manager/nodeca"
	"github.com/skiffhq/skiff/manager/raftnode"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// testCluster is a one-manager cluster: a real Raft member applying to a
// real store, and a gRPC server on loopback with the manager's TLS
// credentials serving NodeCA and Join.
type testCluster struct {
	store *state.Store
	raft  *raftnode.Node
	auth  *ca.Authority
	// addr is the gRPC server's address: the manager's API address, and
	// here also the member's gossip address a joiner says hello to.
	addr string
	pool *x509.CertPool
}

const certTTL = time.Hour

var gossipKey = bytes.Repeat([]byte{7}, 32)

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// freeAddr is a loopback address whose port was free a moment ago: the
// Raft transport advertises its bind address, so ":0" will not do.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// newRaft starts a bootstrapped single-member Raft cluster applying to a
// new store and waits until it leads.
func newRaft(t *testing.T) (*raftnode.Node, *state.Store) {
	t.Helper()
	store := state.New()
	n, err := raftnode.Open(raftnode.Config{
		ID: "m1", DataDir: t.TempDir(), BindAddr: freeAddr(t), Bootstrap: true,
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond,
	}, store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	waitFor(t, 15*time.Second, func() error {
		if !n.IsLeader() {
			return fmt.Errorf("raft state %s", n.State())
		}
		return nil
	})
	return n, store
}

// newCluster creates a cluster: its CA and settings go through Raft, and
// NodeCA is served over TLS with a manager certificate of that CA. wrap,
// when not nil, wraps the Raft member NodeCA writes through.
func newCluster(t *testing.T, wrap func(nodeca.Raft) nodeca.Raft) *testCluster {
	t.Helper()
	n, store := newRaft(t)
	auth, err := ca.NewAuthority(state.NewID(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := &testCluster{store: store, raft: n, auth: auth, pool: auth.Pool()}
	c.propose(t, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutCluster{
		PutCluster: nodeca.NewCluster(auth, certTTL, gossipKey),
	}})

	certPEM, keyPEM, err := auth.Issue(ca.Identity{NodeID: "m1", Role: ca.RoleManager, ClusterID: auth.ClusterID()}, certTTL, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.Bundle{CA: auth.CertPEM, Cert: certPEM, Key: keyPEM}.Keypair()
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.addr = lis.Addr().String()
	var r nodeca.Raft = n
	if wrap != nil {
		r = wrap(n)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(ca.ServerConfig(auth.Pool(), kp))))
	skiffpb.RegisterNodeCAServer(srv, nodeca.New(nodeca.Config{Store: store, Raft: r}))
	skiffpb.RegisterJoinServer(srv, identity.HelloServer{Managers: func() []string { return []string{c.addr} }})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	return c
}

func (c *testCluster) propose(t *testing.T, actions ...*skiffpb.StoreAction) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.raft.Propose(ctx, &skiffpb.Command{Actions: actions}); err != nil {
		t.Fatalf("propose: %v", err)
	}
}

func (c *testCluster) cluster() *skiffpb.Cluster {
	var cl *skiffpb.Cluster
	c.store.View(func(tx state.ReadTx) { cl = tx.Cluster() })
	return cl
}

func (c *testCluster) tokens(t *testing.T) (worker, manager string) {
	t.Helper()
	worker, manager, err := nodeca.Tokens(c.cluster())
	if err != nil {
		t.Fatal(err)
	}
	return worker, manager
}

func (c *testCluster) nodes() []*skiffpb.Node {
	var out []*skiffpb.Node
	c.store.View(func(tx state.ReadTx) { out = tx.Nodes() })
	return out
}

func (c *testCluster) nodeByName(name string) *skiffpb.Node {
	var n *skiffpb.Node
	c.store.View(func(tx state.ReadTx) { n = tx.NodeByName(name) })
	return n
}

// client is a NodeCA client presenting kp (nil: no certificate), that
// verifies the server as a manager of this cluster.
func (c *testCluster) client(t *testing.T, kp *ca.Keypair) skiffpb.NodeCAClient {
	t.Helper()
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientConfig(c.pool, kp, ca.RoleManager))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return skiffpb.NewNodeCAClient(conn)
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// issue asks for a first certificate with a new key, the way a joiner
// does, and returns the key and the answer.
func (c *testCluster) issue(t *testing.T, name string, role skiffpb.NodeRole, token string) ([]byte, *skiffpb.IssueCertificateResponse, error) {
	t.Helper()
	keyPEM, csr, err := ca.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.client(t, nil).IssueCertificate(ctxT(t), &skiffpb.IssueCertificateRequest{Token: token, Name: name, Role: role, Csr: csr})
	return keyPEM, resp, err
}

// keypair loads the credentials an answer gave the holder of keyPEM.
func keypair(t *testing.T, keyPEM []byte, resp *skiffpb.IssueCertificateResponse) *ca.Keypair {
	t.Helper()
	kp, err := ca.Bundle{CA: resp.GetCa(), Cert: resp.GetCert(), Key: keyPEM}.Keypair()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// wantCode checks a gRPC error's code and that its message holds each of
// the words.
func wantCode(t *testing.T, what string, err error, code codes.Code, words ...string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: %v, want %s", what, err, code)
	}
	for _, w := range words {
		if !strings.Contains(status.Convert(err).Message(), w) {
			t.Errorf("%s: message %q does not mention %q", what, status.Convert(err).Message(), w)
		}
	}
}

func TestIssueRecordsTheNodeAndSigns(t *testing.T) {
	c := newCluster(t, nil)
	worker, _ := c.tokens(t)
	keyPEM, resp, err := c.issue(t, "w1", skiffpb.NodeRole_NODE_ROLE_WORKER, worker)
	if err != nil {
		t.Fatal(err)
	}
	n := c.nodeByName("w1")
	if n == nil {
		t.Fatal("the node is not in the store")
	}
	if resp.GetNodeId() != n.GetId() || n.GetRole() != skiffpb.NodeRole_NODE_ROLE_WORKER ||
		!slices.Equal(n.GetCertified(), []skiffpb.NodeRole{skiffpb.NodeRole_NODE_ROLE_WORKER}) {
		t.Fatalf("answer for node %s; stored %v", resp.GetNodeId(), n)
	}
	if !bytes.Equal(resp.GetCa(), c.auth.CertPEM) || len(resp.GetGossipKeys()) != 1 || !bytes.Equal(resp.GetGossipKeys()[0], gossipKey) {
		t.Fatalf("answer carries CA %q and gossip keys %x", resp.GetCa(), resp.GetGossipKeys())
	}
	kp := keypair(t, keyPEM, resp) // fails unless the certificate is for keyPEM
	want := ca.Identity{NodeID: n.GetId(), Role: ca.RoleWorker, ClusterID: c.auth.ClusterID()}
	if got, err := c.auth.Verify(kp.Leaf(), time.Now()); err != nil || got != want {
		t.Fatalf("certificate identity %+v, %v; want %+v", got, err, want)
	}
	if life := kp.Leaf().NotAfter.Sub(time.Now()); life > certTTL || life < certTTL-time.Minute {
		t.Errorf("certificate valid for %v more, want the cluster's %v", life, certTTL)
	}
	if err := nodeca.Admitted(c.store, want); err != nil {
		t.Errorf("Admitted: %v", err)
	}
	if err := nodeca.Admitted(c.store, ca.Identity{NodeID: n.GetId(), Role: ca.RoleManager, ClusterID: c.auth.ClusterID()}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Admitted for a manager certificate the node never got: %v", err)
	}
}

func TestIssueRefusesBadTokens(t *testing.T) {
	c := newCluster(t, nil)
	worker, manager := c.tokens(t)
	other, err := ca.NewAuthority(state.NewID(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	wtok, err := ca.ParseToken(worker)
	if err != nil {
		t.Fatal(err)
	}
	const (
		W = skiffpb.NodeRole_NODE_ROLE_WORKER
		M = skiffpb.NodeRole_NODE_ROLE_MANAGER
	)
	for _, tc := range []struct {
		name  string
		role  skiffpb.NodeRole
		token string
		code  codes.Code
		words []string
	}{
		{"wrong secret", W, ca.Token{Digest: c.auth.Digest(), Secret: ca.NewSecret()}.String(), codes.PermissionDenied, []string{"skiff cluster join-token worker"}},
		{"manager token as worker", W, manager, codes.PermissionDenied, []string{"worker token is wrong"}},
		{"worker token as manager", M, worker, codes.PermissionDenied, []string{"skiff cluster join-token manager"}},
		{"another cluster's digest", W, ca.Token{Digest: other.Digest(), Secret: wtok.Secret}.String(), codes.PermissionDenied, []string{"another cluster"}},
		{"malformed", W, worker[:len(worker)-1], codes.InvalidArgument, []string{"malformed join token"}},
		{"empty", W, "", codes.InvalidArgument, nil},
		{"unknown role", skiffpb.NodeRole(7), worker, codes.InvalidArgument, []string{"role"}},
	} {
		_, _, err := c.issue(t, "n-"+strings.ReplaceAll(tc.name, " ", "-"), tc.role, tc.token)
		wantCode(t, tc.name, err, tc.code, tc.words...)
	}
	if _, _, err := c.issue(t, "", W, worker); status.Code(err) != codes.InvalidArgument {
		t.Errorf("no name: %v", err)
	}
	if n := c.nodes(); len(n) != 0 {
		t.Fatalf("refused joins left %d nodes in the store: %v", len(n), n)
	}

	// Rotating the worker secret through Raft retires the old token.
	cl := proto.Clone(c.cluster()).(*skiffpb.Cluster)
	cl.WorkerTokenSecret = ca.NewSecret()
	c.propose(t, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutCluster{PutCluster: cl}})
	_, _, err = c.issue(t, "w1", W, worker)
	wantCode(t, "rotated", err, codes.PermissionDenied, "rotated")
	if n := c.nodes(); len(n) != 0 {
		t.Fatalf("a rotated token added %d nodes", len(n))
	}
	newWorker, newManager := c.tokens(t)
	if newWorker == worker || newManager != manager {
		t.Fatal("rotating the worker secret did not change exactly the worker token")
	}
	if _, _, err := c.issue(t, "w1", W, newWorker); err != nil {
		t.Fatalf("the new token: %v", err)
	}
}

// A request the CA cannot sign is refused before the node is recorded, so
// that the joiner can fix it and join again under the same name.
func TestIssueRefusesABadRequestWithoutRecording(t *testing.T) {
	c := newCluster(t, nil)
	worker, _ := c.tokens(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaCSR, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, csr := range map[string][]byte{"garbage": []byte("not a request"), "none": nil, "RSA key": rsaCSR} {
		_, err := c.client(t, nil).IssueCertificate(ctxT(t), &skiffpb.IssueCertificateRequest{
			Token: worker, Name: "w1", Role: skiffpb.NodeRole_NODE_ROLE_WORKER, Csr: csr,
		})
		wantCode(t, name, err, codes.InvalidArgument)
		if n := c.nodes(); len(n) != 0 {
			t.Fatalf("%s: a refused request left the node in the store: %v", name, n)
		}
	}
	// A lifetime the CA will not sign is refused the same way.
	cl := proto.Clone(c.cluster()).(*skiffpb.Cluster)
	cl.CertExpiry = int64(time.Second)
	c.propose(t, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutCluster{PutCluster: cl}})
	_, _, err = c.issue(t, "w1", skiffpb.NodeRole_NODE_ROLE_WORKER, worker)
	wantCode(t, "lifetime below the minimum", err, codes.InvalidArgument, "minimum")
	if n := c.nodes(); len(n) != 0 {
		t.Fatalf("a refused lifetime left the node in the store: %v", n)
	}
	cl = proto.Clone(c.cluster()).(*skiffpb.Cluster)
	cl.CertExpiry = int64(certTTL)
	c.propose(t, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutCluster{PutCluster: cl}})

	if _, _, err := c.issue(t, "w1", skiffpb.NodeRole_NODE_ROLE_WORKER, worker); err != nil {
		t.Fatalf("a good request after the bad ones: %v", err)
	}
}

func TestIssueBindsANameOncePerRole(t *testing.T) {
	c := newCluster(t, nil)
	worker, manager := c.tokens(t)
	_, first, err := c.issue(t, "host1", skiffpb.NodeRole_NODE_ROLE_WORKER, worker)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.issue(t, "host1", skiffpb.NodeRole_NODE_ROLE_WORKER, worker)
	wantCode(t, "second worker join", err, codes.AlreadyExists, "skiff node rm host1", first.GetNodeId())
	if n := c.nodes(); len(n) != 1 || !slices.Equal(n[0].GetCertified(), []skiffpb.NodeRole{skiffpb.NodeRole_NODE_ROLE_WORKER}) {
		t.Fatalf("after a refused second join: %v", n)
	}

	// The manager on the same host joins under the same name: same node,
	// now certified for both roles, and a manager.
	mkey, mresp, err := c.issue(t, "host1", skiffpb.NodeRole_NODE_ROLE_MANAGER, manager)
	if err != nil {
		t.Fatalf("manager join under a worker's name: %v", err)
	}
	if mresp.GetNodeId() != first.GetNodeId() {
		t.Fatalf("manager join got node %s, the worker has %s", mresp.GetNodeId(), first.GetNodeId())
	}
	if id := keypair(t, mkey, mresp).Identity(); id.Role != ca.RoleManager || id.NodeID != first.GetNodeId() {
		t.Fatalf("manager certificate for %+v", id)
	}
	n := c.nodeByName("host1")
	if len(c.nodes()) != 1 || n.GetRole() != skiffpb.NodeRole_NODE_ROLE_MANAGER ||
		!slices.Equal(n.GetCertified(), []skiffpb.NodeRole{skiffpb.NodeRole_NODE_ROLE_WORKER, skiffpb.NodeRole_NODE_ROLE_MANAGER}) {
		t.Fatalf("after the manager join: %v", c.nodes())
	}
	_, _, err = c.issue(t, "host1", skiffpb.NodeRole_NODE_ROLE_MANAGER, manager)
	wantCode(t, "second manager join", err, codes.AlreadyExists, "skiff node rm")

	// node rm frees the name.
	c.propose(t, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_DeleteNode{DeleteNode: first.GetNodeId()}})
	_, again, err := c.issue(t, "host1", skiffpb.NodeRole_NODE_ROLE_WORKER, worker)
	if err != nil {
		t.Fatalf("join after node rm: %v", err)
	}
	if again.GetNodeId() == first.GetNodeId() {
		t.Fatal("a removed node's ID was given out again")
	}
}

// racingRaft creates a node of the same name just before the first node
// write it forwards, as a concurrent join would.
type racingRaft struct {
	nodeca.Raft
	once sync.Once
	name string
	err  error
}

func (r *racingRaft) Propose(ctx context.Context, cmd *skiffpb.Command) (uint64, error) {
	r.once.Do(func() {
		_, r.err = r.Raft.Propose(ctx, &skiffpb.Command{Actions: []*skiffpb.StoreAction{{Action: &skiffpb.StoreAction_PutNode{PutNode: &skiffpb.Node{
			Id: state.NewID(), Name: r.name, Certified: []skiffpb.NodeRole{skiffpb.NodeRole_NODE_ROLE_WORKER},
		}}}}})
	})
	return r.Raft.Propose(ctx, cmd)
}

func TestIssueLosingARaceForANameIsAlreadyExists(t *testing.T) {
	rr := &racingRaft{name: "w1"}
	c := newCluster(t, func(r nodeca.Raft) nodeca.Raft { rr.Raft = r; return rr })
	worker, _ := c.tokens(t)
	_, _, err := c.issue(t, "w1", skiffpb.NodeRole_NODE_ROLE_WORKER, worker)
	if rr.err != nil {
		t.Fatalf("the racing write: %v", rr.err)
	}
	wantCode(t, "join that lost the race", err, codes.AlreadyExists, "skiff node rm w1")
	if n := c.nodes(); len(n) != 1 {
		t.Fatalf("%d nodes, want the winner's only", len(n))
	}
}

func TestIssueBeforeTheClusterExists(t *testing.T) {
	_, store := newRaft(t)
	s := nodeca.New(nodeca.Config{Store: store})
	a, err := ca.NewAuthority("c", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, csr, err := ca.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.IssueCertificate(context.Background(), &skiffpb.IssueCertificateRequest{
		Token: ca.Token{Digest: a.Digest(), Secret: ca.NewSecret()}.String(), Name: "w1", Csr: csr,
	})
	// Unavailable, not a refusal: the joiner tries again.
	wantCode(t, "no cluster yet", err, codes.Unavailable)
}

func TestRenew(t *testing.T) {
	c := newCluster(t, nil)
	worker, manager := c.tokens(t)
	for _, tc := range []struct {
		name  string
		role  skiffpb.NodeRole
		token string
	}{
		{"w1", skiffpb.NodeRole_NODE_ROLE_WORKER, worker},
		{"m2", skiffpb.NodeRole_NODE_ROLE_MANAGER, manager},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keyPEM, resp, err := c.issue(t, tc.name, tc.role, tc.token)
			if err != nil {
				t.Fatal(err)
			}
			kp := keypair(t, keyPEM, resp)
			want := kp.Identity()
			csr, err := ca.CSRFor(keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			cl := c.client(t, kp)
			renewed, err := cl.RenewCertificate(ctxT(t), &skiffpb.RenewCertificateRequest{Csr: csr})
			if err != nil {
				t.Fatalf("renew: %v", err)
			}
			cert, err := ca.ParseCert(renewed.GetCert())
			if err != nil {
				t.Fatal(err)
			}
			if cert.SerialNumber.Cmp(kp.Leaf().SerialNumber) == 0 {
				t.Fatal("renewal returned the same certificate")
			}
			if got, err := c.auth.Verify(cert, time.Now()); err != nil || got != want {
				t.Fatalf("renewed certificate for %+v, %v; want %+v", got, err, want)
			}
			if renewed.GetNodeId() != want.NodeID || !bytes.Equal(renewed.GetCa(), c.auth.CertPEM) {
				t.Fatalf("renewal answer: node %s, CA %q", renewed.GetNodeId(), renewed.GetCa())
			}
			// The renewed certificate is for the same key, and renews in turn.
			if err := kp.Set(ca.WithCA(renewed.GetCert(), renewed.GetCa()), keyPEM); err != nil {
				t.Fatal(err)
			}
			if _, err := c.client(t, kp).RenewCertificate(ctxT(t), &skiffpb.RenewCertificateRequest{Csr: csr}); err != nil {
				t.Fatalf("renew with the renewed certificate: %v", err)
			}

			// Another identity's request is signed for the caller's identity,
			// never for the key's owner.
			_, otherCSR, err := ca.NewKey()
			if err != nil {
				t.Fatal(err)
			}
			r2, err := cl.RenewCertificate(ctxT(t), &skiffpb.RenewCertificateRequest{Csr: otherCSR})
			if err != nil {
				t.Fatal(err)
			}
			c2, err := ca.ParseCert(r2.GetCert())
			if err != nil {
				t.Fatal(err)
			}
			if got, err := c.auth.Verify(c2, time.Now()); err != nil || got != want {
				t.Fatalf("renewal of a new key: %+v, %v; want %+v", got, err, want)
			}

			_, err = c.client(t, nil).RenewCertificate(ctxT(t), &skiffpb.RenewCertificateRequest{Csr: csr})
			wantCode(t, "renew without a certificate", err, codes.Unauthenticated)

			// node rm revokes.
			c.propose(t, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_DeleteNode{DeleteNode: want.NodeID}})
			_, err = c.client(t, kp).RenewCertificate(ctxT(t), &skiffpb.RenewCertificateRequest{Csr: csr})
			wantCode(t, "renew after node rm", err, codes.PermissionDenied, "removed", want.NodeID)
		})
	}
}

func TestRenewRefusesAdminsAndBadRequests(t *testing.T) {
	c := newCluster(t, nil)
	certPEM, keyPEM, err := c.auth.Issue(ca.Identity{NodeID: "admin", Role: ca.RoleAdmin, ClusterID: c.auth.ClusterID()}, certTTL, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	admin, err := ca.Bundle{CA: c.auth.CertPEM, Cert: certPEM, Key: keyPEM}.Keypair()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ca.CSRFor(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.client(t, admin).RenewCertificate(ctxT(t), &skiffpb.RenewCertificateRequest{Csr: csr})
	wantCode(t, "admin renew", err, codes.PermissionDenied, "admin")

	worker, _ := c.tokens(t)
	wkey, resp, err := c.issue(t, "w1", skiffpb.NodeRole_NODE_ROLE_WORKER, worker)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.client(t, keypair(t, wkey, resp)).RenewCertificate(ctxT(t), &skiffpb.RenewCertificateRequest{Csr: []byte("junk")})
	wantCode(t, "renew of junk", err, codes.InvalidArgument)
}

func TestNewClusterAndTokens(t *testing.T) {
	a, err := ca.NewAuthority("cluster-9", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c1 := nodeca.NewCluster(a, certTTL, gossipKey)
	c2 := nodeca.NewCluster(a, certTTL, gossipKey)
	if c1.GetId() != "cluster-9" || c1.GetCertExpiry() != int64(certTTL) || !bytes.Equal(c1.GetCaKey(), a.KeyPEM()) {
		t.Fatalf("cluster %v", c1)
	}
	if c1.GetWorkerTokenSecret() == c1.GetManagerTokenSecret() || c1.GetWorkerTokenSecret() == c2.GetWorkerTokenSecret() {
		t.Fatal("token secrets repeat")
	}
	w, m, err := nodeca.Tokens(c1)
	if err != nil {
		t.Fatal(err)
	}
	for tok, secret := range map[string]string{w: c1.GetWorkerTokenSecret(), m: c1.GetManagerTokenSecret()} {
		p, err := ca.ParseToken(tok)
		if err != nil || p.Digest != a.Digest() || !p.SecretMatches(secret) {
			t.Fatalf("token %q: %+v, %v", tok, p, err)
		}
	}
	if _, _, err := nodeca.Tokens(&skiffpb.Cluster{}); err == nil {
		t.Fatal("tokens of a cluster without a CA")
	}
}

// TestIssueAgainWithTheSameKey: a joiner whose answer was lost asks again
// with the same key and gets its certificate under the same node ID;
// another key under the name is refused.
func TestIssueAgainWithTheSameKey(t *testing.T) {
	c := newCluster(t, nil)
	worker, _ := c.tokens(t)
	_, csr, err := ca.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	req := &skiffpb.IssueCertificateRequest{Token: worker, Name: "h1", Role: skiffpb.NodeRole_NODE_ROLE_WORKER, Csr: csr}
	first, err := c.client(t, nil).IssueCertificate(ctxT(t), req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.client(t, nil).IssueCertificate(ctxT(t), req)
	if err != nil {
		t.Fatalf("the same key again: %v", err)
	}
	if again.GetNodeId() != first.GetNodeId() {
		t.Fatalf("the same key got node %s, then %s", first.GetNodeId(), again.GetNodeId())
	}
	if n := c.nodeByName("h1"); len(n.GetCertified()) != 1 {
		t.Fatalf("certified %v after a retry, want one entry", n.GetCertified())
	}
	_, _, err = c.issue(t, "h1", skiffpb.NodeRole_NODE_ROLE_WORKER, worker)
	wantCode(t, "another key under the name", err, codes.AlreadyExists, "skiff node rm")
}
