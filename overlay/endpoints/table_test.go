package endpoints

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/skiffhq/skiff/gossip"
	"github.com/skiffhq/skiff/overlay"
)

func TestPublishUpdateWithdraw(t *testing.T) {
	var log changeLog
	tbl := newTestTable(t, Config{Node: "a", OnChange: log.add})

	web := ep("10.0.0.2", "", "web")
	if err := tbl.Publish(web); err != nil {
		t.Fatal(err)
	}
	got := tbl.Endpoints(testNet)
	if len(got) != 1 || got[0].Node != "a" || got[0].IP != web.IP {
		t.Fatalf("Endpoints = %+v, want web on node a", got)
	}
	queued(t, tbl)

	// The same endpoint again changes nothing and sends nothing.
	if err := tbl.Publish(web); err != nil {
		t.Fatal(err)
	}
	if q := queued(t, tbl); len(q) != 0 {
		t.Fatalf("republishing an unchanged endpoint queued %d broadcasts", len(q))
	}

	moved := web
	moved.Aliases = []string{"frontend"}
	if err := tbl.Publish(moved); err != nil {
		t.Fatal(err)
	}
	tbl.Withdraw(testNet, web.IP)
	if got := tbl.Endpoints(testNet); len(got) != 0 {
		t.Fatalf("Endpoints after withdraw = %+v, want none", got)
	}
	if r, _ := stored(t, tbl, "10.0.0.2"); !r.deleted {
		t.Fatalf("withdraw left %+v, want a tombstone", r)
	}

	eventually(t, "three changes", func() bool { return len(log.snapshot()) == 3 })
	changes := log.snapshot()
	kinds := []ChangeKind{changes[0].Kind, changes[1].Kind, changes[2].Kind}
	if !slices.Equal(kinds, []ChangeKind{Added, Updated, Removed}) {
		t.Fatalf("changes = %v, want added, updated, removed", kinds)
	}
	if !slices.Equal(changes[1].Endpoint.Aliases, []string{"frontend"}) || changes[1].Previous.Aliases != nil {
		t.Fatalf("update = %+v, want aliases [frontend] after none", changes[1])
	}
}

func TestPublishValidates(t *testing.T) {
	tbl := newTestTable(t, Config{Node: "a"})
	for name, e := range map[string]overlay.Endpoint{
		"no network":   {IP: netip.MustParseAddr("10.0.0.2")},
		"no address":   {NetworkID: testNet},
		"another node": ep("10.0.0.2", "b", "web"),
	} {
		if err := tbl.Publish(e); err == nil {
			t.Errorf("%s: Publish succeeded", name)
		}
	}

	huge := ep("10.0.0.3", "a", "web")
	for i := range 100 {
		huge.Aliases = append(huge.Aliases, strings.Repeat("x", 20)+string(rune('a'+i%26)))
	}
	if err := tbl.Publish(huge); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Publish(oversized) = %v, want ErrTooLarge", err)
	}
	if got := tbl.Endpoints(testNet); len(got) != 0 {
		t.Fatalf("a refused endpoint is in the table: %+v", got)
	}
}

func TestTypicalRecordFitsWithRoom(t *testing.T) {
	e := ep("10.0.0.2", "h1", "web")
	e.TaskID = "x2kq5c1v0w8n3m7b6z4l9j1hg"
	e.Aliases = []string{"frontend", "www"}
	e.Links = map[string]string{"db": "redis", "cache": "memcached"}
	msg, err := encode(live(e, 1_700_000_000_000_000))
	if err != nil {
		t.Fatal(err)
	}
	if len(msg) > MaxRecordSize/2 {
		t.Fatalf("a typical record takes %d bytes, over half of %d", len(msg), MaxRecordSize)
	}
}

func TestOutOfOrderNewestWins(t *testing.T) {
	tbl := newTestTable(t, Config{Node: "a"})
	v1 := ep("10.0.0.5", "b", "web")
	v2 := v1
	v2.VTEP = netip.MustParseAddr("198.18.0.9")

	deliver(t, tbl, live(v2, 20), live(v1, 10))
	if got := tbl.Endpoints(testNet); len(got) != 1 || got[0].VTEP != v2.VTEP {
		t.Fatalf("after newer then older: %+v, want the newer VTEP", got)
	}

	// A tombstone outranks the add before it, and blocks a stale add
	// arriving after it.
	deliver(t, tbl, tombstone("10.0.0.5", "b", 30), live(v1, 25))
	if got := tbl.Endpoints(testNet); len(got) != 0 {
		t.Fatalf("a stale add resurrected a removed endpoint: %+v", got)
	}
	// A re-add newer than the tombstone wins.
	deliver(t, tbl, live(v1, 31))
	if got := ips(tbl, testNet); !slices.Equal(got, []string{"10.0.0.5"}) {
		t.Fatalf("after a newer re-add: %v", got)
	}
}

