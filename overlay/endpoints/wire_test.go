package endpoints

import (
	"net/netip"
	"testing"

	"github.com/skiffhq/skiff/overlay"
)

func TestWireRoundTrip(t *testing.T) {
	e := ep("10.0.0.2", "h1", "web")
	e.Aliases = []string{"www"}
	e.Links = map[string]string{"db": "redis"}
	e.Published = []overlay.Port{{Protocol: "tcp", Published: 4000, Target: 80}, {Protocol: "udp", Published: 53, Target: 5353}}
	in := []record{live(e, 42), tombstone("10.0.0.3", "h2", 43)}
	msg, err := encode(in...)
	if err != nil {
		t.Fatal(err)
	}
	if msg[0] != wireVersion {
		t.Fatalf("version byte %d", msg[0])
	}
	out, err := decode(msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[0].key != in[0].key || out[0].clock != 42 || out[0].origin != "h1" ||
		!sameEndpoint(out[0].ep, e) || !out[1].deleted || out[1].origin != "h2" {
		t.Fatalf("decoded %+v, want %+v", out, in)
	}
}

func TestWireRejectsUnknownVersionAndBadRecords(t *testing.T) {
	msg, _ := encode(live(ep("10.0.0.2", "h1", "web"), 1))
	msg[0] = wireVersion + 1
	if _, err := decode(msg); err == nil {
		t.Fatal("decoded an unknown version")
	}
	if _, err := decode(nil); err == nil {
		t.Fatal("decoded an empty message")
	}

	bad := append([]byte{wireVersion}, `{"r":[{"n":"net1","ip":"10.0.0.2","c":0,"o":"h1"},{"n":"net1","ip":"10.0.0.3","c":7,"o":"h1","x":"unknown fields are ignored"}]}`...)
	recs, err := decode(bad)
	if err == nil {
		t.Fatal("a record without a clock passed")
	}
	if len(recs) != 1 || recs[0].ip != netip.MustParseAddr("10.0.0.3") {
		t.Fatalf("good records alongside a bad one: %+v", recs)
	}
}
