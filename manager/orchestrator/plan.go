package orchestrator

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/skiffhq/skiff/manager/allocator"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
	"github.com/skiffhq/skiff/scheduler"
)

// defaultRestartDelay is Docker Swarm's delay between restarts of a failed
// task when the service sets none.
const defaultRestartDelay = 5 * time.Second

// plan accumulates the actions of one reconcile. It is a pure computation
// over a read view, apart from the clock reading it was given.
type plan struct {
	now     time.Time
	history int
	nodes   []*skiffpb.Node
	updates map[string]time.Time
	ipam    *allocator.IPAM
	// networkByName finds the networks a service attaches to.
	networkByName func(name string) *skiffpb.Network

	actions []*skiffpb.StoreAction
	// wake is the earliest of wakeups, or zero.
	wake time.Time
	// wakeups are what asked to be reconciled again later, and when.
	wakeups []wakeup
	// nodeMap indexes nodes by ID, built on first use.
	nodeMap map[string]*skiffpb.Node
	// attaching records the node addresses this plan allocated, by node
	// and network ID, so that two tasks assigned to one node in one pass
	// do not give it two.
	attaching map[string]bool
}

// wakeup asks for a slot, or a whole service, to be reconciled again at a
// time: a delayed restart falls due, an update's delay ends. The reconcile
// it triggers looks at just that, so a crash-looping task costs a look at
// its slot, not at every task of the cluster.
type wakeup struct {
	at      time.Time
	service string
	// slot is the slot to look at, unless whole is set.
	slot  state.Slot
	whole bool
	// rebalance asks for a rebalancing pass over every service instead.
	rebalance bool
}

func (p *plan) wakeAt(w wakeup) {
	p.wakeups = append(p.wakeups, w)
	if p.wake.IsZero() || w.at.Before(p.wake) {
		p.wake = w.at
	}
}

func (p *plan) setDesired(t *skiffpb.Task, st skiffpb.TaskState) {
	if t.GetDesiredState() >= st {
		return
	}
	p.actions = append(p.actions, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_TaskDesired{
		TaskDesired: &skiffpb.TaskDesiredUpdate{TaskId: t.GetId(), DesiredState: st},
	}})
}

func (p *plan) deleteTask(t *skiffpb.Task) {
	p.actions = append(p.actions, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_DeleteTask{DeleteTask: t.GetId()}})
}

// createTask creates a task in slot of sv, pending, or assigned to nodeID
// when it names one, and returns it.
func (p *plan) createTask(sv *skiffpb.Service, slot uint64, nodeID string, attempt uint64) *skiffpb.Task {
	now := p.now.UnixNano()
	st := &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_PENDING, Timestamp: now, Message: "pending task scheduling"}
	t := &skiffpb.Task{
		Id:           state.NewID(),
		Meta:         &skiffpb.Meta{CreatedAt: now, UpdatedAt: now},
		ServiceId:    sv.GetId(),
		ServiceName:  sv.GetSpec().GetName(),
		Stack:        sv.GetSpec().GetStack(),
		Slot:         slot,
		NodeId:       nodeID,
		SpecVersion:  sv.GetSpecVersion(),
		DesiredState: skiffpb.TaskState_TASK_STATE_RUNNING,
		Status:       st,
		Attempt:      attempt,
	}
	if nodeID != "" {
		st.State = skiffpb.TaskState_TASK_STATE_ASSIGNED
		st.Message = "assigned"
	}
	if err := p.attach(t, sv); err != nil {
		// The task is recorded as rejected, so the failure shows in
		// `service ps` and the restart policy retries later.
		st.State = skiffpb.TaskState_TASK_STATE_REJECTED
		st.Message = "allocating addresses"
		st.Err = err.Error()
	} else if nodeID != "" {
		p.attachNode(nodeID, t)
	}
	p.actions = append(p.actions, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutTask{PutTask: t}})
	return t
}