func TestTiesResolveTheSameEverywhere(t *testing.T) {
	fromB := ep("10.0.0.7", "b", "web")
	fromC := ep("10.0.0.7", "c", "api")
	x := newTestTable(t, Config{Node: "x"})
	y := newTestTable(t, Config{Node: "y"})
	deliver(t, x, live(fromB, 40), live(fromC, 40))
	deliver(t, y, live(fromC, 40), live(fromB, 40))
	gx, gy := x.Endpoints(testNet), y.Endpoints(testNet)
	if len(gx) != 1 || len(gy) != 1 || gx[0].Node != "c" || gy[0].Node != "c" {
		t.Fatalf("equal clocks: x has %+v, y has %+v; want both node c (the greater name)", gx, gy)
	}

	// At equal clock and origin, the tombstone wins in either order.
	deliver(t, x, live(fromB, 50), tombstone("10.0.0.7", "b", 50))
	deliver(t, y, tombstone("10.0.0.7", "b", 50), live(fromB, 50))
	if len(x.Endpoints(testNet)) != 0 || len(y.Endpoints(testNet)) != 0 {
		t.Fatal("a tie between add and delete did not resolve to the delete")
	}
}

func TestMergeIsIdempotentAndRelaysOnlyNews(t *testing.T) {
	tbl := newTestTable(t, Config{Node: "a"})
	r := live(ep("10.0.0.8", "b", "web"), 5)
	deliver(t, tbl, r)
	if q := queued(t, tbl); len(q) != 1 || q[0].clock != 5 || q[0].origin != "b" {
		t.Fatalf("relayed %+v, want the record once", q)
	}
	deliver(t, tbl, r)
	if q := queued(t, tbl); len(q) != 0 {
		t.Fatalf("a duplicate was relayed: %+v", q)
	}
}

func TestClockMovesPastReceived(t *testing.T) {
	clk := &fakeClock{} // the epoch: the clock starts at 1
	tbl := newTestTable(t, Config{Node: "a", Now: clk.Now})
	deliver(t, tbl, live(ep("10.0.0.9", "b", "web"), 1000))
	if err := tbl.Publish(ep("10.0.0.10", "a", "api")); err != nil {
		t.Fatal(err)
	}
	if r, _ := stored(t, tbl, "10.0.0.10"); r.clock <= 1000 {
		t.Fatalf("published at clock %d, want past the 1000 received", r.clock)
	}
}

func TestClockSeededFromWallClock(t *testing.T) {
	before := uint64(time.Now().UnixMicro())
	tbl := newTestTable(t, Config{Node: "a"})
	if err := tbl.Publish(ep("10.0.0.2", "a", "web")); err != nil {
		t.Fatal(err)
	}
	if r, _ := stored(t, tbl, "10.0.0.2"); r.clock <= before {
		t.Fatalf("first write at clock %d, want past the wall clock %d", r.clock, before)
	}
}

func TestHeldEndpointDefendedAgainstTombstones(t *testing.T) {
	clk := &fakeClock{}
	tbl := newTestTable(t, Config{Node: "a", Now: clk.Now})
	mine := ep("10.0.0.2", "a", "web")
	if err := tbl.Publish(mine); err != nil {
		t.Fatal(err)
	}
	queued(t, tbl)

	// Node b withdraws the address after the managers moved it here, and
	// an earlier life of this node left a newer tombstone of its own.
	for _, intruder := range []record{tombstone("10.0.0.2", "b", 500), tombstone("10.0.0.2", "a", 900)} {
		deliver(t, tbl, intruder)
		r, _ := stored(t, tbl, "10.0.0.2")
		if r.deleted || r.origin != "a" || r.clock <= intruder.clock {
			t.Fatalf("after %+v the table holds %+v, want a's endpoint re-asserted past it", intruder, r)
		}
		if got := ips(tbl, testNet); !slices.Equal(got, []string{"10.0.0.2"}) {
			t.Fatalf("endpoints = %v", got)
		}
		q := queued(t, tbl)
		if !slices.ContainsFunc(q, func(b record) bool { return b.origin == "a" && !b.deleted && b.clock == r.clock }) {
			t.Fatalf("the re-assertion was not broadcast: %+v", q)
		}
	}
}

