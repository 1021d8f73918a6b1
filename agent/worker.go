package agent

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/skiffhq/skiff/internal/coalesce"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// worker turns the leader's assignments into executor calls and the
// executor's observations into task statuses. It is level-triggered: after
// any change it looks at what a task should be and what it is, and takes the
// one step between them. That one loop serves a fresh assignment, a restart
// of the agent (adopting running containers), and a container that died.
//
// Each task has at most one executor call in flight; calls for different
// tasks run in parallel, up to a bound, because a Docker pull or create can
// take seconds and must not hold up the others.
type worker struct {
	exec   Executor
	node   string
	logger *slog.Logger
	now    func() time.Time

	mu    sync.Mutex
	tasks map[string]*taskState
	// synced is false until the first full assignment set arrived: before
	// it, the worker does not know which containers are orphans.
	synced bool
	// observed holds what the engine reported for tasks the worker does not
	// know yet (found at start, or reported before their assignment).
	observed map[string]*skiffpb.TaskStatus

	reports *reportQueue
	// onStatus, when set, hears each task's status with its assignment
	// (the overlay publishes running tasks); it is called with mu held and
	// must not call back into the worker.
	onStatus statusFunc
	sem      chan struct{}
	wg       sync.WaitGroup
	ctx      context.Context
}

// taskState is the worker's record of one task.
type taskState struct {
	assignment *skiffpb.Assignment
	// desired is the orchestrator's intent; removed means the task left the
	// assignment set and its container must go.
	desired skiffpb.TaskState
	removed bool
	status  *skiffpb.TaskStatus
	// busy is set while an executor call for the task is running.
	busy bool
	// stopping is set once the worker asked the container to stop, so that
	// its death reads as SHUTDOWN rather than a failure.
	stopping bool
}

// maxParallelOps bounds concurrent executor calls.
const maxParallelOps = 16

// statusFunc hears a task's status with its assignment.
type statusFunc func(*skiffpb.Assignment, *skiffpb.TaskStatus)

// newWorker returns a worker that runs tasks through exec for as long as ctx
// lasts, telling onStatus (which may be nil) of every status it records.
func newWorker(ctx context.Context, exec Executor, node string, logger *slog.Logger, onStatus statusFunc) *worker {
	return &worker{
		exec: exec, node: node, logger: logger, now: time.Now,
		tasks: map[string]*taskState{}, observed: map[string]*skiffpb.TaskStatus{},
		reports: newReportQueue(), onStatus: onStatus, sem: make(chan struct{}, maxParallelOps), ctx: ctx,
	}
}

// adopt records the containers found at start-up; their tasks are kept,
// reported, or removed once the first full assignment set says which.
func (w *worker) adopt(containers []Container) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range containers {
		w.observed[c.TaskID] = c.Status
	}
}

// assign applies an Assignments message.
func (w *worker) assign(a *skiffpb.Assignments) {
	w.mu.Lock()
	var touched []string
	if a.GetFull() {
		keep := map[string]bool{}
		for _, as := range a.GetUpdated() {
			keep[as.GetTask().GetId()] = true
		}
		for id, ts := range w.tasks {
			if !keep[id] {
				ts.removed = true
				touched = append(touched, id)
			}
		}
		// Containers found at start-up that no assignment claims belong to
		// tasks the leader has forgotten: remove them.
		for id, st := range w.observed {
			if !keep[id] {
				if _, known := w.tasks[id]; !known {
					w.tasks[id] = &taskState{removed: true, status: st, desired: skiffpb.TaskState_TASK_STATE_REMOVE}
					touched = append(touched, id)
					delete(w.observed, id)
				}
			}
		}
		w.synced = true
	}
	for _, as := range a.GetUpdated() {
		id := as.GetTask().GetId()
		ts := w.tasks[id]
		if ts == nil {
			ts = &taskState{status: as.GetTask().GetStatus()}
			if st, ok := w.observed[id]; ok {
				// The container outlived an agent restart: adopt what the
				// engine says rather than what the leader last heard.
				ts.status = st
				delete(w.observed, id)
				w.reports.put(id, st)
			}
			w.tasks[id] = ts
		}
		ts.assignment = as
		ts.desired = as.GetTask().GetDesiredState()
		ts.removed = false
		touched = append(touched, id)
		if w.onStatus != nil {
			w.onStatus(as, ts.status)
		}
	}
	for _, id := range a.GetRemoved() {
		if ts := w.tasks[id]; ts != nil {
			ts.removed = true
			touched = append(touched, id)
		}
	}
	w.mu.Unlock()
	for _, id := range touched {
		w.reconcile(id)
	}
}

