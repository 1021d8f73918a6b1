package endpoints

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/skiffhq/skiff/gossip"
)

// host is one agent in a test pool: a table carried by a real memberlist
// pool on loopback.
type host struct {
	name  string
	table *Table
	pool  *gossip.Pool
	addr  string // gossip host:port, for others to join
	port  int
	// stop leaves the pool gracefully; crash stops answering without
	// leaving, so the failure detector has to notice. Either ends the host.
	stop, crash func()
}

// startHost starts an agent named name on port (0 picks one), joining the
// given addresses.
func startHost(t *testing.T, name string, port int, join []string, cfg Config) *host {
	t.Helper()
	cfg.Node = name
	tbl, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pool, err := gossip.Start(ctx, gossip.Config{
		Meta:     gossip.Meta{Name: name, Role: gossip.RoleAgent, Addr: "127.0.0.1"},
		BindAddr: "127.0.0.1",
		Port:     port,
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
	var once sync.Once
	h := &host{
		name: name, table: tbl, pool: pool,
		addr: pool.Memberlist().LocalNode().Address(),
		port: int(pool.Memberlist().LocalNode().Port),
	}
	end := func(graceful bool) {
		once.Do(func() {
			var err error
			if graceful {
				err = pool.Shutdown(time.Second)
			} else {
				err = pool.Memberlist().Shutdown()
			}
			if err != nil {
				t.Logf("%s: gossip shutdown: %v", name, err)
			}
			cancel()
			<-done
		})
	}
	h.stop = func() { end(true) }
	h.crash = func() { end(false) }
	t.Cleanup(h.stop)
	return h
}

// startPool starts n agents h1…hn, each joining h1.
func startPool(t *testing.T, n int) []*host {
	t.Helper()
	hosts := []*host{startHost(t, "h1", 0, nil, Config{})}
	for i := 2; i <= n; i++ {
		hosts = append(hosts, startHost(t, "h"+string(rune('0'+i)), 0, []string{hosts[0].addr}, Config{}))
	}
	for _, h := range hosts {
		eventually(t, h.name+" to see the whole pool", func() bool { return h.pool.Memberlist().NumMembers() == n })
	}
	return hosts
}

func waitIPs(t *testing.T, h *host, want ...string) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s to hold %v", h.name, want), func() bool { return slices.Equal(ips(h.table, testNet), want) })
}

func TestGossipSpreadsPublishAndWithdraw(t *testing.T) {
	hosts := startPool(t, 3)
	a, b, c := hosts[0], hosts[1], hosts[2]

	if err := a.table.Publish(ep("10.0.0.2", "", "web")); err != nil {
		t.Fatal(err)
	}
	if err := b.table.Publish(ep("10.0.0.3", "", "db")); err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		waitIPs(t, h, "10.0.0.2", "10.0.0.3")
	}
	got := c.table.Endpoints(testNet)
	if got[0].Node != "h1" || got[1].Node != "h2" {
		t.Fatalf("endpoints on h3 = %+v, want web on h1 and db on h2", got)
	}

	a.table.Withdraw(testNet, netip.MustParseAddr("10.0.0.2"))
	for _, h := range hosts {
		waitIPs(t, h, "10.0.0.3")
	}
}

func TestGossipLateJoinerConverges(t *testing.T) {
	hosts := startPool(t, 2)
	a, b := hosts[0], hosts[1]
	for _, e := range []string{"10.0.0.2", "10.0.0.4"} {
		if err := a.table.Publish(ep(e, "", "web")); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.table.Publish(ep("10.0.0.3", "", "db")); err != nil {
		t.Fatal(err)
	}
	a.table.Withdraw(testNet, netip.MustParseAddr("10.0.0.4"))
	for _, h := range hosts {
		waitIPs(t, h, "10.0.0.2", "10.0.0.3")
	}
	// Wait for the broadcasts to be spent, so that only push/pull can
	// tell the joiner.
	for _, h := range hosts {
		eventually(t, h.name+"'s broadcasts to be spent", func() bool { return h.table.queue.NumQueued() == 0 })
	}

	c := startHost(t, "h3", 0, []string{b.addr}, Config{})
	waitIPs(t, c, "10.0.0.2", "10.0.0.3")
	if r, ok := stored(t, c.table, "10.0.0.4"); !ok || !r.deleted {
		t.Fatalf("the joiner holds %+v for the withdrawn address, want its tombstone", r)
	}
}

func TestGossipLeftNodeRecordsHidden(t *testing.T) {
	hosts := startPool(t, 3)
	a, b, c := hosts[0], hosts[1], hosts[2]
	if err := a.table.Publish(ep("10.0.0.2", "", "web")); err != nil {
		t.Fatal(err)
	}
	if err := b.table.Publish(ep("10.0.0.3", "", "db")); err != nil {
		t.Fatal(err)
	}
	waitIPs(t, a, "10.0.0.2", "10.0.0.3")
	waitIPs(t, c, "10.0.0.2", "10.0.0.3")

	b.stop() // a graceful leave
	waitIPs(t, a, "10.0.0.2")
	waitIPs(t, c, "10.0.0.2")
}

func TestGossipDeadNodeRecordsHidden(t *testing.T) {
	hosts := startPool(t, 3)
	a, b, c := hosts[0], hosts[1], hosts[2]
	if err := b.table.Publish(ep("10.0.0.3", "", "db")); err != nil {
		t.Fatal(err)
	}
	waitIPs(t, a, "10.0.0.3")
	waitIPs(t, c, "10.0.0.3")

	b.crash()
	waitIPs(t, a)
	waitIPs(t, c)
}

func TestGossipRestartedNodeRepublishes(t *testing.T) {
	hosts := startPool(t, 3)
	a, b, c := hosts[0], hosts[1], hosts[2]
	web := ep("10.0.0.2", "", "web")
	for _, e := range []struct {
		h  *host
		ip string
	}{{a, "10.0.0.2"}, {a, "10.0.0.9"}, {b, "10.0.0.3"}} {
		if err := e.h.table.Publish(ep(e.ip, "", "svc")); err != nil {
			t.Fatal(err)
		}
	}
	waitIPs(t, c, "10.0.0.2", "10.0.0.3", "10.0.0.9")
	// The first life of h1 removes web: every host keeps a tombstone.
	a.table.Withdraw(testNet, web.IP)
	waitIPs(t, b, "10.0.0.3", "10.0.0.9")
	waitIPs(t, c, "10.0.0.3", "10.0.0.9")

	port := a.port
	a.stop()
	waitIPs(t, b, "10.0.0.3")

	// The second life starts with its wall clock at the epoch, so its
	// Lamport clock is far under the tombstone's and only the ownership
	// rule can bring web back. It holds web again but not old.
	clk := &fakeClock{}
	a2 := startHost(t, "h1", port, []string{b.addr}, Config{Now: clk.Now})
	if err := a2.table.Publish(web); err != nil {
		t.Fatal(err)
	}
	a2.table.Reconciled()
	for _, h := range []*host{a2, b, c} {
		waitIPs(t, h, "10.0.0.2", "10.0.0.3")
	}
	if r, _ := stored(t, b.table, "10.0.0.9"); !r.deleted || r.origin != "h1" {
		t.Fatalf("h2 holds %+v for the leftover, want h1's tombstone", r)
	}
}
