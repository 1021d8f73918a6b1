package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/skiffhq/skiff/gossip"
	"github.com/skiffhq/skiff/identity"
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

// TestPoolKeyring: the keyring the leader sends becomes the pool's, and is
// kept in the data dir for the agent's next start.
func TestPoolKeyring(t *testing.T) {
	oldKey, newKey := bytes.Repeat([]byte{1}, gossip.KeySize), bytes.Repeat([]byte{2}, gossip.KeySize)
	pool, err := gossip.Start(context.Background(), gossip.Config{
		Meta:     gossip.Meta{Name: "a1", Role: gossip.RoleAgent, Addr: "127.0.0.1"},
		BindAddr: "127.0.0.1", Keys: [][]byte{oldKey},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Kill()
	dir := t.TempDir()
	if err := os.MkdirAll(identity.Dir(dir), 0o700); err != nil {
		t.Fatal(err)
	}
	k := poolKeyring{pool: pool, dataDir: dir}
	if err := k.SetKeys([][]byte{newKey, oldKey}); err != nil {
		t.Fatal(err)
	}
	want := [][]byte{newKey, oldKey}
	if got := pool.ListKeys(); !slices.EqualFunc(got, want, bytes.Equal) {
		t.Errorf("the pool's keys are %x, want %x", got, want)
	}
	saved, err := os.ReadFile(filepath.Join(identity.Dir(dir), "gossip.keys"))
	if err != nil {
		t.Fatal(err)
	}
	wantFile := base64.StdEncoding.EncodeToString(newKey) + "\n" + base64.StdEncoding.EncodeToString(oldKey) + "\n"
	if string(saved) != wantFile {
		t.Errorf("the data dir keeps %q, want %q", saved, wantFile)
	}
	if err := k.SetKeys(nil); err == nil {
		t.Error("an empty keyring was accepted")
	}
}
