package gossip_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/skiffhq/skiff/gossip"
	"github.com/skiffhq/skiff/overlay"
	"github.com/skiffhq/skiff/overlay/endpoints"
)

// These tests run the pool under real endpoint tables, so that they break
// if overlay/endpoints' wire format moves away from what the pool's record
// guard reads (records.go).

const testNet = "net1"

// lines is a slog.Handler that keeps what is logged.
type lines struct {
	mu  sync.Mutex
	got []string
}

func (l *lines) Enabled(context.Context, slog.Level) bool { return true }
func (l *lines) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *lines) WithGroup(string) slog.Handler            { return l }

func (l *lines) Handle(_ context.Context, r slog.Record) error {
	line := r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += " " + a.String()
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, line)
	return nil
}

// has reports whether a line contains every one of parts.
func (l *lines) has(parts ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.got, func(line string) bool {
		return !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) })
	})
}

// agent is an agent's pool carrying its endpoint table.
type agent struct {
	name  string
	pool  *gossip.Pool
	table *endpoints.Table
	logs  *lines
	addr  string
}

// startAgent starts agent name on loopback with the given keys, joining
// join; the test's cleanup stops it.
func startAgent(t *testing.T, name string, keys [][]byte, join ...string) *agent {
	t.Helper()
	tbl, err := endpoints.New(endpoints.Config{Node: name})
	if err != nil {
		t.Fatal(err)
	}
	logs := &lines{}
	ctx, cancel := context.WithCancel(context.Background())
	pool, err := gossip.Start(ctx, gossip.Config{
		Meta:     gossip.Meta{Name: name, Role: gossip.RoleAgent, Addr: "127.0.0.1"},
		BindAddr: "127.0.0.1",
		Join:     join,
		Keys:     keys,
		Delegate: tbl.Delegate(),
		OnEvent:  tbl.HandleEvent,
		Logger:   slog.New(logs),
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		pool.Kill()
	})
	return &agent{name: name, pool: pool, table: tbl, logs: logs, addr: pool.Memberlist().LocalNode().Address()}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not true after 10s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// endpoint is a task endpoint in testNet at ip, on the host at vtep.
func endpoint(ip, vtep string) overlay.Endpoint {
	return overlay.Endpoint{
		NetworkID: testNet, VNI: 4096, IP: netip.MustParseAddr(ip), VTEP: netip.MustParseAddr(vtep),
		TaskID: "task-" + ip, Service: "app_web", Stack: "app", ShortName: "web",
	}
}

// holds reports whether tbl shows the endpoint at ip, from node.
func holds(tbl *endpoints.Table, ip, node string) bool {
	return slices.ContainsFunc(tbl.Endpoints(testNet), func(e overlay.Endpoint) bool {
		return e.IP.String() == ip && e.Node == node
	})
}

// TestGuardUnderEndpointTables checks, in an encrypted pool, that an
// endpoint a table publishes on its own host reaches the others, by
// broadcast and by push/pull, and that one it publishes on a host that is
// not its own is refused by every other member and never shows in their
// tables, while the first still does.
func TestGuardUnderEndpointTables(t *testing.T) {
	keys := [][]byte{bytes.Repeat([]byte{7}, gossip.KeySize)}
	a := startAgent(t, "a", keys)
	b := startAgent(t, "b", keys, a.addr)
	waitFor(t, "a and b to see each other", func() bool {
		return a.pool.Memberlist().NumMembers() == 2 && b.pool.Memberlist().NumMembers() == 2
	})

	if err := a.table.Publish(endpoint("10.0.0.2", "127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	// 198.18.0.9 is not a's host: a compromised a steering web's traffic
	// elsewhere.
	if err := a.table.Publish(endpoint("10.0.0.3", "198.18.0.9")); err != nil {
		t.Fatal(err)
	}
	refused := []string{"refusing an endpoint record", "ip=10.0.0.3", "origin=a", "vtep=198.18.0.9"}
	waitFor(t, "b to hold a's endpoint on a's host", func() bool { return holds(b.table, "10.0.0.2", "a") })
	waitFor(t, "b to refuse a's endpoint off a's host", func() bool { return b.logs.has(refused...) })

	// A member that joins later learns a's table by push/pull, which holds
	// both records: the guard must let one through and not the other.
	c := startAgent(t, "c", keys, a.addr)
	waitFor(t, "c to hold a's endpoint on a's host", func() bool { return holds(c.table, "10.0.0.2", "a") })
	waitFor(t, "c to refuse a's endpoint off a's host by push/pull", func() bool {
		return c.logs.has(append(refused, "via=push/pull")...)
	})

	for _, m := range []*agent{b, c} {
		if holds(m.table, "10.0.0.3", "a") {
			t.Errorf("%s shows a's endpoint placed off a's host", m.name)
		}
	}
	if !holds(a.table, "10.0.0.3", "a") {
		t.Errorf("a does not show its own endpoint: %v", a.table.Endpoints(testNet))
	}
}

// TestUnencryptedPoolChecksOnlyClocks checks that without keys the pool
// lets records through as before, even one placed off its origin's host,
// but still refuses one whose clock is far ahead of real time, which would
// otherwise wedge every table's clock near the top of uint64.
func TestUnencryptedPoolChecksOnlyClocks(t *testing.T) {
	a := startAgent(t, "a", nil)
	b := startAgent(t, "b", nil, a.addr)
	if err := a.table.Publish(endpoint("10.0.0.3", "198.18.0.9")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b to show a's endpoint off a's host", func() bool { return holds(b.table, "10.0.0.3", "a") })

	var to *memberlist.Node
	for _, n := range a.pool.Memberlist().Members() {
		if strings.HasPrefix(n.Name, "b/") {
			to = n
		}
	}
	if to == nil {
		t.Fatal("a does not know b")
	}
	forged := []byte(`{"r":[{"n":"` + testNet + `","ip":"10.0.0.5","c":18446744073709551614,"o":"a","vtep":"127.0.0.1","vni":4096,"svc":"app_web"}]}`)
	if err := a.pool.Memberlist().SendBestEffort(to, append([]byte{1}, forged...)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b to refuse the clock near the top", func() bool {
		return b.logs.has("clock is too far ahead", "ip=10.0.0.5", "clock=18446744073709551614")
	})
	if holds(b.table, "10.0.0.5", "a") {
		t.Error("b shows the endpoint with the clock near the top")
	}
}
