package orchestrator

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// updatingService sets up a replicated service of n running tasks (one per
// slot, on n1) at spec version 1, then moves it to version 2 with image
// img:2 and update config cfg, as `service update --image` does.
func updatingService(t *testing.T, n uint64, cfg *skiffpb.UpdateConfig) *harness {
	t.Helper()
	h := newHarness(t)
	h.readyNode("n1")
	sv := replicated("web", n)
	sv.Spec.UpdateConfig = cfg
	h.putService(sv)
	for slot := uint64(1); slot <= n; slot++ {
		h.running(fmt.Sprintf("v1-%d", slot), "web", slot, "n1")
	}
	if o := h.step(); !o.empty() {
		t.Fatalf("steady state: %+v", o)
	}
	h.newSpecVersion("web", func(spec *skiffpb.ServiceSpec) { spec.Container.Image = "img:2" })
	return h
}

// runNew reports every live task of the current spec version as RUNNING,
// as the agents would once they started them.
func (h *harness) runNew(svID string) {
	h.t.Helper()
	cur := h.service(svID).GetSpecVersion()
	for _, t := range h.liveTasks(svID) {
		if t.GetSpecVersion() == cur && t.GetStatus().GetState() < stRunning {
			h.setStatus(t.GetId(), stRunning)
		}
	}
}

// TestRollingUpdateStopFirst: batches of `parallelism` slots are replaced,
// old task first; the next batch waits until the new tasks run; once every
// slot runs the new version the update is COMPLETED.
func TestRollingUpdateStopFirst(t *testing.T) {
	h := updatingService(t, 5, &skiffpb.UpdateConfig{Parallelism: 2})

	o := h.step()
	if got := o.createdSlots(); !reflect.DeepEqual(got, []uint64{1, 2}) {
		t.Fatalf("first batch created slots %v, want [1 2]", got)
	}
	if want := map[string]skiffpb.TaskState{"v1-1": stShutdown, "v1-2": stShutdown}; !reflect.DeepEqual(o.desired, want) {
		t.Fatalf("first batch desired %v, want %v", o.desired, want)
	}
	for _, nt := range o.creates {
		if nt.GetSpecVersion() != 2 || nt.GetAttempt() != 0 {
			t.Errorf("new task %v", nt)
		}
	}

	// The new tasks are pending: nothing more happens.
	if o := h.step(); !o.empty() {
		t.Fatalf("while the batch starts: %+v", o)
	}
	// Starting but not running yet still holds the update.
	for _, tk := range h.liveTasks("web") {
		if tk.GetSpecVersion() == 2 {
			h.setStatus(tk.GetId(), stAssigned)
		}
	}
	if o := h.step(); !o.empty() {
		t.Fatalf("while the batch is assigned: %+v", o)
	}

	h.runNew("web")
	o = h.step()
	if got := o.createdSlots(); !reflect.DeepEqual(got, []uint64{3, 4}) {
		t.Fatalf("second batch created slots %v, want [3 4]", got)
	}
	h.runNew("web")
	o = h.step()
	if got := o.createdSlots(); !reflect.DeepEqual(got, []uint64{5}) || len(o.services) != 0 {
		t.Fatalf("last batch: slots %v services %v", got, o.services)
	}
	if o := h.step(); len(o.services) != 0 {
		t.Fatal("completed while the last batch is pending")
	}
	h.runNew("web")
	completeAt := h.now
	startedAt := h.service("web").GetUpdateStatus().GetStartedAt()
	o = h.step()
	if len(o.services) != 1 || len(o.creates) != 0 {
		t.Fatalf("completion: %+v", o)
	}
	st := o.services[0].GetUpdateStatus()
	if st.GetState() != skiffpb.UpdateState_UPDATE_STATE_COMPLETED || st.GetCompletedAt() != completeAt.UnixNano() || st.GetStartedAt() != startedAt || startedAt == 0 {
		t.Errorf("update status %v", st)
	}
	if got := h.versionsBySlot("web"); !reflect.DeepEqual(got, map[uint64][]uint64{1: {2}, 2: {2}, 3: {2}, 4: {2}, 5: {2}}) {
		t.Errorf("live versions by slot %v", got)
	}
	if o := h.step(); !o.empty() {
		t.Errorf("after completion: %+v", o)
	}
}

// TestRollingUpdateParallelismZero: parallelism 0 replaces every slot at
// once.
func TestRollingUpdateParallelismZero(t *testing.T) {
	h := updatingService(t, 4, &skiffpb.UpdateConfig{})
	o := h.step()
	if got := o.createdSlots(); !reflect.DeepEqual(got, []uint64{1, 2, 3, 4}) || len(o.desired) != 4 {
		t.Fatalf("created slots %v, desired %v", got, o.desired)
	}
}