// attach gives a new task an address in each network its service joins.
func (p *plan) attach(t *skiffpb.Task, sv *skiffpb.Service) error {
	for _, sn := range sv.GetSpec().GetNetworks() {
		if p.ipam == nil {
			return fmt.Errorf("no address allocator for network %s", sn.GetTarget())
		}
		var n *skiffpb.Network
		if p.networkByName != nil {
			n = p.networkByName(sn.GetTarget())
		}
		if n == nil {
			p.releaseTask(t)
			return fmt.Errorf("network %s does not exist", sn.GetTarget())
		}
		// The network may be newer than the allocator's view of the store
		// (it came in the same command as the service).
		subnet, err := netip.ParsePrefix(n.GetSubnet())
		if err == nil {
			err = p.ipam.AddNetwork(n.GetId(), subnet)
		}
		var addr netip.Prefix
		if err == nil {
			addr, err = p.ipam.Allocate(n.GetId())
		}
		if err != nil {
			p.releaseTask(t)
			return fmt.Errorf("allocate an address in network %s: %w", sn.GetTarget(), err)
		}
		t.Networks = append(t.Networks, &skiffpb.NetworkAttachment{NetworkId: n.GetId(), Address: addr.String(), Aliases: sn.GetAliases()})
	}
	return nil
}

// attachNode gives a node an address in each of the task's networks it
// has none in yet, for a task assigned here rather than by placement (a
// global service's, a rebalancing move's), as placement does for its own.
// Without one the agent cannot build the network, and the task fails to
// start.
func (p *plan) attachNode(nodeID string, t *skiffpb.Task) {
	n := p.nodeIndex()[nodeID]
	if n == nil || p.ipam == nil {
		return
	}
	have := map[string]bool{}
	for _, a := range n.GetAttachments() {
		have[a.GetNetworkId()] = true
	}
	for _, na := range t.GetNetworks() {
		key := nodeID + "/" + na.GetNetworkId()
		if have[na.GetNetworkId()] || p.attaching[key] {
			continue
		}
		addr, err := p.ipam.Allocate(na.GetNetworkId())
		if err != nil {
			// The task fails to start and is retried; the next attempt
			// asks again.
			continue
		}
		if p.attaching == nil {
			p.attaching = map[string]bool{}
		}
		p.attaching[key] = true
		p.actions = append(p.actions, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_NodeAttachment{NodeAttachment: &skiffpb.NodeAttachmentUpdate{
			NodeId: nodeID, Attachment: &skiffpb.NetworkAttachment{NetworkId: na.GetNetworkId(), Address: addr.String()},
		}}})
	}
}

// meshAttachments gives every ready node an address in each network of a
// service that publishes ports through the routing mesh. A node answers a
// published port even when it runs none of the service's tasks, and it
// reaches the tasks elsewhere through the service's network, from its own
// address there.
func (p *plan) meshAttachments(services []*skiffpb.Service) {
	if p.ipam == nil || p.networkByName == nil {
		return
	}
	needed := map[string]bool{}
	for _, sv := range services {
		if !publishesIngress(sv.GetSpec()) {
			continue
		}
		for _, sn := range sv.GetSpec().GetNetworks() {
			if n := p.networkByName(sn.GetTarget()); n != nil {
				needed[n.GetId()] = true
			}
		}
	}
	if len(needed) == 0 {
		return
	}
	ids := make([]string, 0, len(needed))
	for id := range needed {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, n := range p.nodes {
		if n.GetStatus().GetState() != skiffpb.NodeState_NODE_STATE_READY {
			continue
		}
		have := map[string]bool{}
		for _, a := range n.GetAttachments() {
			have[a.GetNetworkId()] = true
		}
		for _, id := range ids {
			if have[id] {
				continue
			}
			addr, err := p.ipam.Allocate(id)
			if err != nil {
				continue
			}
			p.actions = append(p.actions, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_NodeAttachment{NodeAttachment: &skiffpb.NodeAttachmentUpdate{
				NodeId: n.GetId(), Attachment: &skiffpb.NetworkAttachment{NetworkId: id, Address: addr.String()},
			}}})
		}
	}
}

