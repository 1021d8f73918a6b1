package endpoints

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/skiffhq/skiff/overlay"
)

// Defaults for Config.
const (
	// DefaultTombstoneTTL is long enough for a removal to reach every host
	// through gossip (seconds) and through a few push/pull rounds (15 s
	// each), so that no host still holds the removed record when the
	// tombstone goes.
	DefaultTombstoneTTL = 5 * time.Minute
	// DefaultReconcileTimeout bounds how long leftovers of a previous run
	// can survive an agent that never calls Reconciled.
	DefaultReconcileTimeout = time.Minute
)

// retransmitMult is memberlist's default multiplier: each broadcast is sent
// retransmitMult × log10(members+1) times.
const retransmitMult = 4

// Config configures a Table.
type Config struct {
	// Node is this host's node name (gossip Meta.Name). Records the table
	// writes carry it as their origin, and Publish fills it into endpoints.
	// It must be unique among the pool's tables (a manager sharing the
	// name runs none).
	Node string
	// TombstoneTTL is how long a removal, and the records of a node that
	// left, are kept. Zero means DefaultTombstoneTTL.
	TombstoneTTL time.Duration
	// ReconcileTimeout is how long after Run starts the table waits for
	// Reconciled before treating the node as reconciled anyway. Zero means
	// DefaultReconcileTimeout.
	ReconcileTimeout time.Duration
	// Direct, when set, is also given every record this node writes, to
	// send straight to the other hosts. Gossip alone reaches a random few
	// members per round, and in a pool shared with managers (which hold no
	// table and drop the records) a change could wait for the next
	// push/pull; a direct send makes it arrive in one round trip. It is
	// called with the table's lock held: it must only queue, never block or
	// call memberlist.
	Direct func(msg []byte)
	// OnChange, when set, is called with every change of the live
	// endpoints, this node's own included (Endpoint.Node == Node). It is
	// called from Run's goroutine, one change at a time and in order, with
	// no lock held: it may call the table, and a slow OnChange delays later
	// changes but never gossip.
	OnChange func(Change)
	Logger   *slog.Logger
	// Now returns the current time; nil means time.Now. It seeds the clock
	// and ages tombstones, and tests replace it to control both.
	Now func() time.Time
}

// Table is one host's view of every network's endpoints. It is safe for
// concurrent use.
type Table struct {
	node             string
	ttl              time.Duration
	reconcileTimeout time.Duration
	onChange         func(Change)
	direct           func([]byte)
	logger           *slog.Logger
	now              func() time.Time

	queue      *memberlist.TransmitLimitedQueue
	numNodesFn atomic.Pointer[func() int]
	numNodes   atomic.Int64
	wake       chan struct{}

	mu    sync.Mutex
	clock uint64
	// nets holds the newest record of every key, by network then address,
	// so a network's endpoints are found without a scan of the others.
	nets map[string]map[netip.Addr]*entry
	// local holds the endpoints this node holds: what it has published and
	// not withdrawn. It is the authority the table defends (see doc.go).
	local map[key]overlay.Endpoint
	// members are the other nodes memberlist reports alive: only their
	// records (and this node's) are live. left maps a node that left to
	// when, which is when its hidden records start to age.
	members map[string]struct{}
	left    map[string]time.Time
	// down are the nodes the leader has judged Down (SetDown): their
	// records are hidden too, members or not.
	down       map[string]struct{}
	reconciled bool
	pending    []Change
}

// entry is a stored record and when this host stored it, which is what a
// tombstone's age is measured from: hosts' clocks need not agree.
type entry struct {
	rec    record
	stored time.Time
}

