package gossip

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"math"
	"net/netip"
	"testing"
	"time"
)

// rec is an endpoint record as overlay/endpoints encodes it, with a field
// the guard does not read, which must pass through untouched.
func rec(origin, vtep string, deleted bool) map[string]any {
	r := map[string]any{"n": "net1", "ip": "10.0.0.2", "c": 100, "o": origin, "svc": "app_web"}
	if vtep != "" {
		r["vtep"] = vtep
	}
	if deleted {
		r["d"] = true
	}
	return r
}

// endpointMsg encodes records as one endpoint message.
func endpointMsg(t *testing.T, recs ...map[string]any) []byte {
	t.Helper()
	body, err := json.Marshal(map[string]any{"r": recs})
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{endpointWireVersion}, body...)
}

// records decodes an endpoint message back into its records.
func records(t *testing.T, msg []byte) []map[string]any {
	t.Helper()
	var body struct {
		R []map[string]any `json:"r"`
	}
	if len(msg) == 0 || msg[0] != endpointWireVersion {
		t.Fatalf("not an endpoint message: %q", msg)
	}
	if err := json.Unmarshal(msg[1:], &body); err != nil {
		t.Fatalf("decode the filtered message: %v", err)
	}
	return body.R
}

// testGuard is a guard on node "self" of a pool where agent "b" is alive
// at 192.0.2.2 and agent "c" at 192.0.2.3.
func testGuard(origins bool) *recordGuard {
	agents := map[string]netip.Addr{
		"b": netip.MustParseAddr("192.0.2.2"),
		"c": netip.MustParseAddr("192.0.2.3"),
	}
	return &recordGuard{
		self:    "self",
		origins: origins,
		agentAddr: func(node string) (netip.Addr, bool) {
			a, ok := agents[node]
			return a, ok
		},
		now:    func() time.Time { return testNow },
		logger: slog.New(slog.DiscardHandler),
	}
}

// testNow is the guard's wall clock in the tests.
var testNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// TestGuardOrigins checks the origin rule on one record at a time: a live
// record must be on its origin's host, which must be a live agent; a
// removal needs only the live origin; records naming this node pass.
func TestGuardOrigins(t *testing.T) {
	for _, c := range []struct {
		name string
		rec  map[string]any
		want bool
	}{
		{"on its origin's host", rec("b", "192.0.2.2", false), true},
		{"mapped form of the origin's address", rec("b", "::ffff:192.0.2.2", false), true},
		{"on another member's host", rec("b", "192.0.2.3", false), false},
		{"outside the pool", rec("b", "203.0.113.9", false), false},
		{"without a host", rec("b", "", false), false},
		{"with a malformed host", rec("b", "host-b", false), false},
		{"removal by a live agent", rec("b", "", true), true},
		{"origin not alive", rec("gone", "192.0.2.2", false), false},
		{"removal by an origin not alive", rec("gone", "", true), false},
		{"without an origin", rec("", "192.0.2.2", false), false},
		{"this node's own, anywhere", rec("self", "203.0.113.9", false), true},
	} {
		msg := endpointMsg(t, c.rec)
		out, ok := testGuard(true).filter(msg, "test")
		if ok != c.want {
			t.Errorf("%s: let through %v, want %v", c.name, ok, c.want)
		}
		if ok && !bytes.Equal(out, msg) {
			t.Errorf("%s: the message was rewritten: %q, want it as sent", c.name, out)
		}
	}
}

