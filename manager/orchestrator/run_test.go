package orchestrator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/skiffhq/skiff/manager/allocator"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// runOrchestrator starts Orchestrator.Run over store with a fakeRaft and
// returns the raft and a stop function that waits for Run to return.
func runOrchestrator(t *testing.T, store *state.Store, cfg Config) (*fakeRaft, func()) {
	t.Helper()
	fr := &fakeRaft{store: store}
	cfg.Store, cfg.Raft = store, fr
	o := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		o.Run(ctx)
	}()
	stop := func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after its context ended")
		}
	}
	t.Cleanup(stop)
	return fr, stop
}

// write applies actions through fr, as other writers (Control API,
// scheduler, agents) would commit them.
func write(t *testing.T, fr *fakeRaft, actions ...*skiffpb.StoreAction) {
	t.Helper()
	if _, err := fr.Propose(context.Background(), &skiffpb.Command{Actions: actions}); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// liveOf lists the live tasks of a service by slot.
func liveOf(store *state.Store, svID string) map[uint64][]*skiffpb.Task {
	out := map[uint64][]*skiffpb.Task{}
	store.View(func(tx state.ReadTx) {
		for _, t := range tx.TasksByService(svID) {
			if live(t) {
				out[t.GetSlot()] = append(out[t.GetSlot()], t)
			}
		}
	})
	return out
}

func statusAction(id string, st skiffpb.TaskState) *skiffpb.StoreAction {
	return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_TaskStatus{TaskStatus: &skiffpb.TaskStatusUpdate{
		TaskId: id, Status: &skiffpb.TaskStatus{State: st, Timestamp: time.Now().UnixNano()},
	}}}
}

func placeAction(id, node string) *skiffpb.StoreAction {
	return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_TaskPlacement{TaskPlacement: &skiffpb.TaskPlacement{
		TaskId: id, NodeId: node, Status: &skiffpb.TaskStatus{State: stAssigned},
	}}}
}

// TestRunEndToEnd drives Orchestrator.Run against a real store through a
// fake Raft that applies each proposal at once: a deploy gets its tasks, a
// failed task is replaced, a scale-down shuts slots down, and a deleted
// service's tasks are removed and deleted.
func TestRunEndToEnd(t *testing.T) {
	store := state.New()
	fr, stop := runOrchestrator(t, store, Config{})
	write(t, fr, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutNode{PutNode: &skiffpb.Node{
		Id: "n1", Meta: &skiffpb.Meta{}, Name: "h1", Spec: &skiffpb.NodeSpec{}, Status: &skiffpb.NodeStatus{State: ready},
	}}})
	write(t, fr, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutService{PutService: replicated("web", 3)}})

	// Deploy: one task per slot.
	eventually(t, 10*time.Second, func() error {
		live := liveOf(store, "web")
		if len(live) != 3 || len(live[1]) != 1 || len(live[2]) != 1 || len(live[3]) != 1 {
			return fmt.Errorf("live tasks by slot: %v", live)
		}
		return nil
	})
	// The scheduler places them and the agent runs them.
	for _, ts := range liveOf(store, "web") {
		write(t, fr, placeAction(ts[0].GetId(), "n1"), statusAction(ts[0].GetId(), stRunning))
	}

	// A task fails: it is shut down and its slot gets a new attempt.
	failed := liveOf(store, "web")[2][0]
	write(t, fr, statusAction(failed.GetId(), stFailed))
	eventually(t, 10*time.Second, func() error {
		live := liveOf(store, "web")[2]
		if len(live) != 1 || live[0].GetId() == failed.GetId() || live[0].GetAttempt() != 1 {
			return fmt.Errorf("slot 2 live tasks: %v", live)
		}
		return nil
	})

	// Scale down to one: slots 2 and 3 are shut down.
	var sv *skiffpb.Service
	store.View(func(tx state.ReadTx) { sv = tx.Service("web") })
	scaled := replicated("web", 1)
	scaled.Meta.Version = sv.GetMeta().GetVersion()
	write(t, fr, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutService{PutService: scaled}})
	eventually(t, 10*time.Second, func() error {
		live := liveOf(store, "web")
		if len(live) != 1 || len(live[1]) != 1 {
			return fmt.Errorf("live tasks by slot: %v", live)
		}
		return nil
	})

	// Delete the service: its tasks go (the unplaced replacement at once,
	// the running ones once they stop).
	write(t, fr, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_DeleteService{DeleteService: "web"}})
	eventually(t, 10*time.Second, func() error {
		var left []string
		store.View(func(tx state.ReadTx) {
			for _, tk := range tx.TasksByService("web") {
				if tk.GetDesiredState() != stRemove {
					left = append(left, tk.GetId())
				}
			}
		})
		if len(left) > 0 {
			return fmt.Errorf("tasks not told to go: %v", left)
		}
		return nil
	})
	var running []*skiffpb.StoreAction
	store.View(func(tx state.ReadTx) {
		for _, tk := range tx.TasksByService("web") {
			running = append(running, statusAction(tk.GetId(), stShutdown))
		}
	})
	write(t, fr, running...)
	eventually(t, 10*time.Second, func() error {
		var n int
		store.View(func(tx state.ReadTx) { n = len(tx.TasksByService("web")) })
		if n != 0 {
			return fmt.Errorf("%d tasks left", n)
		}
		return nil
	})
	stop()
}

