package orchestrator

// Rebalancing. When a host dies its tasks are replaced on the others, and
// nothing brings them back when it returns: a service stays piled on fewer
// hosts, and the next failure takes more of it down at once. So, once a
// node has been Ready for a settle delay, every replicated service whose
// spread the scheduler would now improve is moved back towards an even
// spread, one task at a time per service, start-first: the new task is
// created in the slot of a running task, pinned to its new node, and the
// rolling-update bookkeeping (update.observe) shuts the old task down only
// once the new one is RUNNING. A move whose new task fails leaves the old
// one in place and stops that service's moves until the next trigger.

import (
	"context"
	"log/slog"
	"slices"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
	"github.com/skiffhq/skiff/scheduler"
)

// DefaultRebalanceSettle is how long a node must have been Ready before
// tasks are moved onto it, unless Config.RebalanceSettle says otherwise: a
// host that flaps should not draw tasks it is about to lose again.
const DefaultRebalanceSettle = 3 * time.Second

// rebalancer is what rebalancing remembers between reconciles. It lives on
// the leader only; a new leader starts afresh, which is safe: a move left in
// flight is a slot with two live tasks, which update.observe completes and
// which keeps the service ineligible until it has.
type rebalancer struct {
	settle time.Duration
	logger *slog.Logger
	// lastPass is when the last pass over every service ran.
	lastPass time.Time
	// services holds the services that moved a task since the last pass.
	services map[string]*serviceMoves
}

// serviceMoves is one service's rebalancing since the last trigger. A
// service moves a task only in a pass or when its previous move settled,
// so one whose move failed moves no more until the next pass.
type serviceMoves struct {
	// left is how many more moves the trigger allows: at most one per
	// replica, so that no input can keep tasks moving for ever.
	left uint64
	// inflight is the move under way, if any.
	inflight *move
}

// move is one task being moved: newTask was created in slot, on to, to take
// over from oldTask on from.
type move struct {
	slot             uint64
	oldTask, newTask string
	from, to         string
}

func newRebalancer(settle time.Duration, logger *slog.Logger) *rebalancer {
	return &rebalancer{settle: settle, logger: logger, services: map[string]*serviceMoves{}}
}

// nodesChanged asks for a pass once the nodes that changed and are Ready
// and Active have settled (all of them after a full reconcile, as when a
// leader starts). One wake-up serves them all: the pass asks again for
// nodes that settle later.
func (r *rebalancer) nodesChanged(p *plan, dirty dirtySet) {
	var due time.Time
	note := func(n *skiffpb.Node) {
		if n == nil || !schedulable(n) {
			return
		}
		if at := r.settledAt(n); due.IsZero() || at.Before(due) {
			due = at
		}
	}
	if dirty.all {
		for _, n := range p.nodes {
			note(n)
		}
	} else {
		nodes := p.nodeIndex()
		for id := range dirty.nodes {
			note(nodes[id])
		}
	}
	if !due.IsZero() {
		p.wakeAt(wakeup{at: r.notBeforeNextPass(due), rebalance: true})
	}
}

// schedulable reports whether a node takes new tasks.
func schedulable(n *skiffpb.Node) bool {
	return n.GetStatus().GetState() == skiffpb.NodeState_NODE_STATE_READY &&
		n.GetSpec().GetAvailability() == skiffpb.NodeAvailability_NODE_AVAILABILITY_ACTIVE
}

// settledAt is when a Ready node will have been Ready for the settle
// delay. The status timestamp is when it last became Ready.
func (r *rebalancer) settledAt(n *skiffpb.Node) time.Time {
	return time.Unix(0, n.GetStatus().GetTimestamp()).Add(r.settle)
}

// notBeforeNextPass delays at until a settle delay after the last pass: a
// pass costs a look at every service, and while thousands of nodes
// register it would otherwise run for each of them.
func (r *rebalancer) notBeforeNextPass(at time.Time) time.Time {
	if next := r.lastPass.Add(r.settle); !r.lastPass.IsZero() && at.Before(next) {
		return next
	}
	return at
}

