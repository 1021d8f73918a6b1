package orchestrator

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/skiffhq/skiff/manager/allocator"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// t0 is the harness's starting clock.
var t0 = time.Unix(1_700_000_000, 0)

// harness holds a real state.Store that tests fill by applying commands,
// and runs the orchestrator's plan over it one reconcile at a time, with a
// clock the test moves. It plays the parts of the other writers (the
// scheduler and the agents) by applying their narrow updates directly.
type harness struct {
	t       *testing.T
	store   *state.Store
	index   uint64
	now     time.Time
	history int
	// updates persists across steps as Orchestrator.updates does.
	updates map[string]time.Time
	ipam    *allocator.IPAM
}

func newHarness(t *testing.T) *harness {
	return &harness{t: t, store: state.New(), now: t0, history: 5, updates: map[string]time.Time{}, ipam: allocator.NewIPAM()}
}

// apply commits actions as one command at the next index.
func (h *harness) apply(actions ...*skiffpb.StoreAction) {
	h.t.Helper()
	h.index++
	if err := h.store.Apply(h.index, &skiffpb.Command{Actions: actions}); err != nil {
		h.t.Fatalf("apply at %d: %v", h.index, err)
	}
}

// plan runs one full reconcile's computation over the store, as
// Orchestrator.reconcile does with every service dirty, services in ID
// order, and returns the plan without committing it.
func (h *harness) plan() *plan {
	p := &plan{now: h.now, history: h.history, updates: h.updates, ipam: h.ipam}
	h.store.View(func(tx state.ReadTx) {
		p.nodes = tx.Nodes()
		p.networkByName = tx.NetworkByName
		set := map[string]bool{}
		for _, sv := range tx.Services() {
			set[sv.GetId()] = true
		}
		tx.EachTask(func(t *skiffpb.Task) bool { set[t.GetServiceId()] = true; return true })
		ids := make([]string, 0, len(set))
		for id := range set {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		p.meshAttachments(tx.Services())
		for _, id := range ids {
			if sv := tx.Service(id); sv != nil {
				p.service(sv, tx.TasksByService(id))
			} else {
				p.removed(tx.TasksByService(id))
			}
		}
	})
	return p
}

// step plans, commits the plan's actions to the store, and moves the clock
// on by a millisecond so that tasks created by later steps sort after the
// ones created now. It returns what the plan did.
func (h *harness) step() outcome {
	h.t.Helper()
	p := h.plan()
	if len(p.actions) > 0 {
		h.apply(p.actions...)
	}
	h.now = h.now.Add(time.Millisecond)
	return summarize(p)
}

// advance moves the clock.
func (h *harness) advance(d time.Duration) { h.now = h.now.Add(d) }

// outcome is a plan's actions sorted by kind.
type outcome struct {
	creates  []*skiffpb.Task
	desired  map[string]skiffpb.TaskState
	deletes  []string
	services []*skiffpb.Service
	attach   []*skiffpb.NodeAttachmentUpdate
	wake     time.Time
}

func summarize(p *plan) outcome {
	o := outcome{desired: map[string]skiffpb.TaskState{}, wake: p.wake}
	for _, a := range p.actions {
		switch {
		case a.GetPutTask() != nil:
			o.creates = append(o.creates, a.GetPutTask())
		case a.GetTaskDesired() != nil:
			o.desired[a.GetTaskDesired().GetTaskId()] = a.GetTaskDesired().GetDesiredState()
		case a.GetDeleteTask() != "":
			o.deletes = append(o.deletes, a.GetDeleteTask())
		case a.GetPutService() != nil:
			o.services = append(o.services, a.GetPutService())
		case a.GetNodeAttachment() != nil:
			o.attach = append(o.attach, a.GetNodeAttachment())
		default:
			panic(fmt.Sprintf("unexpected action %v", a))
		}
	}
	sort.Strings(o.deletes)
	return o
}

// createdSlots lists the slots of the created tasks, sorted.
func (o outcome) createdSlots() []uint64 {
	var out []uint64
	for _, t := range o.creates {
		out = append(out, t.GetSlot())
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// createdNodes lists the nodes of the created tasks, sorted.
func (o outcome) createdNodes() []string {
	var out []string
	for _, t := range o.creates {
		out = append(out, t.GetNodeId())
	}
	sort.Strings(out)
	return out
}

// empty reports whether the plan did nothing.
func (o outcome) empty() bool {
	return len(o.creates) == 0 && len(o.desired) == 0 && len(o.deletes) == 0 && len(o.services) == 0 && len(o.attach) == 0
}

// node stores a node with a state and an availability; labels are k=v.
func (h *harness) node(id string, st skiffpb.NodeState, avail skiffpb.NodeAvailability, labels ...string) {
	h.t.Helper()
	l := map[string]string{}
	for _, kv := range labels {
		k, v, _ := strings.Cut(kv, "=")
		l[k] = v
	}
	h.apply(&skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutNode{PutNode: &skiffpb.Node{
		Id: id, Meta: &skiffpb.Meta{}, Name: "host-" + id,
		Spec:   &skiffpb.NodeSpec{Availability: avail, Labels: l},
		Status: &skiffpb.NodeStatus{State: st},
	}}})
}

// readyNode stores a ready, active node.
func (h *harness) readyNode(id string) {
	h.t.Helper()
	h.node(id, skiffpb.NodeState_NODE_STATE_READY, skiffpb.NodeAvailability_NODE_AVAILABILITY_ACTIVE)
}

// setNode changes a stored node's state and availability.
func (h *harness) setNode(id string, st skiffpb.NodeState, avail skiffpb.NodeAvailability) {
	h.t.Helper()
	var n *skiffpb.Node
	h.store.View(func(tx state.ReadTx) { n = proto.Clone(tx.Node(id)).(*skiffpb.Node) })
	n.Status.State = st
	n.Spec.Availability = avail
	h.apply(&skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutNode{PutNode: n}})
}

// replicated returns a replicated service spec'd with replicas, restart
// policy "any" without delay, at spec version 1.
func replicated(id string, replicas uint64) *skiffpb.Service {
	return &skiffpb.Service{
		Id: id, Meta: &skiffpb.Meta{}, SpecVersion: 1,
		Spec: &skiffpb.ServiceSpec{
			Name: "st_" + id, Stack: "st", Replicas: replicas,
			Container:     &skiffpb.ContainerSpec{Image: "img:1"},
			RestartPolicy: &skiffpb.RestartPolicy{Condition: skiffpb.RestartCondition_RESTART_CONDITION_ANY},
		},
	}
}

// global returns a global service at spec version 1.
func global(id string, constraints ...string) *skiffpb.Service {
	sv := replicated(id, 0)
	sv.Spec.Mode = skiffpb.ServiceMode_SERVICE_MODE_GLOBAL
	sv.Spec.Placement = &skiffpb.Placement{Constraints: constraints}
	return sv
}

// putService stores sv (a create, or an update naming the stored version).
func (h *harness) putService(sv *skiffpb.Service) {
	h.t.Helper()
	h.apply(&skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutService{PutService: sv}})
}

