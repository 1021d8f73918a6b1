// Package orchestrator keeps every service's tasks matching its spec. It runs
// on the leader only. It never places tasks (the scheduler does) and never
// talks to agents (the dispatcher does): it only reads the store and
// proposes task creations, desired-state changes and deletions.
//
// Its unit of work is the slot: a replicated service with N replicas has
// slots 1..N, each holding at most one task that should run, plus the
// finished tasks of its history. A global service has one slot per node.
// Restarts, node failures, drains and rolling updates all come down to the
// same move: the slot's running task is told to shut down, and a new task is
// created in the same slot. Rebalancing (rebalance.go) is that move too,
// start-first, after a node has come back.
package orchestrator

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/skiffhq/skiff/manager/allocator"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// Raft is what the orchestrator needs of the local Raft member.
type Raft interface {
	Propose(ctx context.Context, cmd *skiffpb.Command) (uint64, error)
}

// Config configures an Orchestrator.
type Config struct {
	Store *state.Store
	Raft  Raft
	// TaskHistory is how many tasks each slot keeps, the running one
	// included; Swarm's default is 5.
	TaskHistory int
	// IPAM gives new tasks their addresses in the service's networks.
	IPAM   *allocator.IPAM
	Logger *slog.Logger
	// Now is the clock; tests may replace it.
	Now func() time.Time
	// RebalanceSettle is how long a node must have been Ready before tasks
	// are moved onto it to even out a service's spread, and the least time
	// between two rebalancing passes over every service; 0 means
	// DefaultRebalanceSettle.
	RebalanceSettle time.Duration
}

// Orchestrator reconciles services with their tasks.
type Orchestrator struct {
	cfg    Config
	store  *state.Store
	logger *slog.Logger
	now    func() time.Time
	// updates remembers, per service, when the last batch of a rolling
	// update finished, to honour update_config.delay between batches.
	updates map[string]time.Time
	// rebalance remembers the moves in flight and when the last pass ran.
	rebalance *rebalancer
}