// rebalanceStep follows the moves in flight and, when pass is set, looks
// at every replicated service; a service whose move settled is looked at
// again at once. It commits the moves it decides on and returns the
// wake-up for the nodes that have not settled yet.
func (o *Orchestrator) rebalanceStep(ctx context.Context, pass bool) []wakeup {
	r := o.rebalance
	if !pass && !r.hasInflight() {
		return nil
	}
	p := &plan{now: o.now(), history: o.cfg.TaskHistory, updates: o.updates, ipam: o.cfg.IPAM}
	var check []string
	o.store.View(func(tx state.ReadTx) {
		// A move's new task may land on a node with no address yet in the
		// service's networks (plan.attachNode).
		p.nodes = tx.Nodes()
		check = r.followMoves(p, tx)
		if pass {
			check = r.startPass(p, tx)
		}
	})
	nodes := &passNodes{store: o.store, settle: r.settle}
	for _, id := range check {
		r.consider(p, o.store, nodes, id)
	}
	o.commit(ctx, p.actions)
	return p.wakeups
}

// hasInflight reports whether some service has a move under way.
func (r *rebalancer) hasInflight() bool {
	for _, s := range r.services {
		if s.inflight != nil {
			return true
		}
	}
	return false
}

// startPass begins a pass: every service's allowance is renewed, and a
// wake-up is asked for the Ready nodes that have not settled yet. It
// returns the replicated services that pass the cheap part of the
// eligibility test, in ID order.
func (r *rebalancer) startPass(p *plan, tx state.ReadTx) []string {
	r.lastPass = p.now
	var next time.Time
	tx.EachNode(func(n *skiffpb.Node) bool {
		if at := r.settledAt(n); schedulable(n) && at.After(p.now) && (next.IsZero() || at.Before(next)) {
			next = at
		}
		return true
	})
	if !next.IsZero() {
		p.wakeAt(wakeup{at: r.notBeforeNextPass(next), rebalance: true})
	}
	var ids []string
	for _, sv := range tx.Services() {
		id := sv.GetId()
		if sv.GetSpec().GetMode() == skiffpb.ServiceMode_SERVICE_MODE_GLOBAL {
			delete(r.services, id)
			continue
		}
		s := r.services[id]
		if s != nil {
			s.left = sv.GetSpec().GetReplicas()
		}
		if r.mayMove(sv, s, tx.TaskCounts(id), p.updates) {
			ids = append(ids, id)
		}
	}
	for id := range r.services {
		if tx.Service(id) == nil {
			delete(r.services, id)
		}
	}
	return ids
}

// followMoves looks at every move in flight. A move has settled once its
// new task runs and the old one is gone; it has failed once the new task
// ended, or was told to, before that. It returns the services whose move
// settled and that may move again, in ID order.
func (r *rebalancer) followMoves(p *plan, tx state.ReadTx) []string {
	var settled []string
	for id, s := range r.services {
		m := s.inflight
		if m == nil {
			continue
		}
		nt, old := tx.Task(m.newTask), tx.Task(m.oldTask)
		switch {
		case tx.Service(id) == nil:
			delete(r.services, id)
		case nt == nil || !live(nt) || finished(nt):
			s.inflight = nil
			if nt != nil && finished(nt) {
				// plan.slot does the same; this covers a task that ended
				// after the slot's last reconcile.
				p.setDesired(nt, skiffpb.TaskState_TASK_STATE_SHUTDOWN)
			}
			r.logger.Warn("rebalancing move failed; the slot keeps its task, and the service is not rebalanced again until a node next becomes Ready",
				"service_id", id, "slot", m.slot, "from", m.from, "to", m.to, "task_id", m.newTask,
				"state", nt.GetStatus().GetState().String(), "error", nt.GetStatus().GetErr())
		case nt.GetStatus().GetState() == skiffpb.TaskState_TASK_STATE_RUNNING && gone(old, tx):
			s.inflight = nil
			if s.left > 0 {
				settled = append(settled, id)
			} else {
				delete(r.services, id)
			}
		}
	}
	sort.Strings(settled)
	return settled
}

// gone reports whether a task that was told to shut down no longer holds
// its node: it finished, was deleted, or its node is no longer Ready (it
// will be reported on, or orphaned, when the node returns).
func gone(t *skiffpb.Task, tx state.ReadTx) bool {
	if t == nil || finished(t) {
		return true
	}
	if live(t) {
		return false
	}
	return tx.Node(t.GetNodeId()).GetStatus().GetState() != skiffpb.NodeState_NODE_STATE_READY
}