func publishesIngress(spec *skiffpb.ServiceSpec) bool {
	for _, pc := range spec.GetEndpoint().GetPorts() {
		if pc.GetPublishMode() == skiffpb.PublishMode_PUBLISH_MODE_INGRESS && pc.GetPublishedPort() != 0 {
			return true
		}
	}
	return false
}

func (p *plan) releaseTask(t *skiffpb.Task) {
	for _, na := range t.GetNetworks() {
		if a, err := netip.ParsePrefix(na.GetAddress()); err == nil {
			p.ipam.Release(na.GetNetworkId(), a.Addr())
		}
	}
	t.Networks = nil
}

// removed handles the tasks of a deleted service: each is told to go away,
// and deleted once it has stopped or can no longer be heard from.
func (p *plan) removed(tasks []*skiffpb.Task) {
	nodes := p.nodeIndex()
	for _, t := range tasks {
		p.setDesired(t, skiffpb.TaskState_TASK_STATE_REMOVE)
		n := nodes[t.GetNodeId()]
		if finished(t) || t.GetNodeId() == "" || n == nil || n.GetStatus().GetState() == skiffpb.NodeState_NODE_STATE_DOWN {
			p.deleteTask(t)
		}
	}
}

// nodeIndex maps node IDs to nodes. It is built once per plan: a plan
// reconciles many services, or many slots, over the same nodes.
func (p *plan) nodeIndex() map[string]*skiffpb.Node {
	if p.nodeMap != nil {
		return p.nodeMap
	}
	p.nodeMap = make(map[string]*skiffpb.Node, len(p.nodes))
	for _, n := range p.nodes {
		p.nodeMap[n.GetId()] = n
	}
	return p.nodeMap
}

// service reconciles one service.
func (p *plan) service(sv *skiffpb.Service, tasks []*skiffpb.Task) {
	nodes := p.nodeIndex()
	slots := map[uint64][]*skiffpb.Task{}
	for _, t := range tasks {
		slots[slotKey(sv, t)] = append(slots[slotKey(sv, t)], t)
	}
	var wanted map[uint64]string // slot → node for global services
	if sv.GetSpec().GetMode() == skiffpb.ServiceMode_SERVICE_MODE_GLOBAL {
		wanted = p.globalSlots(sv)
	}
	keys := make([]uint64, 0, len(slots))
	for k := range slots {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })

	u := p.newUpdate(sv)
	for _, k := range keys {
		p.slot(sv, k, slots[k], nodes, wanted, u)
	}
	// Slots with no task at all yet.
	if wanted != nil {
		for k, nodeID := range wanted {
			if _, ok := slots[k]; !ok {
				p.createTask(sv, 0, nodeID, 0)
			}
		}
	} else {
		for k := uint64(1); k <= sv.GetSpec().GetReplicas(); k++ {
			if _, ok := slots[k]; !ok {
				p.createTask(sv, k, "", 0)
			}
		}
	}
	u.finish(p, sv, tasks)
}

// slotKey is the slot number, or for a global service a number standing for
// the node (global tasks all have slot 0).
func slotKey(sv *skiffpb.Service, t *skiffpb.Task) uint64 {
	if sv.GetSpec().GetMode() == skiffpb.ServiceMode_SERVICE_MODE_GLOBAL {
		return nodeKey(t.GetNodeId())
	}
	return t.GetSlot()
}

// nodeKey maps a node ID to a slot key with FNV-1a; collisions between two
// node IDs of one cluster are vanishingly unlikely and would only merge two
// nodes' histories.
func nodeKey(id string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= 1099511628211
	}
	return h | 1<<63
}

// globalSlots returns the slots a global service should have: one per node
// that is ready, not drained, and meets the constraints. Paused nodes keep
// the task they have but get no new one; that is handled by the caller.
func (p *plan) globalSlots(sv *skiffpb.Service) map[uint64]string {
	return p.globalSlotsOn(sv, p.nodes)
}