// observe applies an engine event.
func (w *worker) observe(ev Event) {
	w.mu.Lock()
	ts := w.tasks[ev.TaskID]
	if ts == nil {
		if !w.synced {
			w.observed[ev.TaskID] = ev.Status
		}
		w.mu.Unlock()
		return
	}
	st := proto.Clone(ev.Status).(*skiffpb.TaskStatus)
	if st.GetState() >= skiffpb.TaskState_TASK_STATE_COMPLETE && ts.stopping {
		// We stopped it: that is a shutdown, whatever the exit code.
		st.State = skiffpb.TaskState_TASK_STATE_SHUTDOWN
		st.Message = "shutdown"
		st.Err = ""
	}
	w.setStatusLocked(ev.TaskID, ts, st)
	w.mu.Unlock()
	w.reconcile(ev.TaskID)
}

// setStatusLocked records and reports a status; a status never moves
// backwards, except for a health change within RUNNING.
func (w *worker) setStatusLocked(id string, ts *taskState, st *skiffpb.TaskStatus) {
	if st.GetState() < ts.status.GetState() {
		return
	}
	if st.GetTimestamp() == 0 {
		st.Timestamp = w.now().UnixNano()
	}
	if st.GetContainerId() == "" {
		st.ContainerId = ts.status.GetContainerId()
	}
	if st.GetStartedAt() == 0 {
		st.StartedAt = ts.status.GetStartedAt()
	}
	ts.status = st
	if !ts.removed {
		w.reports.put(id, st)
	}
	if w.onStatus != nil && ts.assignment != nil {
		w.onStatus(ts.assignment, st)
	}
}

func (w *worker) setStatus(id string, st *skiffpb.TaskStatus) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ts := w.tasks[id]; ts != nil {
		w.setStatusLocked(id, ts, st)
	}
}

// op is one executor call the reconcile decided on.
type op int

const (
	opNone op = iota
	opStart
	opStop
	opRemove
)

// reconcile takes the next step for a task, if one is due and none is in
// flight.
func (w *worker) reconcile(id string) {
	w.mu.Lock()
	ts := w.tasks[id]
	if ts == nil || ts.busy || w.ctx.Err() != nil {
		w.mu.Unlock()
		return
	}
	next := decide(ts)
	if next == opNone {
		if ts.removed && ts.status.GetState() >= skiffpb.TaskState_TASK_STATE_COMPLETE && ts.status.GetContainerId() == "" {
			delete(w.tasks, id)
		}
		w.mu.Unlock()
		return
	}
	ts.busy = true
	if next == opStop || next == opRemove {
		ts.stopping = true
	}
	as := ts.assignment
	w.mu.Unlock()

	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		select {
		case w.sem <- struct{}{}:
		case <-w.ctx.Done():
			return
		}
		w.run(id, next, as)
		<-w.sem
		w.mu.Lock()
		if ts := w.tasks[id]; ts != nil {
			ts.busy = false
		}
		w.mu.Unlock()
		w.reconcile(id)
	}()
}

// decide maps (desired, observed) to the next step.
func decide(ts *taskState) op {
	st := ts.status.GetState()
	switch {
	case ts.removed:
		if ts.status.GetContainerId() != "" || st <= skiffpb.TaskState_TASK_STATE_RUNNING {
			return opRemove
		}
		return opNone
	case ts.desired > skiffpb.TaskState_TASK_STATE_RUNNING:
		if st <= skiffpb.TaskState_TASK_STATE_RUNNING && !ts.stopping {
			return opStop
		}
		return opNone
	case st < skiffpb.TaskState_TASK_STATE_PREPARING:
		return opStart
	default:
		return opNone
	}
}

