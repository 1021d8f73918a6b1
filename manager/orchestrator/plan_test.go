package orchestrator

import (
	"fmt"
	"net/netip"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

const (
	stNew      = skiffpb.TaskState_TASK_STATE_NEW
	stPending  = skiffpb.TaskState_TASK_STATE_PENDING
	stAssigned = skiffpb.TaskState_TASK_STATE_ASSIGNED
	stRunning  = skiffpb.TaskState_TASK_STATE_RUNNING
	stComplete = skiffpb.TaskState_TASK_STATE_COMPLETE
	stShutdown = skiffpb.TaskState_TASK_STATE_SHUTDOWN
	stFailed   = skiffpb.TaskState_TASK_STATE_FAILED
	stRejected = skiffpb.TaskState_TASK_STATE_REJECTED
	stRemove   = skiffpb.TaskState_TASK_STATE_REMOVE
	stOrphaned = skiffpb.TaskState_TASK_STATE_ORPHANED

	ready  = skiffpb.NodeState_NODE_STATE_READY
	down   = skiffpb.NodeState_NODE_STATE_DOWN
	active = skiffpb.NodeAvailability_NODE_AVAILABILITY_ACTIVE
	pause  = skiffpb.NodeAvailability_NODE_AVAILABILITY_PAUSE
	drain  = skiffpb.NodeAvailability_NODE_AVAILABILITY_DRAIN

	condAny       = skiffpb.RestartCondition_RESTART_CONDITION_ANY
	condOnFailure = skiffpb.RestartCondition_RESTART_CONDITION_ON_FAILURE
	condNone      = skiffpb.RestartCondition_RESTART_CONDITION_NONE
)

// TestReplicatedScaleUp: every slot from 1 to replicas without a task gets
// a new pending, unplaced task of the current spec version.
func TestReplicatedScaleUp(t *testing.T) {
	cases := []struct {
		name     string
		replicas uint64
		existing []uint64 // slots that already hold a running task
		want     []uint64
	}{
		{"from nothing", 3, nil, []uint64{1, 2, 3}},
		{"fills the missing slots", 5, []uint64{1, 3}, []uint64{2, 4, 5}},
		{"already complete", 2, []uint64{1, 2}, nil},
		{"zero replicas", 0, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			sv := replicated("web", tc.replicas)
			sv.SpecVersion = 4
			h.putService(sv)
			for _, slot := range tc.existing {
				h.task(fmt.Sprintf("old%d", slot), "web", taskOpts{slot: slot, state: stRunning, version: 4})
			}
			o := h.step()
			if got := o.createdSlots(); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("created slots %v, want %v", got, tc.want)
			}
			if len(o.desired) != 0 || len(o.deletes) != 0 || len(o.services) != 0 {
				t.Errorf("unexpected actions: %+v", o)
			}
			for _, tk := range o.creates {
				if tk.GetServiceId() != "web" || tk.GetServiceName() != "st_web" || tk.GetStack() != "st" ||
					tk.GetSpecVersion() != 4 || tk.GetNodeId() != "" || tk.GetAttempt() != 0 ||
					tk.GetDesiredState() != stRunning || tk.GetStatus().GetState() != stPending ||
					tk.GetMeta().GetCreatedAt() != t0.UnixNano() || tk.GetMeta().GetVersion() != 0 || tk.GetId() == "" {
					t.Errorf("new task = %v", tk)
				}
			}
			// The next reconcile has nothing left to do.
			if o := h.step(); !o.empty() {
				t.Errorf("second reconcile: %+v", o)
			}
		})
	}
}

// TestReplicatedScaleDown: the tasks of slots above the replica count are
// to be removed (not kept as history, so the slots are empty if wanted
// again); the others are left alone.
func TestReplicatedScaleDown(t *testing.T) {
	h := newHarness(t)
	h.readyNode("n1")
	h.putService(replicated("web", 2))
	for slot := uint64(1); slot <= 4; slot++ {
		h.running(fmt.Sprintf("t%d", slot), "web", slot, "n1")
	}
	// Slot 5 was shut down earlier: nothing more to do there.
	h.task("t5", "web", taskOpts{slot: 5, node: "n1", desired: stShutdown, state: stShutdown})
	o := h.step()
	want := map[string]skiffpb.TaskState{"t3": stRemove, "t4": stRemove}
	if !reflect.DeepEqual(o.desired, want) || len(o.creates) != 0 || len(o.deletes) != 0 {
		t.Fatalf("outcome %+v, want only %v", o, want)
	}
	if o := h.step(); !o.empty() {
		t.Errorf("second reconcile: %+v", o)
	}
}

