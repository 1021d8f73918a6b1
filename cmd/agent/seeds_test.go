package main

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/skiffhq/skiff/agent"
	"github.com/skiffhq/skiff/ca"
	"github.com/skiffhq/skiff/identity"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// fixedDiscovery is a gossip pool's Discovery that names the managers it
// is given.
type fixedDiscovery struct {
	agent.Discovery
	addrs []string
}

func (d *fixedDiscovery) ManagerAPIAddrs() []string { return d.addrs }

// TestSeedDiscovery: while the pool names no manager (its gossip key was
// rotated away while the node was down), the managers come from the first
// seed that answers over TLS with the cluster's CA; a seed of another
// cluster is not believed; and the pool's answer, once it has one, wins.
func TestSeedDiscovery(t *testing.T) {
	auth, err := ca.NewAuthority("c1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := auth.Issue(ca.Identity{NodeID: "n1", Role: ca.RoleWorker, ClusterID: "c1"}, time.Hour, time.Now())
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
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(ca.ServerConfig(auth.Pool(), kp))))
	skiffpb.RegisterJoinServer(srv, identity.HelloServer{Managers: func() []string { return []string{"10.0.0.1:4242"} }})
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	// The first seed is gone: the next one is asked.
	seeds := []string{"127.0.0.1:1", lis.Addr().String()}
	pool := &fixedDiscovery{}
	d := &seedDiscovery{Discovery: pool, ctx: context.Background(), seeds: seeds, digest: auth.Digest(), logger: slog.New(slog.DiscardHandler)}
	if got := d.ManagerAPIAddrs(); !slices.Equal(got, []string{"10.0.0.1:4242"}) {
		t.Errorf("with a pool that knows no one, the managers are %q, want the seed's answer", got)
	}
	pool.addrs = []string{"10.0.0.2:4242"}
	if got := d.ManagerAPIAddrs(); !slices.Equal(got, pool.addrs) {
		t.Errorf("with a pool that knows the managers, they are %q, want the pool's %q", got, pool.addrs)
	}

	other, err := ca.NewAuthority("c2", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	stranger := &seedDiscovery{Discovery: &fixedDiscovery{}, ctx: context.Background(), seeds: seeds, digest: other.Digest(), logger: slog.New(slog.DiscardHandler)}
	if got := stranger.ManagerAPIAddrs(); len(got) != 0 {
		t.Errorf("a seed of another cluster was believed: managers %q", got)
	}
}