// New returns an Orchestrator.
func New(cfg Config) *Orchestrator {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TaskHistory <= 0 {
		cfg.TaskHistory = 5
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.IPAM == nil {
		cfg.IPAM = allocator.NewIPAM()
	}
	if cfg.RebalanceSettle <= 0 {
		cfg.RebalanceSettle = DefaultRebalanceSettle
	}
	logger := cfg.Logger.With("component", "orchestrator")
	return &Orchestrator{
		cfg: cfg, store: cfg.Store, logger: logger, now: cfg.Now, updates: map[string]time.Time{},
		rebalance: newRebalancer(cfg.RebalanceSettle, logger),
	}
}

// maxActionsPerCommand bounds one Raft entry, so a scale to 100,000 is
// committed as a stream of modest entries rather than one huge one.
const maxActionsPerCommand = 2048

// Run reconciles until ctx ends: everything once, then whatever each change
// touches, and again when a delayed restart or update batch falls due.
func (o *Orchestrator) Run(ctx context.Context) {
	var dirty dirtySet
	// pending are the wake-ups plans asked for, the earliest per slot or
	// service.
	var pending map[wakeKey]time.Time
	o.store.Follow(ctx, state.Follower{
		// Every view, the first or one after a lost watch, starts over:
		// everything is reconciled, which asks for the wake-ups again.
		View:  func(state.ReadTx) { dirty, pending = dirtySet{all: true}, map[wakeKey]time.Time{} },
		Apply: func(b state.Batch) { dirty.add(b) },
		Settle: func(ctx context.Context) (time.Time, error) {
			takeDue(pending, o.now(), &dirty)
			if !dirty.empty() {
				addWakeups(pending, o.reconcile(ctx, dirty))
				dirty = dirtySet{}
			}
			next, _ := earliest(pending)
			return next, nil
		},
	})
}

// wakeKey is what a wake-up is for.
type wakeKey struct {
	service   string
	slot      state.Slot
	whole     bool
	rebalance bool
}

// addWakeups adds ws to pending, keeping the earliest time per key: the
// reconcile it triggers looks at the present state, so one is enough.
func addWakeups(pending map[wakeKey]time.Time, ws []wakeup) {
	for _, w := range ws {
		k := wakeKey{service: w.service, slot: w.slot, whole: w.whole, rebalance: w.rebalance}
		if at, ok := pending[k]; !ok || w.at.Before(at) {
			pending[k] = w.at
		}
	}
}

// takeDue moves the wake-ups that are due at now from pending to dirty.
func takeDue(pending map[wakeKey]time.Time, now time.Time, dirty *dirtySet) {
	for k, at := range pending {
		if at.After(now) {
			continue
		}
		delete(pending, k)
		switch {
		case k.rebalance:
			dirty.rebalance = true
		case k.whole:
			dirty.mark(k.service)
		default:
			dirty.markSlot(k.service, k.slot)
		}
	}
}

// earliest returns the earliest time in pending.
func earliest(pending map[wakeKey]time.Time) (time.Time, bool) {
	var first time.Time
	for _, at := range pending {
		if first.IsZero() || at.Before(first) {
			first = at
		}
	}
	return first, !first.IsZero()
}

// dirtySet is what changed since the last reconcile.
type dirtySet struct {
	// all asks for everything to be reconciled.
	all bool
	// services are reconciled whole: their spec or status changed.
	services map[string]bool
	// slots are reconciled alone: one of their tasks changed.
	slots map[string]map[state.Slot]bool
	// nodes changed: the slots of their tasks, and their slot in every
	// global service, are reconciled.
	nodes map[string]bool
	// rebalance asks for a rebalancing pass over every service.
	rebalance bool
}

func (d *dirtySet) empty() bool {
	return !d.all && !d.rebalance && len(d.services) == 0 && len(d.slots) == 0 && len(d.nodes) == 0
}

func (d *dirtySet) add(b state.Batch) {
	for _, ev := range b.Events {
		switch obj := ev.Object.(type) {
		case *skiffpb.Cluster:
			d.all = true
		case *skiffpb.Node:
			if d.nodes == nil {
				d.nodes = map[string]bool{}
			}
			d.nodes[obj.GetId()] = true
		case *skiffpb.Service:
			d.mark(obj.GetId())
		case *skiffpb.Task:
			d.markSlot(obj.GetServiceId(), state.SlotOf(obj))
		}
	}
}

func (d *dirtySet) mark(id string) {
	if d.services == nil {
		d.services = map[string]bool{}
	}
	d.services[id] = true
}

func (d *dirtySet) markSlot(serviceID string, slot state.Slot) {
	if d.slots == nil {
		d.slots = map[string]map[state.Slot]bool{}
	}
	set := d.slots[serviceID]
	if set == nil {
		set = map[state.Slot]bool{}
		d.slots[serviceID] = set
	}
	set[slot] = true
}

// reconcile brings the dirty services and slots in line and commits the
// result, then takes the rebalancing step (see rebalance.go). It returns the
// wake-ups the plan asked for (delayed restarts, update delays, rebalancing
// passes).
//
// A task's change costs the reconcile of its slot, not of its service: in a
// rollout of a million tasks, every status report would otherwise make the
// orchestrator re-read and re-sort every task of the service.
func (o *Orchestrator) reconcile(ctx context.Context, dirty dirtySet) []wakeup {
	p := &plan{now: o.now(), history: o.cfg.TaskHistory, updates: o.updates, ipam: o.cfg.IPAM}
	full := dirty.services
	o.store.View(func(tx state.ReadTx) {
		p.networkByName = tx.NetworkByName
		defer func() { p.networkByName = nil }()
		tx.EachNode(func(n *skiffpb.Node) bool {
			p.nodes = append(p.nodes, n)
			return true
		})
		services := tx.Services()
		if dirty.all {
			full = map[string]bool{}
			for _, sv := range services {
				full[sv.GetId()] = true
			}
			// Tasks whose service is gone must be shut down and deleted too.
			for _, id := range tx.ServicesWithTasks() {
				full[id] = true
			}
		}
		for nodeID := range dirty.nodes {
			tx.EachTaskOfNode(nodeID, func(t *skiffpb.Task) bool {
				dirty.markSlot(t.GetServiceId(), state.SlotOf(t))
				return true
			})
			for _, sv := range services {
				if sv.GetSpec().GetMode() == skiffpb.ServiceMode_SERVICE_MODE_GLOBAL {
					dirty.markSlot(sv.GetId(), state.Slot{Node: nodeID})
				}
			}
		}
		p.meshAttachments(services)
		for id, set := range dirty.slots {
			if full[id] {
				continue
			}
			tasksOf := func(slot state.Slot) []*skiffpb.Task { return tx.TasksOfSlot(id, slot) }
			sv := tx.Service(id)
			if sv == nil {
				for slot := range set {
					p.removed(tasksOf(slot))
				}
				continue
			}
			if !p.slots(sv, set, tasksOf) {
				p.service(sv, tx.TasksByService(id))
			}
		}
	})
	// Whole services one at a time, each in a view of its own. A view holds
	// the store's read lock, which Apply waits for, and every reader after
	// it; one view of every service of a million tasks held it for seconds.
	// Each service's reconcile stands on its own, so views taken a moment
	// apart are as good as one.
	for id := range full {
		o.store.View(func(tx state.ReadTx) {
			p.networkByName = tx.NetworkByName
			defer func() { p.networkByName = nil }()
			sv := tx.Service(id)
			tasks := tx.TasksByService(id)
			if sv == nil {
				p.removed(tasks)
				return
			}
			p.service(sv, tasks)
		})
	}
	o.rebalance.nodesChanged(p, dirty)
	o.commit(ctx, p.actions)
	return append(p.wakeups, o.rebalanceStep(ctx, dirty.rebalance)...)
}

// commit proposes the actions in bounded batches. A rejected batch (a
// version conflict with a concurrent write) is dropped, and the addresses
// its new tasks were given go back to the pool: the write that won produces
// an event, and the next reconcile recomputes from it.
func (o *Orchestrator) commit(ctx context.Context, actions []*skiffpb.StoreAction) {
	for len(actions) > 0 {
		n := min(len(actions), maxActionsPerCommand)
		if _, err := o.cfg.Raft.Propose(ctx, &skiffpb.Command{Actions: actions[:n]}); err != nil {
			if ctx.Err() == nil {
				o.logger.Warn("commit orchestration", "actions", n, "error", err)
			}
			o.release(actions[:n])
		}
		actions = actions[n:]
	}
}

// release returns the addresses of tasks and node attachments that were
// never created.
func (o *Orchestrator) release(actions []*skiffpb.StoreAction) {
	for _, a := range actions {
		as := a.GetPutTask().GetNetworks()
		if na := a.GetNodeAttachment().GetAttachment(); na != nil {
			as = append(as, na)
		}
		for _, na := range as {
			if p, err := netip.ParsePrefix(na.GetAddress()); err == nil {
				o.cfg.IPAM.Release(na.GetNetworkId(), p.Addr())
			}
		}
	}
}