// consider makes one move of service id if it is eligible and a move
// would make its spread strictly better. It reads the store in short views
// of their own: with a million tasks, one view over everything it reads
// would hold up Raft's Apply for a noticeable time.
func (r *rebalancer) consider(p *plan, store *state.Store, nodes *passNodes, id string) {
	var sv *skiffpb.Service
	var slots serviceSlots
	ok := false
	s := r.services[id]
	store.View(func(tx state.ReadTx) {
		sv = tx.Service(id)
		if sv != nil && r.mayMove(sv, s, tx.TaskCounts(id), p.updates) {
			slots, ok = runningSlots(sv, tx)
		}
	})
	if !ok {
		return
	}
	infos, ok := nodes.forService(p.now, slots)
	if !ok {
		return
	}
	m, ok := scheduler.Rebalance(infos, id, sv.GetSpec())
	if !ok {
		delete(r.services, id)
		return
	}
	old := slots.highestOn(m.From)
	var nt *skiffpb.Task
	store.View(func(tx state.ReadTx) {
		p.networkByName = tx.NetworkByName
		defer func() { p.networkByName = nil }()
		nt = p.createTask(sv, old.GetSlot(), m.To, 0)
	})
	// Later services of the same step see the task it now holds.
	nodes.byID[m.To].AddTask(nt, sv.GetSpec())
	if s == nil {
		s = &serviceMoves{left: sv.GetSpec().GetReplicas()}
		r.services[id] = s
	}
	s.left--
	s.inflight = &move{slot: old.GetSlot(), oldTask: old.GetId(), newTask: nt.GetId(), from: m.From, to: m.To}
	r.logger.Info("rebalancing: moving a task towards an even spread",
		"service", sv.GetSpec().GetName(), "service_id", id, "slot", old.GetSlot(),
		"from", m.From, "from_name", nodes.name(m.From), "to", m.To, "to_name", nodes.name(m.To),
		"old_task_id", old.GetId(), "task_id", nt.GetId())
}

// mayMove is the part of the eligibility test that costs nothing per task,
// so that a service of a million tasks that is still deploying is turned
// away without a look at its tasks.
func (r *rebalancer) mayMove(sv *skiffpb.Service, s *serviceMoves, counts state.TaskCounts, updates map[string]time.Time) bool {
	spec := sv.GetSpec()
	replicas := spec.GetReplicas()
	if _, waiting := updates[sv.GetId()]; waiting {
		return false
	}
	switch {
	case spec.GetMode() == skiffpb.ServiceMode_SERVICE_MODE_GLOBAL,
		// One task cannot be spread any better.
		replicas < 2,
		updating(sv),
		sv.GetUpdateStatus().GetState() == skiffpb.UpdateState_UPDATE_STATE_PAUSED,
		publishesHostPorts(spec),
		s != nil && (s.inflight != nil || s.left == 0):
		return false
	}
	// Every replica should run and runs, and no other task is wanted:
	// anything else is a deploy, a restart or a move still under way.
	return counts.DesiredRunning == replicas && counts.Running == replicas
}

// publishesHostPorts reports whether a spec publishes ports in host mode.
// Those are pinned per node: clients reach them at a node's own address, so
// moving a task would move the port away from where they connect.
func publishesHostPorts(spec *skiffpb.ServiceSpec) bool {
	for _, pc := range spec.GetEndpoint().GetPorts() {
		if pc.GetPublishMode() == skiffpb.PublishMode_PUBLISH_MODE_HOST {
			return true
		}
	}
	return false
}

// serviceSlots are the running tasks of a service that is at rest, one per
// slot, grouped by node.
type serviceSlots map[string][]*skiffpb.Task

// highestOn returns the task of the highest slot on a node: any would do,
// and this one is the same on every run.
func (s serviceSlots) highestOn(nodeID string) *skiffpb.Task {
	var best *skiffpb.Task
	for _, t := range s[nodeID] {
		if best == nil || t.GetSlot() > best.GetSlot() {
			best = t
		}
	}
	return best
}

// runningSlots returns the service's running tasks by node if every slot
// 1..replicas holds exactly one live task, RUNNING the current spec on a
// Ready node that is not drained; otherwise the service is still changing,
// and false.
func runningSlots(sv *skiffpb.Service, tx state.ReadTx) (serviceSlots, bool) {
	replicas := sv.GetSpec().GetReplicas()
	seen := make(map[uint64]bool, replicas)
	out := serviceSlots{}
	ok := true
	tx.EachTaskOfService(sv.GetId(), func(t *skiffpb.Task) bool {
		if !live(t) {
			return true
		}
		slot := t.GetSlot()
		if slot < 1 || slot > replicas || seen[slot] || t.GetSpecVersion() != sv.GetSpecVersion() ||
			t.GetStatus().GetState() != skiffpb.TaskState_TASK_STATE_RUNNING || t.GetNodeId() == "" {
			ok = false
			return false
		}
		seen[slot] = true
		out[t.GetNodeId()] = append(out[t.GetNodeId()], t)
		return true
	})
	if !ok || uint64(len(seen)) != replicas {
		return nil, false
	}
	for nodeID := range out {
		n := tx.Node(nodeID)
		if n.GetStatus().GetState() != skiffpb.NodeState_NODE_STATE_READY ||
			n.GetSpec().GetAvailability() == skiffpb.NodeAvailability_NODE_AVAILABILITY_DRAIN {
			return nil, false
		}
	}
	return out, true
}