// TestRollingUpdateDelay: update_config.delay separates batches: after a
// batch runs, the plan waits the delay (asking to be woken) before the next
// one; there is no delay before the first batch.
func TestRollingUpdateDelay(t *testing.T) {
	const delay = 10 * time.Second
	h := updatingService(t, 3, &skiffpb.UpdateConfig{Parallelism: 1, Delay: int64(delay)})
	if got := h.step().createdSlots(); !reflect.DeepEqual(got, []uint64{1}) {
		t.Fatalf("first batch %v, want [1] at once", got)
	}
	h.runNew("web")
	ranAt := h.now
	o := h.step()
	if len(o.creates) != 0 {
		t.Fatalf("second batch started without the delay: %v", o.createdSlots())
	}
	if want := ranAt.Add(delay); !o.wake.Equal(want) {
		t.Fatalf("wake %v, want %v", o.wake, want)
	}
	h.now = ranAt.Add(delay / 2)
	if o := h.step(); len(o.creates) != 0 || !o.wake.Equal(ranAt.Add(delay)) {
		t.Fatalf("half-way: created %v, wake %v", o.createdSlots(), o.wake)
	}
	h.now = ranAt.Add(delay)
	if got := h.step().createdSlots(); !reflect.DeepEqual(got, []uint64{2}) {
		t.Fatalf("after the delay created %v, want [2]", got)
	}
	h.runNew("web")
	if o := h.step(); len(o.creates) != 0 || o.wake.IsZero() {
		t.Fatalf("third batch must wait again: %+v", o)
	}
}

// TestRollingUpdateStartFirst: with order start-first the new task starts
// next to the old one, which is shut down only once the new one runs.
func TestRollingUpdateStartFirst(t *testing.T) {
	h := updatingService(t, 2, &skiffpb.UpdateConfig{Parallelism: 1, Order: skiffpb.UpdateOrder_UPDATE_ORDER_START_FIRST})
	o := h.step()
	if got := o.createdSlots(); !reflect.DeepEqual(got, []uint64{1}) || len(o.desired) != 0 {
		t.Fatalf("first batch: created %v desired %v; want slot 1 and no shutdown", got, o.desired)
	}
	if got := h.versionsBySlot("web"); !reflect.DeepEqual(got[1], []uint64{1, 2}) {
		t.Fatalf("slot 1 live versions %v, want old and new", got[1])
	}
	if o := h.step(); !o.empty() {
		t.Fatalf("while the new task starts: %+v", o)
	}
	h.runNew("web")
	o = h.step()
	if !reflect.DeepEqual(o.desired, map[string]skiffpb.TaskState{"v1-1": stShutdown}) {
		t.Fatalf("swap: desired %v, want the old task of slot 1 shut down", o.desired)
	}
	if got := o.createdSlots(); !reflect.DeepEqual(got, []uint64{2}) {
		t.Fatalf("next batch %v, want [2]", got)
	}
	h.runNew("web")
	o = h.step()
	if !reflect.DeepEqual(o.desired, map[string]skiffpb.TaskState{"v1-2": stShutdown}) || len(o.services) != 1 ||
		o.services[0].GetUpdateStatus().GetState() != skiffpb.UpdateState_UPDATE_STATE_COMPLETED {
		t.Fatalf("last swap and completion: %+v", o)
	}
}

