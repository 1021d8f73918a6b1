// Package placement runs the scheduler on the leader: it keeps the pending
// tasks and a NodeInfo per node up to date from the store's events, hands
// them to the pure scheduler package, and commits its decisions in batches.
//
// Keeping the NodeInfos incrementally (adding and removing one task at a
// time as events arrive) is what lets placement keep up with a million
// tasks: a scheduling pass costs what it places, not what the cluster holds.
package placement

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/skiffhq/skiff/manager/allocator"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
	"github.com/skiffhq/skiff/scheduler"
)

// Raft is what placement needs of the local Raft member.
type Raft interface {
	Propose(ctx context.Context, cmd *skiffpb.Command) (uint64, error)
}

// Config configures a Placer.
type Config struct {
	Store  *state.Store
	Raft   Raft
	Logger *slog.Logger
	// Latency, when set, observes how long each pending task waited.
	Latency prometheus.Observer
	// IPAM gives a node its own address in a network when the first task of
	// that network lands on it.
	IPAM *allocator.IPAM
}

// Placer assigns pending tasks to nodes.
type Placer struct {
	cfg    Config
	logger *slog.Logger

	nodes   map[string]*scheduler.NodeInfo
	counted map[string]counted // task ID → what it contributes to its node
	pending map[string]*skiffpb.Task
	// waiting are pending tasks that fit nowhere; they are tried again when
	// a node changes or a task frees room.
	waiting map[string]*skiffpb.Task
	// attaching remembers node addresses proposed but not yet seen in the
	// store, so one round does not allocate a node two addresses.
	attaching map[string]bool // nodeID + "/" + networkID
}

// counted is a task's contribution to a NodeInfo, remembered so it can be
// taken back exactly.
type counted struct {
	nodeID string
	spec   *skiffpb.ServiceSpec
	task   *skiffpb.Task
}

// New returns a Placer.
func New(cfg Config) *Placer {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Placer{cfg: cfg, logger: cfg.Logger.With("component", "placement")}
}

// maxPlacementsPerCommand bounds one Raft entry of placements.
const maxPlacementsPerCommand = 4096

// Run places tasks until ctx ends.
func (p *Placer) Run(ctx context.Context) {
	p.cfg.Store.Follow(ctx, state.Follower{View: p.rebuild, Apply: p.apply, Settle: p.settle})
}

// rebuild builds the view from the store, when following starts and when
// the watch or a placement round failed.
func (p *Placer) rebuild(tx state.ReadTx) {
	p.nodes = map[string]*scheduler.NodeInfo{}
	p.counted = map[string]counted{}
	p.pending = map[string]*skiffpb.Task{}
	p.waiting = map[string]*skiffpb.Task{}
	p.attaching = map[string]bool{}
	for _, n := range tx.Nodes() {
		p.nodes[n.GetId()] = scheduler.NewNodeInfo(n, nil, nil)
	}
	tx.EachTask(func(t *skiffpb.Task) bool {
		p.track(t, tx.SpecOf(t))
		return true
	})
}

// settle places what is pending once the view has caught up with the
// store. A failed round may have left the view holding placements that
// were never committed, so it is rebuilt.
func (p *Placer) settle(ctx context.Context) (time.Time, error) {
	if len(p.pending) == 0 {
		return time.Time{}, nil
	}
	if err := p.place(ctx); err != nil {
		p.logger.Warn("placement round failed; rebuilding", "error", err)
		return time.Time{}, err
	}
	return time.Time{}, nil
}