// TestScaleDownThenUp: slots emptied by a scale-down are filled again when
// the service scales back up, although their old tasks are still kept as
// history.
func TestScaleDownThenUp(t *testing.T) {
	h := newHarness(t)
	h.readyNode("n1")
	h.putService(replicated("web", 3))
	for slot := uint64(1); slot <= 3; slot++ {
		h.running(fmt.Sprintf("t%d", slot), "web", slot, "n1")
	}
	h.editService("web", func(sv *skiffpb.Service) { sv.Spec.Replicas = 1 })
	h.step()
	h.setStatus("t2", stShutdown)
	h.setStatus("t3", stShutdown)
	h.editService("web", func(sv *skiffpb.Service) { sv.Spec.Replicas = 3 })
	o := h.step()
	if got := o.createdSlots(); !reflect.DeepEqual(got, []uint64{2, 3}) {
		t.Fatalf("after scaling back to 3, created slots %v, want [2 3]", got)
	}
}

// TestRestartCondition: a task that ended is shut down, and replaced in
// its slot (attempt+1) when the restart condition allows: "any" restarts
// whatever the end, "on-failure" all but a clean exit, "none" nothing.
func TestRestartCondition(t *testing.T) {
	ends := []skiffpb.TaskState{stComplete, stFailed, stRejected, stShutdown, stOrphaned}
	cases := []struct {
		cond skiffpb.RestartCondition
		// restarts lists the ends that get a replacement.
		restarts map[skiffpb.TaskState]bool
	}{
		{condAny, map[skiffpb.TaskState]bool{stComplete: true, stFailed: true, stRejected: true, stShutdown: true, stOrphaned: true}},
		{condOnFailure, map[skiffpb.TaskState]bool{stFailed: true, stRejected: true, stShutdown: true, stOrphaned: true}},
		{condNone, map[skiffpb.TaskState]bool{}},
	}
	for _, tc := range cases {
		for _, end := range ends {
			t.Run(fmt.Sprintf("%v/%v", tc.cond, end), func(t *testing.T) {
				h := newHarness(t)
				h.readyNode("n1")
				sv := replicated("web", 1)
				sv.Spec.RestartPolicy.Condition = tc.cond
				h.putService(sv)
				h.task("t1", "web", taskOpts{slot: 1, node: "n1", state: end, attempt: 2, age: time.Second})
				o := h.step()
				if o.desired["t1"] != stShutdown || len(o.desired) != 1 {
					t.Errorf("desired changes %v, want t1 SHUTDOWN", o.desired)
				}
				if len(o.deletes) != 0 {
					t.Errorf("deletes %v", o.deletes)
				}
				if !tc.restarts[end] {
					if len(o.creates) != 0 {
						t.Fatalf("restarted: %v", o.creates)
					}
					return
				}
				if len(o.creates) != 1 {
					t.Fatalf("created %d tasks, want 1", len(o.creates))
				}
				if nt := o.creates[0]; nt.GetSlot() != 1 || nt.GetAttempt() != 3 || nt.GetNodeId() != "" || nt.GetStatus().GetState() != stPending {
					t.Errorf("replacement = %v", nt)
				}
				if !o.wake.IsZero() {
					t.Errorf("wake %v for an immediate restart", o.wake)
				}
			})
		}
	}
}

// TestRestartDelay: a restart waits for the policy's delay after the task
// ended (5 s without a policy), and the plan asks to be woken when it is
// due.
func TestRestartDelay(t *testing.T) {
	cases := []struct {
		name    string
		policy  *skiffpb.RestartPolicy
		endedAt time.Duration // before now
		wantNew bool
		wantDue time.Duration // after the end, when not restarted yet
	}{
		{"delay not yet over", &skiffpb.RestartPolicy{Delay: int64(10 * time.Second)}, 3 * time.Second, false, 10 * time.Second},
		{"delay over", &skiffpb.RestartPolicy{Delay: int64(10 * time.Second)}, 10 * time.Second, true, 0},
		{"no policy: 5 s default, not over", nil, 4 * time.Second, false, 5 * time.Second},
		{"no policy: 5 s default, over", nil, 6 * time.Second, true, 0},
		{"zero delay", &skiffpb.RestartPolicy{}, 0, true, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			sv := replicated("web", 1)
			sv.Spec.RestartPolicy = tc.policy
			h.putService(sv)
			h.task("t1", "web", taskOpts{slot: 1, state: stFailed, age: tc.endedAt})
			o := h.step()
			// The failed task is shut down when its replacement is made;
			// until then it stays desired-running, so the restart is not
			// forgotten while the delay runs.
			if tc.wantNew && o.desired["t1"] != stShutdown {
				t.Errorf("restarted task not shut down: %v", o.desired)
			}
			if !tc.wantNew && len(o.desired) != 0 {
				t.Errorf("task changed before its restart delay is over: %v", o.desired)
			}
			if got := len(o.creates) == 1; got != tc.wantNew {
				t.Fatalf("restarted = %v, want %v", got, tc.wantNew)
			}
			if tc.wantNew {
				return
			}
			if want := t0.Add(-tc.endedAt).Add(tc.wantDue); !o.wake.Equal(want) {
				t.Errorf("wake at %v, want %v", o.wake, want)
			}
		})
	}
}

