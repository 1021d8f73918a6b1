package docker

import (
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"google.golang.org/protobuf/proto"

	skiffpb "github.com/skiffhq/skiff/proto"
)

var (
	created  = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	started  = created.Add(time.Second)
	finished = started.Add(time.Minute)
	observed = finished.Add(time.Hour)
)

const zeroTime = "0001-01-01T00:00:00Z"

func inspected(s container.State) container.InspectResponse {
	if s.StartedAt == "" {
		s.StartedAt = zeroTime
	}
	if s.FinishedAt == "" {
		s.FinishedAt = zeroTime
	}
	return container.InspectResponse{ContainerJSONBase: &container.ContainerJSONBase{
		ID:      "c1",
		Created: created.Format(time.RFC3339Nano),
		State:   &s,
	}}
}

func TestStatusFromInspect(t *testing.T) {
	startedAt, finishedAt := started.Format(time.RFC3339Nano), finished.Format(time.RFC3339Nano)
	tests := []struct {
		name  string
		state container.State
		want  *skiffpb.TaskStatus
	}{
		{
			name:  "created, never started: prepared",
			state: container.State{Status: container.StateCreated},
			want: &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_PREPARING, Message: "created",
				ContainerId: "c1", Timestamp: created.UnixNano()},
		},
		{
			name: "created, start failed: the engine's reason",
			state: container.State{Status: container.StateCreated, ExitCode: 127,
				Error: `exec: "/nope": stat /nope: no such file or directory`},
			want: &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_FAILED, Message: "finished",
				Err: `exec: "/nope": stat /nope: no such file or directory`, ExitCode: 127,
				ContainerId: "c1", Timestamp: created.UnixNano()},
		},
		{
			name:  "running without healthcheck",
			state: container.State{Status: container.StateRunning, Running: true, StartedAt: startedAt},
			want: &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_RUNNING, Message: "started",
				ContainerId: "c1", Timestamp: started.UnixNano(), StartedAt: started.UnixNano()},
		},
		{
			name: "running, healthy, stale exit code of an earlier run",
			state: container.State{Status: container.StateRunning, Running: true, StartedAt: startedAt, ExitCode: 1,
				OOMKilled: true, Health: &container.Health{Status: container.Healthy}},
			want: &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_RUNNING, Message: "started",
				Health:      skiffpb.HealthState_HEALTH_STATE_HEALTHY,
				ContainerId: "c1", Timestamp: started.UnixNano(), StartedAt: started.UnixNano()},
		},
		{
			name:  "paused still runs",
			state: container.State{Status: container.StatePaused, Running: true, Paused: true, StartedAt: startedAt},
			want: &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_RUNNING, Message: "paused",
				ContainerId: "c1", Timestamp: started.UnixNano(), StartedAt: started.UnixNano()},
		},
		{
			name:  "exited 0",
			state: container.State{Status: container.StateExited, StartedAt: startedAt, FinishedAt: finishedAt},
			want: &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_COMPLETE, Message: "finished",
				ContainerId: "c1", Timestamp: finished.UnixNano(), StartedAt: started.UnixNano()},
		},
		{
			name:  "exited 3",
			state: container.State{Status: container.StateExited, ExitCode: 3, StartedAt: startedAt, FinishedAt: finishedAt},
			want: &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_FAILED, Message: "finished",
				Err: "task: non-zero exit (3)", ExitCode: 3,
				ContainerId: "c1", Timestamp: finished.UnixNano(), StartedAt: started.UnixNano()},
		},
		{
			name: "OOM killed",
			state: container.State{Status: container.StateExited, ExitCode: 137, OOMKilled: true,
				StartedAt: startedAt, FinishedAt: finishedAt},
			want: &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_FAILED, Message: "finished",
				Err: "task: non-zero exit (137): OOM killed", ExitCode: 137, OomKilled: true,
				ContainerId: "c1", Timestamp: finished.UnixNano(), StartedAt: started.UnixNano()},
		},
		{
			name:  "a child OOM killed, main exited 0",
			state: container.State{Status: container.StateExited, OOMKilled: true, StartedAt: startedAt, FinishedAt: finishedAt},
			want: &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_FAILED, Message: "finished",
				Err: "task: OOM killed", OomKilled: true,
				ContainerId: "c1", Timestamp: finished.UnixNano(), StartedAt: started.UnixNano()},
		},
		{
			name:  "dead",
			state: container.State{Status: container.StateDead, Dead: true, StartedAt: startedAt},
			want: &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_FAILED, Message: "finished",
				Err: "container is dead", ContainerId: "c1", Timestamp: observed.UnixNano(), StartedAt: started.UnixNano()},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := statusFromInspect(inspected(tt.state), observed)
			if !proto.Equal(got, tt.want) {
				t.Errorf("statusFromInspect\n got %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestStatusFromEvent(t *testing.T) {
	ev := func(action events.Action, attrs map[string]string) events.Message {
		return events.Message{Action: action, Actor: events.Actor{ID: "c1", Attributes: attrs}, TimeNano: finished.UnixNano()}
	}
	running := inspected(container.State{Status: container.StateRunning, Running: true,
		StartedAt: started.Format(time.RFC3339Nano), Health: &container.Health{Status: container.Starting}})
	oomed := inspected(container.State{Status: container.StateExited, ExitCode: 137, OOMKilled: true,
		StartedAt: started.Format(time.RFC3339Nano)})
	exited137 := inspected(container.State{Status: container.StateExited, ExitCode: 137, StartedAt: started.Format(time.RFC3339Nano)})
	exited := inspected(container.State{Status: container.StateExited, ExitCode: 2, StartedAt: started.Format(time.RFC3339Nano)})

	tests := []struct {
		name string
		msg  events.Message
		info *container.InspectResponse
		oom  bool
		want *skiffpb.TaskStatus // nil: no status
	}{
		{
			name: "start",
			msg:  ev(events.ActionStart, nil),
			info: &running,
			want: &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_RUNNING, Message: "started", ContainerId: "c1",
				Timestamp: finished.UnixNano(), StartedAt: started.UnixNano(), Health: skiffpb.HealthState_HEALTH_STATE_STARTING},
		},
		{
			name: "start of a container that already exited again",
			msg:  ev(events.ActionStart, nil),
			info: &exited,
			want: &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_RUNNING, Message: "started", ContainerId: "c1",
				Timestamp: finished.UnixNano(), StartedAt: finished.UnixNano()},
		},
		{
			name: "die: the event's exit code wins",
			msg:  ev(events.ActionDie, map[string]string{"exitCode": "3"}),
			info: &exited,
			want: &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_FAILED, Message: "finished", ContainerId: "c1",
				Timestamp: finished.UnixNano(), StartedAt: started.UnixNano(), ExitCode: 3, Err: "task: non-zero exit (3)"},
		},
		{
			name: "die 0 of a removed container",
			msg:  ev(events.ActionDie, map[string]string{"exitCode": "0"}),
			want: &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_COMPLETE, Message: "finished", ContainerId: "c1",
				Timestamp: finished.UnixNano()},
		},
		{
			name: "die after an oom event",
			msg:  ev(events.ActionDie, map[string]string{"exitCode": "137"}),
			oom:  true,
			want: &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_FAILED, Message: "finished", ContainerId: "c1",
				Timestamp: finished.UnixNano(), ExitCode: 137, OomKilled: true, Err: "task: non-zero exit (137): OOM killed"},
		},
		{
			name: "die, OOM known from inspect",
			msg:  ev(events.ActionDie, map[string]string{"exitCode": "137"}),
			info: &oomed,
			want: &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_FAILED, Message: "finished", ContainerId: "c1",
				Timestamp: finished.UnixNano(), StartedAt: started.UnixNano(), ExitCode: 137, OomKilled: true,
				Err: "task: non-zero exit (137): OOM killed"},
		},
		{
			name: "oom of a running container: for the die",
			msg:  ev(events.ActionOOM, nil),
			info: &running,
		},
		{
			name: "oom after the exit corrects it",
			msg:  ev(events.ActionOOM, nil),
			info: &exited137,
			want: &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_FAILED, Message: "finished", ContainerId: "c1",
				Timestamp: finished.UnixNano(), StartedAt: started.UnixNano(), ExitCode: 137, OomKilled: true,
				Err: "task: non-zero exit (137): OOM killed"},
		},
		{
			name: "oom of a removed container",
			msg:  ev(events.ActionOOM, nil),
		},
		{
			name: "unhealthy",
			msg:  ev("health_status: unhealthy", nil),
			info: &running,
			want: &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_RUNNING, Message: "started", ContainerId: "c1",
				Timestamp: finished.UnixNano(), StartedAt: started.UnixNano(), Health: skiffpb.HealthState_HEALTH_STATE_UNHEALTHY},
		},
		{
			name: "healthy",
			msg:  ev("health_status: healthy", nil),
			info: &running,
			want: &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_RUNNING, Message: "started", ContainerId: "c1",
				Timestamp: finished.UnixNano(), StartedAt: started.UnixNano(), Health: skiffpb.HealthState_HEALTH_STATE_HEALTHY},
		},
		{
			name: "other actions make no status",
			msg:  ev(events.ActionKill, nil),
			info: &running,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := statusFromEvent(tt.msg, tt.info, tt.oom)
			if ok != (tt.want != nil) || (ok && !proto.Equal(got, tt.want)) {
				t.Errorf("statusFromEvent = %v, %v\nwant %v", got, ok, tt.want)
			}
		})
	}
}
