package state

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// Builders of whole objects. Each returns a fresh message at version 0 (a
// create); tests set Meta.Version themselves for updates.

func testNode(id, name string) *skiffpb.Node {
	return &skiffpb.Node{
		Id: id, Meta: &skiffpb.Meta{CreatedAt: 1}, Name: name,
		Spec:   &skiffpb.NodeSpec{Labels: map[string]string{"zone": "a"}},
		Status: &skiffpb.NodeStatus{State: skiffpb.NodeState_NODE_STATE_READY, Message: "ready"},
	}
}

func testNetwork(id, name string) *skiffpb.Network {
	return &skiffpb.Network{
		Id: id, Meta: &skiffpb.Meta{}, Spec: &skiffpb.NetworkSpec{Name: name, Driver: "overlay"},
		Vni: 4096, Subnet: "10.0.0.0/24", Gateway: "10.0.0.1",
	}
}

func testStack(id, name string) *skiffpb.Stack {
	return &skiffpb.Stack{Id: id, Meta: &skiffpb.Meta{}, Name: name}
}

func testService(id, name string) *skiffpb.Service {
	stack, _, _ := strings.Cut(name, "_")
	return &skiffpb.Service{
		Id: id, Meta: &skiffpb.Meta{}, SpecVersion: 1,
		Spec: &skiffpb.ServiceSpec{
			Name: name, Stack: stack, Replicas: 1,
			Container: &skiffpb.ContainerSpec{Image: "img:1"},
		},
	}
}

func testTask(id, serviceID, nodeID string) *skiffpb.Task {
	return &skiffpb.Task{
		Id: id, Meta: &skiffpb.Meta{}, ServiceId: serviceID, ServiceName: "svc", Slot: 1,
		NodeId: nodeID, SpecVersion: 1, DesiredState: skiffpb.TaskState_TASK_STATE_RUNNING,
		Status: &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_PENDING, Message: "pending"},
	}
}

// Builders of actions.

func putNode(n *skiffpb.Node) *skiffpb.StoreAction {
	return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutNode{PutNode: n}}
}
func putNetwork(n *skiffpb.Network) *skiffpb.StoreAction {
	return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutNetwork{PutNetwork: n}}
}
func putStack(st *skiffpb.Stack) *skiffpb.StoreAction {
	return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutStack{PutStack: st}}
}
func putService(sv *skiffpb.Service) *skiffpb.StoreAction {
	return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutService{PutService: sv}}
}
func putTask(t *skiffpb.Task) *skiffpb.StoreAction {
	return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutTask{PutTask: t}}
}
func putCluster(c *skiffpb.Cluster) *skiffpb.StoreAction {
	return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutCluster{PutCluster: c}}
}
func delNode(id string) *skiffpb.StoreAction {
	return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_DeleteNode{DeleteNode: id}}
}
func delNetwork(id string) *skiffpb.StoreAction {
	return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_DeleteNetwork{DeleteNetwork: id}}
}
func delStack(id string) *skiffpb.StoreAction {
	return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_DeleteStack{DeleteStack: id}}
}
func delService(id string) *skiffpb.StoreAction {
	return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_DeleteService{DeleteService: id}}
}
func delTask(id string) *skiffpb.StoreAction {
	return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_DeleteTask{DeleteTask: id}}
}
func taskStatus(id string, st skiffpb.TaskState, msg string) *skiffpb.StoreAction {
	return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_TaskStatus{TaskStatus: &skiffpb.TaskStatusUpdate{
		TaskId: id, Status: &skiffpb.TaskStatus{State: st, Message: msg},
	}}}
}
func taskDesired(id string, st skiffpb.TaskState) *skiffpb.StoreAction {
	return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_TaskDesired{TaskDesired: &skiffpb.TaskDesiredUpdate{
		TaskId: id, DesiredState: st,
	}}}
}
func nodeStatus(id string, st skiffpb.NodeState, msg string) *skiffpb.StoreAction {
	return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_NodeStatus{NodeStatus: &skiffpb.NodeStatusUpdate{
		NodeId: id, Status: &skiffpb.NodeStatus{State: st, Message: msg},
	}}}
}
func taskPlacement(id, nodeID string, st *skiffpb.TaskStatus, ports ...*skiffpb.PortBinding) *skiffpb.StoreAction {
	return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_TaskPlacement{TaskPlacement: &skiffpb.TaskPlacement{
		TaskId: id, NodeId: nodeID, Status: st, Ports: ports,
	}}}
}