// TestDelayedRestartHappens: when the delay of a restart is over, the
// reconcile that the wake-up triggers starts the replacement.
func TestDelayedRestartHappens(t *testing.T) {
	h := newHarness(t)
	sv := replicated("web", 1)
	sv.Spec.RestartPolicy.Delay = int64(10 * time.Second)
	h.putService(sv)
	h.task("t1", "web", taskOpts{slot: 1, state: stRunning, age: time.Minute})
	h.setStatus("t1", stFailed)
	o := h.step()
	if len(o.creates) != 0 || o.wake.IsZero() {
		t.Fatalf("first reconcile: created %d, wake %v; want a wake-up and no task yet", len(o.creates), o.wake)
	}
	h.now = o.wake
	o = h.step()
	if len(o.creates) != 1 || o.creates[0].GetSlot() != 1 || o.creates[0].GetAttempt() != 1 {
		t.Fatalf("after the delay: created %v, want one task in slot 1, attempt 1", o.creates)
	}
}

// TestRestartMaxAttempts: max_attempts bounds the restarts of a slot:
// counted by the latest task's attempt without a window, and by the
// restarts created within the window with one.
func TestRestartMaxAttempts(t *testing.T) {
	type hist struct {
		attempt uint64
		age     time.Duration
	}
	cases := []struct {
		name    string
		max     uint64
		window  time.Duration
		history []hist // oldest first; the last one just failed
		want    bool
	}{
		{"no limit", 0, 0, []hist{{0, 3 * time.Second}, {1, 2 * time.Second}, {7, time.Second}}, true},
		{"first failure under a limit of 2", 2, 0, []hist{{0, time.Second}}, true},
		{"second failure under a limit of 2", 2, 0, []hist{{0, 2 * time.Second}, {1, time.Second}}, true},
		{"limit of 2 reached", 2, 0, []hist{{0, 3 * time.Second}, {1, 2 * time.Second}, {2, time.Second}}, false},
		{"limit of 1 reached", 1, 0, []hist{{0, 2 * time.Second}, {1, time.Second}}, false},
		{"window: old restarts do not count", 2, time.Minute, []hist{{0, 300 * time.Second}, {1, 200 * time.Second}, {2, 100 * time.Second}}, true},
		{"window: one recent restart", 2, time.Minute, []hist{{0, 300 * time.Second}, {1, 200 * time.Second}, {2, 30 * time.Second}}, true},
		{"window: two recent restarts", 2, time.Minute, []hist{{0, 50 * time.Second}, {1, 40 * time.Second}, {2, 30 * time.Second}}, false},
		{"window: the original task is not a restart", 1, time.Minute, []hist{{0, 10 * time.Second}}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			sv := replicated("web", 1)
			sv.Spec.RestartPolicy = &skiffpb.RestartPolicy{Condition: condAny, MaxAttempts: tc.max, Window: int64(tc.window)}
			h.putService(sv)
			for i, x := range tc.history {
				o := taskOpts{slot: 1, state: stFailed, attempt: x.attempt, age: x.age, desired: stShutdown}
				if i == len(tc.history)-1 {
					o.desired = stRunning
				}
				h.task(fmt.Sprintf("t%d", i), "web", o)
			}
			o := h.step()
			last := fmt.Sprintf("t%d", len(tc.history)-1)
			if o.desired[last] != stShutdown {
				t.Errorf("failed task not shut down: %v", o.desired)
			}
			if got := len(o.creates) == 1; got != tc.want {
				t.Fatalf("restarted = %v, want %v", got, tc.want)
			}
			if tc.want {
				if a := o.creates[0].GetAttempt(); a != tc.history[len(tc.history)-1].attempt+1 {
					t.Errorf("attempt %d", a)
				}
			}
		})
	}
}