func TestLiveRecordFromAnotherNodeIsNotContested(t *testing.T) {
	clk := &fakeClock{}
	tbl := newTestTable(t, Config{Node: "a", Now: clk.Now})
	if err := tbl.Publish(ep("10.0.0.2", "a", "web")); err != nil {
		t.Fatal(err)
	}
	queued(t, tbl)
	theirs := live(ep("10.0.0.2", "b", "web"), 100)
	msg, _ := encode(theirs)
	tbl.Delegate().MergeRemoteState(msg, false)
	if got := tbl.Endpoints(testNet); len(got) != 1 || got[0].Node != "b" {
		t.Fatalf("endpoints = %+v, want b's newer claim", got)
	}
	if q := queued(t, tbl); len(q) != 0 {
		t.Fatalf("the table contested another node's newer claim: %+v", q)
	}
	// When b lets go of it, this node's claim comes back.
	deliver(t, tbl, tombstone("10.0.0.2", "b", 200))
	if got := tbl.Endpoints(testNet); len(got) != 1 || got[0].Node != "a" {
		t.Fatalf("endpoints = %+v, want a's endpoint back", got)
	}
}

func TestLeftoversWithdrawnOnceReconciled(t *testing.T) {
	clk := &fakeClock{}
	tbl := newTestTable(t, Config{Node: "a", Now: clk.Now})
	still := ep("10.0.0.2", "a", "web")
	gone := ep("10.0.0.3", "a", "old")
	// A previous life of node a published both.
	msg, _ := encode(live(still, 700), live(gone, 701))
	tbl.Delegate().MergeRemoteState(msg, true)
	if got := ips(tbl, testNet); len(got) != 2 {
		t.Fatalf("before reconciliation: %v, want both kept", got)
	}
	if err := tbl.Publish(still); err != nil {
		t.Fatal(err)
	}
	tbl.Reconciled()
	if got := ips(tbl, testNet); !slices.Equal(got, []string{"10.0.0.2"}) {
		t.Fatalf("after reconciliation: %v, want only the republished endpoint", got)
	}
	// A leftover arriving later is withdrawn at once.
	deliver(t, tbl, live(ep("10.0.0.4", "a", "older"), 702))
	if got := ips(tbl, testNet); !slices.Equal(got, []string{"10.0.0.2"}) {
		t.Fatalf("a late leftover stayed: %v", got)
	}
	if r, _ := stored(t, tbl, "10.0.0.4"); !r.deleted || r.clock <= 702 {
		t.Fatalf("late leftover: %+v, want a newer tombstone", r)
	}
}

func TestReconcileTimeout(t *testing.T) {
	clk := &fakeClock{}
	tbl := newTestTable(t, Config{Node: "a", Now: clk.Now, ReconcileTimeout: 10 * time.Millisecond})
	deliver(t, tbl, live(ep("10.0.0.3", "a", "old"), 701))
	eventually(t, "the leftover to be withdrawn", func() bool { return len(tbl.Endpoints(testNet)) == 0 })
}

func TestNodeLeftHidesAndNodeJoinedRestores(t *testing.T) {
	var log changeLog
	tbl := newTestTable(t, Config{Node: "a", OnChange: log.add})
	b1, b2, c1 := ep("10.0.0.2", "b", "web"), ep("10.0.0.3", "b", "web"), ep("10.0.0.4", "c", "db")
	deliver(t, tbl, live(b1, 10), live(b2, 11), live(c1, 12))

	tbl.NodeLeft("b")
	if got := ips(tbl, testNet); !slices.Equal(got, []string{"10.0.0.4"}) {
		t.Fatalf("after b left: %v, want only c's", got)
	}
	// Copies still travelling, and even a newer record b sent before it
	// died, stay hidden.
	b2moved := b2
	b2moved.VTEP = netip.MustParseAddr("198.18.0.7")
	deliver(t, tbl, live(b1, 10), live(b2moved, 13))
	if got := ips(tbl, testNet); !slices.Equal(got, []string{"10.0.0.4"}) {
		t.Fatalf("a departed node's records came back: %v", got)
	}
	// They still go out in push/pull, so that b, back, can learn what its
	// previous life published.
	state, err := decode(tbl.Delegate().LocalState(false))
	if err != nil {
		t.Fatal(err)
	}
	if len(state) != 3 {
		t.Fatalf("push/pull state has %d records, want all 3", len(state))
	}

	tbl.NodeJoined("b")
	got := tbl.Endpoints(testNet)
	if len(got) != 3 || got[1].VTEP != b2moved.VTEP {
		t.Fatalf("after b came back: %+v, want all three with b's newest record", got)
	}
	eventually(t, "seven changes", func() bool { return len(log.snapshot()) == 7 })
	var kinds []ChangeKind
	for _, c := range log.snapshot()[3:] {
		kinds = append(kinds, c.Kind)
	}
	if !slices.Equal(kinds, []ChangeKind{Removed, Removed, Added, Added}) {
		t.Fatalf("changes after the first three adds = %v", kinds)
	}

	tbl.NodeLeft("a") // itself: ignored
	if len(tbl.Endpoints(testNet)) != 3 {
		t.Fatal("NodeLeft of the table's own node hid endpoints")
	}
}

