package main

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/skiffhq/skiff/gossip"
)

// waitTimeout bounds each wait for gossip on loopback, which converges in
// a few hundred milliseconds; the margin is for -race runs on a busy host.
const waitTimeout = 10 * time.Second

// fakeOverlay records what the pool gives the overlay.
type fakeOverlay struct {
	mu     sync.Mutex
	pool   *gossip.Pool
	events []gossip.Event
}

func (o *fakeOverlay) Delegate() memberlist.Delegate { return nil }

func (o *fakeOverlay) HandleGossip(ev gossip.Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, ev)
}

func (o *fakeOverlay) SetPool(p *gossip.Pool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.pool = p
}

// heard reports whether the overlay was told of the member named name.
func (o *fakeOverlay) heard(name string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.ContainsFunc(o.events, func(ev gossip.Event) bool { return ev.Member.Name == name })
}

// waitFor polls cond until it holds, failing the test after waitTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", waitTimeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestJoinGossipWiresOverlayAndDiscovery: the agent's pool hands itself to
// the overlay and tells it of members; as Discovery it names the managers,
// and a manager's announcement that it leads wakes the agent and names
// that manager as leader.
func TestJoinGossipWiresOverlayAndDiscovery(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const api = "127.0.0.1:4242"
	mgr, err := gossip.Start(ctx, gossip.Config{
		Meta:     gossip.Meta{Name: "m1", Role: gossip.RoleManager, Addr: "127.0.0.1", APIAddr: api},
		BindAddr: "127.0.0.1",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Kill()

	ov := &fakeOverlay{}
	pool, disc, err := joinGossip(ctx, gossipConfig{
		name: "a1", addr: "127.0.0.1", join: []string{mgr.Memberlist().LocalNode().Address()},
	}, ov)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Kill()
	ov.mu.Lock()
	handed := ov.pool == pool
	ov.mu.Unlock()
	if !handed {
		t.Error("the overlay was not given the pool")
	}
	waitFor(t, "the overlay hears of the manager", func() bool { return ov.heard("m1") })
	waitFor(t, "discovery names the manager", func() bool { return slices.Equal(disc.ManagerAPIAddrs(), []string{api}) })
	if addr, term := disc.Leader(); addr != "" || term != 0 {
		t.Errorf("Leader() = %q, %d before any announcement", addr, term)
	}
	select {
	case <-disc.LeaderNews():
		t.Error("leader news before any manager leads")
	default:
	}

	if err := mgr.SetLead(7, time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-disc.LeaderNews():
	case <-time.After(waitTimeout):
		t.Fatalf("no leader news within %v of the announcement", waitTimeout)
	}
	waitFor(t, "discovery names the leader", func() bool {
		addr, term := disc.Leader()
		return addr == api && term == 7
	})
}
