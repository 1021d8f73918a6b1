package endpoints

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"

	"github.com/skiffhq/skiff/overlay"
)

// key names a record: an address is unique within its network, because the
// managers allocate it, and an endpoint is addressed by it.
type key struct {
	network string
	ip      netip.Addr
}

// record is one version of a key: an endpoint (live) or its removal.
type record struct {
	key
	clock   uint64
	origin  string
	deleted bool
	// ep is the endpoint of a live record; zero for a tombstone.
	ep overlay.Endpoint
}

// newer reports whether a outranks b. The order is total, so every host
// that has seen the same records keeps the same one: the higher clock, then
// the greater origin, then the tombstone (two lives of one node can reuse a
// clock, and even that tie must resolve the same way everywhere).
func newer(a, b record) bool {
	if c := cmp.Or(cmp.Compare(a.clock, b.clock), cmp.Compare(a.origin, b.origin)); c != 0 {
		return c > 0
	}
	return a.deleted && !b.deleted
}

// sameEndpoint reports whether two endpoints are equal in every field, so
// that a re-publication that changes nothing is not reported as a change.
func sameEndpoint(a, b overlay.Endpoint) bool {
	return a.NetworkID == b.NetworkID && a.VNI == b.VNI && a.IP == b.IP &&
		a.VTEP == b.VTEP && a.Node == b.Node && a.TaskID == b.TaskID &&
		a.Service == b.Service && a.Stack == b.Stack && a.ShortName == b.ShortName &&
		slices.Equal(a.Aliases, b.Aliases) && maps.Equal(a.Links, b.Links) &&
		slices.Equal(a.Published, b.Published)
}

// cloneEndpoint copies the endpoint's slice and map, so the table never
// shares memory with its callers.
func cloneEndpoint(e overlay.Endpoint) overlay.Endpoint {
	e.Aliases = slices.Clone(e.Aliases)
	e.Links = maps.Clone(e.Links)
	e.Published = slices.Clone(e.Published)
	return e
}