func TestRecordsOfNonMembersHidden(t *testing.T) {
	clk := &fakeClock{}
	tbl := newTestTable(t, Config{Node: "a", Now: clk.Now, TombstoneTTL: time.Minute})
	// A record that arrives before memberlist reports its node, or of a
	// node that was dead when this host joined, is kept but hidden.
	deliver(t, tbl, live(ep("10.0.0.2", "d", "web"), 10), live(ep("10.0.0.3", "e", "db"), 11))
	if got := ips(tbl, testNet); len(got) != 0 {
		t.Fatalf("records of non-members are live: %v", got)
	}
	tbl.NodeJoined("d")
	if got := ips(tbl, testNet); !slices.Equal(got, []string{"10.0.0.2"}) {
		t.Fatalf("after d joined: %v", got)
	}
	// e never shows up: its record goes after the TTL.
	clk.Advance(2 * time.Minute)
	tbl.collect()
	if _, ok := stored(t, tbl, "10.0.0.3"); ok {
		t.Fatal("the record of a node never seen alive outlived the TTL")
	}
	if _, ok := stored(t, tbl, "10.0.0.2"); !ok {
		t.Fatal("a member's record was collected")
	}
}

func TestTombstonesCollectedAfterTTL(t *testing.T) {
	clk := &fakeClock{}
	clk.Advance(time.Hour)
	tbl := newTestTable(t, Config{Node: "a", Now: clk.Now, TombstoneTTL: time.Minute})
	old := ep("10.0.0.2", "b", "web")
	deliver(t, tbl, tombstone("10.0.0.2", "b", 30), live(ep("10.0.0.3", "c", "db"), 31))

	clk.Advance(59 * time.Second)
	tbl.collect()
	if _, ok := stored(t, tbl, "10.0.0.2"); !ok {
		t.Fatal("tombstone collected before its TTL")
	}
	deliver(t, tbl, live(old, 20))
	if len(tbl.Endpoints(testNet)) != 1 {
		t.Fatal("a stale add got past a live tombstone")
	}

	clk.Advance(2 * time.Second)
	tbl.collect()
	if _, ok := stored(t, tbl, "10.0.0.2"); ok {
		t.Fatal("tombstone kept past its TTL")
	}
	if _, ok := stored(t, tbl, "10.0.0.3"); !ok {
		t.Fatal("a live record was collected")
	}
}

func TestDepartedRecordsCollectedAfterTTL(t *testing.T) {
	clk := &fakeClock{}
	tbl := newTestTable(t, Config{Node: "a", Now: clk.Now, TombstoneTTL: time.Minute})
	deliver(t, tbl, live(ep("10.0.0.2", "b", "web"), 10))
	tbl.NodeLeft("b")
	clk.Advance(2 * time.Minute)
	tbl.collect()
	if _, ok := stored(t, tbl, "10.0.0.2"); ok {
		t.Fatal("a departed node's record was kept past the TTL")
	}
	// A stray copy arriving afterwards stays hidden: b is still gone.
	deliver(t, tbl, live(ep("10.0.0.2", "b", "web"), 10))
	if len(tbl.Endpoints(testNet)) != 0 {
		t.Fatal("a stray copy of a departed node's record became live")
	}
}

func TestRunCollects(t *testing.T) {
	tbl := newTestTable(t, Config{Node: "a", TombstoneTTL: 20 * time.Millisecond})
	if err := tbl.Publish(ep("10.0.0.2", "a", "web")); err != nil {
		t.Fatal(err)
	}
	tbl.Withdraw(testNet, netip.MustParseAddr("10.0.0.2"))
	eventually(t, "the tombstone to be collected", func() bool {
		_, ok := stored(t, tbl, "10.0.0.2")
		return !ok
	})
}