// New returns an empty table for node cfg.Node.
func New(cfg Config) (*Table, error) {
	if cfg.Node == "" {
		return nil, errors.New("endpoint table: node name is required")
	}
	t := &Table{
		node:             cfg.Node,
		ttl:              cmp.Or(cfg.TombstoneTTL, DefaultTombstoneTTL),
		reconcileTimeout: cmp.Or(cfg.ReconcileTimeout, DefaultReconcileTimeout),
		onChange:         cfg.OnChange,
		direct:           cfg.Direct,
		logger:           cfg.Logger,
		now:              cfg.Now,
		wake:             make(chan struct{}, 1),
		nets:             make(map[string]map[netip.Addr]*entry),
		local:            make(map[key]overlay.Endpoint),
		members:          make(map[string]struct{}),
		left:             make(map[string]time.Time),
		down:             make(map[string]struct{}),
	}
	if t.logger == nil {
		t.logger = slog.New(slog.DiscardHandler)
	}
	t.logger = t.logger.With("component", "endpoints")
	if t.now == nil {
		t.now = time.Now
	}
	// Seeding the Lamport clock from the wall clock puts a restarted node's
	// first writes past everything its previous life wrote, so they win at
	// once; the ownership rules in merge.go cover a wall clock that went
	// back.
	t.clock = uint64(max(1, t.now().UnixMicro()))
	t.queue = &memberlist.TransmitLimitedQueue{NumNodes: t.poolSize, RetransmitMult: retransmitMult}
	return t, nil
}

// SetNumNodes tells the table how to count the pool's members, which sets
// how many times a broadcast is retransmitted; pass the pool's
// Memberlist().NumMembers once it has started. Until then the table
// assumes a pool of one.
//
// The count is cached, and refreshed by Run, instead of asked for on every
// gossip round: memberlist asks for it while holding the broadcast queue's
// lock, and NumMembers takes memberlist's node lock, under which memberlist
// delivers membership events that lead to NodeLeft and the table's lock.
// Asking directly would close a cycle of locks. For the same reason, call
// SetNumNodes outside memberlist's callbacks.
func (t *Table) SetNumNodes(f func() int) {
	t.numNodesFn.Store(&f)
	t.refreshNumNodes()
}

func (t *Table) refreshNumNodes() {
	if f := t.numNodesFn.Load(); f != nil {
		t.numNodes.Store(int64((*f)()))
	}
}

func (t *Table) poolSize() int { return int(max(1, t.numNodes.Load())) }

// Publish makes e, an endpoint this node holds, live everywhere; calling it
// again with changed fields updates it, and with the same fields does
// nothing. e.Node may be empty (it is filled with Config.Node) but must not
// name another node. It fails for an endpoint without a network or an
// address, or whose record would not fit in a broadcast (MaxRecordSize).
func (t *Table) Publish(e overlay.Endpoint) error {
	switch {
	case e.NetworkID == "":
		return errors.New("publish endpoint: no network")
	case !e.IP.IsValid():
		return fmt.Errorf("publish endpoint in %s: no address", e.NetworkID)
	case e.Node != "" && e.Node != t.node:
		return fmt.Errorf("publish endpoint %s in %s: it belongs to node %q, not %q", e.IP, e.NetworkID, e.Node, t.node)
	}
	e = cloneEndpoint(e)
	e.Node = t.node
	k := key{e.NetworkID, e.IP}

	t.mu.Lock()
	defer t.mu.Unlock()
	if cur := t.lookup(k); cur != nil && !cur.rec.deleted && cur.rec.origin == t.node && sameEndpoint(cur.rec.ep, e) {
		t.local[k] = e
		return nil
	}
	rec := record{key: k, clock: t.clock + 1, origin: t.node, ep: e}
	msg, err := encode(rec)
	if err != nil {
		return fmt.Errorf("publish endpoint %s in %s: %w", e.IP, e.NetworkID, err)
	}
	if len(msg) > MaxRecordSize {
		return fmt.Errorf("publish endpoint %s in %s: %d bytes: %w", e.IP, e.NetworkID, len(msg), ErrTooLarge)
	}
	t.clock = rec.clock
	t.local[k] = e
	t.put(rec)
	t.queueBroadcast(k, msg)
	t.sendDirect(msg)
	return nil
}