func nodeAttachment(nodeID, networkID, addr string) *skiffpb.StoreAction {
	return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_NodeAttachment{NodeAttachment: &skiffpb.NodeAttachmentUpdate{
		NodeId: nodeID, Attachment: &skiffpb.NetworkAttachment{NetworkId: networkID, Address: addr},
	}}}
}

func cmd(actions ...*skiffpb.StoreAction) *skiffpb.Command {
	return &skiffpb.Command{Actions: actions}
}

// mustApply applies actions as one command at index and fails the test on
// an error.
func mustApply(t testing.TB, s *Store, index uint64, actions ...*skiffpb.StoreAction) {
	t.Helper()
	if err := s.Apply(index, cmd(actions...)); err != nil {
		t.Fatalf("Apply(%d): %v", index, err)
	}
}

// withVersion returns a copy of m whose meta.version is v: the form of an
// update that names the version it read.
func withVersion[T interface {
	proto.Message
	GetMeta() *skiffpb.Meta
}](m T, v uint64) T {
	c := proto.Clone(m).(T)
	c.GetMeta().Version = v
	return c
}

// getTask reads one task (nil when absent).
func getTask(s *Store, id string) *skiffpb.Task {
	var t *skiffpb.Task
	s.View(func(tx ReadTx) { t = tx.Task(id) })
	return t
}

// getNode reads one node (nil when absent).
func getNode(s *Store, id string) *skiffpb.Node {
	var n *skiffpb.Node
	s.View(func(tx ReadTx) { n = tx.Node(id) })
	return n
}

// ids lists the IDs of objects, in their order.
func ids[T interface{ GetId() string }](list []T) []string {
	out := make([]string, 0, len(list))
	for _, o := range list {
		out = append(out, o.GetId())
	}
	return out
}

// textOf is a canonical, human-readable form of a message for comparisons
// inside one test binary.
func textOf(m proto.Message) string {
	if m == nil {
		return "<nil>"
	}
	return prototext.MarshalOptions{}.Format(m)
}

// tb is the part of testing.TB the helpers need; *rapid.T has it too.
type tb interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// dump renders everything the store holds, its internals included: the
// index, every table by ID and by name, and both secondary task indexes. Two
// stores with equal dumps are indistinguishable to every reader. It also
// checks the store's internal invariants (the name index and the secondary
// indexes agree with the tables and point at the very same objects) and
// fails the test when they are broken.
func dump(t tb, s *Store) string {
	t.Helper()
	s.mu.RLock()
	defer s.mu.RUnlock()
	var b strings.Builder
	fmt.Fprintf(&b, "index %d\ncluster %s\n", s.index, textOf(s.cluster))
	dumpTable(t, &b, "node", s.nodes)
	dumpTable(t, &b, "network", s.networks)
	dumpTable(t, &b, "stack", s.stacks)
	dumpTable(t, &b, "service", s.services)
	dumpTable(t, &b, "task", s.tasks)

	// Secondary indexes: recompute them from the task table and compare.
	wantNode := map[string][]string{}
	wantService := map[string][]string{}
	for id, tk := range s.tasks.byID {
		if tk.GetNodeId() != "" {
			wantNode[tk.GetNodeId()] = append(wantNode[tk.GetNodeId()], id)
		}
		if tk.GetServiceId() != "" {
			wantService[tk.GetServiceId()] = append(wantService[tk.GetServiceId()], id)
		}
	}
	checkIndex(t, &b, "tasksByNode", s.tasksByNode, wantNode, s.tasks)
	checkIndex(t, &b, "tasksByService", flattenSlots(t, s.tasksByService), wantService, s.tasks)

	// Service counts: recompute them too. A count of zero is never kept.
	wantCounts := map[string]*TaskCounts{}
	for _, tk := range s.tasks.byID {
		countTask(wantCounts, tk, 1)
	}
	if len(wantCounts) != len(s.taskCounts) {
		t.Errorf("taskCounts has %d services, want %d", len(s.taskCounts), len(wantCounts))
	}
	for svc, want := range wantCounts {
		if got := s.taskCounts[svc]; got == nil || *got != *want {
			t.Errorf("taskCounts[%q] = %+v, want %+v", svc, got, want)
		}
	}
	return b.String()
}