func TestWithdrawLeavesAnotherNodesClaim(t *testing.T) {
	clk := &fakeClock{}
	tbl := newTestTable(t, Config{Node: "a", Now: clk.Now})
	deliver(t, tbl, live(ep("10.0.0.2", "b", "web"), 10))
	tbl.Withdraw(testNet, netip.MustParseAddr("10.0.0.2"))
	if got := tbl.Endpoints(testNet); len(got) != 1 || got[0].Node != "b" {
		t.Fatalf("withdrawing an address this node does not hold removed b's: %+v", got)
	}
}

func TestEndpointsAreCopies(t *testing.T) {
	tbl := newTestTable(t, Config{Node: "a"})
	e := ep("10.0.0.2", "a", "web")
	e.Aliases = []string{"one"}
	e.Links = map[string]string{"db": "redis"}
	if err := tbl.Publish(e); err != nil {
		t.Fatal(err)
	}
	e.Aliases[0] = "changed"
	e.Links["db"] = "changed"
	got := tbl.Endpoints(testNet)[0]
	got.Aliases[0] = "mutated"
	again := tbl.Endpoints(testNet)[0]
	if again.Aliases[0] != "one" || again.Links["db"] != "redis" {
		t.Fatalf("the table shares memory with its callers: %+v", again)
	}
	if got := tbl.Endpoints("other"); got != nil {
		t.Fatalf("another network: %+v", got)
	}
}

func TestHandleEventFollowsAgentsOnly(t *testing.T) {
	tbl := newTestTable(t, Config{Node: "a"})
	deliver(t, tbl, live(ep("10.0.0.2", "b", "web"), 10))
	event := func(kind gossip.EventKind, role gossip.Role) gossip.Event {
		return gossip.Event{Kind: kind, Member: gossip.Member{Meta: gossip.Meta{Name: "b", Role: role}}}
	}
	// b's manager leaving says nothing about b's agent.
	tbl.HandleEvent(event(gossip.MemberLeft, gossip.RoleManager))
	if len(tbl.Endpoints(testNet)) != 1 {
		t.Fatal("a manager's departure hid its node's endpoints")
	}
	tbl.HandleEvent(event(gossip.MemberLeft, gossip.RoleAgent))
	if len(tbl.Endpoints(testNet)) != 0 {
		t.Fatal("the agent's departure left its endpoints live")
	}
	tbl.HandleEvent(event(gossip.MemberJoined, gossip.RoleAgent))
	if len(tbl.Endpoints(testNet)) != 1 {
		t.Fatal("the agent's return left its endpoints hidden")
	}
}

// TestSetDownHidesWhatTheLeaderHoldsDown: a node the leader judged Down is
// hidden at once although memberlist still reports it, stays hidden when
// memberlist reports it again, and comes back when the leader holds it up;
// this node's own records are never hidden.
func TestSetDownHidesWhatTheLeaderHoldsDown(t *testing.T) {
	tbl := newTestTable(t, Config{Node: "a"})
	if err := tbl.Publish(ep("10.0.0.1", "a", "web")); err != nil {
		t.Fatal(err)
	}
	deliver(t, tbl, live(ep("10.0.0.2", "b", "web"), 10), live(ep("10.0.0.4", "c", "db"), 12))
	all := []string{"10.0.0.1", "10.0.0.2", "10.0.0.4"}
	if got := ips(tbl, testNet); !slices.Equal(got, all) {
		t.Fatalf("before: %v, want %v", got, all)
	}

	tbl.SetDown([]string{"b", "a"})
	if got, want := ips(tbl, testNet), []string{"10.0.0.1", "10.0.0.4"}; !slices.Equal(got, want) {
		t.Fatalf("with b and a held down: %v, want %v (b hidden, a's own kept)", got, want)
	}
	// Gossip's word does not overrule the leader's.
	tbl.NodeLeft("b")
	tbl.NodeJoined("b")
	if got, want := ips(tbl, testNet), []string{"10.0.0.1", "10.0.0.4"}; !slices.Equal(got, want) {
		t.Fatalf("b rejoined gossip while held down: %v, want %v", got, want)
	}
	tbl.SetDown(nil)
	if got := ips(tbl, testNet); !slices.Equal(got, all) {
		t.Fatalf("after b is held up again: %v, want %v", got, all)
	}
	// Held up again but gone from gossip: hidden by membership.
	tbl.NodeLeft("c")
	tbl.SetDown([]string{"c"})
	tbl.SetDown(nil)
	if got, want := ips(tbl, testNet), []string{"10.0.0.1", "10.0.0.2"}; !slices.Equal(got, want) {
		t.Fatalf("c left gossip: %v, want %v", got, want)
	}
}