// run performs one executor call and records its outcome.
func (w *worker) run(id string, o op, as *skiffpb.Assignment) {
	ctx := w.ctx
	switch o {
	case opStart:
		w.setStatus(id, &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_PREPARING, Message: "preparing"})
		if err := w.exec.Prepare(ctx, as); err != nil {
			w.fail(id, skiffpb.TaskState_TASK_STATE_REJECTED, "preparing", err)
			return
		}
		w.setStatus(id, &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_STARTING, Message: "starting"})
		if err := w.exec.Start(ctx, id); err != nil {
			w.fail(id, skiffpb.TaskState_TASK_STATE_FAILED, "starting", err)
			return
		}
		// The engine's start event says the same; recording it here keeps
		// the task from looking stuck if the event stream is reconnecting.
		w.setStatus(id, &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_RUNNING, Message: "started", StartedAt: w.now().UnixNano()})
	case opStop:
		if err := w.exec.Stop(ctx, id, stopGrace(as)); err != nil && ctx.Err() == nil {
			w.logger.Warn("stop task", "task", id, "error", err)
			return
		}
		w.setStatus(id, &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_SHUTDOWN, Message: "shutdown"})
	case opRemove:
		if err := w.exec.Stop(ctx, id, stopGrace(as)); err != nil && ctx.Err() == nil {
			w.logger.Warn("stop task", "task", id, "error", err)
		}
		if err := w.exec.Remove(ctx, id); err != nil {
			if ctx.Err() == nil {
				w.logger.Warn("remove task", "task", id, "error", err)
			}
			return
		}
		w.mu.Lock()
		delete(w.tasks, id)
		w.mu.Unlock()
	}
}

func (w *worker) fail(id string, st skiffpb.TaskState, phase string, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	w.logger.Warn("task failed", "task", id, "phase", phase, "error", err)
	w.setStatus(id, &skiffpb.TaskStatus{State: st, Message: phase, Err: err.Error()})
}

func stopGrace(as *skiffpb.Assignment) time.Duration {
	if g := as.GetSpec().GetContainer().GetStopGracePeriod(); g > 0 {
		return time.Duration(g)
	}
	return 10 * time.Second
}

// statuses returns every known task's status, for the full report at the
// start of a session.
func (w *worker) statuses() []*skiffpb.TaskStatusUpdate {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]*skiffpb.TaskStatusUpdate, 0, len(w.tasks))
	for id, ts := range w.tasks {
		if ts.removed || ts.status == nil {
			continue
		}
		out = append(out, &skiffpb.TaskStatusUpdate{TaskId: id, Status: ts.status})
	}
	return out
}

// held returns how many tasks the worker holds, removed ones whose
// containers are not gone yet included.
func (w *worker) held() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.tasks)
}

// wait blocks until every executor call has returned.
func (w *worker) wait() { w.wg.Wait() }

// reportQueue holds the latest unreported status of each task. Only the
// latest matters, so a burst of changes while the leader is unreachable
// costs one entry per task, not one per change.
type reportQueue struct {
	q *coalesce.Queue[string, *skiffpb.TaskStatus]
	// notify has a value when there is something to take.
	notify <-chan struct{}
}

func newReportQueue() *reportQueue {
	q := coalesce.New[string, *skiffpb.TaskStatus](nil)
	return &reportQueue{q: q, notify: q.Notify()}
}

func (q *reportQueue) put(id string, st *skiffpb.TaskStatus) { q.q.Put(id, st) }

// take removes and returns up to max pending reports.
func (q *reportQueue) take(max int) []*skiffpb.TaskStatusUpdate {
	es := q.q.Take(max)
	out := make([]*skiffpb.TaskStatusUpdate, len(es))
	for i, e := range es {
		out[i] = &skiffpb.TaskStatusUpdate{TaskId: e.Key, Status: e.Value}
	}
	return out
}

// requeue puts back reports that could not be sent, unless a newer one
// arrived meanwhile.
func (q *reportQueue) requeue(us []*skiffpb.TaskStatusUpdate) {
	es := make([]coalesce.Entry[string, *skiffpb.TaskStatus], len(us))
	for i, u := range us {
		es[i] = coalesce.Entry[string, *skiffpb.TaskStatus]{Key: u.GetTaskId(), Value: u.GetStatus()}
	}
	q.q.Return(es)
}

// logMeta returns the task a log line belongs to, or nil if the worker does
// not hold it.
func (w *worker) logMeta(id string) *skiffpb.Task {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ts := w.tasks[id]; ts != nil {
		return ts.assignment.GetTask()
	}
	return nil
}
