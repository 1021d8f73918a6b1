package dispatcher

import (
	"context"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// taken summarises a feed's take: task ID → desired state, with deletes as
// "-ID", and the node's ID if it was included.
func taken(tasks []taskChange, node *skiffpb.Node) (ids []string, nodeID string) {
	for _, c := range tasks {
		id := c.task.GetId()
		if c.deleted {
			id = "-" + id
		}
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids, node.GetId()
}

func signalled(f *feed) bool {
	select {
	case <-f.notify:
		return true
	default:
		return false
	}
}

// TestHubRoutesByNode: each feed hears only of its node's tasks and of its
// node, the latest event of a task wins, and take empties the feed.
func TestHubRoutesByNode(t *testing.T) {
	h := newHub(state.New())
	f1, f2 := h.subscribe("n1"), h.subscribe("n2")
	other := h.subscribe("n1") // a second session of n1, during a handover
	h.route(state.Batch{Index: 5, Events: []state.Event{
		put(task("a", "n1", stRunning, stAssigned)),
		put(task("b", "n2", stRunning, stAssigned)),
		put(task("p", "", stRunning, stPending)),
		{Object: &skiffpb.Node{Id: "n1"}},
		{Object: &skiffpb.Service{Id: "sv1"}},
	}})
	h.route(state.Batch{Index: 6, Events: []state.Event{
		put(task("a", "n1", stShutdown, stRunning)),
		del(task("c", "n1", stRemove, stShutdown)),
	}})
	if !signalled(f1) || !signalled(f2) || !signalled(other) {
		t.Fatal("a feed with news was not signalled")
	}
	tasks, node, resync := f1.take(0)
	if ids, nodeID := taken(tasks, node); !reflect.DeepEqual(ids, []string{"-c", "a"}) || nodeID != "n1" || resync {
		t.Fatalf("n1 took %v, node %q, resync %v", ids, nodeID, resync)
	}
	for _, c := range tasks {
		if c.task.GetId() == "a" && (c.task.GetDesiredState() != stShutdown || c.index != 6) {
			t.Errorf("a is %v at %d, want the latest event", c.task.GetDesiredState(), c.index)
		}
	}
	if tasks, node, _ := f1.take(0); len(tasks) != 0 || node != nil {
		t.Errorf("a second take found %v, %v", tasks, node)
	}
	tasks, node, _ = f2.take(0)
	if ids, nodeID := taken(tasks, node); !reflect.DeepEqual(ids, []string{"b"}) || nodeID != "" {
		t.Errorf("n2 took %v, node %q", ids, nodeID)
	}
	tasks, node, _ = other.take(0)
	if ids, _ := taken(tasks, node); !reflect.DeepEqual(ids, []string{"-c", "a"}) {
		t.Errorf("n1's second feed took %v", ids)
	}

	// Unsubscribed feeds hear nothing more.
	h.unsubscribe(f1)
	h.unsubscribe(other)
	h.route(state.Batch{Index: 7, Events: []state.Event{put(task("d", "n1", stRunning, stAssigned))}})
	if signalled(f1) {
		t.Error("an unsubscribed feed was signalled")
	}
	if len(h.feeds["n1"]) != 0 {
		t.Errorf("hub keeps %d feeds of n1", len(h.feeds["n1"]))
	}
}

// TestFeedTakeSkipsWhatTheViewHolds: changes at or below the index of the
// session's view are dropped; later ones are kept.
func TestFeedTakeSkipsWhatTheViewHolds(t *testing.T) {
	h := newHub(state.New())
	f := h.subscribe("n1")
	h.route(state.Batch{Index: 3, Events: []state.Event{put(task("old", "n1", stRunning, stAssigned)), {Object: &skiffpb.Node{Id: "n1"}}}})
	h.route(state.Batch{Index: 4, Events: []state.Event{put(task("new", "n1", stRunning, stAssigned))}})
	tasks, node, _ := f.take(3)
	if ids, _ := taken(tasks, node); !reflect.DeepEqual(ids, []string{"new"}) || node != nil {
		t.Fatalf("took %v and node %v after index 3, want only the task at 4", ids, node)
	}
}

// TestHubResyncsAfterLosingTheWatch: when the hub's watch is cut off, it
// watches again and every feed is told to re-read its node, with what it
// had collected dropped.
func TestHubResyncsAfterLosingTheWatch(t *testing.T) {
	h := newHub(state.New())
	f := h.subscribe("n1")
	h.route(state.Batch{Index: 3, Events: []state.Event{put(task("a", "n1", stRunning, stAssigned))}})
	<-f.notify
	cut := make(chan state.Batch)
	close(cut)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.run(ctx, cut, func() {}) }()
	select {
	case <-f.notify:
	case <-time.After(5 * time.Second):
		t.Fatal("the feed was not told to resync")
	}
	cancel()
	<-done
	tasks, node, resync := f.take(0)
	if !resync || len(tasks) != 0 || node != nil {
		t.Fatalf("took %v, %v, resync %v; want only a resync", tasks, node, resync)
	}
}

// TestResyncBatch: after a resync, the node's tasks come as updates and the
// tasks the agent was sent that are gone as deletes, so changes turns them
// into the right message.
func TestResyncBatch(t *testing.T) {
	d := fixture(t)
	if err := d.store.Apply(2, &skiffpb.Command{Actions: []*skiffpb.StoreAction{
		{Action: &skiffpb.StoreAction_PutTask{PutTask: task("keep", "n1", stRunning, stRunning)}},
		{Action: &skiffpb.StoreAction_PutTask{PutTask: task("stop", "n1", stShutdown, stRunning)}},
		{Action: &skiffpb.StoreAction_PutTask{PutTask: task("new", "n1", stRunning, stAssigned)}},
		{Action: &skiffpb.StoreAction_PutTask{PutTask: task("theirs", "n2", stRunning, stAssigned)}},
	}}); err != nil {
		t.Fatal(err)
	}
	sent := map[string]sentTask{"keep": {desired: stRunning}, "stop": {desired: stRunning}, "gone": {desired: stRunning}}
	b, index := d.resyncBatch("n1", sent)
	if index != 2 || b.Index != 2 {
		t.Errorf("resync at index %d (batch %d), want 2", index, b.Index)
	}
	msg := d.changes("n1", sent, []state.Batch{b})
	var updated []string
	for _, a := range msg.GetUpdated() {
		updated = append(updated, a.GetTask().GetId())
	}
	sort.Strings(updated)
	if !reflect.DeepEqual(updated, []string{"new", "stop"}) || !reflect.DeepEqual(msg.GetRemoved(), []string{"gone"}) {
		t.Errorf("updated %v removed %v, want [new stop] and [gone]", updated, msg.GetRemoved())
	}
	if nodeAttachments("n1", []state.Batch{b}) == nil {
		t.Error("the resync does not carry the node, so its addresses would not be compared")
	}
}
