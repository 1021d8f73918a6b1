package dispatcher

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

func report(id string, st skiffpb.TaskState, msg string) *skiffpb.TaskStatusUpdate {
	return &skiffpb.TaskStatusUpdate{TaskId: id, Status: &skiffpb.TaskStatus{State: st, Message: msg}}
}

// TestStatusBufferKeepsTheLatest: the buffer holds one report per task, the
// latest unless it went backwards, and take hands them out at most max at
// a time.
func TestStatusBufferKeepsTheLatest(t *testing.T) {
	b := newStatusBuffer()
	b.put([]*skiffpb.TaskStatusUpdate{report("a", stAssigned, "1"), report("b", stRunning, "1")})
	b.put([]*skiffpb.TaskStatusUpdate{
		report("a", stRunning, "2"),  // forward: replaces
		report("b", stAssigned, "2"), // backward: dropped
		report("c", stRunning, "1"),
	})
	select {
	case <-b.notify:
	default:
		t.Fatal("put did not signal")
	}
	first := b.take(2)
	rest := b.take(10)
	if len(first) != 2 || len(rest) != 1 {
		t.Fatalf("took %d then %d reports, want 2 then 1", len(first), len(rest))
	}
	got := map[string]string{}
	for _, u := range append(first, rest...) {
		got[u.GetTaskId()] = u.GetStatus().GetState().String() + "/" + u.GetStatus().GetMessage()
	}
	want := map[string]string{"a": stRunning.String() + "/2", "b": stRunning.String() + "/1", "c": stRunning.String() + "/1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("took %v, want %v", got, want)
	}
	if left := b.take(10); len(left) != 0 {
		t.Errorf("%d reports left after taking all", len(left))
	}
}

// pipelineRaft records how many commands were enqueued, and the reports
// they carried, and commits them only when the test lets it, to show
// several batches in flight.
type pipelineRaft struct {
	mu       sync.Mutex
	enqueued int
	reports  int
	release  chan struct{}
}

func (r *pipelineRaft) Propose(ctx context.Context, cmd *skiffpb.Command) (uint64, error) {
	return r.ProposeAsync(ctx, cmd)()
}

func (r *pipelineRaft) ProposeAsync(ctx context.Context, cmd *skiffpb.Command) func() (uint64, error) {
	r.mu.Lock()
	r.enqueued++
	r.reports += len(cmd.GetActions())
	idx := uint64(r.enqueued)
	r.mu.Unlock()
	return func() (uint64, error) {
		<-r.release
		return idx, nil
	}
}

func (r *pipelineRaft) IsLeader() bool { return true }

func (r *pipelineRaft) counts() (enqueued, reports int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.enqueued, r.reports
}

// TestStatusBatchesArePipelined: while earlier batches wait for their
// commit, later ones are enqueued, up to statusPipeline of them, and every
// report is committed in the end.
func TestStatusBatchesArePipelined(t *testing.T) {
	r := &pipelineRaft{release: make(chan struct{})}
	d := New(Config{Store: state.New(), Raft: r})
	buf := newStatusBuffer()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.batchStatuses(ctx, buf) }()
	defer func() { cancel(); <-done }()

	var reports []*skiffpb.TaskStatusUpdate
	for i := range (statusPipeline + 1) * statusBatchMax {
		reports = append(reports, report(fmt.Sprint(i), stRunning, "started"))
	}
	buf.put(reports)
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, _ := r.counts()
		if n == statusPipeline {
			break
		}
		if n > statusPipeline || time.Now().After(deadline) {
			t.Fatalf("%d batches enqueued before any committed, want %d", n, statusPipeline)
		}
		time.Sleep(time.Millisecond)
	}
	close(r.release)
	for {
		n, got := r.counts()
		if got == len(reports) {
			if n != statusPipeline+1 {
				t.Errorf("%d commands for %d reports, want %d", n, got, statusPipeline+1)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d reports committed", got, len(reports))
		}
		time.Sleep(time.Millisecond)
	}
}
