package agent

import (
	"testing"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// TestMetricsReadTheAgentsState: the gauges follow the tasks the worker
// holds and whether a session is up.
func TestMetricsReadTheAgentsState(t *testing.T) {
	a := testAgent(t, nil)
	reg := a.metrics()
	gauge := func(name string) float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatalf("no metric %s", name)
		return 0
	}
	if got := gauge("skiff_agent_tasks"); got != 0 {
		t.Errorf("skiff_agent_tasks = %v before any assignment, want 0", got)
	}
	// A finished task the leader wants shut down needs no executor call,
	// so the worker holds it without touching an engine.
	a.worker.assign(&skiffpb.Assignments{Updated: []*skiffpb.Assignment{{Task: &skiffpb.Task{
		Id:           "t1",
		DesiredState: skiffpb.TaskState_TASK_STATE_SHUTDOWN,
		Status:       &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_COMPLETE},
	}}}})
	if got := gauge("skiff_agent_tasks"); got != 1 {
		t.Errorf("skiff_agent_tasks = %v, want 1", got)
	}
	if got := gauge("skiff_agent_connected"); got != 0 {
		t.Errorf("skiff_agent_connected = %v without a session, want 0", got)
	}
	a.mu.Lock()
	a.connected = true
	a.mu.Unlock()
	if got := gauge("skiff_agent_connected"); got != 1 {
		t.Errorf("skiff_agent_connected = %v with a session, want 1", got)
	}
}