// service reads a stored service.
func (h *harness) service(id string) *skiffpb.Service {
	var sv *skiffpb.Service
	h.store.View(func(tx state.ReadTx) { sv = tx.Service(id) })
	return sv
}

// editService applies edit to a copy of the stored service and stores it.
func (h *harness) editService(id string, edit func(sv *skiffpb.Service)) {
	h.t.Helper()
	sv := proto.Clone(h.service(id)).(*skiffpb.Service)
	edit(sv)
	h.putService(sv)
}

// newSpecVersion starts a rolling update as the Control API does: the spec
// moves to the next version, the old one is kept, and the update is
// UPDATING.
func (h *harness) newSpecVersion(id string, edit func(spec *skiffpb.ServiceSpec)) {
	h.t.Helper()
	h.editService(id, func(sv *skiffpb.Service) {
		sv.PreviousSpecs = append(sv.PreviousSpecs, &skiffpb.VersionedSpec{Version: sv.GetSpecVersion(), Spec: proto.Clone(sv.GetSpec()).(*skiffpb.ServiceSpec)})
		sv.SpecVersion++
		edit(sv.Spec)
		sv.UpdateStatus = &skiffpb.UpdateStatus{State: skiffpb.UpdateState_UPDATE_STATE_UPDATING, StartedAt: h.now.UnixNano()}
	})
}

// taskOpts describes a task a test stores directly.
type taskOpts struct {
	slot    uint64
	node    string
	version uint64 // spec version; 0 means 1
	desired skiffpb.TaskState
	state   skiffpb.TaskState
	attempt uint64
	// age is how long before the harness's clock the task was created;
	// the status timestamp is the same.
	age time.Duration
}

