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
// created in the same slot.
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
	return &Orchestrator{cfg: cfg, store: cfg.Store, logger: cfg.Logger.With("component", "orchestrator"), now: cfg.Now, updates: map[string]time.Time{}}
}

// maxActionsPerCommand bounds one Raft entry, so a scale to 100,000 is
// committed as a stream of modest entries rather than one huge one.
const maxActionsPerCommand = 2048

// Run reconciles until ctx ends: everything once, then whatever each change
// touches, and again when a delayed restart or update batch falls due.
func (o *Orchestrator) Run(ctx context.Context) {
	for ctx.Err() == nil {
		o.runWatch(ctx)
	}
}

// runWatch is one watch of the store; it returns when the watch is cut off
// (the caller starts over with a full reconcile) or ctx ends.
func (o *Orchestrator) runWatch(ctx context.Context) {
	ch, cancel := o.store.ViewAndWatch(nil)
	defer cancel()
	dirty := dirtySet{all: true}
	var timer *time.Timer
	var wake <-chan time.Time
	for {
		if !dirty.empty() {
			next := o.reconcile(ctx, dirty)
			dirty = dirtySet{}
			if timer != nil {
				timer.Stop()
				wake = nil
			}
			if !next.IsZero() {
				timer = time.NewTimer(max(time.Until(next), time.Millisecond))
				wake = timer.C
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
			dirty.all = true
		case b, ok := <-ch:
			if !ok {
				return
			}
			dirty.add(b)
		drain:
			for {
				select {
				case b, ok := <-ch:
					if !ok {
						return
					}
					dirty.add(b)
				default:
					break drain
				}
			}
		}
	}
}

// dirtySet is what changed since the last reconcile.
type dirtySet struct {
	all      bool
	services map[string]bool
}

func (d *dirtySet) empty() bool { return !d.all && len(d.services) == 0 }

func (d *dirtySet) add(b state.Batch) {
	for _, ev := range b.Events {
		switch obj := ev.Object.(type) {
		case *skiffpb.Node, *skiffpb.Cluster:
			// A node's health or availability concerns every service.
			d.all = true
		case *skiffpb.Service:
			d.mark(obj.GetId())
		case *skiffpb.Task:
			d.mark(obj.GetServiceId())
		}
	}
}

func (d *dirtySet) mark(id string) {
	if d.services == nil {
		d.services = map[string]bool{}
	}
	d.services[id] = true
}

// reconcile brings the dirty services in line and commits the result. It
// returns when it next wants to run (a delayed restart), or zero.
func (o *Orchestrator) reconcile(ctx context.Context, dirty dirtySet) time.Time {
	p := &plan{now: o.now(), history: o.cfg.TaskHistory, updates: o.updates, ipam: o.cfg.IPAM}
	o.store.View(func(tx state.ReadTx) {
		p.nodes = tx.Nodes()
		p.networkByName = tx.NetworkByName
		ids := dirty.services
		if dirty.all {
			ids = map[string]bool{}
			for _, sv := range tx.Services() {
				ids[sv.GetId()] = true
			}
			// Tasks whose service is gone must be shut down and deleted too.
			tx.EachTask(func(t *skiffpb.Task) bool {
				ids[t.GetServiceId()] = true
				return true
			})
		}
		p.meshAttachments(tx.Services())
		for id := range ids {
			sv := tx.Service(id)
			tasks := tx.TasksByService(id)
			if sv == nil {
				p.removed(tasks)
				continue
			}
			p.service(sv, tasks)
		}
	})
	o.commit(ctx, p.actions)
	return p.wake
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
