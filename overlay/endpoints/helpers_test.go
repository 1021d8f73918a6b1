package endpoints

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skiffhq/skiff/overlay"
)

// testNet is the network most tests use.
const testNet = "net1"

// fakeClock is a settable clock for Config.Now.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// changeLog records the changes a table delivers.
type changeLog struct {
	mu      sync.Mutex
	changes []Change
}

func (l *changeLog) add(c Change) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.changes = append(l.changes, c)
}

func (l *changeLog) snapshot() []Change {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Change(nil), l.changes...)
}

// newTestTable returns a table, to which nodes b and c are live members,
// whose Run is stopped when the test ends.
func newTestTable(t *testing.T, cfg Config) *Table {
	t.Helper()
	tbl, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tbl.NodeJoined("b")
	tbl.NodeJoined("c")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tbl.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return tbl
}

// ep returns a task endpoint in testNet.
func ep(ip, node, short string) overlay.Endpoint {
	return overlay.Endpoint{
		NetworkID: testNet, VNI: 4096, IP: netip.MustParseAddr(ip),
		VTEP: netip.MustParseAddr("198.18.0.1"), Node: node,
		TaskID: "task-" + short + "-" + ip, Service: "app_" + short, Stack: "app", ShortName: short,
	}
}

func live(r overlay.Endpoint, clock uint64) record {
	return record{key: key{r.NetworkID, r.IP}, clock: clock, origin: r.Node, ep: r}
}

func tombstone(ip, origin string, clock uint64) record {
	return record{key: key{testNet, netip.MustParseAddr(ip)}, clock: clock, origin: origin, deleted: true}
}

// deliver feeds records to the table one broadcast at a time, as memberlist
// would.
func deliver(t *testing.T, tbl *Table, recs ...record) {
	t.Helper()
	for _, r := range recs {
		msg, err := encode(r)
		if err != nil {
			t.Fatal(err)
		}
		tbl.Delegate().NotifyMsg(msg)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ips returns the addresses of a network's live endpoints.
func ips(tbl *Table, network string) []string {
	var out []string
	for _, e := range tbl.Endpoints(network) {
		out = append(out, e.IP.String())
	}
	return out
}

// stored returns the stored record of an address in testNet.
func stored(t *testing.T, tbl *Table, ip string) (record, bool) {
	t.Helper()
	tbl.mu.Lock()
	defer tbl.mu.Unlock()
	e := tbl.lookup(key{testNet, netip.MustParseAddr(ip)})
	if e == nil {
		return record{}, false
	}
	return e.rec, true
}

// queued drains the table's broadcast queue and decodes it.
func queued(t *testing.T, tbl *Table) []record {
	t.Helper()
	var out []record
	for _, msg := range tbl.queue.GetBroadcasts(0, 1<<20) {
		recs, err := decode(msg)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, recs...)
	}
	tbl.queue.Reset()
	return out
}