// TestRollingUpdateFailureAction: a task of the new spec that fails while
// the update runs pauses it (default), is ignored (continue), or rolls the
// service back to its previous spec as a new spec version (rollback).
func TestRollingUpdateFailureAction(t *testing.T) {
	t.Run("pause", func(t *testing.T) {
		h := updatingService(t, 3, &skiffpb.UpdateConfig{Parallelism: 1})
		h.step()
		failed := h.liveInSlot("web", 1)[0]
		h.setStatus(failed.GetId(), stFailed)
		startedAt := h.service("web").GetUpdateStatus().GetStartedAt()
		o := h.step()
		if len(o.services) != 1 {
			t.Fatalf("no service update: %+v", o)
		}
		st := o.services[0].GetUpdateStatus()
		if st.GetState() != skiffpb.UpdateState_UPDATE_STATE_PAUSED || st.GetMessage() == "" || st.GetStartedAt() != startedAt {
			t.Errorf("update status %v, want PAUSED with a message", st)
		}
		if sv := o.services[0]; sv.GetSpecVersion() != 2 || sv.GetSpec().GetContainer().GetImage() != "img:2" {
			t.Errorf("pause changed the spec: %v", sv)
		}
		// The failed slot still restarts per its policy; no further batch.
		if got := o.createdSlots(); !reflect.DeepEqual(got, []uint64{1}) {
			t.Errorf("created %v, want only slot 1's restart", got)
		}
		h.runNew("web")
		for i := 0; i < 3; i++ {
			if o := h.step(); len(o.creates) != 0 || len(o.services) != 0 {
				t.Fatalf("paused update went on: %+v", o)
			}
		}
		if got := h.versionsBySlot("web"); !reflect.DeepEqual(got, map[uint64][]uint64{1: {2}, 2: {1}, 3: {1}}) {
			t.Errorf("versions %v", got)
		}
	})
	t.Run("continue", func(t *testing.T) {
		h := updatingService(t, 3, &skiffpb.UpdateConfig{Parallelism: 1, FailureAction: skiffpb.FailureAction_FAILURE_ACTION_CONTINUE})
		h.step()
		h.setStatus(h.liveInSlot("web", 1)[0].GetId(), stFailed)
		o := h.step()
		if len(o.services) != 0 {
			t.Fatalf("service changed: %v", o.services)
		}
		if got := o.createdSlots(); !reflect.DeepEqual(got, []uint64{1, 2}) {
			t.Fatalf("created %v, want slot 1's restart and the next batch (slot 2)", got)
		}
	})
	t.Run("a clean exit is not a failure", func(t *testing.T) {
		h := updatingService(t, 2, &skiffpb.UpdateConfig{Parallelism: 1})
		h.step()
		h.setStatus(h.liveInSlot("web", 1)[0].GetId(), stComplete)
		if o := h.step(); len(o.services) != 0 {
			t.Fatalf("a COMPLETE task paused the update: %v", o.services)
		}
	})
	t.Run("old-version failures do not count", func(t *testing.T) {
		h := updatingService(t, 3, &skiffpb.UpdateConfig{Parallelism: 1})
		h.step()
		h.setStatus("v1-3", stFailed)
		if o := h.step(); len(o.services) != 0 {
			t.Fatalf("a failure of the old spec paused the update: %v", o.services)
		}
	})
	t.Run("rollback", func(t *testing.T) {
		cfg := &skiffpb.UpdateConfig{Parallelism: 1, FailureAction: skiffpb.FailureAction_FAILURE_ACTION_ROLLBACK}
		h := updatingService(t, 2, cfg)
		h.step()
		h.setStatus(h.liveInSlot("web", 1)[0].GetId(), stFailed)
		rolledAt := h.now
		o := h.step()
		if len(o.services) != 1 {
			t.Fatalf("no rollback: %+v", o)
		}
		sv := o.services[0]
		if sv.GetSpecVersion() != 3 || sv.GetSpec().GetContainer().GetImage() != "img:1" {
			t.Fatalf("rollback spec version %d image %q, want 3 and img:1", sv.GetSpecVersion(), sv.GetSpec().GetContainer().GetImage())
		}
		var prev []string
		for _, v := range sv.GetPreviousSpecs() {
			prev = append(prev, fmt.Sprintf("%d:%s", v.GetVersion(), v.GetSpec().GetContainer().GetImage()))
		}
		if !reflect.DeepEqual(prev, []string{"1:img:1", "2:img:2"}) {
			t.Errorf("previous specs %v", prev)
		}
		if st := sv.GetUpdateStatus(); st.GetState() != skiffpb.UpdateState_UPDATE_STATE_ROLLBACK_STARTED || st.GetStartedAt() != rolledAt.UnixNano() {
			t.Errorf("update status %v", st)
		}
		if sv.GetMeta().GetVersion() == 0 || sv.GetStatus() != nil {
			t.Errorf("rollback put must name the stored version and carry no read-time status: %v", sv)
		}
		// The rollback rolls through every slot like an update, then
		// completes as ROLLBACK_COMPLETED.
		var done *skiffpb.Service
		for i := 0; i < 20 && done == nil; i++ {
			h.runNew("web")
			for _, s := range h.step().services {
				done = s
			}
		}
		if done.GetUpdateStatus().GetState() != skiffpb.UpdateState_UPDATE_STATE_ROLLBACK_COMPLETED {
			t.Fatalf("rollback ended as %v", done.GetUpdateStatus())
		}
		if got := h.versionsBySlot("web"); !reflect.DeepEqual(got, map[uint64][]uint64{1: {3}, 2: {3}}) {
			t.Errorf("versions after rollback %v", got)
		}
		// The tasks run the old spec again, as the agents are sent it.
		live := h.liveTasks("web")
		h.store.View(func(tx state.ReadTx) {
			for _, tk := range live {
				if img := tx.SpecOf(tk).GetContainer().GetImage(); img != "img:1" {
					t.Errorf("task %s runs %q after the rollback", tk.GetId(), img)
				}
			}
		})
	})
	t.Run("rollback without a previous spec pauses", func(t *testing.T) {
		h := updatingService(t, 2, &skiffpb.UpdateConfig{Parallelism: 1, FailureAction: skiffpb.FailureAction_FAILURE_ACTION_ROLLBACK})
		h.editService("web", func(sv *skiffpb.Service) { sv.PreviousSpecs = nil })
		h.step()
		h.setStatus(h.liveInSlot("web", 1)[0].GetId(), stFailed)
		o := h.step()
		if len(o.services) != 1 || o.services[0].GetUpdateStatus().GetState() != skiffpb.UpdateState_UPDATE_STATE_PAUSED || o.services[0].GetSpecVersion() != 2 {
			t.Fatalf("outcome %+v, want PAUSED at version 2", o.services)
		}
	})
	t.Run("a failing rollback pauses", func(t *testing.T) {
		cfg := &skiffpb.UpdateConfig{Parallelism: 1, FailureAction: skiffpb.FailureAction_FAILURE_ACTION_ROLLBACK}
		h := updatingService(t, 2, cfg)
		h.step()
		h.setStatus(h.liveInSlot("web", 1)[0].GetId(), stFailed)
		h.step() // rollback to version 3
		h.step() // first rollback batch
		var newest *skiffpb.Task
		for _, tk := range h.liveTasks("web") {
			if tk.GetSpecVersion() == 3 {
				newest = tk
			}
		}
		if newest == nil {
			t.Fatal("no task of the rollback version")
		}
		h.setStatus(newest.GetId(), stFailed)
		o := h.step()
		if len(o.services) != 1 || o.services[0].GetUpdateStatus().GetState() != skiffpb.UpdateState_UPDATE_STATE_PAUSED || o.services[0].GetSpecVersion() != 3 {
			t.Fatalf("outcome %+v, want PAUSED at version 3", o.services)
		}
	})
}