// TestNodeLostReplacesTasks: a task whose node is down, drained or gone is
// shut down and replaced in its slot, whatever the restart policy; a
// paused node keeps its tasks.
func TestNodeLostReplacesTasks(t *testing.T) {
	cases := []struct {
		name    string
		state   skiffpb.NodeState
		avail   skiffpb.NodeAvailability
		removed bool
		moved   bool
	}{
		{"down", down, active, false, true},
		{"drained", ready, drain, false, true},
		{"drained and down", down, drain, false, true},
		{"removed from the cluster", ready, active, true, true},
		{"paused", ready, pause, false, false},
		{"ready", ready, active, false, false},
	}
	for _, tc := range cases {
		for _, cond := range []skiffpb.RestartCondition{condAny, condNone} {
			t.Run(fmt.Sprintf("%s/%v", tc.name, cond), func(t *testing.T) {
				h := newHarness(t)
				if !tc.removed {
					h.node("n1", tc.state, tc.avail)
				}
				sv := replicated("web", 2)
				sv.Spec.RestartPolicy = &skiffpb.RestartPolicy{Condition: cond, Delay: int64(time.Hour)}
				h.putService(sv)
				h.running("t1", "web", 1, "n1")
				// An unplaced task never counts as lost.
				h.task("t2", "web", taskOpts{slot: 2, state: stPending})
				o := h.step()
				if !tc.moved {
					if !o.empty() {
						t.Fatalf("outcome %+v, want nothing", o)
					}
					return
				}
				if !reflect.DeepEqual(o.desired, map[string]skiffpb.TaskState{"t1": stShutdown}) {
					t.Errorf("desired %v, want t1 SHUTDOWN", o.desired)
				}
				if got := o.createdSlots(); !reflect.DeepEqual(got, []uint64{1}) {
					t.Fatalf("created slots %v, want [1]", got)
				}
				if nt := o.creates[0]; nt.GetNodeId() != "" || nt.GetAttempt() != 0 || nt.GetStatus().GetState() != stPending {
					t.Errorf("replacement = %v", nt)
				}
				if !o.wake.IsZero() {
					t.Errorf("a move waited for the restart delay: wake %v", o.wake)
				}
			})
		}
	}
}

// TestGlobalService: a global service has one task on every ready, active
// node that meets its constraints; paused nodes keep their task but get no
// new one; tasks on drained, down or no longer matching nodes are shut
// down and not replaced elsewhere.
func TestGlobalService(t *testing.T) {
	h := newHarness(t)
	h.node("n1", ready, active, "zone=a")
	h.node("n2", ready, active, "zone=b") // fails the constraint
	h.node("n3", ready, pause, "zone=a")
	h.node("n4", ready, drain, "zone=a")
	h.node("n5", down, active, "zone=a")
	h.node("n6", ready, active, "zone=a") // already runs the task
	h.node("n7", ready, pause, "zone=a")  // paused, without a task
	h.node("n8", ready, active, "zone=a") // its task finished cleanly
	sv := global("mon", "node.labels.zone==a")
	sv.Spec.RestartPolicy.Condition = condOnFailure
	h.putService(sv)
	h.task("g2", "mon", taskOpts{node: "n2", state: stRunning})
	h.task("g3", "mon", taskOpts{node: "n3", state: stRunning})
	h.task("g4", "mon", taskOpts{node: "n4", state: stRunning})
	h.task("g5", "mon", taskOpts{node: "n5", state: stRunning})
	h.task("g6", "mon", taskOpts{node: "n6", state: stRunning})
	h.task("g8", "mon", taskOpts{node: "n8", state: stComplete})

	o := h.step()
	if got := o.createdNodes(); !reflect.DeepEqual(got, []string{"n1"}) {
		t.Fatalf("created on %v, want [n1]", got)
	}
	nt := o.creates[0]
	if nt.GetSlot() != 0 || nt.GetStatus().GetState() != stAssigned || nt.GetDesiredState() != stRunning || nt.GetSpecVersion() != 1 {
		t.Errorf("global task = %v", nt)
	}
	want := map[string]skiffpb.TaskState{"g2": stRemove, "g4": stRemove, "g5": stRemove, "g8": stShutdown}
	if !reflect.DeepEqual(o.desired, want) {
		t.Errorf("desired %v, want %v", o.desired, want)
	}
	if o := h.step(); !o.empty() {
		t.Errorf("second reconcile: %+v", o)
	}

	t.Run("a failed global task restarts on its node", func(t *testing.T) {
		h.t = t
		h.setStatus("g6", stFailed)
		o := h.step()
		if o.desired["g6"] != stShutdown {
			t.Errorf("desired %v", o.desired)
		}
		if got := o.createdNodes(); !reflect.DeepEqual(got, []string{"n6"}) || o.creates[0].GetAttempt() != 1 {
			t.Fatalf("created %v, want one task on n6 with attempt 1", o.creates)
		}
	})
	t.Run("a node that becomes eligible gets a task", func(t *testing.T) {
		h.t = t
		h.setNode("n7", ready, active)
		o := h.step()
		if got := o.createdNodes(); !reflect.DeepEqual(got, []string{"n7"}) {
			t.Fatalf("created on %v, want [n7]", got)
		}
	})
}

