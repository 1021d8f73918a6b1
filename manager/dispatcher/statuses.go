package dispatcher

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/skiffhq/skiff/internal/coalesce"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// statusBuffer holds the agents' task reports that are not committed yet:
// the latest per task. A session hands its reports over without waiting,
// whatever Raft's backlog, so its receiver keeps reading the agent's
// heartbeats and answering them; with a queue that blocked when full, a
// burst of a million reports once left sessions unread for longer than the
// grace, and healthy nodes were marked down. The memory it takes is bounded
// by the number of tasks, not by the number of reports.
type statusBuffer struct {
	q *coalesce.Queue[string, *skiffpb.TaskStatusUpdate]
	// notify has a value when there is something to take.
	notify <-chan struct{}
}

func newStatusBuffer() *statusBuffer {
	// A report of an earlier state than the one waiting for the same task
	// is dropped: it arrived late (from a session being replaced) and
	// Apply would drop it anyway.
	q := coalesce.New[string](func(old, new *skiffpb.TaskStatusUpdate) bool {
		return new.GetStatus().GetState() >= old.GetStatus().GetState()
	})
	return &statusBuffer{q: q, notify: q.Notify()}
}

// put adds one message's reports, together.
func (b *statusBuffer) put(us []*skiffpb.TaskStatusUpdate) {
	es := make([]coalesce.Entry[string, *skiffpb.TaskStatusUpdate], len(us))
	for i, u := range us {
		es[i] = coalesce.Entry[string, *skiffpb.TaskStatusUpdate]{Key: u.GetTaskId(), Value: u}
	}
	b.q.PutAll(es)
}

// take removes and returns up to max reports.
func (b *statusBuffer) take(max int) []*skiffpb.TaskStatusUpdate {
	es := b.q.Take(max)
	out := make([]*skiffpb.TaskStatusUpdate, len(es))
	for i, e := range es {
		out[i] = e.Value
	}
	return out
}

// statusBatchMax bounds how many status reports one Raft command carries;
// statusBatchWait is the least time between two commands. A report after a
// quiet spell is proposed at once; reports that follow it closely wait for
// company, so a burst of thousands becomes a few log entries.
const (
	statusBatchMax  = 4096
	statusBatchWait = 10 * time.Millisecond
)

// statusPipeline is how many batches of reports may be in Raft at once.
// One at a time, the batches' throughput was one batch per commit latency,
// which under a large rollout fell behind the reports; in flight together,
// Raft commits them in one disk write and their order is kept.
const statusPipeline = 4

// batchStatuses commits the agents' task reports in batches, until ctx
// ends.
func (d *Dispatcher) batchStatuses(ctx context.Context, buf *statusBuffer) {
	inflight := make(chan struct{}, statusPipeline)
	var wg sync.WaitGroup
	defer wg.Wait()
	pace := rate.NewLimiter(rate.Every(statusBatchWait), 1)
	for {
		select {
		case <-ctx.Done():
			return
		case <-buf.notify:
		}
		// At once after a quiet spell; otherwise the rest of the burst
		// arrives meanwhile.
		if pace.Wait(ctx) != nil {
			return
		}
		for {
			batch := buf.take(statusBatchMax)
			if len(batch) == 0 {
				break
			}
			select {
			case inflight <- struct{}{}:
			case <-ctx.Done():
				return
			}
			cmd := &skiffpb.Command{Actions: make([]*skiffpb.StoreAction, 0, len(batch))}
			for _, u := range batch {
				cmd.Actions = append(cmd.Actions, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_TaskStatus{TaskStatus: u}})
			}
			// Enqueued here, in order; waited for apart, so that the next
			// batch can follow before this one is committed.
			wait := d.cfg.Raft.ProposeAsync(ctx, cmd)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-inflight }()
				if _, err := wait(); err != nil && ctx.Err() == nil {
					// The agents report every task again when their session
					// is re-established, so a lost batch is recovered, not
					// forgotten.
					d.logger.Error("commit task statuses", "count", len(batch), "error", err)
				}
			}()
		}
	}
}
