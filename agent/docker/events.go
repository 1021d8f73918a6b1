package docker

import (
	"context"
	"fmt"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"

	"github.com/skiffhq/skiff/agent"
)

// Reconnection backoff of the event stream. A stream that stayed up for
// longer than the cap counts as healthy, and the backoff starts over.
const (
	minEventBackoff = 100 * time.Millisecond
	maxEventBackoff = 5 * time.Second
)

// Events follows the engine's event stream for the node's containers and
// delivers a status on every start, exit (die, with an OOM kill folded in),
// and health change, in the engine's order. An OOM kill the engine reports
// only after the exit gets a second terminal status that corrects the first.
//
// Each time the stream connects, the first time included, Events first
// delivers the status of every owned container, as Containers reports it:
// whatever happened while it was not connected (an engine restart, say) is
// then accounted for. Events the engine replays from just before that
// listing follow it, so a status may arrive twice, or an older one after a
// newer one; the last status of a container is always its current one.
//
// The executor owns the stream: a lost one is reconnected, with backoff, for
// as long as ctx lasts, and the channel is closed only when ctx ends.
func (e *Executor) Events(ctx context.Context) <-chan agent.Event {
	out := make(chan agent.Event, 64)
	go func() {
		defer close(out)
		backoff := minEventBackoff
		for {
			began := time.Now()
			err := e.followEvents(ctx, out)
			if ctx.Err() != nil {
				return
			}
			if time.Since(began) > maxEventBackoff {
				backoff = minEventBackoff
			}
			e.log.Warn("engine event stream lost; reconnecting", "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, maxEventBackoff)
		}
	}()
	return out
}

// followEvents resyncs by listing, subscribes to the engine's events, then
// forwards them until the stream fails or ctx ends.
func (e *Executor) followEvents(ctx context.Context, out chan<- agent.Event) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // also ends the client's reader goroutine

	// The listing comes before the subscription, and the subscription asks
	// the engine to replay everything since just before the listing, so no
	// change falls between the two. (Listing first also settles the API
	// version, which the client's event reader reads unguarded; see ready.)
	now := time.Now()
	current, err := e.Containers(ctx)
	if err != nil {
		return err
	}
	msgs, errs := e.client.Events(ctx, events.ListOptions{
		Since: fmt.Sprintf("%d.%09d", now.Unix(), now.Nanosecond()),
		Filters: filters.NewArgs(
			filters.Arg("type", string(events.ContainerEventType)),
			filters.Arg("label", LabelNode+"="+e.node),
			filters.Arg("event", string(events.ActionStart)),
			filters.Arg("event", string(events.ActionDie)),
			filters.Arg("event", string(events.ActionOOM)),
			// The engine matches health_status as a prefix, so this takes
			// every "health_status: <state>".
			filters.Arg("event", string(events.ActionHealthStatus)),
		),
	})
	for _, c := range current {
		if !send(ctx, out, agent.Event{TaskID: c.TaskID, Status: c.Status}) {
			return ctx.Err()
		}
	}
	e.log.Debug("event stream connected", "containers", len(current))

	// An oom event usually comes before the die it causes; remember it for
	// the die (see statusFromEvent for the other order).
	oomed := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			return err
		case m := <-msgs:
			taskID := m.Actor.Attributes[LabelTaskID]
			if taskID == "" {
				continue
			}
			info := e.inspectAfterEvent(ctx, m)
			st, ok := statusFromEvent(m, info, oomed[m.Actor.ID])
			switch m.Action {
			case events.ActionOOM:
				if !ok {
					oomed[m.Actor.ID] = true
				}
			case events.ActionDie:
				delete(oomed, m.Actor.ID)
			}
			if !ok {
				continue
			}
			e.log.Debug("container event", "task", taskID, "container", m.Actor.ID, "action", m.Action,
				"state", st.GetState(), "exit_code", st.GetExitCode(), "oom_killed", st.GetOomKilled())
			if !send(ctx, out, agent.Event{TaskID: taskID, Status: st}) {
				return ctx.Err()
			}
		}
	}
}

// inspectAfterEvent fetches the details an event lacks (OOM kill, engine
// error, health, start time). It returns nil when the container is gone or
// the engine cannot say; the event alone still makes a status.
func (e *Executor) inspectAfterEvent(ctx context.Context, m events.Message) *container.InspectResponse {
	info, err := e.client.ContainerInspect(ctx, m.Actor.ID)
	if err != nil {
		if !cerrdefs.IsNotFound(err) && ctx.Err() == nil {
			e.log.Warn("inspect after event", "container", m.Actor.ID, "action", m.Action, "err", err)
		}
		return nil
	}
	return &info
}

func send(ctx context.Context, out chan<- agent.Event, ev agent.Event) bool {
	select {
	case out <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}