// TestRunRecoversFromCutOffWatch: when the store is restored from a
// snapshot (which closes every watch), Run starts over with a full
// reconcile instead of stopping.
func TestRunRecoversFromCutOffWatch(t *testing.T) {
	store := state.New()
	fr, _ := runOrchestrator(t, store, Config{})
	// A snapshot holding a service without tasks.
	src := state.New()
	if err := src.Apply(100, &skiffpb.Command{Actions: []*skiffpb.StoreAction{
		{Action: &skiffpb.StoreAction_PutService{PutService: replicated("web", 2)}},
	}}); err != nil {
		t.Fatal(err)
	}
	fr.mu.Lock()
	fr.index = 100
	var buf bytes.Buffer
	if _, err := src.Snapshot().WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	err := store.Restore(&buf)
	fr.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if live := liveOf(store, "web"); len(live) != 2 {
			return fmt.Errorf("live tasks by slot after restore: %v", live)
		}
		return nil
	})
}

// TestRunWakesForDelayedWork: a restart whose delay is not over is done by
// the wake-up Run schedules, without any other change to the store.
func TestRunWakesForDelayedWork(t *testing.T) {
	store := state.New()
	fr, _ := runOrchestrator(t, store, Config{})
	sv := replicated("web", 1)
	sv.Spec.RestartPolicy.Delay = int64(200 * time.Millisecond)
	write(t, fr, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutService{PutService: sv}})
	var first *skiffpb.Task
	eventually(t, 10*time.Second, func() error {
		live := liveOf(store, "web")[1]
		if len(live) != 1 {
			return fmt.Errorf("slot 1: %v", live)
		}
		first = live[0]
		return nil
	})
	write(t, fr, statusAction(first.GetId(), stFailed))
	eventually(t, 10*time.Second, func() error {
		live := liveOf(store, "web")[1]
		if len(live) != 1 || live[0].GetId() == first.GetId() {
			return fmt.Errorf("slot 1 after the delay: %v", live)
		}
		return nil
	})
}

// TestCommitBatches: commit splits the actions into proposals of at most
// maxActionsPerCommand, and a failed proposal gives the addresses of the
// tasks and node attachments it would have created back to the IPAM.
func TestCommitBatches(t *testing.T) {
	store := state.New()
	ipam := allocator.NewIPAM()
	ipam.AddNetwork("net1", netip.MustParsePrefix("10.0.0.0/29")) // .2 to .6
	fr := &fakeRaft{store: store}
	o := New(Config{Store: store, Raft: fr, IPAM: ipam})

	var actions []*skiffpb.StoreAction
	for i := 0; i < 2*maxActionsPerCommand+5; i++ {
		actions = append(actions, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_DeleteTask{DeleteTask: fmt.Sprint(i)}})
	}
	o.commit(context.Background(), actions)
	if want := []int{maxActionsPerCommand, maxActionsPerCommand, 5}; !reflect.DeepEqual(fr.sizes, want) {
		t.Fatalf("proposal sizes %v, want %v", fr.sizes, want)
	}

	// Take every address, then fail a commit that holds two of them.
	var addrs []string
	for {
		p, err := ipam.Allocate("net1")
		if errors.Is(err, allocator.ErrExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, p.String())
	}
	fr.fail = errors.New("not leader")
	o.commit(context.Background(), []*skiffpb.StoreAction{
		{Action: &skiffpb.StoreAction_PutTask{PutTask: &skiffpb.Task{Id: "t", Networks: []*skiffpb.NetworkAttachment{{NetworkId: "net1", Address: addrs[0]}}}}},
		{Action: &skiffpb.StoreAction_NodeAttachment{NodeAttachment: &skiffpb.NodeAttachmentUpdate{
			NodeId: "n", Attachment: &skiffpb.NetworkAttachment{NetworkId: "net1", Address: addrs[1]},
		}}},
	})
	var got []string
	for {
		p, err := ipam.Allocate("net1")
		if err != nil {
			break
		}
		got = append(got, p.String())
	}
	if len(got) != 2 {
		t.Fatalf("after a failed commit %v came back to the pool, want %v", got, addrs[:2])
	}
}