// globalSlotsOn is globalSlots restricted to some nodes.
func (p *plan) globalSlotsOn(sv *skiffpb.Service, nodes []*skiffpb.Node) map[uint64]string {
	cs, err := scheduler.ParseConstraints(sv.GetSpec().GetPlacement().GetConstraints())
	if err != nil {
		return map[uint64]string{}
	}
	out := map[uint64]string{}
	for _, n := range nodes {
		if n.GetStatus().GetState() != skiffpb.NodeState_NODE_STATE_READY ||
			n.GetSpec().GetAvailability() != skiffpb.NodeAvailability_NODE_AVAILABILITY_ACTIVE ||
			!scheduler.MatchConstraints(cs, n) {
			continue
		}
		out[nodeKey(n.GetId())] = n.GetId()
	}
	return out
}

// slots reconciles only the given slots of a service, as service would
// reconcile them, for a service whose other slots did not change. It
// reports false, having planned nothing, when the whole service must be
// reconciled instead: while a rolling update runs, is paused or waits out
// its delay, or when one of the slots runs an out-of-date spec, because an
// update's batches are counted across all of a service's slots.
func (p *plan) slots(sv *skiffpb.Service, set map[state.Slot]bool, tasksOf func(state.Slot) []*skiffpb.Task) bool {
	if sv.GetUpdateStatus().GetState() == skiffpb.UpdateState_UPDATE_STATE_PAUSED || updating(sv) {
		return false
	}
	if _, waiting := p.updates[sv.GetId()]; waiting {
		return false
	}
	global := sv.GetSpec().GetMode() == skiffpb.ServiceMode_SERVICE_MODE_GLOBAL
	keys := make([]state.Slot, 0, len(set))
	tasks := make(map[state.Slot][]*skiffpb.Task, len(set))
	for slot := range set {
		if global != (slot.Number == 0) {
			// A task of the other mode: the service changed mode, which
			// the whole-service reconcile sorts out.
			return false
		}
		list := tasksOf(slot)
		for _, t := range list {
			if live(t) && !finished(t) && t.GetSpecVersion() != sv.GetSpecVersion() {
				return false
			}
		}
		keys = append(keys, slot)
		tasks[slot] = list
	}
	// In slot order, so that a plan does not depend on map iteration.
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].Number != keys[j].Number {
			return keys[i].Number < keys[j].Number
		}
		return keys[i].Node < keys[j].Node
	})
	nodes := p.nodeIndex()
	var wanted map[uint64]string
	if global {
		var on []*skiffpb.Node
		for _, slot := range keys {
			if n := nodes[slot.Node]; n != nil {
				on = append(on, n)
			}
		}
		wanted = p.globalSlotsOn(sv, on)
	}
	// No task runs an old spec, so the update bookkeeping only looks on.
	u := p.newUpdate(sv)
	for _, slot := range keys {
		key := slot.Number
		if global {
			key = nodeKey(slot.Node)
		}
		if list := tasks[slot]; len(list) > 0 {
			p.slot(sv, key, list, nodes, wanted, u)
			continue
		}
		// The slot's last task is gone: fill it if it is still wanted.
		if global {
			if nodeID, ok := wanted[key]; ok {
				p.createTask(sv, 0, nodeID, 0)
			}
		} else if slot.Number >= 1 && slot.Number <= sv.GetSpec().GetReplicas() {
			p.createTask(sv, slot.Number, "", 0)
		}
	}
	return true
}

// finished reports whether a task's container is gone for good.
func finished(t *skiffpb.Task) bool {
	return t.GetStatus().GetState() >= skiffpb.TaskState_TASK_STATE_COMPLETE
}

// live reports whether a task is meant to run.
func live(t *skiffpb.Task) bool {
	return t.GetDesiredState() <= skiffpb.TaskState_TASK_STATE_RUNNING
}