// TestUpdateWithoutUpdatingState: a spec version change that is not marked
// UPDATING (e.g. a service created at version 2) still replaces old tasks,
// but records no completion.
func TestUpdateWithoutUpdatingState(t *testing.T) {
	h := updatingService(t, 2, &skiffpb.UpdateConfig{Parallelism: 1, Delay: int64(time.Hour)})
	h.editService("web", func(sv *skiffpb.Service) { sv.UpdateStatus = nil })
	for i := 0; i < 6; i++ {
		h.runNew("web")
		if o := h.step(); len(o.services) != 0 || !o.wake.IsZero() {
			t.Fatalf("step %d: %+v; want neither a status nor a delay", i, o)
		}
	}
	if got := h.versionsBySlot("web"); !reflect.DeepEqual(got, map[uint64][]uint64{1: {2}, 2: {2}}) {
		t.Fatalf("versions %v", got)
	}
}

// TestGlobalRollingUpdate: a global service updates node by node; the new
// task is bound to the node of the slot it replaces.
func TestGlobalRollingUpdate(t *testing.T) {
	h := newHarness(t)
	h.readyNode("n1")
	h.readyNode("n2")
	sv := global("mon")
	sv.Spec.UpdateConfig = &skiffpb.UpdateConfig{Parallelism: 1}
	h.putService(sv)
	h.task("g1", "mon", taskOpts{node: "n1", state: stRunning})
	h.task("g2", "mon", taskOpts{node: "n2", state: stRunning})
	h.newSpecVersion("mon", func(spec *skiffpb.ServiceSpec) { spec.Container.Image = "img:2" })
	o := h.step()
	if len(o.creates) != 1 || len(o.desired) != 1 {
		t.Fatalf("first batch %+v", o)
	}
	first := o.creates[0]
	old := map[string]string{"n1": "g1", "n2": "g2"}[first.GetNodeId()]
	if old == "" || o.desired[old] != stShutdown || first.GetStatus().GetState() != stAssigned || first.GetSlot() != 0 {
		t.Fatalf("first batch: new %v, desired %v", first, o.desired)
	}
	h.runNew("mon")
	o = h.step()
	if len(o.creates) != 1 || o.creates[0].GetNodeId() == first.GetNodeId() {
		t.Fatalf("second batch %+v", o)
	}
	h.runNew("mon")
	if o := h.step(); len(o.services) != 1 || o.services[0].GetUpdateStatus().GetState() != skiffpb.UpdateState_UPDATE_STATE_COMPLETED {
		t.Fatalf("completion %+v", o)
	}
}
