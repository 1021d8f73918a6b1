package cli

import (
	"fmt"
	"strings"
	"testing"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// progressFixture builds models for the progress tests: a replicated
// service "web" at spec version 2 (stored at Meta.version 100) and
// three ready nodes.
type progressFixture struct {
	m  *model
	sv *skiffpb.Service
	n  int
}

func newProgressFixture(replicas uint64) *progressFixture {
	f := &progressFixture{m: newModel()}
	f.sv = &skiffpb.Service{Id: "svc-web", SpecVersion: 2, Meta: &skiffpb.Meta{Version: 100},
		Spec: &skiffpb.ServiceSpec{Name: "web", Replicas: replicas}}
	f.m.apply(&skiffpb.WatchEvent{Object: &skiffpb.WatchEvent_Service{Service: f.sv}})
	for i := 1; i <= 3; i++ {
		f.m.apply(&skiffpb.WatchEvent{Object: &skiffpb.WatchEvent_Node{Node: &skiffpb.Node{
			Id: fmt.Sprintf("n%d", i), Name: fmt.Sprintf("h%d", i),
			Status: &skiffpb.NodeStatus{State: skiffpb.NodeState_NODE_STATE_READY}, Spec: &skiffpb.NodeSpec{},
		}}})
	}
	return f
}

// add puts a task of web into the model and returns it.
func (f *progressFixture) add(slot uint64, node string, version uint64, desired, state skiffpb.TaskState, err string) *skiffpb.Task {
	f.n++
	t := task(fmt.Sprintf("t%02d", f.n), "web", slot, node, version, desired, state, int64(f.n))
	t.Status.Err = err
	f.m.apply(&skiffpb.WatchEvent{Object: &skiffpb.WatchEvent_Task{Task: t}})
	return t
}

func (f *progressFixture) rollout(minVersion uint64) *rollout {
	return &rollout{what: "service web", services: map[string]uint64{"web": minVersion}}
}

func TestRolloutConverged(t *testing.T) {
	f := newProgressFixture(2)
	f.add(1, "n1", 2, running, running, "")
	f.add(2, "n2", 2, running, running, "")
	f.add(2, "n3", 1, shutdown, shutdown, "") // history does not matter
	rep := f.rollout(100).evaluate(f.m)
	if !rep.done || rep.fatal != nil {
		t.Fatalf("report = %+v, want done", rep)
	}
	if rep.overall != "overall progress: 2 out of 2 tasks" {
		t.Fatalf("overall = %q", rep.overall)
	}
	if got := formatLines(rep.lines, false); strings.Join(got, "|") != "1/2: running|2/2: running" {
		t.Fatalf("lines = %q", got)
	}
}

func TestRolloutNotConverged(t *testing.T) {
	for _, tc := range []struct {
		name    string
		build   func(f *progressFixture)
		min     uint64
		missing string
		line    string // the first slot's line, unaligned
	}{
		{
			name:    "the command's write is not seen yet",
			build:   func(f *progressFixture) { f.add(1, "n1", 2, running, running, "") },
			min:     101,
			missing: "web: not created yet",
		},
		{
			name: "a task cannot be placed",
			build: func(f *progressFixture) {
				f.add(1, "", 2, running, pending, "no suitable node (insufficient memory on 3 nodes)")
			},
			missing: "web: 0 of 1 tasks running (1 task: no suitable node (insufficient memory on 3 nodes))",
			line:    "1/1: pending   no suitable node (insufficient memory on 3 nodes)",
		},
		{
			name: "a slot keeps failing",
			build: func(f *progressFixture) {
				for range 3 {
					f.add(1, "n1", 2, shutdown, failedSt, "task: non-zero exit (1)")
				}
				f.add(1, "n1", 2, running, skiffpb.TaskState_TASK_STATE_STARTING, "")
			},
			missing: "web: 0 of 1 tasks running (1 task: failed 3 times: task: non-zero exit (1))",
			line:    "1/1: starting  failed 3 times: task: non-zero exit (1)",
		},
		{
			name: "an older spec still runs",
			build: func(f *progressFixture) {
				f.add(1, "n1", 1, running, running, "")
			},
			missing: "web: 0 of 1 tasks running",
			line:    "1/1: outdated",
		},
		{
			name: "no task yet",
			build: func(f *progressFixture) {
			},
			missing: "web: 0 of 1 tasks running",
			line:    "1/1: new",
		},
		{
			name: "a scale-down has tasks to stop",
			build: func(f *progressFixture) {
				f.add(1, "n1", 2, running, running, "")
				f.add(2, "n2", 2, running, running, "")
			},
			missing: "web: 1 of 1 tasks running (1 task still to stop)",
			line:    "1/1: running",
		},
		{
			name: "an update is in progress",
			build: func(f *progressFixture) {
				f.add(1, "n1", 2, running, running, "")
				f.sv.UpdateStatus = &skiffpb.UpdateStatus{State: skiffpb.UpdateState_UPDATE_STATE_UPDATING}
			},
			missing: "web: 1 of 1 tasks running (updating)",
			line:    "1/1: running",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newProgressFixture(1)
			tc.build(f)
			rep := f.rollout(tc.min).evaluate(f.m)
			if rep.done || rep.fatal != nil {
				t.Fatalf("report = %+v, want not done and not fatal", rep)
			}
			if rep.missing != tc.missing {
				t.Fatalf("missing = %q, want %q", rep.missing, tc.missing)
			}
			if tc.line != "" {
				if got := formatLines(rep.lines, false)[0]; got != tc.line {
					t.Fatalf("line = %q, want %q", got, tc.line)
				}
			}
		})
	}
}