// TestGlobalTaskReturnsAfterNodeRecovers: a node that was down (or
// drained) and is ready and active again gets its global task back.
func TestGlobalTaskReturnsAfterNodeRecovers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state skiffpb.NodeState
		avail skiffpb.NodeAvailability
	}{{"down then ready", down, active}, {"drained then active", ready, drain}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.readyNode("n1")
			h.putService(global("mon"))
			h.task("g1", "mon", taskOpts{node: "n1", state: stRunning})
			h.setNode("n1", tc.state, tc.avail)
			if o := h.step(); o.desired["g1"] != stRemove {
				t.Fatalf("task on the lost node not removed: %+v", o)
			}
			h.setStatus("g1", stShutdown)
			h.setNode("n1", ready, active)
			o := h.step()
			if got := o.createdNodes(); !reflect.DeepEqual(got, []string{"n1"}) {
				t.Fatalf("created on %v after the node came back, want [n1]", got)
			}
		})
	}
}

// TestGlobalInvalidConstraints: constraints that do not parse place no
// global task (the Control API refuses them, so this is a safety net), and
// shut down existing ones.
func TestGlobalInvalidConstraints(t *testing.T) {
	h := newHarness(t)
	h.readyNode("n1")
	h.readyNode("n2")
	h.putService(global("mon", "nonsense"))
	h.task("g1", "mon", taskOpts{node: "n1", state: stRunning})
	o := h.step()
	if len(o.creates) != 0 || o.desired["g1"] != stRemove {
		t.Fatalf("outcome %+v", o)
	}
}

// TestRemovedService: the tasks of a deleted service are told to go away
// (desired REMOVE) and deleted once they have stopped, were never placed,
// or their node is down or gone.
func TestRemovedService(t *testing.T) {
	cases := []struct {
		name       string
		opts       taskOpts
		wantRemove bool
		wantDelete bool
	}{
		{"running on a ready node", taskOpts{node: "up", state: stRunning}, true, false},
		{"starting on a ready node", taskOpts{node: "up", state: stAssigned}, true, false},
		{"finished on a ready node", taskOpts{node: "up", state: stComplete}, true, true},
		{"failed on a ready node", taskOpts{node: "up", state: stFailed}, true, true},
		{"never placed", taskOpts{state: stPending}, true, true},
		{"running on a down node", taskOpts{node: "dead", state: stRunning}, true, true},
		{"running on a removed node", taskOpts{node: "gone", state: stRunning}, true, true},
		{"running on a drained node", taskOpts{node: "drained", state: stRunning}, true, false},
		{"already told, still running", taskOpts{node: "up", state: stRunning, desired: stRemove}, false, false},
		{"already told, now stopped", taskOpts{node: "up", state: stShutdown, desired: stRemove}, false, true},
		{"shut down earlier", taskOpts{node: "up", state: stShutdown, desired: stShutdown}, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.node("up", ready, active)
			h.node("dead", down, active)
			h.node("drained", ready, drain)
			h.task("t1", "deleted", tc.opts)
			o := h.step()
			if got := o.desired["t1"] == stRemove; got != tc.wantRemove || len(o.desired) > 1 {
				t.Errorf("desired %v, want REMOVE=%v", o.desired, tc.wantRemove)
			}
			if got := len(o.deletes) == 1; got != tc.wantDelete {
				t.Errorf("deletes %v, want delete=%v", o.deletes, tc.wantDelete)
			}
			if len(o.creates) != 0 || len(o.services) != 0 {
				t.Errorf("unexpected %+v", o)
			}
		})
	}
	t.Run("through to deletion", func(t *testing.T) {
		h := newHarness(t)
		h.readyNode("n1")
		h.putService(replicated("web", 2))
		h.running("t1", "web", 1, "n1")
		h.running("t2", "web", 2, "n1")
		h.apply(&skiffpb.StoreAction{Action: &skiffpb.StoreAction_DeleteService{DeleteService: "web"}})
		o := h.step()
		if len(o.desired) != 2 || len(o.deletes) != 0 {
			t.Fatalf("outcome %+v", o)
		}
		h.setStatus("t1", stShutdown)
		if o := h.step(); !reflect.DeepEqual(o.deletes, []string{"t1"}) {
			t.Fatalf("deletes %v, want [t1]", o.deletes)
		}
		h.setNode("n1", down, active)
		h.step()
		if n := len(h.tasks("web")); n != 0 {
			t.Fatalf("%d tasks left", n)
		}
	})
}