// TestGuardFiltersState checks that a push/pull state loses only the
// refused records, and that the others, and the message's fields the guard
// does not know, come through as sent.
func TestGuardFiltersState(t *testing.T) {
	good, bad, gone, own := rec("b", "192.0.2.2", false), rec("b", "203.0.113.9", false), rec("gone", "192.0.2.3", false), rec("self", "192.0.2.9", false)
	good["ip"], bad["ip"], gone["ip"], own["ip"] = "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"
	body, err := json.Marshal(map[string]any{"r": []any{good, bad, gone, own}, "future": 7})
	if err != nil {
		t.Fatal(err)
	}
	out, ok := testGuard(true).filter(append([]byte{endpointWireVersion}, body...), "test")
	if !ok {
		t.Fatal("the whole state was refused")
	}
	got := records(t, out)
	if len(got) != 2 || got[0]["ip"] != "10.0.0.1" || got[1]["ip"] != "10.0.0.4" {
		t.Fatalf("let through %v, want the records of 10.0.0.1 and 10.0.0.4", got)
	}
	if got[0]["svc"] != "app_web" {
		t.Errorf("a field the guard does not read was lost: %v", got[0])
	}
	var top map[string]any
	if err := json.Unmarshal(out[1:], &top); err != nil || top["future"] != float64(7) {
		t.Errorf("the message's other field was lost: %v (%v)", top, err)
	}

	if _, ok := testGuard(true).filter(endpointMsg(t, bad, gone), "test"); ok {
		t.Error("a state of refused records only was let through")
	}
}

// TestGuardPassesOthers checks what the guard leaves alone: messages that
// are not endpoint records (the pool's other users, an empty push/pull
// state), every record of a pool without keys, and an empty record list;
// and that it drops a malformed endpoint message whole, as the endpoint
// table would.
func TestGuardPassesOthers(t *testing.T) {
	for _, msg := range [][]byte{nil, {}, []byte("from manager"), {2, '{', '}'}, endpointMsg(t)} {
		if out, ok := testGuard(true).filter(msg, "test"); !ok || !bytes.Equal(out, msg) {
			t.Errorf("filter(%q) = %q, %v; want it as is", msg, out, ok)
		}
	}
	offHost := endpointMsg(t, rec("b", "203.0.113.9", false), rec("nobody", "", false))
	if out, ok := testGuard(false).filter(offHost, "test"); !ok || !bytes.Equal(out, offHost) {
		t.Errorf("without keys, filter changed the records: %q, %v", out, ok)
	}
	for _, msg := range [][]byte{
		append([]byte{endpointWireVersion}, "not json"...),
		append([]byte{endpointWireVersion}, `{"r": {"o": "b"}}`...),
		append([]byte{endpointWireVersion}, `{"r": [{"o": 7}]}`...),
	} {
		if _, ok := testGuard(false).filter(msg, "test"); ok {
			t.Errorf("filter let the malformed %q through", msg)
		}
	}
}

// TestGuardClockBound checks that a record whose clock is more than
// MaxClockLead ahead of the wall clock, in microseconds, is refused in any
// pool, this node's own records included, and that in a push/pull state
// only that record goes.
func TestGuardClockBound(t *testing.T) {
	limit := uint64(testNow.Add(MaxClockLead).UnixMicro())
	withClock := func(origin string, clock uint64) map[string]any {
		r := rec(origin, "192.0.2.2", false)
		r["c"] = clock
		return r
	}
	for _, origins := range []bool{true, false} {
		for _, c := range []struct {
			name   string
			origin string
			clock  uint64
			want   bool
		}{
			{"seeded from the wall clock", "b", uint64(testNow.UnixMicro()), true},
			{"at the bound", "b", limit, true},
			{"past the bound", "b", limit + 1, false},
			{"near the top", "b", math.MaxUint64, false},
			{"this node's own, past the bound", "self", limit + 1, false},
			{"a restarted clock from the epoch", "b", 1000, true},
		} {
			if _, ok := testGuard(origins).filter(endpointMsg(t, withClock(c.origin, c.clock)), "test"); ok != c.want {
				t.Errorf("keys %v, %s: let through %v, want %v", origins, c.name, ok, c.want)
			}
		}
	}

	ahead, fine := withClock("b", limit+1), withClock("b", limit)
	ahead["ip"], fine["ip"] = "10.0.0.8", "10.0.0.9"
	out, ok := testGuard(false).filter(endpointMsg(t, ahead, fine), "test")
	if got := records(t, out); !ok || len(got) != 1 || got[0]["ip"] != "10.0.0.9" {
		t.Errorf("from a state with one clock too far ahead, let through %v, want only 10.0.0.9", got)
	}
}
