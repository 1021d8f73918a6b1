package docker

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// Messages of the statuses the executor reports, as swarm words them.
const (
	msgCreated  = "created"
	msgStarted  = "started"
	msgPaused   = "paused"
	msgFinished = "finished"
)

// statusFromInspect maps a container, as the engine describes it, to the
// task status it stands for; the table is in the doc of Containers. Times
// come from the engine's record of the container, so that a status read long
// after the fact (by a restarted agent) still says when the change happened;
// now stands in only where the engine has no time.
func statusFromInspect(c container.InspectResponse, now time.Time) *skiffpb.TaskStatus {
	if c.ContainerJSONBase == nil || c.State == nil {
		return &skiffpb.TaskStatus{
			State:     skiffpb.TaskState_TASK_STATE_FAILED,
			Timestamp: now.UnixNano(),
			Err:       "engine reported no container state",
		}
	}
	s := c.State
	st := &skiffpb.TaskStatus{
		ContainerId: c.ID,
		StartedAt:   engineTime(s.StartedAt),
		ExitCode:    int32(s.ExitCode),
		OomKilled:   s.OOMKilled,
	}
	switch s.Status {
	case container.StateRunning, container.StatePaused, container.StateRestarting:
		st.State = skiffpb.TaskState_TASK_STATE_RUNNING
		st.Message = msgStarted
		if s.Status == container.StatePaused {
			st.Message = msgPaused
		}
		st.Timestamp = st.GetStartedAt()
		if s.Health != nil {
			st.Health = healthState(s.Health.Status)
		}
		// A running container has no exit code yet; the engine keeps the
		// previous run's.
		st.ExitCode = 0
		st.OomKilled = false
	case container.StateCreated:
		st.Timestamp = engineTime(c.Created)
		if s.Error != "" {
			// The engine could not start it (a missing entrypoint, a bad
			// mount): the container stays "created" with the reason.
			st.State = skiffpb.TaskState_TASK_STATE_FAILED
			st.Message = msgFinished
			st.Err = s.Error
			break
		}
		// Prepared and waiting for Start: the task is still PREPARING in
		// skiff's terms, since skiff has no READY state.
		st.State = skiffpb.TaskState_TASK_STATE_PREPARING
		st.Message = msgCreated
	default: // exited, dead, removing
		st.Timestamp = engineTime(s.FinishedAt)
		applyExit(st, s.ExitCode, s.OOMKilled, s.Error)
		if s.Status == container.StateDead && st.GetErr() == "" {
			st.State = skiffpb.TaskState_TASK_STATE_FAILED
			st.Err = "container is dead"
		}
	}
	if st.GetTimestamp() == 0 {
		st.Timestamp = now.UnixNano()
	}
	return st
}

// applyExit fills in the terminal state of a container that exited with
// code, in the words docker's swarm uses under ERROR.
func applyExit(st *skiffpb.TaskStatus, code int, oom bool, engineErr string) {
	st.Message = msgFinished
	st.ExitCode = int32(code)
	st.OomKilled = oom
	switch {
	case engineErr != "":
		st.State = skiffpb.TaskState_TASK_STATE_FAILED
		st.Err = engineErr
	case code != 0 && oom:
		st.State = skiffpb.TaskState_TASK_STATE_FAILED
		st.Err = fmt.Sprintf("task: non-zero exit (%d): OOM killed", code)
	case code != 0:
		st.State = skiffpb.TaskState_TASK_STATE_FAILED
		st.Err = fmt.Sprintf("task: non-zero exit (%d)", code)
	case oom:
		// The kernel killed a process of the task, not its main one: the
		// task may be incomplete even though it exited cleanly.
		st.State = skiffpb.TaskState_TASK_STATE_FAILED
		st.Err = "task: OOM killed"
	default:
		st.State = skiffpb.TaskState_TASK_STATE_COMPLETE
	}
}

// statusFromEvent maps an engine event to a task status, or reports false
// when the event makes none. info is the container as inspected after the
// event, or nil when it is already gone; oom says whether an oom event
// preceded a die. The event itself is what happened, so it wins over info,
// which may already show a later state.
//
// An oom event makes a status only when it comes after the container's exit:
// the engine may deliver it late, and then its own record of the exit lacks
// the OOM kill, so the status corrects the die's. An oom of a live container
// is for the caller to remember until the die.
func statusFromEvent(m events.Message, info *container.InspectResponse, oom bool) (*skiffpb.TaskStatus, bool) {
	var state *container.State
	if info != nil && info.ContainerJSONBase != nil {
		state = info.State
	}
	st := &skiffpb.TaskStatus{
		ContainerId: m.Actor.ID,
		Timestamp:   m.TimeNano,
	}
	if state != nil {
		st.StartedAt = engineTime(state.StartedAt)
	}
	action := string(m.Action)
	switch {
	case action == string(events.ActionStart):
		st.State = skiffpb.TaskState_TASK_STATE_RUNNING
		st.Message = msgStarted
		if state != nil && state.Running && state.Health != nil {
			st.Health = healthState(state.Health.Status)
		}
		if st.GetStartedAt() == 0 || (state != nil && !state.Running) {
			st.StartedAt = m.TimeNano
		}
	case action == string(events.ActionDie):
		code, err := strconv.Atoi(m.Actor.Attributes["exitCode"])
		if err != nil && state != nil {
			code = state.ExitCode
		}
		engineErr := ""
		if state != nil {
			oom = oom || state.OOMKilled
			engineErr = state.Error
		}
		applyExit(st, code, oom, engineErr)
	case action == string(events.ActionOOM):
		if state == nil || state.Running || state.Status == container.StateCreated {
			return nil, false
		}
		applyExit(st, state.ExitCode, true, state.Error)
	case strings.HasPrefix(action, string(events.ActionHealthStatus)+":"):
		st.State = skiffpb.TaskState_TASK_STATE_RUNNING
		st.Message = msgStarted
		st.Health = healthState(strings.TrimSpace(strings.TrimPrefix(action, string(events.ActionHealthStatus)+":")))
	default:
		return nil, false
	}
	return st, true
}

func healthState(s container.HealthStatus) skiffpb.HealthState {
	switch s {
	case container.Starting:
		return skiffpb.HealthState_HEALTH_STATE_STARTING
	case container.Healthy:
		return skiffpb.HealthState_HEALTH_STATE_HEALTHY
	case container.Unhealthy:
		return skiffpb.HealthState_HEALTH_STATE_UNHEALTHY
	default:
		return skiffpb.HealthState_HEALTH_STATE_NONE
	}
}

// engineTime converts the engine's RFC 3339 times to Unix nanoseconds; its
// "never" (the zero time) and anything unparsable become 0.
func engineTime(s string) int64 {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.IsZero() || t.Year() <= 1 {
		return 0
	}
	return t.UnixNano()
}
