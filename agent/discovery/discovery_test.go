package discovery

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skiffhq/skiff/agent"
	"github.com/skiffhq/skiff/gossip"
)

var _ agent.Discovery = (*Discovery)(nil)

// waitTimeout bounds each wait for gossip on loopback, which converges in
// a few hundred milliseconds; the margin is for -race runs on a busy host.
const waitTimeout = 10 * time.Second

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

// TestStart: the agent's member names the managers, a manager's
// announcement that it leads wakes the agent and names that manager as
// leader, and the caller's OnEvent still hears every event.
func TestStart(t *testing.T) {
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

	var heardManager atomic.Bool
	d, err := Start(ctx, gossip.Config{
		Meta:     gossip.Meta{Name: "a1", Role: gossip.RoleAgent, Addr: "127.0.0.1"},
		BindAddr: "127.0.0.1",
		Join:     []string{mgr.Memberlist().LocalNode().Address()},
		OnEvent: func(ev gossip.Event) {
			if ev.Member.Name == "m1" {
				heardManager.Store(true)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Pool().Kill()
	waitFor(t, "the caller's OnEvent hears of the manager", heardManager.Load)
	waitFor(t, "discovery names the manager", func() bool { return slices.Equal(d.ManagerAPIAddrs(), []string{api}) })
	if addr, term := d.Leader(); addr != "" || term != 0 {
		t.Errorf("Leader() = %q, %d before any announcement", addr, term)
	}
	select {
	case <-d.LeaderNews():
		t.Error("leader news before any manager leads")
	default:
	}

	if err := mgr.SetLead(7, time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.LeaderNews():
	case <-time.After(waitTimeout):
		t.Fatalf("no leader news within %v of the announcement", waitTimeout)
	}
	waitFor(t, "discovery names the leader", func() bool {
		addr, term := d.Leader()
		return addr == api && term == 7
	})
}

// TestAnnounceLeader: only a manager that leads is news, and news never
// blocks the pool's goroutine.
func TestAnnounceLeader(t *testing.T) {
	news := make(chan struct{}, 1)
	for _, m := range []gossip.Member{
		{Meta: gossip.Meta{Name: "a1", Role: gossip.RoleAgent, Lead: 3}},
		{Meta: gossip.Meta{Name: "m1", Role: gossip.RoleManager}},
	} {
		announceLeader(news, gossip.Event{Kind: gossip.MemberUpdated, Member: m})
	}
	if len(news) != 0 {
		t.Fatal("an agent, or a manager that does not lead, was news")
	}
	leads := gossip.Event{Kind: gossip.MemberUpdated, Member: gossip.Member{Meta: gossip.Meta{Name: "m1", Role: gossip.RoleManager, Lead: 3}}}
	announceLeader(news, leads)
	announceLeader(news, leads) // must not block on the full channel
	if len(news) != 1 {
		t.Fatalf("%d signals waiting, want 1", len(news))
	}
}