func TestRolloutFatal(t *testing.T) {
	f := newProgressFixture(1)
	f.add(1, "n1", 2, running, running, "")
	f.sv.UpdateStatus = &skiffpb.UpdateStatus{State: skiffpb.UpdateState_UPDATE_STATE_PAUSED, Message: "update paused due to failure"}
	rep := f.rollout(0).evaluate(f.m)
	if rep.fatal == nil || !strings.Contains(rep.fatal.Error(), "service web: update paused: update paused due to failure") {
		t.Fatalf("paused update: fatal = %v", rep.fatal)
	}

	// A rollback seen during the wait fails it, even once the rolled back
	// service looks converged again.
	f = newProgressFixture(1)
	f.add(1, "n1", 2, running, running, "")
	rolling := &skiffpb.Service{Id: "svc-web", SpecVersion: 2, Meta: &skiffpb.Meta{Version: 101}, Spec: f.sv.GetSpec(),
		UpdateStatus: &skiffpb.UpdateStatus{State: skiffpb.UpdateState_UPDATE_STATE_ROLLBACK_STARTED, Message: "update failed; rolling back"}}
	f.m.apply(&skiffpb.WatchEvent{Object: &skiffpb.WatchEvent_Service{Service: rolling}})
	f.m.reset()
	f.m.apply(&skiffpb.WatchEvent{Object: &skiffpb.WatchEvent_Service{Service: f.sv}})
	rep = f.rollout(0).evaluate(f.m)
	if rep.fatal == nil || !strings.Contains(rep.fatal.Error(), "is rolled back: update failed; rolling back") {
		t.Fatalf("rollback: fatal = %v", rep.fatal)
	}
}

func TestRolloutGlobalService(t *testing.T) {
	f := newProgressFixture(0)
	f.sv.Spec.Mode = skiffpb.ServiceMode_SERVICE_MODE_GLOBAL
	f.sv.Spec.Placement = &skiffpb.Placement{Constraints: []string{"node.hostname != h3"}}
	f.add(0, "n1", 2, running, running, "")
	rep := f.rollout(0).evaluate(f.m)
	if rep.done || rep.overall != "overall progress: 1 out of 2 tasks" {
		t.Fatalf("report = %+v, want 1 of the 2 nodes that match", rep)
	}
	if got := strings.Join(formatLines(rep.lines, false), "|"); got != "h1: running|h2: new" {
		t.Fatalf("lines = %q", got)
	}
	f.add(0, "n2", 2, running, running, "")
	if rep := f.rollout(0).evaluate(f.m); !rep.done {
		t.Fatalf("report = %+v, want done", rep)
	}
}

func TestRolloutServiceLines(t *testing.T) {
	f := newProgressFixture(3)
	f.add(1, "n1", 2, running, running, "")
	f.add(2, "n2", 2, running, skiffpb.TaskState_TASK_STATE_PREPARING, "")
	f.add(3, "", 2, running, pending, "no suitable node (insufficient cpu on 3 nodes)")
	db := &skiffpb.Service{Id: "svc-db", SpecVersion: 1, Meta: &skiffpb.Meta{}, Spec: &skiffpb.ServiceSpec{Name: "db", Replicas: 1}}
	f.m.apply(&skiffpb.WatchEvent{Object: &skiffpb.WatchEvent_Service{Service: db}})
	dbTask := task("db1", "db", 1, "n3", 1, running, running, 1)
	f.m.apply(&skiffpb.WatchEvent{Object: &skiffpb.WatchEvent_Task{Task: dbTask}})

	r := &rollout{services: map[string]uint64{"web": 0, "db": 0}}
	rep := r.evaluate(f.m)
	if rep.overall != "overall progress: 2 out of 4 tasks" {
		t.Fatalf("overall = %q", rep.overall)
	}
	got := formatLines(rep.lines, true)
	want := []string{
		"db:  1/1 running   [==================================================>]",
		"web: 1/3 pending   3/3: no suitable node (insufficient cpu on 3 nodes)",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestDrain(t *testing.T) {
	f := newProgressFixture(2)
	d := &drain{nodeID: "n1", nodeName: "h1"}
	stopping := f.add(1, "n1", 2, shutdown, running, "")
	f.add(2, "n2", 2, running, running, "")
	rep := d.evaluate(f.m)
	if rep.done || rep.overall != "overall progress: 1 task left on h1" || rep.missing != "still on it: web: 1 task" {
		t.Fatalf("report = %+v", rep)
	}
	stopping.Status.State = shutdown
	if rep := d.evaluate(f.m); !rep.done {
		t.Fatalf("report = %+v, want done", rep)
	}

	// A node that went down cannot report its tasks stopping.
	f = newProgressFixture(1)
	f.add(1, "n1", 2, shutdown, running, "")
	f.m.nodes["n1"].Status.State = skiffpb.NodeState_NODE_STATE_DOWN
	if rep := d.evaluate(f.m); !rep.done {
		t.Fatalf("down node: report = %+v, want done", rep)
	}
}

func TestModelDeletes(t *testing.T) {
	f := newProgressFixture(1)
	tk := f.add(1, "n1", 2, running, running, "")
	f.m.apply(&skiffpb.WatchEvent{Action: skiffpb.WatchAction_WATCH_ACTION_DELETE, Object: &skiffpb.WatchEvent_Task{Task: tk}})
	if len(f.m.tasks) != 0 {
		t.Fatalf("deleted task kept: %v", f.m.tasks)
	}
}
