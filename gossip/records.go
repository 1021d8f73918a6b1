package gossip

import (
	"encoding/json"
	"log/slog"
	"net/netip"
	"time"
)

// The pool's user data are the overlay's endpoint records (package
// overlay/endpoints): which address of which network lives on which host,
// what DNS answers and the routing mesh balances over. A forged record
// would send a service's traffic wherever it says, on every host, so the
// pool checks each record before the delegate sees it.
//
// Memberlist does not tell the delegate who sent a message, and the sender
// would prove little: records are relayed (a host rebroadcasts every record
// that was news to it, and a push/pull exchange carries the sender's whole
// table, other hosts' records included), so the sender is usually not the
// author. A record can only be judged by what it says, against what the
// pool knows of its members. The rules:
//
//   - Origin (in a pool with Config.Keys). A record names its origin, the
//     node that wrote it. The origin must be an agent that memberlist holds
//     alive, and a live record (not a removal) must place its endpoint on
//     that agent's host: its VTEP, where the overlay tunnels the
//     endpoint's traffic, must be the address memberlist reaches the agent
//     at, which is also the address it advertises. That address is what
//     the pool itself vouches for: the failure detector keeps probing it,
//     and with keys only a member can answer. So whatever name a member
//     writes under, every endpoint it writes points at the host of the
//     agent it names: it cannot point a service at a host outside the
//     pool, nor at its own host under another's name, and what it writes
//     under its own name is hidden as soon as it leaves or the leader
//     holds it Down.
//   - Records naming this node pass the origin rule wherever they place
//     their endpoint: the node is the authority on its own endpoints, and
//     its endpoint table withdraws those it does not hold (a leftover of an
//     earlier life at another address, or a forgery), which it can only do
//     if it hears of them.
//   - A record whose origin is not alive here (a node that died, or one
//     whose join has not reached this member yet) is dropped: it would be
//     hidden anyway, and retransmission or the next push/pull brings it
//     again once its node is.
//   - Clock (in every pool, for every record, this node's own included). A
//     record's Lamport clock must not be more than MaxClockLead ahead of
//     this host's wall clock in microseconds, the scale endpoint tables
//     seed their clocks from; a table's clock then advances by one a
//     write, far slower than real time. Tables adopt the highest clock
//     they receive and never go back, so one record with a clock near the
//     top of uint64 would leave no room for later writes to outrank it,
//     and a chain of records, each a bound past the last, would get there
//     in steps. Bounding by real time instead of by the clocks seen stops
//     both: no message moves any table past an hour ahead of its host's
//     clock. The cost falls on a host whose clock runs more than that
//     ahead: its fresh records are refused until real time catches up
//     (push/pull brings them again), and the refusals are logged.
//
// What the rules cannot stop: a member can still claim any address under
// its own name (the endpoint table lets the newest live record of an
// address win, since the managers may have moved it), and remove any
// endpoint under its own or another agent's name until the holder
// re-asserts it. Stopping that takes records the managers vouch for
// (signed), which is beyond what the pool can tell.
//
// Without Config.Keys anyone who reaches the port can join under any name
// and address, so the origin rule would prove nothing; such pools check
// only the clock, and otherwise let records through as before keys were
// handed out.

// MaxClockLead is how far ahead of this host's clock a received endpoint
// record's Lamport clock may be, read as microseconds since the Unix epoch
// (see records.go): a generous bound on the skew between hosts' clocks.
const MaxClockLead = time.Hour

// endpointWireVersion is the first byte of an endpoint message in
// overlay/endpoints' wire format (wire.go there); the rest is the JSON
// object {"r": [record, …]}. Messages with another first byte are not
// endpoint records, or of a version the endpoint table drops as well, and
// pass unchecked. A change of that format must change this file too;
// endpoints_test.go feeds the pool records from a real table to catch it.
const endpointWireVersion byte = 1