// passNodes are the scheduler's views of the nodes for one rebalancing
// step, built on first need and shared by the services the step looks at:
// building them costs a look at every task on those nodes.
type passNodes struct {
	store  *state.Store
	settle time.Duration
	built  bool
	// targets are the nodes that may receive a task: Ready, Active, and
	// Ready for at least the settle delay.
	targets []*scheduler.NodeInfo
	// byID indexes targets.
	byID map[string]*scheduler.NodeInfo
	// others are the other nodes that hold a service's tasks.
	others map[string]*scheduler.NodeInfo
}

// forService returns the views for deciding a move of a service whose
// tasks are slots: every target, and every other node holding its tasks,
// which counts towards the spread but may not receive one.
func (ns *passNodes) forService(now time.Time, slots serviceSlots) ([]*scheduler.NodeInfo, bool) {
	if !ns.built {
		ns.build(now)
	}
	infos := slices.Clip(ns.targets)
	for nodeID := range slots {
		if ns.byID[nodeID] != nil {
			continue
		}
		ni := ns.others[nodeID]
		if ni == nil {
			ns.store.View(func(tx state.ReadTx) {
				n := tx.Node(nodeID)
				if n == nil {
					return
				}
				if schedulable(n) {
					// Ready but not settled: its tasks count, and it
					// takes none, which is what a paused node is to the
					// scheduler.
					n = pausedCopy(n)
				}
				ni = scheduler.NewNodeInfo(n, liveTasksOn(tx, nodeID), tx.SpecOf)
			})
		}
		if ni == nil {
			return nil, false
		}
		ns.others[nodeID] = ni
		infos = append(infos, ni)
	}
	return infos, true
}

// name returns the name of a node the step has a view of, for the logs.
func (ns *passNodes) name(id string) string {
	ni := ns.byID[id]
	if ni == nil {
		ni = ns.others[id]
	}
	if ni == nil {
		return ""
	}
	return ni.Node.GetName()
}

// build makes the views of the target nodes, each in a read view of its
// own, so that Apply is never held up for long.
func (ns *passNodes) build(now time.Time) {
	ns.built = true
	ns.byID = map[string]*scheduler.NodeInfo{}
	ns.others = map[string]*scheduler.NodeInfo{}
	var ids []string
	ns.store.View(func(tx state.ReadTx) {
		tx.EachNode(func(n *skiffpb.Node) bool {
			if ns.target(n, now) {
				ids = append(ids, n.GetId())
			}
			return true
		})
	})
	for _, id := range ids {
		ns.store.View(func(tx state.ReadTx) {
			// Looked up again: it may have changed since it was listed.
			if n := tx.Node(id); ns.target(n, now) {
				ni := scheduler.NewNodeInfo(n, liveTasksOn(tx, id), tx.SpecOf)
				ns.targets = append(ns.targets, ni)
				ns.byID[id] = ni
			}
		})
	}
}

// target reports whether a node may receive a task at now: it takes new
// tasks and has been Ready for the settle delay.
func (ns *passNodes) target(n *skiffpb.Node, now time.Time) bool {
	return n != nil && schedulable(n) && !now.Before(time.Unix(0, n.GetStatus().GetTimestamp()).Add(ns.settle))
}

// liveTasksOn lists the tasks that hold resources on a node, as placement
// counts them: assigned there, wanted, and not finished.
func liveTasksOn(tx state.ReadTx, nodeID string) []*skiffpb.Task {
	var out []*skiffpb.Task
	tx.EachTaskOfNode(nodeID, func(t *skiffpb.Task) bool {
		if live(t) && !finished(t) {
			out = append(out, t)
		}
		return true
	})
	return out
}

// pausedCopy returns a copy of n that is paused. Stored nodes are
// immutable, so n itself must not be changed.
func pausedCopy(n *skiffpb.Node) *skiffpb.Node {
	c := proto.Clone(n).(*skiffpb.Node)
	if c.Spec == nil {
		c.Spec = &skiffpb.NodeSpec{}
	}
	c.Spec.Availability = skiffpb.NodeAvailability_NODE_AVAILABILITY_PAUSE
	return c
}
