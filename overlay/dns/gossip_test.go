package dns_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/skiffhq/skiff/gossip"
	"github.com/skiffhq/skiff/overlay"
	skiffdns "github.com/skiffhq/skiff/overlay/dns"
	"github.com/skiffhq/skiff/overlay/endpoints"
)

// agent is the part of an agent this test needs: an endpoint table on a
// real gossip pool.
type agent struct {
	table *endpoints.Table
	pool  *gossip.Pool
}

func startAgent(t *testing.T, name string, join ...string) agent {
	t.Helper()
	tbl, err := endpoints.New(endpoints.Config{Node: name})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pool, err := gossip.Start(ctx, gossip.Config{
		Meta:     gossip.Meta{Name: name, Role: gossip.RoleAgent, Addr: "127.0.0.1"},
		BindAddr: "127.0.0.1",
		Join:     join,
		Delegate: tbl.Delegate(),
		OnEvent:  tbl.HandleEvent,
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	tbl.SetNumNodes(pool.Memberlist().NumMembers)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tbl.Run(ctx)
	}()
	t.Cleanup(func() {
		_ = pool.Shutdown(time.Second)
		cancel()
		<-done
	})
	return agent{tbl, pool}
}

func TestNamesSpreadByGossipResolveOnAnotherHost(t *testing.T) {
	h1 := startAgent(t, "h1")
	h2 := startAgent(t, "h2", h1.pool.Memberlist().LocalNode().Address())
	s := startServer(t, net1, h2.table) // h2's DNS, no upstreams

	web := overlay.Endpoint{
		NetworkID: net1, VNI: 4096, IP: netip.MustParseAddr("10.0.0.2"), VTEP: netip.MustParseAddr("198.18.0.1"),
		TaskID: "t1", Service: "app_web", Stack: "app", ShortName: "web",
	}
	if err := h1.table.Publish(web); err != nil {
		t.Fatal(err)
	}
	eventually(t, "h2's DNS to answer app_web", func() bool {
		return slices.Equal(addrsOf(ask(t, s.Addr(), stranger, "udp", "app_web.", dns.TypeA)), []string{"10.0.0.2"})
	})

	h1.table.Withdraw(net1, web.IP)
	eventually(t, "h2's DNS to forget app_web", func() bool {
		return ask(t, s.Addr(), stranger, "udp", "app_web.", dns.TypeA).Rcode == dns.RcodeRefused
	})
}

func TestOneServerPerNetwork(t *testing.T) {
	tbl := fixture(t)
	var servers []*skiffdns.Server
	// Each network's server on its own host address, as on a real host.
	for i, network := range []string{net1, "net2"} {
		s, err := skiffdns.Start(context.Background(), skiffdns.Config{
			Addr:      netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(201 + i)}), 0),
			NetworkID: network,
			Resolver:  skiffdns.NewResolver(tbl),
		})
		if err != nil {
			t.Fatal(err)
		}
		servers = append(servers, s)
	}
	if got := addrsOf(ask(t, servers[1].Addr(), stranger, "udp", "app_web.", dns.TypeA)); !slices.Equal(got, []string{"127.0.0.31"}) {
		t.Fatalf("net2's server: %v", got)
	}
	// Shutting one down leaves the other serving.
	if err := servers[1].Close(); err != nil {
		t.Fatal(err)
	}
	if got := addrsOf(ask(t, servers[0].Addr(), web1, "tcp", "web.", dns.TypeA)); !slices.Equal(got, []string{web1, web2}) {
		t.Fatalf("net1's server after net2's closed: %v", got)
	}
	if err := servers[0].Close(); err != nil {
		t.Fatal(err)
	}
}