func dumpTable[T object](t tb, b *strings.Builder, kind string, tb *table[T]) {
	t.Helper()
	keys := make([]string, 0, len(tb.byID))
	for id, o := range tb.byID {
		if o.GetId() != id {
			t.Errorf("%s table: key %q holds object %q", kind, id, o.GetId())
		}
		keys = append(keys, id)
	}
	sort.Strings(keys)
	for _, id := range keys {
		fmt.Fprintf(b, "%s %s: %s\n", kind, id, textOf(tb.byID[id]))
	}
	if tb.name == nil {
		return
	}
	if len(tb.byName) != len(tb.byID) {
		t.Errorf("%s table: %d names for %d objects", kind, len(tb.byName), len(tb.byID))
	}
	for name, o := range tb.byName {
		if tb.name(o) != name {
			t.Errorf("%s table: name %q holds an object named %q", kind, name, tb.name(o))
		}
		if cur, ok := tb.byID[o.GetId()]; !ok || cur != o {
			t.Errorf("%s table: name %q holds a stale object %q", kind, name, o.GetId())
		}
	}
}

// flattenSlots turns the by-service index into a set of tasks per service
// for checkIndex, checking on the way that every task is filed under its own
// slot, once, and that no empty slot is kept.
func flattenSlots(t tb, idx map[string]map[Slot][]*skiffpb.Task) map[string]map[string]*skiffpb.Task {
	t.Helper()
	out := map[string]map[string]*skiffpb.Task{}
	for svc, slots := range idx {
		m := map[string]*skiffpb.Task{}
		for slot, list := range slots {
			if len(list) == 0 {
				t.Errorf("tasksByService[%q]: empty slot %+v kept", svc, slot)
			}
			for _, tk := range list {
				if SlotOf(tk) != slot || tk.GetServiceId() != svc {
					t.Errorf("tasksByService[%q][%+v] holds task %q of service %q, slot %+v", svc, slot, tk.GetId(), tk.GetServiceId(), SlotOf(tk))
				}
				if _, dup := m[tk.GetId()]; dup {
					t.Errorf("tasksByService[%q]: task %q filed twice", svc, tk.GetId())
				}
				m[tk.GetId()] = tk
			}
		}
		out[svc] = m
	}
	return out
}

func checkIndex(t tb, b *strings.Builder, what string, idx map[string]map[string]*skiffpb.Task, want map[string][]string, tasks *table[*skiffpb.Task]) {
	t.Helper()
	keys := make([]string, 0, len(idx))
	for k, m := range idx {
		if len(m) == 0 {
			t.Errorf("%s: empty set kept for %q", what, k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(idx) != len(want) {
		t.Errorf("%s: %d keys, want %d", what, len(idx), len(want))
	}
	for _, k := range keys {
		got := make([]string, 0, len(idx[k]))
		for id, tk := range idx[k] {
			if cur, ok := tasks.byID[id]; !ok || cur != tk {
				t.Errorf("%s[%q]: task %q is not the stored object", what, k, id)
			}
			got = append(got, id)
		}
		sort.Strings(got)
		w := append([]string(nil), want[k]...)
		sort.Strings(w)
		if strings.Join(got, ",") != strings.Join(w, ",") {
			t.Errorf("%s[%q] = %v, want %v", what, k, got, w)
		}
		fmt.Fprintf(b, "%s %s: %s\n", what, k, strings.Join(got, ","))
	}
}

// recvBatch waits up to a deadline for the next batch on ch.
func recvBatch(t testing.TB, ch <-chan Batch) Batch {
	t.Helper()
	select {
	case b, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed, want a batch")
		}
		return b
	case <-time.After(5 * time.Second):
		t.Fatal("no batch within 5s")
	}
	return Batch{}
}

// expectNoBatch asserts that nothing is queued on ch. Apply publishes
// before it returns, so a batch that was going to arrive is already queued.
func expectNoBatch(t testing.TB, ch <-chan Batch) {
	t.Helper()
	select {
	case b, ok := <-ch:
		if ok {
			t.Fatalf("unexpected batch at index %d with %d events", b.Index, len(b.Events))
		}
		t.Fatal("watch channel closed unexpectedly")
	default:
	}
}

// expectClosed asserts that ch is closed, draining anything still buffered.
func expectClosed(t testing.TB, ch <-chan Batch) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("watch channel still open after 5s")
		}
	}
}