// task stores a task of service svID.
func (h *harness) task(id, svID string, o taskOpts) {
	h.t.Helper()
	if o.version == 0 {
		o.version = 1
	}
	if o.desired == 0 {
		o.desired = skiffpb.TaskState_TASK_STATE_RUNNING
	}
	at := h.now.Add(-o.age).UnixNano()
	h.apply(&skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutTask{PutTask: &skiffpb.Task{
		Id: id, Meta: &skiffpb.Meta{CreatedAt: at}, ServiceId: svID, ServiceName: "st_" + svID,
		Slot: o.slot, NodeId: o.node, SpecVersion: o.version, DesiredState: o.desired,
		Status: &skiffpb.TaskStatus{State: o.state, Timestamp: at}, Attempt: o.attempt,
	}}})
}

// running stores a running task in slot on node.
func (h *harness) running(id, svID string, slot uint64, node string) {
	h.t.Helper()
	h.task(id, svID, taskOpts{slot: slot, node: node, state: skiffpb.TaskState_TASK_STATE_RUNNING, age: time.Minute})
}

// setStatus reports a task's observed state as an agent would, stamped
// with the harness clock.
func (h *harness) setStatus(taskID string, st skiffpb.TaskState) {
	h.t.Helper()
	h.apply(&skiffpb.StoreAction{Action: &skiffpb.StoreAction_TaskStatus{TaskStatus: &skiffpb.TaskStatusUpdate{
		TaskId: taskID, Status: &skiffpb.TaskStatus{State: st, Timestamp: h.now.UnixNano()},
	}}})
}

// setStatusAll reports st for every task in tasks.
func (h *harness) setStatusAll(tasks []*skiffpb.Task, st skiffpb.TaskState) {
	h.t.Helper()
	for _, t := range tasks {
		h.setStatus(t.GetId(), st)
	}
}

// tasks lists a service's tasks.
func (h *harness) tasks(svID string) []*skiffpb.Task {
	var out []*skiffpb.Task
	h.store.View(func(tx state.ReadTx) { out = tx.TasksByService(svID) })
	return out
}

// task reads one task.
func (h *harness) get(id string) *skiffpb.Task {
	var t *skiffpb.Task
	h.store.View(func(tx state.ReadTx) { t = tx.Task(id) })
	return t
}

// liveTasks lists the tasks of a service that should run, sorted by slot
// then creation.
func (h *harness) liveTasks(svID string) []*skiffpb.Task {
	var out []*skiffpb.Task
	for _, t := range h.tasks(svID) {
		if live(t) {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].GetSlot() != out[j].GetSlot() {
			return out[i].GetSlot() < out[j].GetSlot()
		}
		return older(out[i], out[j])
	})
	return out
}

// liveInSlot lists the live tasks of one slot, oldest first.
func (h *harness) liveInSlot(svID string, slot uint64) []*skiffpb.Task {
	var out []*skiffpb.Task
	for _, t := range h.liveTasks(svID) {
		if t.GetSlot() == slot {
			out = append(out, t)
		}
	}
	return out
}

// versionsBySlot maps each slot to the spec versions of its live tasks.
func (h *harness) versionsBySlot(svID string) map[uint64][]uint64 {
	out := map[uint64][]uint64{}
	for _, t := range h.liveTasks(svID) {
		out[t.GetSlot()] = append(out[t.GetSlot()], t.GetSpecVersion())
	}
	return out
}

// network stores an overlay network and registers its subnet with the
// harness's IPAM, as the leader's address book does.
func (h *harness) network(id, name, subnet string) {
	h.t.Helper()
	h.apply(&skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutNetwork{PutNetwork: &skiffpb.Network{
		Id: id, Meta: &skiffpb.Meta{}, Spec: &skiffpb.NetworkSpec{Name: name, Driver: "overlay"}, Subnet: subnet,
	}}})
	h.ipam.AddNetwork(id, netip.MustParsePrefix(subnet))
}

// fakeRaft stands in for Raft's commit in-process: Propose applies the
// command to the store at the next index, as the leader's FSM would once the
// entry commits. It records the size of every proposal, and fails them
// while fail is set.
type fakeRaft struct {
	store *state.Store

	mu    sync.Mutex
	index uint64
	sizes []int
	fail  error
}

func (f *fakeRaft) Propose(ctx context.Context, cmd *skiffpb.Command) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sizes = append(f.sizes, len(cmd.GetActions()))
	if f.fail != nil {
		return 0, f.fail
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	f.index++
	// Round-trip through the wire format, as a Raft log entry does.
	data, err := proto.Marshal(cmd)
	if err != nil {
		return 0, err
	}
	var decoded skiffpb.Command
	if err := proto.Unmarshal(data, &decoded); err != nil {
		return 0, err
	}
	return f.index, f.store.Apply(f.index, &decoded)
}

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		<-tick.C
	}
}