// apply folds one batch of store events into the view.
func (p *Placer) apply(b state.Batch) {
	var tasks []*skiffpb.Task
	for _, ev := range b.Events {
		switch o := ev.Object.(type) {
		case *skiffpb.Node:
			p.retryWaiting()
			if ev.Deleted {
				delete(p.nodes, o.GetId())
				continue
			}
			if ni := p.nodes[o.GetId()]; ni != nil {
				ni.Node = o
			} else {
				p.nodes[o.GetId()] = scheduler.NewNodeInfo(o, nil, nil)
			}
		case *skiffpb.Task:
			if ev.Deleted {
				p.untrack(o.GetId())
				delete(p.pending, o.GetId())
				delete(p.waiting, o.GetId())
				continue
			}
			tasks = append(tasks, o)
		}
	}
	if len(tasks) == 0 {
		return
	}
	p.cfg.Store.View(func(tx state.ReadTx) {
		for _, t := range tasks {
			p.track(t, tx.SpecOf(t))
		}
	})
}

// holdsNode reports whether a task takes up room on its node.
func holdsNode(t *skiffpb.Task) bool {
	return t.GetNodeId() != "" && t.GetDesiredState() <= skiffpb.TaskState_TASK_STATE_RUNNING &&
		t.GetStatus().GetState() < skiffpb.TaskState_TASK_STATE_COMPLETE
}

func isPending(t *skiffpb.Task) bool {
	return t.GetNodeId() == "" && t.GetDesiredState() <= skiffpb.TaskState_TASK_STATE_RUNNING &&
		t.GetStatus().GetState() <= skiffpb.TaskState_TASK_STATE_PENDING
}

// track brings the view in line with the task as it is now.
func (p *Placer) track(t *skiffpb.Task, spec *skiffpb.ServiceSpec) {
	delete(p.waiting, t.GetId())
	if isPending(t) {
		p.pending[t.GetId()] = t
	} else {
		delete(p.pending, t.GetId())
	}
	c, was := p.counted[t.GetId()]
	if holdsNode(t) {
		if was && c.nodeID == t.GetNodeId() {
			return
		}
		p.untrack(t.GetId())
		if ni := p.nodes[t.GetNodeId()]; ni != nil {
			ni.AddTask(t, spec)
			p.counted[t.GetId()] = counted{nodeID: t.GetNodeId(), spec: spec, task: t}
		}
		return
	}
	p.untrack(t.GetId())
}

func (p *Placer) untrack(id string) {
	c, ok := p.counted[id]
	if !ok {
		return
	}
	delete(p.counted, id)
	if ni := p.nodes[c.nodeID]; ni != nil {
		ni.RemoveTask(c.task, c.spec)
	}
	p.retryWaiting()
}

// retryWaiting makes the tasks that fit nowhere pending again, because the
// cluster changed in a way that may make room for them.
func (p *Placer) retryWaiting() {
	for id, t := range p.waiting {
		p.pending[id] = t
		delete(p.waiting, id)
	}
}

// place runs one scheduling pass over every pending task and commits it.
func (p *Placer) place(ctx context.Context) error {
	reqs := make([]scheduler.Request, 0, len(p.pending))
	p.cfg.Store.View(func(tx state.ReadTx) {
		for _, t := range p.pending {
			// A placement the store dropped (decided on a stale view) left
			// its reservation counted; take it back before trying again.
			p.untrack(t.GetId())
			reqs = append(reqs, scheduler.Request{Task: t, Spec: tx.SpecOf(t)})
		}
	})
	nodes := make([]*scheduler.NodeInfo, 0, len(p.nodes))
	for _, ni := range p.nodes {
		nodes = append(nodes, ni)
	}
	decisions := scheduler.Schedule(nodes, reqs)

	now := time.Now()
	// Placements are grouped by node, each node's own addresses first, and
	// committed in that order: a node's tasks then land in one command, and
	// its agent hears of them in one message. In the scheduler's order a
	// round's tasks are spread one per node, and with ten thousand agents
	// the messages, one per task, cost more than the placements.
	byNode := map[string][]*skiffpb.StoreAction{}
	var nodeOrder []string
	var unplaced []*skiffpb.StoreAction
	for i, d := range decisions {
		t := reqs[i].Task
		if d.Placed() {
			if _, seen := byNode[d.NodeID]; !seen {
				nodeOrder = append(nodeOrder, d.NodeID)
			}
			byNode[d.NodeID] = append(byNode[d.NodeID], p.attachNode(d.NodeID, t)...)
			// Schedule already added the task to the node's NodeInfo.
			p.counted[t.GetId()] = counted{nodeID: d.NodeID, spec: reqs[i].Spec, task: t}
			delete(p.pending, t.GetId())
			byNode[d.NodeID] = append(byNode[d.NodeID], placementAction(t, d, now))
			if p.cfg.Latency != nil {
				p.cfg.Latency.Observe(now.Sub(time.Unix(0, t.GetMeta().GetCreatedAt())).Seconds())
			}
			continue
		}
		if t.GetStatus().GetErr() != d.Explanation {
			unplaced = append(unplaced, placementAction(t, d, now))
		}
		// Unplaceable tasks wait for a change in the cluster rather than
		// being retried in a loop.
		delete(p.pending, t.GetId())
		p.waiting[t.GetId()] = t
	}
	actions := make([]*skiffpb.StoreAction, 0, len(decisions))
	for _, id := range nodeOrder {
		actions = append(actions, byNode[id]...)
	}
	actions = append(actions, unplaced...)
	for len(actions) > 0 {
		n := min(len(actions), maxPlacementsPerCommand)
		if _, err := p.cfg.Raft.Propose(ctx, &skiffpb.Command{Actions: actions[:n]}); err != nil {
			p.releaseAttachments(actions)
			return err
		}
		actions = actions[n:]
	}
	return nil
}

