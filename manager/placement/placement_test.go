package placement

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/skiffhq/skiff/manager/allocator"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// recordingRaft applies each proposal to the store at once and keeps it.
type recordingRaft struct {
	store *state.Store

	mu    sync.Mutex
	index uint64
	cmds  []*skiffpb.Command
}

func (r *recordingRaft) Propose(ctx context.Context, cmd *skiffpb.Command) (uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.index++
	r.cmds = append(r.cmds, cmd)
	return r.index, r.store.Apply(r.index, cmd)
}

func (r *recordingRaft) actions() []*skiffpb.StoreAction {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*skiffpb.StoreAction
	for _, c := range r.cmds {
		out = append(out, c.GetActions()...)
	}
	return out
}

// TestPlacementsAreGroupedByNode: a round's placements are committed node
// by node, each node's own address in the task's network first, so that an
// agent hears of all its new tasks in one message.
func TestPlacementsAreGroupedByNode(t *testing.T) {
	store := state.New()
	raft := &recordingRaft{store: store}
	setup := []*skiffpb.StoreAction{
		{Action: &skiffpb.StoreAction_PutNetwork{PutNetwork: &skiffpb.Network{
			Id: "net1", Meta: &skiffpb.Meta{}, Spec: &skiffpb.NetworkSpec{Name: "st_default"}, Subnet: "10.1.0.0/16",
		}}},
		{Action: &skiffpb.StoreAction_PutService{PutService: &skiffpb.Service{
			Id: "sv1", Meta: &skiffpb.Meta{}, SpecVersion: 1,
			Spec: &skiffpb.ServiceSpec{Name: "st_web", Replicas: 12, Container: &skiffpb.ContainerSpec{Image: "img"}},
		}}},
	}
	for _, id := range []string{"n1", "n2", "n3"} {
		setup = append(setup, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutNode{PutNode: &skiffpb.Node{
			Id: id, Meta: &skiffpb.Meta{}, Name: "host-" + id, Spec: &skiffpb.NodeSpec{},
			Status:      &skiffpb.NodeStatus{State: skiffpb.NodeState_NODE_STATE_READY},
			Description: &skiffpb.NodeDescription{Resources: &skiffpb.Resources{NanoCpus: 4e9, MemoryBytes: 8 << 30}},
		}}})
	}
	for i := range 12 {
		id := "t" + strconv.Itoa(i)
		setup = append(setup, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutTask{PutTask: &skiffpb.Task{
			Id: id, Meta: &skiffpb.Meta{CreatedAt: time.Now().UnixNano()}, ServiceId: "sv1", Slot: uint64(i + 1), SpecVersion: 1,
			DesiredState: skiffpb.TaskState_TASK_STATE_RUNNING,
			Status:       &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_PENDING},
			Networks:     []*skiffpb.NetworkAttachment{{NetworkId: "net1", Address: "10.1.0." + strconv.Itoa(i+2) + "/16"}},
		}}})
	}
	if err := store.Apply(1, &skiffpb.Command{Actions: setup}); err != nil {
		t.Fatal(err)
	}
	raft.index = 1
	ipam := allocator.NewIPAM()
	if err := ipam.AddNetwork("net1", netip.MustParsePrefix("10.1.0.0/16")); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); New(Config{Store: store, Raft: raft, IPAM: ipam}).Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		placed := 0
		store.View(func(tx state.ReadTx) {
			tx.EachTask(func(tk *skiffpb.Task) bool {
				if tk.GetNodeId() != "" {
					placed++
				}
				return true
			})
		})
		if placed == 12 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 12 tasks placed", placed)
		}
		time.Sleep(5 * time.Millisecond)
	}

	// Walk the committed actions: once a node's run of actions ends, no
	// later action concerns it, and its address comes before its tasks.
	finished := map[string]bool{}
	current := ""
	attached := map[string]bool{}
	for _, a := range raft.actions() {
		var node string
		switch {
		case a.GetNodeAttachment() != nil:
			node = a.GetNodeAttachment().GetNodeId()
			attached[node] = true
		case a.GetTaskPlacement() != nil:
			node = a.GetTaskPlacement().GetNodeId()
			if !attached[node] {
				t.Errorf("task %s placed on %s before the node's own address", a.GetTaskPlacement().GetTaskId(), node)
			}
		default:
			continue
		}
		if node != current {
			if finished[node] {
				t.Errorf("the placements on %s are not together", node)
			}
			if current != "" {
				finished[current] = true
			}
			current = node
		}
	}
	if len(attached) != 3 {
		t.Errorf("%d nodes got an address in the network, want 3", len(attached))
	}
}

// failFirstRaft rejects the first proposal, as a Raft that lost its
// leadership mid-round would, and applies the rest at once.
type failFirstRaft struct {
	recordingRaft
	failed bool
}

func (r *failFirstRaft) Propose(ctx context.Context, cmd *skiffpb.Command) (uint64, error) {
	r.mu.Lock()
	if !r.failed {
		r.failed = true
		r.mu.Unlock()
		return 0, errors.New("not the leader")
	}
	r.mu.Unlock()
	return r.recordingRaft.Propose(ctx, cmd)
}

// TestFailedRoundIsRetriedFromTheStore: a round whose commit fails leaves
// the placer believing its tasks placed; it reads the store again and
// places them anew instead of waiting for the next change.
func TestFailedRoundIsRetriedFromTheStore(t *testing.T) {
	store := state.New()
	raft := &failFirstRaft{recordingRaft: recordingRaft{store: store}}
	setup := []*skiffpb.StoreAction{
		{Action: &skiffpb.StoreAction_PutService{PutService: &skiffpb.Service{
			Id: "sv1", Meta: &skiffpb.Meta{}, SpecVersion: 1,
			Spec: &skiffpb.ServiceSpec{Name: "st_web", Replicas: 2, Container: &skiffpb.ContainerSpec{Image: "img"}},
		}}},
		{Action: &skiffpb.StoreAction_PutNode{PutNode: &skiffpb.Node{
			Id: "n1", Meta: &skiffpb.Meta{}, Name: "host-n1", Spec: &skiffpb.NodeSpec{},
			Status:      &skiffpb.NodeStatus{State: skiffpb.NodeState_NODE_STATE_READY},
			Description: &skiffpb.NodeDescription{Resources: &skiffpb.Resources{NanoCpus: 4e9, MemoryBytes: 8 << 30}},
		}}},
	}
	for i := range 2 {
		setup = append(setup, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutTask{PutTask: &skiffpb.Task{
			Id: "t" + strconv.Itoa(i), Meta: &skiffpb.Meta{}, ServiceId: "sv1", Slot: uint64(i + 1), SpecVersion: 1,
			DesiredState: skiffpb.TaskState_TASK_STATE_RUNNING,
			Status:       &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_PENDING},
		}}})
	}
	if err := store.Apply(1, &skiffpb.Command{Actions: setup}); err != nil {
		t.Fatal(err)
	}
	raft.index = 1

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); New(Config{Store: store, Raft: raft}).Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		placed := 0
		store.View(func(tx state.ReadTx) {
			for _, tk := range tx.Tasks() {
				if tk.GetNodeId() == "n1" {
					placed++
				}
			}
		})
		if placed == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 2 tasks placed after the first round failed", placed)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