// TestHistoryPruning: each slot keeps at most the history limit of tasks,
// the running one included; the oldest finished tasks that are no longer
// wanted go first, and a task still stopping is kept.
func TestHistoryPruning(t *testing.T) {
	dead := func(age time.Duration) taskOpts {
		return taskOpts{slot: 1, node: "n1", state: stShutdown, desired: stShutdown, age: age}
	}
	cases := []struct {
		name    string
		limit   int
		replica uint64
		tasks   map[string]taskOpts
		want    []string
	}{
		{"over the limit", 3, 1, map[string]taskOpts{
			"d1": dead(50 * time.Second), "d2": dead(40 * time.Second), "d3": dead(30 * time.Second), "d4": dead(20 * time.Second),
			"r": {slot: 1, node: "n1", state: stRunning, age: 10 * time.Second},
		}, []string{"d1", "d2"}},
		{"at the limit", 3, 1, map[string]taskOpts{
			"d1": dead(50 * time.Second), "d2": dead(40 * time.Second),
			"r": {slot: 1, node: "n1", state: stRunning, age: 10 * time.Second},
		}, nil},
		{"limit of one keeps only the running task", 1, 1, map[string]taskOpts{
			"d1": dead(50 * time.Second), "d2": dead(40 * time.Second), "d3": dead(30 * time.Second),
			"r": {slot: 1, node: "n1", state: stRunning, age: 10 * time.Second},
		}, []string{"d1", "d2", "d3"}},
		{"a task still stopping is kept", 1, 1, map[string]taskOpts{
			"stopping": {slot: 1, node: "n1", state: stRunning, desired: stShutdown, age: 50 * time.Second},
			"r":        {slot: 1, node: "n1", state: stRunning, age: 10 * time.Second},
		}, nil},
		{"slots beyond the replicas are pruned too", 2, 0, map[string]taskOpts{
			"d1": dead(50 * time.Second), "d2": dead(40 * time.Second), "d3": dead(30 * time.Second), "d4": dead(20 * time.Second),
		}, []string{"d1", "d2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.history = tc.limit
			h.readyNode("n1")
			h.putService(replicated("web", tc.replica))
			for id, o := range tc.tasks {
				h.task(id, "web", o)
			}
			o := h.step()
			if !reflect.DeepEqual(o.deletes, tc.want) {
				t.Fatalf("deleted %v, want %v", o.deletes, tc.want)
			}
			if len(o.creates) != 0 {
				t.Errorf("created %v", o.creates)
			}
		})
	}
	t.Run("a restart loop stays within the limit", func(t *testing.T) {
		h := newHarness(t)
		h.history = 3
		h.putService(replicated("web", 1))
		for i := 0; i < 10; i++ {
			h.step()
			live := h.liveInSlot("web", 1)
			if len(live) != 1 {
				t.Fatalf("round %d: %d live tasks in slot 1", i, len(live))
			}
			h.setStatus(live[0].GetId(), stFailed)
		}
		h.step()
		h.step()
		if n := len(h.tasks("web")); n > 3 {
			t.Fatalf("slot 1 keeps %d tasks, limit 3", n)
		}
		if a := h.liveInSlot("web", 1)[0].GetAttempt(); a != 10 {
			t.Errorf("latest attempt %d, want 10", a)
		}
	})
}

