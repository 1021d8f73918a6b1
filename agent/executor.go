package agent

import (
	"context"
	"time"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// Executor is the seam between the agent and a container engine. The agent
// decides what should run; the executor only does what it is told, for the
// containers it owns, and reports what it sees. The Docker implementation
// lives in agent/docker; a simulated one stands in for thousands of hosts in
// scale benchmarks.
//
// Every method is idempotent, because the agent repeats calls after a restart
// or a lost session rather than remembering what it already did.
type Executor interface {
	// Describe reports the host's resources and engine for registration.
	Describe(ctx context.Context) (*skiffpb.NodeDescription, error)

	// Containers lists every container this node owns (found by the
	// skiff.node label), including stopped ones, so that a restarted agent can
	// adopt, report or remove them.
	Containers(ctx context.Context) ([]Container, error)

	// Prepare makes the task ready to start: it pulls the image when it is not
	// present, creates named volumes, and creates the container. Preparing a
	// task whose container already exists does nothing.
	Prepare(ctx context.Context, a *skiffpb.Assignment) error

	// Start starts the task's prepared container. Starting a running
	// container does nothing.
	Start(ctx context.Context, taskID string) error

	// Stop stops the task's container, sending its stop signal and killing it
	// after grace. Stopping a stopped or missing container does nothing.
	Stop(ctx context.Context, taskID string, grace time.Duration) error

	// Remove deletes the task's container. Removing a missing container does
	// nothing.
	Remove(ctx context.Context, taskID string) error

	// Events delivers a status for an owned container each time the engine
	// reports a change (start, die, OOM, health), until ctx ends, when the
	// channel is closed. The executor alone keeps the stream up: when the
	// engine's stream breaks, it reconnects and delivers every owned
	// container's status again, so that what changed meanwhile is not lost.
	Events(ctx context.Context) <-chan Event

	// Logs writes the task's container log to fn, line by line, following
	// new output when follow is set, starting tail lines from the end (-1 for
	// all). It returns when ctx ends, the log ends, or fn fails.
	Logs(ctx context.Context, taskID string, follow bool, tail int64, fn func(*skiffpb.LogMessage) error) error
}

// Container is an owned container as the engine sees it.
type Container struct {
	// TaskID comes from the container's skiff.task.id label.
	TaskID string
	// Status carries the task state the container's state maps to (RUNNING,
	// COMPLETE, FAILED...), its exit code, OOM flag, health and container ID.
	Status *skiffpb.TaskStatus
}

// Event is a change the engine reported for an owned container.
type Event struct {
	TaskID string
	Status *skiffpb.TaskStatus
}