// nodeLost reports whether a task's node can no longer run it: down,
// removed, or drained.
func nodeLost(t *skiffpb.Task, nodes map[string]*skiffpb.Node) bool {
	if t.GetNodeId() == "" {
		return false
	}
	n := nodes[t.GetNodeId()]
	return n == nil || n.GetStatus().GetState() == skiffpb.NodeState_NODE_STATE_DOWN ||
		n.GetSpec().GetAvailability() == skiffpb.NodeAvailability_NODE_AVAILABILITY_DRAIN
}

// slot reconciles one slot: it ends tasks that died or lost their node,
// starts a replacement when the restart policy allows, shrinks the service
// when the slot is beyond the replica count, and prunes history.
func (p *plan) slot(sv *skiffpb.Service, key uint64, tasks []*skiffpb.Task, nodes map[string]*skiffpb.Node, wanted map[uint64]string, u *update) {
	sort.Slice(tasks, func(i, j int) bool { return older(tasks[i], tasks[j]) })
	latest := tasks[len(tasks)-1]

	inService := true
	nodeID := ""
	if wanted != nil {
		nodeID, inService = wanted[key]
		if !inService && nodeUsable(latest, nodes) && live(latest) && !finished(latest) {
			// A paused node keeps its global task.
			n := nodes[latest.GetNodeId()]
			inService = n.GetSpec().GetAvailability() == skiffpb.NodeAvailability_NODE_AVAILABILITY_PAUSE
			nodeID = latest.GetNodeId()
		}
	} else {
		inService = key <= sv.GetSpec().GetReplicas()
	}

	var running []*skiffpb.Task
	replace := false
	restartCause := skiffpb.TaskState(0)
	for _, t := range tasks {
		if t.GetDesiredState() == skiffpb.TaskState_TASK_STATE_REMOVE {
			p.deleteIfGone(t, nodes)
			continue
		}
		if !live(t) {
			continue
		}
		switch {
		case !inService:
			// Scaled away, or its node left a global service: the task is
			// removed, not kept as history, so the slot is empty if it is
			// ever wanted again.
			p.setDesired(t, skiffpb.TaskState_TASK_STATE_REMOVE)
			p.deleteIfGone(t, nodes)
		case nodeLost(t, nodes):
			// Moved regardless of the restart policy: the task did not
			// fail, its host went away or was drained.
			p.setDesired(t, skiffpb.TaskState_TASK_STATE_SHUTDOWN)
			replace = true
		case finished(t):
			// The latest task stays desired-running until the restart
			// policy has decided, which may be after a delay.
			if t == latest {
				restartCause = t.GetStatus().GetState()
			} else {
				p.setDesired(t, skiffpb.TaskState_TASK_STATE_SHUTDOWN)
			}
		default:
			running = append(running, t)
		}
	}

	if inService {
		switch {
		case len(running) > 0:
			if restartCause != 0 && sameSpec(latest, running) {
				// A task started beside one of the same spec (a
				// rebalancing move) ended before it ran: the slot keeps
				// the task that still runs, and the failed one becomes
				// history instead of being restarted, so a move that
				// cannot start is not tried over and over.
				p.setDesired(latest, skiffpb.TaskState_TASK_STATE_SHUTDOWN)
			}
			u.observe(p, key, nodeID, running)
		case replace:
			p.createTask(sv, slotNumber(sv, key), nodeID, 0)
		case restartCause != 0:
			u.failed(latest)
			p.restart(sv, key, nodeID, tasks, latest, restartCause)
		case latest.GetDesiredState() == skiffpb.TaskState_TASK_STATE_REMOVE:
			// A slot emptied by a scale-down, wanted again.
			p.createTask(sv, slotNumber(sv, key), nodeID, 0)
		}
	}
	p.prune(tasks)
}

// sameSpec reports whether one of running runs the spec version t runs.
func sameSpec(t *skiffpb.Task, running []*skiffpb.Task) bool {
	for _, r := range running {
		if r.GetSpecVersion() == t.GetSpecVersion() {
			return true
		}
	}
	return false
}

