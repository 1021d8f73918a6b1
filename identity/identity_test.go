package identity_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
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
// credentials serving NodeCA and Join. In production Hello is served on
// the gossip port; here one listener serves both.
type testCluster struct {
	store *state.Store
	raft  *raftnode.Node
	auth  *ca.Authority
	addr  string
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

func newCluster(t *testing.T) *testCluster {
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

	auth, err := ca.NewAuthority(state.NewID(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := &testCluster{store: store, raft: n, auth: auth}
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
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(ca.ServerConfig(auth.Pool(), kp))))
	skiffpb.RegisterNodeCAServer(srv, nodeca.New(nodeca.Config{Store: store, Raft: n}))
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

// request is a join of name in role through the cluster's one member, into
// a new data dir.
func (c *testCluster) request(t *testing.T, name string, role skiffpb.NodeRole, token string) identity.Request {
	t.Helper()
	return identity.Request{
		Addrs: []string{c.addr}, Token: token, Name: name, Role: role,
		DataDir: filepath.Join(t.TempDir(), "data"),
	}
}

// certIdentity is who the bundle's certificate says its holder is, checked
// against the cluster's CA.
func (c *testCluster) certIdentity(t *testing.T, b ca.Bundle) ca.Identity {
	t.Helper()
	cert, err := ca.ParseCert(b.Cert)
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.auth.Verify(cert, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ca.IdentityOf(cert); err != nil || got != id {
		t.Fatalf("IdentityOf = %+v, %v", got, err)
	}
	return id
}

// refused runs a join that the cluster must refuse: it fails with an
// error that holds each of words, before ctx's long deadline (a refusal
// is not retried), and adds no node and writes no credentials.
func (c *testCluster) refused(t *testing.T, what string, r identity.Request, words ...string) {
	t.Helper()
	before := c.nodes()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	j, err := identity.Join(ctx, r)
	if err == nil {
		t.Fatalf("%s: joined as node %s", what, j.NodeID)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s: Join retried until the deadline instead of giving up: %v", what, err)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: error %q does not mention %q", what, err, w)
		}
	}
	if after := c.nodes(); !slices.EqualFunc(before, after, func(a, b *skiffpb.Node) bool { return proto.Equal(a, b) }) {
		t.Errorf("%s: the store's nodes changed from %v to %v", what, before, after)
	}
	if ca.Exists(identity.Dir(r.DataDir)) {
		t.Errorf("%s: credentials written to %s", what, identity.Dir(r.DataDir))
	}
}

func TestJoinWorker(t *testing.T) {
	c := newCluster(t)
	worker, _ := c.tokens(t)
	r := c.request(t, "w1", skiffpb.NodeRole_NODE_ROLE_WORKER, worker)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	j, err := identity.Join(ctx, r)
	if err != nil {
		t.Fatalf("Join: %v", err)
	}

	n := c.nodeByName("w1")
	if n == nil {
		t.Fatal("the node is not in the store")
	}
	if n.GetRole() != skiffpb.NodeRole_NODE_ROLE_WORKER || !slices.Equal(n.GetCertified(), []skiffpb.NodeRole{skiffpb.NodeRole_NODE_ROLE_WORKER}) {
		t.Fatalf("stored node %v", n)
	}
	want := ca.Identity{NodeID: n.GetId(), Role: ca.RoleWorker, ClusterID: c.auth.ClusterID()}
	if id := c.certIdentity(t, j.Bundle); id != want || j.NodeID != n.GetId() {
		t.Fatalf("certificate for %+v, Joined.NodeID %s; want %+v", id, j.NodeID, want)
	}
	if !bytes.Equal(j.Bundle.CA, c.auth.CertPEM) {
		t.Fatal("the bundle's CA is not the cluster's")
	}
	if kp, err := j.Bundle.Keypair(); err != nil || kp.Identity() != want {
		t.Fatalf("the certificate is not for the bundle's key: %v", err)
	}
	if len(j.GossipKeys) != 1 || !bytes.Equal(j.GossipKeys[0], gossipKey) {
		t.Fatalf("gossip keys %x", j.GossipKeys)
	}

	dir := identity.Dir(r.DataDir)
	for _, f := range []string{ca.CAFile, ca.CertFile, ca.KeyFile, "gossip.keys"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 4 {
		t.Errorf("%s holds %d files, want 4 (no temporary files left)", dir, len(ents))
	}
	back, err := identity.Load(r.DataDir, time.Now())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if back.NodeID != j.NodeID || !bytes.Equal(back.Bundle.CA, j.Bundle.CA) || !bytes.Equal(back.Bundle.Cert, j.Bundle.Cert) ||
		!bytes.Equal(back.Bundle.Key, j.Bundle.Key) || !slices.EqualFunc(back.GossipKeys, j.GossipKeys, bytes.Equal) {
		t.Fatalf("Load = %+v, Join returned %+v", back, j)
	}
	if _, err := identity.Load(r.DataDir, time.Now().Add(2*certTTL)); err == nil || !strings.Contains(err.Error(), "join again") {
		t.Fatalf("Load after the certificate expired: %v", err)
	}
}

func TestLoadWithoutCredentials(t *testing.T) {
	if _, err := identity.Load(t.TempDir(), time.Now()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load of an empty data dir: %v, want fs.ErrNotExist", err)
	}
}

func TestSaveAndLoadKeyring(t *testing.T) {
	a, err := ca.NewAuthority("c1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := a.Issue(ca.Identity{NodeID: "n1", Role: ca.RoleWorker, ClusterID: "c1"}, certTTL, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	keys := [][]byte{bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), {0, '\n', 255}}
	if err := identity.Save(dataDir, identity.Joined{Bundle: ca.Bundle{CA: a.CertPEM, Cert: certPEM, Key: keyPEM}, NodeID: "n1", GossipKeys: keys}); err != nil {
		t.Fatal(err)
	}
	j, err := identity.Load(dataDir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if j.NodeID != "n1" || !slices.EqualFunc(j.GossipKeys, keys, bytes.Equal) {
		t.Fatalf("Load = node %s, keys %x; want n1, %x", j.NodeID, j.GossipKeys, keys)
	}
	// A rotation replaces the keyring alone; the certificate stays.
	rotated := [][]byte{bytes.Repeat([]byte{3}, 32)}
	if err := identity.SaveKeys(dataDir, rotated); err != nil {
		t.Fatal(err)
	}
	if j, err = identity.Load(dataDir, time.Now()); err != nil || j.NodeID != "n1" || !slices.EqualFunc(j.GossipKeys, rotated, bytes.Equal) {
		t.Fatalf("Load after SaveKeys = node %s, keys %x, %v; want n1, %x", j.NodeID, j.GossipKeys, err, rotated)
	}
	if err := os.Remove(filepath.Join(identity.Dir(dataDir), "gossip.keys")); err != nil {
		t.Fatal(err)
	}
	if _, err := identity.Load(dataDir, time.Now()); err == nil {
		t.Fatal("Load without the gossip keys")
	}
}

func TestJoinRefusals(t *testing.T) {
	c := newCluster(t)
	worker, manager := c.tokens(t)
	const (
		W = skiffpb.NodeRole_NODE_ROLE_WORKER
		M = skiffpb.NodeRole_NODE_ROLE_MANAGER
	)
	wrong := ca.Token{Digest: c.auth.Digest(), Secret: ca.NewSecret()}.String()
	c.refused(t, "wrong token", c.request(t, "w1", W, wrong), "refused", "skiff cluster join-token worker")
	c.refused(t, "manager token as worker", c.request(t, "w1", W, manager), "refused", "worker token is wrong")
	c.refused(t, "worker token as manager", c.request(t, "m2", M, worker), "refused", "skiff cluster join-token manager")
	c.refused(t, "malformed token", c.request(t, "w1", W, worker[:len(worker)-3]), "malformed join token")
	c.refused(t, "not a token", c.request(t, "w1", W, "hello"), "malformed join token")
	c.refused(t, "no name", c.request(t, "", W, worker), "refused", "--name")
	if n := c.nodes(); len(n) != 0 {
		t.Fatalf("refused joins left nodes: %v", n)
	}

	// Rotate the worker token through Raft: the old one is refused, the
	// new one admits.
	cl := proto.Clone(c.cluster()).(*skiffpb.Cluster)
	cl.WorkerTokenSecret = ca.NewSecret()
	c.propose(t, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutCluster{PutCluster: cl}})
	c.refused(t, "rotated token", c.request(t, "w1", W, worker), "refused", "rotated")
	newWorker, _ := c.tokens(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := identity.Join(ctx, c.request(t, "w1", W, newWorker)); err != nil {
		t.Fatalf("Join with the new token: %v", err)
	}
}

// recorder keeps the log records of a join.
type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	s := rec.Message
	rec.Attrs(func(a slog.Attr) bool { s += " " + a.String(); return true })
	r.mu.Lock()
	r.msgs = append(r.msgs, s)
	r.mu.Unlock()
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

// A token of another cluster pins another CA: the joiner does not trust
// the member, says nothing to it beyond the handshake, and gives up only
// when its context ends, as it would for a member not yet reachable.
func TestJoinWithAnotherClustersToken(t *testing.T) {
	c := newCluster(t)
	worker, _ := c.tokens(t)
	tok, err := ca.ParseToken(worker)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.NewAuthority(state.NewID(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// The right secret, even: the digest alone decides.
	r := c.request(t, "w1", skiffpb.NodeRole_NODE_ROLE_WORKER, ca.Token{Digest: other.Digest(), Secret: tok.Secret}.String())
	rec := &recorder{}
	r.Logger = slog.New(rec)
	const timeout = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	j, err := identity.Join(ctx, r)
	if err == nil {
		t.Fatalf("joined a cluster the token does not belong to, as node %s", j.NodeID)
	}
	if ctx.Err() == nil || time.Since(start) < timeout {
		t.Fatalf("Join gave up after %v, before its deadline: %v", time.Since(start), err)
	}
	if !strings.Contains(err.Error(), "no member answered") {
		t.Errorf("error %q", err)
	}
	rec.mu.Lock()
	msgs := strings.Join(rec.msgs, "\n")
	rec.mu.Unlock()
	if !strings.Contains(msgs, "does not match the join token") {
		t.Errorf("no attempt failed on the CA pin; the attempts logged:\n%s", msgs)
	}
	if n := c.nodes(); len(n) != 0 {
		t.Fatalf("nodes added: %v", n)
	}
	if ca.Exists(identity.Dir(r.DataDir)) {
		t.Fatal("credentials written")
	}
}

func TestJoinTwiceAndAsManager(t *testing.T) {
	c := newCluster(t)
	worker, manager := c.tokens(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first, err := identity.Join(ctx, c.request(t, "host1", skiffpb.NodeRole_NODE_ROLE_WORKER, worker))
	if err != nil {
		t.Fatal(err)
	}
	c.refused(t, "second worker join", c.request(t, "host1", skiffpb.NodeRole_NODE_ROLE_WORKER, worker),
		"refused", "already joined", "skiff node rm host1")

	// The manager on the same host joins under the name: same node ID, a
	// manager certificate, and the node is certified for both roles.
	mr := c.request(t, "host1", skiffpb.NodeRole_NODE_ROLE_MANAGER, manager)
	m, err := identity.Join(ctx, mr)
	if err != nil {
		t.Fatalf("manager join under a worker's name: %v", err)
	}
	if m.NodeID != first.NodeID {
		t.Fatalf("manager join got node %s, the worker has %s", m.NodeID, first.NodeID)
	}
	want := ca.Identity{NodeID: first.NodeID, Role: ca.RoleManager, ClusterID: c.auth.ClusterID()}
	if id := c.certIdentity(t, m.Bundle); id != want {
		t.Fatalf("manager certificate for %+v, want %+v", id, want)
	}
	n := c.nodeByName("host1")
	if len(c.nodes()) != 1 || n.GetId() != first.NodeID || n.GetRole() != skiffpb.NodeRole_NODE_ROLE_MANAGER ||
		!slices.Equal(n.GetCertified(), []skiffpb.NodeRole{skiffpb.NodeRole_NODE_ROLE_WORKER, skiffpb.NodeRole_NODE_ROLE_MANAGER}) {
		t.Fatalf("nodes after the manager join: %v", c.nodes())
	}
	if back, err := identity.Load(mr.DataDir, time.Now()); err != nil || back.NodeID != first.NodeID {
		t.Fatalf("Load of the manager's credentials: %+v, %v", back, err)
	}
	c.refused(t, "second manager join", c.request(t, "host1", skiffpb.NodeRole_NODE_ROLE_MANAGER, manager),
		"refused", "skiff node rm host1")
}

// An address that answers nothing is tried again until a member answers or
// the context ends; an address that answers is used.
func TestJoinTriesTheOtherMembers(t *testing.T) {
	c := newCluster(t)
	worker, _ := c.tokens(t)
	r := c.request(t, "w1", skiffpb.NodeRole_NODE_ROLE_WORKER, worker)
	r.Addrs = []string{freeAddr(t), c.addr}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	j, err := identity.Join(ctx, r)
	if err != nil {
		t.Fatalf("Join past a dead address: %v", err)
	}
	if j.NodeID != c.nodeByName("w1").GetId() {
		t.Fatal("joined as another node than the stored one")
	}

	if _, err := identity.Join(ctx, identity.Request{Token: worker, Name: "w2", DataDir: t.TempDir()}); err == nil {
		t.Fatal("Join without an address")
	}
}

// TestRenewerRenewsInPlace: once two thirds of the certificate's life has
// passed, the Renewer gets a new certificate for the same identity, swaps
// it into the Keypair and writes it to disk.
func TestRenewerRenewsInPlace(t *testing.T) {
	c := newCluster(t)
	worker, _ := c.tokens(t)
	r := c.request(t, "w1", skiffpb.NodeRole_NODE_ROLE_WORKER, worker)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	j, err := identity.Join(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := j.Bundle.Keypair()
	if err != nil {
		t.Fatal(err)
	}
	pool, err := j.Bundle.Pool()
	if err != nil {
		t.Fatal(err)
	}
	first := kp.Leaf()
	renewed := make(chan time.Time, 1)
	rn := &identity.Renewer{
		DataDir: r.DataDir, Pool: pool, Keypair: kp,
		Managers: func() []string { return []string{c.addr} },
		// The clock says the certificate is nearly spent, so renewal is due.
		Now:     func() time.Time { return first.NotAfter.Add(-time.Minute) },
		Renewed: func(notAfter time.Time) { renewed <- notAfter },
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rn.Run(runCtx) }()
	defer func() { stop(); <-done }()
	select {
	case <-renewed:
	case <-time.After(20 * time.Second):
		t.Fatal("no renewal within 20 s of its being due")
	}
	now := kp.Leaf()
	if now.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("the Keypair still holds the first certificate")
	}
	if got, want := c.certIdentity(t, ca.Bundle{CA: j.Bundle.CA, Cert: pemOf(now)}), kp.Identity(); got != want {
		t.Fatalf("renewed identity %+v, want %+v", got, want)
	}
	onDisk, err := identity.Load(r.DataDir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if disk, _ := ca.ParseCert(onDisk.Bundle.Cert); disk.SerialNumber.Cmp(now.SerialNumber) != 0 {
		t.Fatal("the renewed certificate was not written to the data dir")
	}
}

func pemOf(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