// attachNode returns the writes that give node an address in each of the
// task's networks it has none in yet. The node's address is where its
// embedded DNS listens and where the routing mesh's connections come from.
func (p *Placer) attachNode(nodeID string, t *skiffpb.Task) []*skiffpb.StoreAction {
	if p.cfg.IPAM == nil || len(t.GetNetworks()) == 0 {
		return nil
	}
	have := map[string]bool{}
	if ni := p.nodes[nodeID]; ni != nil {
		for _, a := range ni.Node.GetAttachments() {
			have[a.GetNetworkId()] = true
		}
	}
	var out []*skiffpb.StoreAction
	for _, na := range t.GetNetworks() {
		key := nodeID + "/" + na.GetNetworkId()
		if have[na.GetNetworkId()] || p.attaching[key] {
			continue
		}
		addr, err := p.cfg.IPAM.Allocate(na.GetNetworkId())
		if err != nil {
			p.logger.Warn("no address for node in network", "node_id", nodeID, "network_id", na.GetNetworkId(), "error", err)
			continue
		}
		p.attaching[key] = true
		out = append(out, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_NodeAttachment{NodeAttachment: &skiffpb.NodeAttachmentUpdate{
			NodeId: nodeID, Attachment: &skiffpb.NetworkAttachment{NetworkId: na.GetNetworkId(), Address: addr.String()},
		}}})
	}
	return out
}

// releaseAttachments returns the node addresses of a batch that failed.
func (p *Placer) releaseAttachments(actions []*skiffpb.StoreAction) {
	for _, a := range actions {
		u := a.GetNodeAttachment()
		if u == nil {
			continue
		}
		delete(p.attaching, u.GetNodeId()+"/"+u.GetAttachment().GetNetworkId())
		if addr, err := netip.ParsePrefix(u.GetAttachment().GetAddress()); err == nil {
			p.cfg.IPAM.Release(u.GetAttachment().GetNetworkId(), addr.Addr())
		}
	}
}

func placementAction(t *skiffpb.Task, d scheduler.Decision, now time.Time) *skiffpb.StoreAction {
	st := &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_ASSIGNED, Timestamp: now.UnixNano(), Message: "scheduler assigned task to node"}
	if !d.Placed() {
		st = &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_PENDING, Timestamp: t.GetStatus().GetTimestamp(), Message: "pending task scheduling", Err: d.Explanation}
	}
	return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_TaskPlacement{TaskPlacement: &skiffpb.TaskPlacement{
		TaskId: t.GetId(), NodeId: d.NodeID, Status: st, Ports: d.Ports,
	}}}
}