// wireRecord is what the rules read of an encoded endpoint record; the
// rest of it passes through untouched.
type wireRecord struct {
	Network string `json:"n"`
	IP      string `json:"ip"`
	Origin  string `json:"o"`
	Clock   uint64 `json:"c"`
	Deleted bool   `json:"d"`
	VTEP    string `json:"vtep"`
}

// recordGuard applies the rules above to the messages the delegate gets.
type recordGuard struct {
	// self is this node's name (Meta.Name).
	self string
	// origins turns on the origin rule.
	origins bool
	// agentAddr returns the address memberlist reaches the live agent
	// named node at.
	agentAddr func(node string) (netip.Addr, bool)
	// now is the wall clock, time.Now but in tests.
	now    func() time.Time
	logger *slog.Logger
}

// filter returns msg without the records the rules refuse: msg itself when
// none is refused, and ok false when none is left or msg is malformed. how
// names the way msg came, for the log.
func (g *recordGuard) filter(msg []byte, how string) (out []byte, ok bool) {
	if len(msg) == 0 || msg[0] != endpointWireVersion {
		return msg, true
	}
	// The message is decoded into raw records, and encoded again only if
	// some are refused, so that the fields the rules do not read reach the
	// delegate as they were sent.
	var body map[string]json.RawMessage
	var raw []json.RawMessage
	if err := json.Unmarshal(msg[1:], &body); err != nil {
		g.logger.Warn("dropping a malformed endpoint message", "via", how, "error", err)
		return nil, false
	}
	if r, ok := body["r"]; ok {
		if err := json.Unmarshal(r, &raw); err != nil {
			g.logger.Warn("dropping a malformed endpoint message", "via", how, "error", err)
			return nil, false
		}
	}
	limit := uint64(max(0, g.now().Add(MaxClockLead).UnixMicro()))
	kept := raw[:0:0]
	for _, r := range raw {
		var rec wireRecord
		if err := json.Unmarshal(r, &rec); err != nil {
			// The endpoint table refuses the whole message for one such
			// record, and so does the guard.
			g.logger.Warn("dropping a malformed endpoint message", "via", how, "error", err)
			return nil, false
		}
		if g.accept(rec, limit, how) {
			kept = append(kept, r)
		}
	}
	switch {
	case len(kept) == len(raw):
		return msg, true
	case len(kept) == 0:
		return nil, false
	}
	var err error
	if body["r"], err = json.Marshal(kept); err == nil {
		out, err = json.Marshal(body)
	}
	if err != nil {
		g.logger.Error("cannot encode the endpoint records let through", "via", how, "error", err)
		return nil, false
	}
	return append([]byte{endpointWireVersion}, out...), true
}

// accept applies the rules to one record; limit is the highest clock
// accepted now.
func (g *recordGuard) accept(rec wireRecord, limit uint64, how string) bool {
	if rec.Clock > limit {
		g.logger.Warn("refusing an endpoint record whose clock is too far ahead",
			"network", rec.Network, "ip", rec.IP, "origin", rec.Origin, "clock", rec.Clock, "limit", limit, "via", how)
		return false
	}
	if !g.origins || rec.Origin == g.self {
		return true
	}
	addr, ok := g.agentAddr(rec.Origin)
	if !ok {
		// Routine: push/pull carries the records of departed nodes.
		g.logger.Debug("dropping an endpoint record whose origin is not a live agent here",
			"network", rec.Network, "ip", rec.IP, "origin", rec.Origin, "via", how)
		return false
	}
	if rec.Deleted {
		return true
	}
	if vtep, err := netip.ParseAddr(rec.VTEP); err != nil || vtep.Unmap() != addr {
		g.logger.Warn("refusing an endpoint record placed off its origin's host",
			"network", rec.Network, "ip", rec.IP, "origin", rec.Origin, "origin_addr", addr, "vtep", rec.VTEP, "via", how)
		return false
	}
	return true
}
