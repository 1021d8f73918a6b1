package cli

import (
	"testing"
	"time"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// task builds a task for the tests; created orders tasks in time.
func task(id, service string, slot uint64, node string, version uint64, desired, state skiffpb.TaskState, created int64) *skiffpb.Task {
	return &skiffpb.Task{
		Id: id, ServiceId: "svc-" + service, ServiceName: service, Slot: slot, NodeId: node, SpecVersion: version,
		DesiredState: desired, Status: &skiffpb.TaskStatus{State: state}, Meta: &skiffpb.Meta{CreatedAt: created},
	}
}

const (
	running  = skiffpb.TaskState_TASK_STATE_RUNNING
	shutdown = skiffpb.TaskState_TASK_STATE_SHUTDOWN
	pending  = skiffpb.TaskState_TASK_STATE_PENDING
	failedSt = skiffpb.TaskState_TASK_STATE_FAILED
)

func testTaskView(indent bool) taskView {
	return taskView{
		services: map[string]*skiffpb.Service{
			"svc-web": {Id: "svc-web", SpecVersion: 2,
				Spec:          &skiffpb.ServiceSpec{Name: "web", Container: &skiffpb.ContainerSpec{Image: "web:2"}},
				PreviousSpecs: []*skiffpb.VersionedSpec{{Version: 1, Spec: &skiffpb.ServiceSpec{Container: &skiffpb.ContainerSpec{Image: "web:1"}}}}},
		},
		nodes: map[string]*skiffpb.Node{
			"node1-id-0123456789": {Id: "node1-id-0123456789", Name: "h1"},
			"node2-id-0123456789": {Id: "node2-id-0123456789", Name: "h2"},
		},
		now:    time.Unix(0, 0),
		indent: indent,
	}
}

func TestTaskRowsNamesAndHistory(t *testing.T) {
	tasks := []*skiffpb.Task{
		task("t2-old-0123456789", "web", 2, "node2-id-0123456789", 1, shutdown, shutdown, 1),
		task("t1-new-0123456789", "web", 1, "node1-id-0123456789", 2, running, running, 5),
		task("t10-0123456789ab", "web", 10, "node2-id-0123456789", 2, running, running, 3),
		task("t1-old-0123456789", "web", 1, "node2-id-0123456789", 1, shutdown, shutdown, 2),
		task("t2-new-0123456789", "web", 2, "gone-node-0123456789", 2, running, running, 4),
		task("g-0123456789abcd", "agent", 0, "node1-id-0123456789", 1, running, running, 1),
	}
	rows := testTaskView(true).taskRows(tasks)
	want := []struct{ id, name, image, node string }{
		{"g-0123456789", "agent.node1-id-012", "", "h1"},
		{"t1-new-01234", "web.1", "web:2", "h1"},
		{"t1-old-01234", ` \_ web.1`, "web:1", "h2"},
		{"t2-new-01234", "web.2", "web:2", "gone-node-01"},
		{"t2-old-01234", ` \_ web.2`, "web:1", "h2"},
		{"t10-01234567", "web.10", "web:2", "h2"},
	}
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d: %+v", len(rows), len(want), rows)
	}
	for i, w := range want {
		r := rows[i]
		if r.ID != w.id || r.Name != w.name || r.Image != w.image || r.Node != w.node {
			t.Errorf("row %d = %+v, want %+v", i, r, w)
		}
	}
	if rows[1].DesiredState != "Running" || rows[2].DesiredState != "Shutdown" {
		t.Errorf("desired states = %q, %q", rows[1].DesiredState, rows[2].DesiredState)
	}

	// Outside tables, names are plain, as docker's.
	for _, r := range testTaskView(false).taskRows(tasks) {
		if r.Name[0] == ' ' {
			t.Errorf("non-table name %q is indented", r.Name)
		}
	}
}

func TestTaskRowsErrorsAndPorts(t *testing.T) {
	tk := task("t1-0123456789ab", "web", 1, "", 2, running, pending, 1)
	tk.Status.Err = "no suitable node (insufficient memory on 2 nodes)"
	tk.Ports = []*skiffpb.PortBinding{{PublishedPort: 8080, TargetPort: 80}}
	r := testTaskView(true).taskRows([]*skiffpb.Task{tk})[0]
	if r.Error != `"no suitable node (insufficien…"` || r.Ports != "*:8080->80/tcp" || r.Node != "" {
		t.Fatalf("row = %+v", r)
	}
}

func TestTaskFilter(t *testing.T) {
	req := &skiffpb.ListTasksRequest{}
	if _, err := (taskFilter{filters: []string{"desired-state=running"}}).apply(req); err != nil || !req.GetDesiredRunning() {
		t.Fatalf("running: %v, %v", req, err)
	}
	keep, err := (taskFilter{filters: []string{"desired-state=shutdown"}}).apply(&skiffpb.ListTasksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	tasks := []*skiffpb.Task{task("a", "web", 1, "", 1, running, running, 1), task("b", "web", 1, "", 1, shutdown, shutdown, 1)}
	if got := filterTasks(tasks, keep); len(got) != 1 || got[0].GetId() != "b" {
		t.Fatalf("shutdown filter kept %v", got)
	}
	for _, bad := range []string{"name=web", "desired-state=gone", "desired-state"} {
		if _, err := (taskFilter{filters: []string{bad}}).apply(&skiffpb.ListTasksRequest{}); err == nil {
			t.Errorf("filter %q accepted", bad)
		}
	}
}
