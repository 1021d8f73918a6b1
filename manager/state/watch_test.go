package state

import (
	"fmt"
	"sync"
	"testing"
	"time"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// TestWatchDeliversBatchesInOrder: each applied command is one batch, in
// index order, with its events in action order.
func TestWatchDeliversBatchesInOrder(t *testing.T) {
	s := New()
	var seen uint64
	ch, cancel := s.ViewAndWatch(func(tx ReadTx) { seen = tx.Index() })
	defer cancel()
	if seen != 0 {
		t.Fatalf("view index = %d", seen)
	}
	const n = 200
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("t%03d", i)
		mustApply(t, s, uint64(i),
			putTask(testTask(id, "sv", "")),
			taskDesired(id, skiffpb.TaskState_TASK_STATE_SHUTDOWN),
			delTask(id))
	}
	for i := 1; i <= n; i++ {
		b := recvBatch(t, ch)
		if b.Index != uint64(i) || len(b.Events) != 3 {
			t.Fatalf("batch %d: index %d with %d events", i, b.Index, len(b.Events))
		}
		id := fmt.Sprintf("t%03d", i)
		for j, ev := range b.Events {
			tk := ev.Object.(*skiffpb.Task)
			if tk.GetId() != id || ev.Deleted != (j == 2) {
				t.Fatalf("batch %d event %d = %s deleted=%v", i, j, tk.GetId(), ev.Deleted)
			}
		}
		if b.Events[1].Object.(*skiffpb.Task).GetDesiredState() != skiffpb.TaskState_TASK_STATE_SHUTDOWN {
			t.Fatalf("batch %d: second event does not show the desired-state change", i)
		}
	}
	expectNoBatch(t, ch)
}

// TestWatchFiltersNoops: commands that change nothing publish nothing.
func TestWatchFiltersNoops(t *testing.T) {
	s := seed(t)
	ch, cancel := s.ViewAndWatch(nil)
	defer cancel()
	mustApply(t, s, 2,
		taskDesired("t1", skiffpb.TaskState_TASK_STATE_NEW),               // lower: dropped
		taskStatus("t1", skiffpb.TaskState_TASK_STATE_PENDING, "pending"), // identical: dropped
		nodeStatus("n1", skiffpb.NodeState_NODE_STATE_READY, "ready"),     // identical: dropped
		delTask("missing"),
		taskPlacement("missing", "n1", nil))
	expectNoBatch(t, ch)
}

// TestViewAndWatchHasNoGap: while commands are applied concurrently, every
// watch sees every index after the one its view showed; at most the view's
// own index shows again as the first batch.
func TestViewAndWatchHasNoGap(t *testing.T) {
	s := New()
	const total = 2000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= total; i++ {
			if err := s.Apply(uint64(i), cmd(putTask(testTask(fmt.Sprintf("t%05d", i), "sv", "")))); err != nil {
				t.Errorf("Apply(%d): %v", i, err)
				return
			}
		}
	}()
	for w := 0; w < 20; w++ {
		var viewIndex uint64
		var viewTasks int
		ch, cancel := s.ViewAndWatch(func(tx ReadTx) { viewIndex, viewTasks = tx.Index(), tx.CountTasks() })
		if uint64(viewTasks) != viewIndex {
			t.Fatalf("view at index %d holds %d tasks", viewIndex, viewTasks)
		}
		if viewIndex == total {
			cancel()
			break
		}
		b := recvBatch(t, ch)
		if b.Index != viewIndex && b.Index != viewIndex+1 {
			t.Fatalf("watch %d: view at %d, first batch at %d", w, viewIndex, b.Index)
		}
		for next := b.Index + 1; next <= min(b.Index+50, total); next++ {
			if b = recvBatch(t, ch); b.Index != next {
				t.Fatalf("watch %d: batch %d after %d", w, b.Index, next-1)
			}
		}
		cancel()
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("writer did not finish")
	}
}

// TestSlowWatcherIsCutOff: a watcher that does not read loses its stream
// (its channel is closed after the buffered batches) instead of blocking
// Apply; a watcher that keeps up sees everything.
func TestSlowWatcherIsCutOff(t *testing.T) {
	s := New()
	slow, cancelSlow := s.ViewAndWatch(nil)
	defer cancelSlow()
	fast, cancelFast := s.ViewAndWatch(nil)
	defer cancelFast()

	const total = watchBuffer + 10
	var fastGot []uint64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for b := range fast {
			fastGot = append(fastGot, b.Index)
			if b.Index == total {
				return
			}
		}
	}()
	applied := make(chan struct{})
	go func() {
		defer close(applied)
		for i := 1; i <= total; i++ {
			if err := s.Apply(uint64(i), cmd(putStack(testStack(fmt.Sprintf("s%d", i), fmt.Sprintf("n%d", i))))); err != nil {
				t.Errorf("Apply(%d): %v", i, err)
				return
			}
		}
	}()
	select {
	case <-applied:
	case <-time.After(60 * time.Second):
		t.Fatal("Apply blocked on a slow watcher")
	}
	wg.Wait()
	if len(fastGot) != total {
		t.Fatalf("fast watcher got %d batches, want %d", len(fastGot), total)
	}
	for i, idx := range fastGot {
		if idx != uint64(i+1) {
			t.Fatalf("fast watcher batch %d has index %d", i, idx)
		}
	}
	got := 0
	for b := range slow {
		got++
		if b.Index != uint64(got) {
			t.Fatalf("slow watcher batch %d has index %d", got, b.Index)
		}
	}
	if got != watchBuffer {
		t.Errorf("slow watcher got %d batches before the cut, want %d", got, watchBuffer)
	}
	cancelSlow() // canceling a cut-off watch is harmless
}

// TestWatchCancel: cancel closes the channel, may be called twice, and
// leaves other watchers alone.
func TestWatchCancel(t *testing.T) {
	s := New()
	a, cancelA := s.ViewAndWatch(nil)
	b, cancelB := s.ViewAndWatch(nil)
	defer cancelB()
	cancelA()
	cancelA()
	expectClosed(t, a)
	mustApply(t, s, 1, putStack(testStack("s", "s")))
	if got := recvBatch(t, b); got.Index != 1 {
		t.Fatalf("other watcher got index %d", got.Index)
	}
}
