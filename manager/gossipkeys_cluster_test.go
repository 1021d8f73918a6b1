package manager_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/skiffhq/skiff/gossip"
	"github.com/skiffhq/skiff/identity"
	"github.com/skiffhq/skiff/internal/testcluster"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// TestRotateGossipKey: three managers and three agents, and `skiff cluster
// update --rotate-gossip-key`. Every member ends with exactly the new key:
// each agent's pool lists it alone, each manager keeps it alone in its data
// dir, and a stranger holding only the new key is let into the pool by
// every manager, which shows it all six members, while one holding only
// the old key is let in by none. No agent's node leaves Ready meanwhile.
func TestRotateGossipKey(t *testing.T) {
	c := testcluster.New(t, 3)
	agents := []string{"a1", "a2", "a3"}
	for _, a := range agents {
		c.AddAgent(a)
	}
	notReady := func() ([]string, error) {
		resp, err := c.Control().ListNodes(c.Ctx(), &skiffpb.ListNodesRequest{})
		if err != nil {
			return nil, err
		}
		var out []string
		for _, n := range resp.GetNodes() {
			if n.GetRole() == skiffpb.NodeRole_NODE_ROLE_WORKER && n.GetStatus().GetState() != skiffpb.NodeState_NODE_STATE_READY {
				out = append(out, fmt.Sprintf("%s %s (%q)", n.GetName(), n.GetStatus().GetState(), n.GetStatus().GetMessage()))
			}
		}
		return out, nil
	}
	c.Eventually(30*time.Second, func() error {
		bad, err := notReady()
		if err == nil && len(bad) > 0 {
			err = fmt.Errorf("not ready: %v", bad)
		}
		return err
	})
	oldKeys := c.AgentGossipKeys("a1")
	if len(oldKeys) != 1 {
		t.Fatalf("before the rotation a1 holds %d gossip keys, want 1", len(oldKeys))
	}
	oldKey := oldKeys[0]

	// Watch the agents' nodes throughout.
	watchCtx, stopWatch := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var downs []string
	wg.Go(func() {
		for watchCtx.Err() == nil {
			if bad, err := notReady(); err == nil {
				downs = append(downs, bad...)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	defer func() { stopWatch(); wg.Wait() }()

	if _, err := c.Control().UpdateCluster(c.Ctx(), &skiffpb.UpdateClusterRequest{RotateGossipKey: true}); err != nil {
		t.Fatal(err)
	}
	var newKey []byte
	c.Eventually(60*time.Second, func() error {
		keys := c.AgentGossipKeys(agents[0])
		if len(keys) != 1 || bytes.Equal(keys[0], oldKey) {
			return fmt.Errorf("%s holds %d keys, the old one among them: the rotation has not finished", agents[0], len(keys))
		}
		newKey = keys[0]
		for _, a := range agents[1:] {
			if keys := c.AgentGossipKeys(a); !slices.EqualFunc(keys, [][]byte{newKey}, bytes.Equal) {
				return fmt.Errorf("%s holds keys %x, want only %x", a, keys, newKey)
			}
		}
		for _, m := range c.Managers {
			j, err := identity.Load(m.Config.DataDir, time.Now())
			if err != nil {
				return err
			}
			if !slices.EqualFunc(j.GossipKeys, [][]byte{newKey}, bytes.Equal) {
				return fmt.Errorf("manager %s keeps keys %x, want only %x", m.Config.Name, j.GossipKeys, newKey)
			}
		}
		return nil
	})
	stopWatch()
	wg.Wait()
	if len(downs) > 0 {
		t.Errorf("agents' nodes left Ready during the rotation: %v", downs)
	}

	for i, m := range c.Managers {
		addr := net.JoinHostPort(m.Config.AdvertiseAddr, strconv.Itoa(m.Config.GossipPort))
		stale := startProbe(t, fmt.Sprintf("stale%d", i), oldKey)
		if n, err := stale.Memberlist().Join([]string{addr}); err == nil || n != 0 {
			t.Errorf("manager %s let in a member holding only the old key: reached %d, error %v", m.Config.Name, n, err)
		}
		stale.Kill()
		fresh := startProbe(t, fmt.Sprintf("fresh%d", i), newKey)
		if _, err := fresh.Memberlist().Join([]string{addr}); err != nil {
			t.Errorf("manager %s refused a member holding the new key: %v", m.Config.Name, err)
		}
		c.Eventually(10*time.Second, func() error {
			if got := len(fresh.Members()); got != 7 {
				return fmt.Errorf("through manager %s, a member with the new key sees %d members, want the 6 and itself", m.Config.Name, got)
			}
			return nil
		})
		if err := fresh.Shutdown(time.Second); err != nil {
			t.Logf("leave the pool: %v", err)
		}
	}
}

// startProbe starts a gossip member, joined to nothing, holding only key.
func startProbe(t *testing.T, name string, key []byte) *gossip.Pool {
	t.Helper()
	p, err := gossip.Start(context.Background(), gossip.Config{
		Meta:     gossip.Meta{Name: name, Role: gossip.RoleAgent, Addr: "127.0.0.1"},
		BindAddr: "127.0.0.1", Keys: [][]byte{key},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return p
}