// Withdraw removes an endpoint this node published. Withdrawing an address
// that another node now holds leaves that node's endpoint alone.
func (t *Table) Withdraw(networkID string, ip netip.Addr) {
	k := key{networkID, ip}
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.local, k)
	if cur := t.lookup(k); cur != nil && !cur.rec.deleted && cur.rec.origin == t.node {
		t.retract(k)
	}
}

// Reconciled tells the table that this node has published every endpoint
// it holds after a start. From then on, a record that claims to come from
// this node for an endpoint it does not hold is a leftover of a previous
// run, and is withdrawn. Before, such records are left alone, so that an
// agent restart does not remove the endpoints of tasks that kept running
// while it republishes them. Run calls it after Config.ReconcileTimeout if
// the agent has not.
func (t *Table) Reconciled() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.reconciled {
		return
	}
	t.reconciled = true
	for _, byIP := range t.nets {
		for _, e := range byIP {
			if !e.rec.deleted && e.rec.origin == t.node {
				if _, held := t.local[e.rec.key]; !held {
					t.logger.Info("withdrawing an endpoint left from a previous run", "network", e.rec.network, "ip", e.rec.ip)
					t.retract(e.rec.key)
				}
			}
		}
	}
}

// Endpoints returns the live endpoints of a network, sorted by address.
func (t *Table) Endpoints(networkID string) []overlay.Endpoint {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []overlay.Endpoint
	for _, e := range t.nets[networkID] {
		if t.live(e) {
			out = append(out, cloneEndpoint(e.rec.ep))
		}
	}
	slices.SortFunc(out, func(a, b overlay.Endpoint) int { return a.IP.Compare(b.IP) })
	return out
}

// lookup returns the stored record of k, or nil.
func (t *Table) lookup(k key) *entry { return t.nets[k.network][k.ip] }

// live reports whether a stored record is a visible endpoint: not a
// tombstone, and written by a visible node.
func (t *Table) live(e *entry) bool {
	if e == nil || e.rec.deleted {
		return false
	}
	return t.visible(e.rec.origin)
}

// visible reports whether node's records are live endpoints: this node's
// always; another's while memberlist reports it alive and the leader has
// not judged it Down.
func (t *Table) visible(node string) bool {
	if node == t.node {
		return true
	}
	if _, down := t.down[node]; down {
		return false
	}
	_, member := t.members[node]
	return member
}

// put stores r as the newest record of its key, which the caller has
// checked, and reports the change. The caller holds t.mu.
func (t *Table) put(r record) {
	old := t.lookup(r.key)
	var before overlay.Endpoint
	wasLive := t.live(old)
	if wasLive {
		before = old.rec.ep
	}
	byIP := t.nets[r.network]
	if byIP == nil {
		byIP = make(map[netip.Addr]*entry)
		t.nets[r.network] = byIP
	}
	e := &entry{rec: r, stored: t.now()}
	byIP[r.ip] = e
	t.emit(before, wasLive, r.ep, t.live(e))
}

// tick advances the Lamport clock for a write of this node's.
func (t *Table) tick() uint64 {
	t.clock++
	return t.clock
}

// write stores and broadcasts a record this node writes now. The caller
// holds t.mu.
func (t *Table) write(r record) {
	r.clock = t.tick()
	r.origin = t.node
	t.put(r)
	msg, err := encode(r)
	if err != nil {
		t.logger.Error("cannot broadcast endpoint record", "network", r.network, "ip", r.ip, "error", err)
		return
	}
	t.queueBroadcast(r.key, msg)
	t.sendDirect(msg)
}

// sendDirect hands a record this node wrote to Config.Direct, if set.
func (t *Table) sendDirect(msg []byte) {
	if t.direct != nil {
		t.direct(msg)
	}
}

// retract writes a tombstone for k.
func (t *Table) retract(k key) { t.write(record{key: k, deleted: true}) }

// assert rewrites a held endpoint with a fresh clock, over whatever record
// displaced it.
func (t *Table) assert(ep overlay.Endpoint) {
	t.write(record{key: key{ep.NetworkID, ep.IP}, ep: ep})
}
