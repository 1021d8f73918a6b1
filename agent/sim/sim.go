// Package sim is a simulated Executor: tasks "run" in memory, start at once
// and never exit unless told to. It stands in for a Docker engine where
// scale is the point — thousands of agents in one process, each with its
// own real session to real managers — and nothing about containers is.
package sim

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/skiffhq/skiff/agent"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// Executor is a simulated engine for one node.
type Executor struct {
	// Resources is what Describe reports; zero means 4 CPUs and 8 GiB.
	Resources *skiffpb.Resources
	hostname  string

	mu         sync.Mutex
	containers map[string]*skiffpb.TaskStatus
	subs       map[chan agent.Event]struct{}
	nextID     int
}

var _ agent.Executor = (*Executor)(nil)

// New returns a simulated engine for the host named hostname.
func New(hostname string) *Executor {
	return &Executor{hostname: hostname, containers: map[string]*skiffpb.TaskStatus{}, subs: map[chan agent.Event]struct{}{}}
}

// Describe implements agent.Executor.
func (e *Executor) Describe(ctx context.Context) (*skiffpb.NodeDescription, error) {
	res := e.Resources
	if res == nil {
		res = &skiffpb.Resources{NanoCpus: 4e9, MemoryBytes: 8 << 30}
	}
	return &skiffpb.NodeDescription{Hostname: e.hostname, Resources: res, EngineVersion: "simulated", Os: "linux", Arch: "amd64"}, nil
}

// Containers implements agent.Executor.
func (e *Executor) Containers(ctx context.Context) ([]agent.Container, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]agent.Container, 0, len(e.containers))
	for id, st := range e.containers {
		out = append(out, agent.Container{TaskID: id, Status: st})
	}
	return out, nil
}

// Prepare implements agent.Executor.
func (e *Executor) Prepare(ctx context.Context, a *skiffpb.Assignment) error {
	id := a.GetTask().GetId()
	if a.GetSpec().GetContainer().GetImage() == "" {
		return fmt.Errorf("no image for task %s", id)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.containers[id]; !ok {
		e.nextID++
		e.containers[id] = &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_STARTING, ContainerId: fmt.Sprintf("sim%012d", e.nextID)}
	}
	return nil
}

// Start implements agent.Executor.
func (e *Executor) Start(ctx context.Context, taskID string) error {
	e.mu.Lock()
	st, ok := e.containers[taskID]
	if !ok {
		e.mu.Unlock()
		return fmt.Errorf("no container for task %s", taskID)
	}
	if st.GetState() == skiffpb.TaskState_TASK_STATE_RUNNING {
		e.mu.Unlock()
		return nil
	}
	now := time.Now().UnixNano()
	next := &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_RUNNING, Message: "started", ContainerId: st.GetContainerId(), Timestamp: now, StartedAt: now}
	e.containers[taskID] = next
	e.mu.Unlock()
	e.publish(taskID, next)
	return nil
}

// Stop implements agent.Executor.
func (e *Executor) Stop(ctx context.Context, taskID string, grace time.Duration) error {
	return e.exit(taskID, 0)
}

// Exit makes a running task's "container" exit with code, as if its process
// had ended: 0 completes it, anything else fails it.
func (e *Executor) Exit(taskID string, code int32) error {
	return e.exit(taskID, code)
}

func (e *Executor) exit(taskID string, code int32) error {
	e.mu.Lock()
	st, ok := e.containers[taskID]
	if !ok || st.GetState() != skiffpb.TaskState_TASK_STATE_RUNNING {
		e.mu.Unlock()
		return nil
	}
	next := &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_COMPLETE, Message: "finished", ContainerId: st.GetContainerId(), ExitCode: code, Timestamp: time.Now().UnixNano()}
	if code != 0 {
		next.State = skiffpb.TaskState_TASK_STATE_FAILED
		next.Err = fmt.Sprintf("task: non-zero exit (%d)", code)
	}
	e.containers[taskID] = next
	e.mu.Unlock()
	e.publish(taskID, next)
	return nil
}

// Remove implements agent.Executor.
func (e *Executor) Remove(ctx context.Context, taskID string) error {
	e.mu.Lock()
	delete(e.containers, taskID)
	e.mu.Unlock()
	return nil
}

// Running returns the IDs of the tasks whose containers run.
func (e *Executor) Running() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for id, st := range e.containers {
		if st.GetState() == skiffpb.TaskState_TASK_STATE_RUNNING {
			out = append(out, id)
		}
	}
	return out
}

// Events implements agent.Executor. The simulated stream never breaks, so
// it never resyncs.
func (e *Executor) Events(ctx context.Context) <-chan agent.Event {
	ch := make(chan agent.Event, 256)
	e.mu.Lock()
	e.subs[ch] = struct{}{}
	e.mu.Unlock()
	go func() {
		<-ctx.Done()
		e.mu.Lock()
		delete(e.subs, ch)
		close(ch)
		e.mu.Unlock()
	}()
	return ch
}

func (e *Executor) publish(taskID string, st *skiffpb.TaskStatus) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for ch := range e.subs {
		select {
		case ch <- agent.Event{TaskID: taskID, Status: st}:
		default:
			// A reader this far behind loses the event rather than hold up
			// the task's caller. The worker records Start and Stop itself,
			// so only a simulated Exit can go unreported.
		}
	}
}

// Logs implements agent.Executor: a simulated container prints one line.
func (e *Executor) Logs(ctx context.Context, taskID string, follow bool, tail int64, fn func(*skiffpb.LogMessage) error) error {
	e.mu.Lock()
	_, ok := e.containers[taskID]
	e.mu.Unlock()
	if !ok {
		return fmt.Errorf("no container for task %s", taskID)
	}
	if tail != 0 {
		if err := fn(&skiffpb.LogMessage{Timestamp: time.Now().UnixNano(), Data: []byte("simulated task " + taskID + "\n")}); err != nil {
			return err
		}
	}
	if follow {
		<-ctx.Done()
	}
	return nil
}

// RunningCount returns how many tasks' containers run, without listing
// them; scale benchmarks poll it across thousands of engines.
func (e *Executor) RunningCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, st := range e.containers {
		if st.GetState() == skiffpb.TaskState_TASK_STATE_RUNNING {
			n++
		}
	}
	return n
}