// deleteIfGone deletes a task that is to be removed once nothing can still
// be running it: it finished, was never placed, or its node is down or gone.
func (p *plan) deleteIfGone(t *skiffpb.Task, nodes map[string]*skiffpb.Node) {
	n := nodes[t.GetNodeId()]
	if finished(t) || t.GetNodeId() == "" || n == nil || n.GetStatus().GetState() == skiffpb.NodeState_NODE_STATE_DOWN {
		p.deleteTask(t)
	}
}

func nodeUsable(t *skiffpb.Task, nodes map[string]*skiffpb.Node) bool {
	return t.GetNodeId() != "" && !nodeLost(t, nodes)
}

func slotNumber(sv *skiffpb.Service, key uint64) uint64 {
	if sv.GetSpec().GetMode() == skiffpb.ServiceMode_SERVICE_MODE_GLOBAL {
		return 0
	}
	return key
}

// older orders tasks by creation, then ID, so "latest" is stable.
func older(a, b *skiffpb.Task) bool {
	if a.GetMeta().GetCreatedAt() != b.GetMeta().GetCreatedAt() {
		return a.GetMeta().GetCreatedAt() < b.GetMeta().GetCreatedAt()
	}
	return a.GetId() < b.GetId()
}

// restart starts a new task in the slot if the restart policy allows it,
// after the policy's delay.
func (p *plan) restart(sv *skiffpb.Service, key uint64, nodeID string, tasks []*skiffpb.Task, latest *skiffpb.Task, cause skiffpb.TaskState) {
	rp := sv.GetSpec().GetRestartPolicy()
	delay := defaultRestartDelay
	if rp != nil {
		delay = time.Duration(rp.GetDelay())
	}
	giveUp := false
	switch rp.GetCondition() {
	case skiffpb.RestartCondition_RESTART_CONDITION_NONE:
		giveUp = true
	case skiffpb.RestartCondition_RESTART_CONDITION_ON_FAILURE:
		giveUp = cause == skiffpb.TaskState_TASK_STATE_COMPLETE
	}
	if max := rp.GetMaxAttempts(); max > 0 && attempts(tasks, rp, p.now) >= max {
		giveUp = true
	}
	if giveUp {
		// The slot stays empty: recording the decision as the task's
		// desired state makes it final.
		p.setDesired(latest, skiffpb.TaskState_TASK_STATE_SHUTDOWN)
		return
	}
	due := time.Unix(0, latest.GetStatus().GetTimestamp()).Add(delay)
	if p.now.Before(due) {
		p.wakeAt(wakeup{at: due, service: sv.GetId(), slot: state.SlotOf(latest)})
		return
	}
	p.setDesired(latest, skiffpb.TaskState_TASK_STATE_SHUTDOWN)
	p.createTask(sv, slotNumber(sv, key), nodeID, latest.GetAttempt()+1)
}

// attempts counts the restarts that count against max_attempts: those of
// tasks created within the policy's window (or all, without a window). Only
// the slot's retained history is visible, so a window longer than the
// history covers counts at most the history's length.
func attempts(tasks []*skiffpb.Task, rp *skiffpb.RestartPolicy, now time.Time) uint64 {
	if rp.GetWindow() == 0 {
		return tasks[len(tasks)-1].GetAttempt()
	}
	since := now.Add(-time.Duration(rp.GetWindow())).UnixNano()
	var n uint64
	for _, t := range tasks {
		if t.GetAttempt() > 0 && t.GetMeta().GetCreatedAt() >= since {
			n++
		}
	}
	return n
}

// prune deletes the oldest finished tasks beyond the history limit.
func (p *plan) prune(tasks []*skiffpb.Task) {
	excess := len(tasks) - p.history
	for _, t := range tasks {
		if excess <= 0 {
			return
		}
		if !live(t) && finished(t) {
			p.deleteTask(t)
			excess--
		}
	}
}
