package cli

import (
	"context"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// Progress displays rest on a model of the objects a Watch streams, and on
// goals that judge it: has the rollout converged, what is missing, what
// went wrong (rollout.go, drain.go). Judging is pure, so that it can be
// tested on hand-made models; wait.go feeds the model, and render.go draws
// the goals' reports.

// model holds the latest version of every object a watch has sent.
type model struct {
	services map[string]*skiffpb.Service // by ID
	tasks    map[string]*skiffpb.Task    // by ID
	nodes    map[string]*skiffpb.Node    // by ID
	// rolledBack records, by service name, the message of every rollback
	// seen during the wait. It survives reset: a rollback seen on a broken
	// stream still happened.
	rolledBack map[string]string
}

func newModel() *model {
	m := &model{rolledBack: map[string]string{}}
	m.reset()
	return m
}

// reset forgets the objects, before a new watch sends them all again; a
// deletion missed while no stream was open must not linger.
func (m *model) reset() {
	m.services = map[string]*skiffpb.Service{}
	m.tasks = map[string]*skiffpb.Task{}
	m.nodes = map[string]*skiffpb.Node{}
}

// apply records one watch event.
func (m *model) apply(ev *skiffpb.WatchEvent) {
	del := ev.GetAction() == skiffpb.WatchAction_WATCH_ACTION_DELETE
	switch o := ev.GetObject().(type) {
	case *skiffpb.WatchEvent_Service:
		m.putService(o.Service, del)
	case *skiffpb.WatchEvent_Task:
		put(m.tasks, o.Task.GetId(), o.Task, del)
	case *skiffpb.WatchEvent_Node:
		put(m.nodes, o.Node.GetId(), o.Node, del)
	}
}

func (m *model) putService(sv *skiffpb.Service, del bool) {
	put(m.services, sv.GetId(), sv, del)
	if st := sv.GetUpdateStatus(); !del && st.GetState() == skiffpb.UpdateState_UPDATE_STATE_ROLLBACK_STARTED {
		m.rolledBack[sv.GetSpec().GetName()] = st.GetMessage()
	}
}

func put[T any](m map[string]T, id string, v T, del bool) {
	if del {
		delete(m, id)
		return
	}
	m[id] = v
}

func (m *model) serviceByName(name string) *skiffpb.Service {
	for _, sv := range m.services {
		if sv.GetSpec().GetName() == name {
			return sv
		}
	}
	return nil
}

// tasksByService groups the tasks by service ID.
func (m *model) tasksByService() map[string][]*skiffpb.Task {
	out := map[string][]*skiffpb.Task{}
	for _, t := range m.tasks {
		out[t.GetServiceId()] = append(out[t.GetServiceId()], t)
	}
	return out
}

// report is a goal's judgement of a model, and what the display shows.
type report struct {
	// done: the goal is reached.
	done bool
	// fatal is set when the goal can no longer be reached without the
	// user's help, such as an update that paused on failures.
	fatal error
	// overall is the headline, "overall progress: 3 out of 5 tasks".
	overall string
	lines   []progressLine
	// missing says what keeps the goal from being reached, for the
	// timeout's error message.
	missing string
}

// progressLine is one line of a progress display: a slot or a service.
type progressLine struct {
	// key identifies the line across reports.
	key   string
	label string
	// count is "3/5" on a service's line, empty on a slot's.
	count string
	// word is the state in docker's progress words: "running", "pending".
	word string
	// bar is how far along the line is, from 0 to 1; negative for none.
	bar float64
	// note explains a problem; it replaces the bar.
	note string
}

// goal is what a wait waits for.
type goal interface {
	// watch is the Watch request that streams what the goal needs.
	watch() *skiffpb.WatchRequest
	// evaluate judges the model.
	evaluate(m *model) report
	// doneMessage is printed once the goal is reached.
	doneMessage() string
	// timeoutMessage starts the error when the wait times out.
	timeoutMessage() string
	// interruptHint tells a user who stopped the wait how to follow on.
	interruptHint() string
	// load reads what evaluate needs with list calls (see wait.go).
	load(ctx context.Context, ctl skiffpb.ControlClient) (*model, error)
}