// TestTaskAddresses: a new task gets an address in each of its service's
// networks, with the aliases; when that fails the task is created REJECTED
// with the reason and holds no address.
func TestTaskAddresses(t *testing.T) {
	withNets := func(nets ...string) *skiffpb.Service {
		sv := replicated("web", 1)
		for _, n := range nets {
			sv.Spec.Networks = append(sv.Spec.Networks, &skiffpb.ServiceNetwork{Target: n, Aliases: []string{"alias-" + n}})
		}
		return sv
	}
	t.Run("one address per network", func(t *testing.T) {
		h := newHarness(t)
		h.network("net1", "st_front", "10.0.1.0/24")
		h.network("net2", "st_back", "10.0.2.0/24")
		h.putService(withNets("st_front", "st_back"))
		o := h.step()
		nt := o.creates[0]
		got := []string{}
		for _, na := range nt.GetNetworks() {
			got = append(got, na.GetNetworkId()+"="+na.GetAddress()+"/"+strings.Join(na.GetAliases(), ","))
		}
		want := []string{"net1=10.0.1.2/24/alias-st_front", "net2=10.0.2.2/24/alias-st_back"}
		if !reflect.DeepEqual(got, want) || nt.GetStatus().GetState() != stPending {
			t.Fatalf("networks %v state %v, want %v PENDING", got, nt.GetStatus().GetState(), want)
		}
	})
	cases := []struct {
		name    string
		setup   func(h *harness)
		nets    []string
		noIPAM  bool
		wantErr string
	}{
		{"missing network", func(h *harness) { h.network("net1", "st_front", "10.0.1.0/30") },
			[]string{"st_front", "st_missing"}, false, "network st_missing does not exist"},
		{"no allocator", func(h *harness) { h.network("net1", "st_front", "10.0.1.0/30") },
			[]string{"st_front"}, true, "no address allocator"},
		{"subnet full", func(h *harness) {
			h.network("net1", "st_front", "10.0.1.0/30")
			h.network("net2", "st_back", "10.0.2.0/30")
			if _, err := h.ipam.Allocate("net2"); err != nil {
				t.Fatal(err)
			}
		}, []string{"st_front", "st_back"}, false, "allocate an address"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			tc.setup(h)
			if tc.noIPAM {
				h.ipam = nil
			}
			h.putService(withNets(tc.nets...))
			o := h.step()
			nt := o.creates[0]
			if nt.GetStatus().GetState() != stRejected || !strings.Contains(nt.GetStatus().GetErr(), tc.wantErr) || len(nt.GetNetworks()) != 0 {
				t.Fatalf("task status %v networks %v, want REJECTED with %q and no address", nt.GetStatus(), nt.GetNetworks(), tc.wantErr)
			}
			if tc.noIPAM {
				return
			}
			// The /30's one address went back to the pool.
			if p, err := h.ipam.Allocate("net1"); err != nil || p.String() != "10.0.1.2/30" {
				t.Errorf("address of st_front not released: %v, %v", p, err)
			}
		})
	}
}

// TestMeshAttachments: every ready node gets an address in each network of
// a service that publishes a port through the routing mesh, once.
func TestMeshAttachments(t *testing.T) {
	h := newHarness(t)
	h.network("net1", "st_front", "10.0.1.0/24")
	h.network("net2", "st_back", "10.0.2.0/24")
	h.network("net3", "st_other", "10.0.3.0/24")
	h.readyNode("n1")
	h.readyNode("n2")
	h.node("n3", down, active)
	// n2 already has its address in net1.
	h.apply(&skiffpb.StoreAction{Action: &skiffpb.StoreAction_NodeAttachment{NodeAttachment: &skiffpb.NodeAttachmentUpdate{
		NodeId: "n2", Attachment: &skiffpb.NetworkAttachment{NetworkId: "net1", Address: "10.0.1.9/24"},
	}}})
	h.ipam.MarkUsed("net1", netip.MustParseAddr("10.0.1.9"))
	ingress := replicated("web", 0)
	ingress.Spec.Networks = []*skiffpb.ServiceNetwork{{Target: "st_front"}, {Target: "st_missing"}}
	ingress.Spec.Endpoint = &skiffpb.EndpointSpec{Ports: []*skiffpb.PortConfig{{TargetPort: 80, PublishedPort: 8080}}}
	hostMode := replicated("db", 0)
	hostMode.Spec.Networks = []*skiffpb.ServiceNetwork{{Target: "st_back"}}
	hostMode.Spec.Endpoint = &skiffpb.EndpointSpec{Ports: []*skiffpb.PortConfig{{TargetPort: 5432, PublishedPort: 5432, PublishMode: skiffpb.PublishMode_PUBLISH_MODE_HOST}}}
	unpublished := replicated("cache", 0)
	unpublished.Spec.Networks = []*skiffpb.ServiceNetwork{{Target: "st_other"}}
	unpublished.Spec.Endpoint = &skiffpb.EndpointSpec{Ports: []*skiffpb.PortConfig{{TargetPort: 6379}}}
	h.putService(ingress)
	h.putService(hostMode)
	h.putService(unpublished)

	o := h.step()
	var got []string
	for _, a := range o.attach {
		got = append(got, a.GetNodeId()+"@"+a.GetAttachment().GetNetworkId()+"="+a.GetAttachment().GetAddress())
	}
	if want := []string{"n1@net1=10.0.1.2/24"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("attachments %v, want %v", got, want)
	}
	if o := h.step(); len(o.attach) != 0 {
		t.Errorf("second reconcile attached again: %v", o.attach)
	}
}

// TestDirtySet: a change to the cluster concerns everything; a service's
// change concerns the whole service; a task's change concerns its slot (the
// replica number, or the node of a global task); a node's change concerns
// the node (its tasks' slots and its slot in global services, found when
// reconciling).
func TestDirtySet(t *testing.T) {
	cases := []struct {
		name     string
		events   []state.Event
		wantAll  bool
		services []string
		slots    []string // "service/number/node"
		nodes    []string
	}{
		{name: "nothing"},
		{name: "node", events: []state.Event{{Object: &skiffpb.Node{Id: "n1"}}}, nodes: []string{"n1"}},
		{name: "cluster", events: []state.Event{{Object: &skiffpb.Cluster{Id: "c"}}}, wantAll: true},
		{name: "service and task", events: []state.Event{
			{Object: &skiffpb.Service{Id: "s1"}},
			{Object: &skiffpb.Task{Id: "t", ServiceId: "s2", Slot: 3, NodeId: "n1"}, Deleted: true},
		}, services: []string{"s1"}, slots: []string{"s2/3/"}},
		{name: "global task", events: []state.Event{{Object: &skiffpb.Task{Id: "t", ServiceId: "s3", NodeId: "n2"}}},
			slots: []string{"s3/0/n2"}},
		{name: "network and stack are ignored", events: []state.Event{{Object: &skiffpb.Network{Id: "w"}}, {Object: &skiffpb.Stack{Id: "k"}}}},
	}
	keys := func(m map[string]bool) []string {
		var out []string
		for k := range m {
			out = append(out, k)
		}
		sort.Strings(out)
		return out
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var d dirtySet
			d.add(state.Batch{Index: 1, Events: tc.events})
			var slots []string
			for svc, set := range d.slots {
				for s := range set {
					slots = append(slots, fmt.Sprintf("%s/%d/%s", svc, s.Number, s.Node))
				}
			}
			sort.Strings(slots)
			if d.all != tc.wantAll || !reflect.DeepEqual(keys(d.services), tc.services) ||
				!reflect.DeepEqual(slots, tc.slots) || !reflect.DeepEqual(keys(d.nodes), tc.nodes) {
				t.Errorf("dirty all=%v services=%v slots=%v nodes=%v, want all=%v services=%v slots=%v nodes=%v",
					d.all, keys(d.services), slots, keys(d.nodes), tc.wantAll, tc.services, tc.slots, tc.nodes)
			}
			if d.empty() != (!tc.wantAll && len(tc.services) == 0 && len(tc.slots) == 0 && len(tc.nodes) == 0) {
				t.Errorf("empty() = %v", d.empty())
			}
		})
	}
}

// TestGlobalTasksGiveTheirNodeAnAddress: a global service's tasks are
// assigned here, not by placement, so the orchestrator gives each node its
// own address in the task's networks, once; without it the agent cannot
// build the network and every task fails to start (found by the egress
// test, whose probe runs on every host).
func TestGlobalTasksGiveTheirNodeAnAddress(t *testing.T) {
	h := newHarness(t)
	h.network("net1", "st_default", "10.0.1.0/24")
	h.readyNode("n1")
	h.readyNode("n2")
	h.apply(&skiffpb.StoreAction{Action: &skiffpb.StoreAction_NodeAttachment{NodeAttachment: &skiffpb.NodeAttachmentUpdate{
		NodeId: "n2", Attachment: &skiffpb.NetworkAttachment{NetworkId: "net1", Address: "10.0.1.9/24"},
	}}})
	h.ipam.MarkUsed("net1", netip.MustParseAddr("10.0.1.9"))
	sv := global("probe")
	sv.Spec.Networks = []*skiffpb.ServiceNetwork{{Target: "st_default"}}
	h.putService(sv)

	o := h.step()
	var got []string
	for _, a := range o.attach {
		got = append(got, a.GetNodeId()+"@"+a.GetAttachment().GetNetworkId())
	}
	if want := []string{"n1@net1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("attachments %v, want %v (n2 has its address already)", got, want)
	}
	if o := h.step(); len(o.attach) != 0 {
		t.Errorf("second reconcile attached again: %v", o.attach)
	}
}
