package orchestrator

import (
	"sort"
	"time"

	"google.golang.org/protobuf/proto"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// update drives a rolling update of one service during one reconcile. A
// slot is out of date when its running task runs an older spec version. The
// update replaces out-of-date slots in batches of update_config.parallelism,
// waits for each batch to be running, then waits update_config.delay before
// the next one.
type update struct {
	sv  *skiffpb.Service
	cfg *skiffpb.UpdateConfig

	// stale are out-of-date slots, by slot key, with the node a global
	// slot belongs to.
	stale map[uint64]staleSlot
	// inflight counts slots whose new task is not running yet.
	inflight int
	// newFailures counts tasks of the current version that failed.
	newFailures int
}

type staleSlot struct {
	nodeID  string
	running []*skiffpb.Task
}

func (p *plan) newUpdate(sv *skiffpb.Service) *update {
	return &update{sv: sv, cfg: sv.GetSpec().GetUpdateConfig(), stale: map[uint64]staleSlot{}}
}

// observe looks at a slot's running tasks. For a start-first update it also
// completes the swap: once the new task runs, the old one is shut down.
func (u *update) observe(p *plan, key uint64, nodeID string, running []*skiffpb.Task) {
	var current *skiffpb.Task
	for _, t := range running {
		if t.GetSpecVersion() == u.sv.GetSpecVersion() {
			current = t
		}
	}
	if current == nil {
		u.stale[key] = staleSlot{nodeID: nodeID, running: running}
		return
	}
	if current.GetStatus().GetState() != skiffpb.TaskState_TASK_STATE_RUNNING {
		u.inflight++
		return
	}
	for _, t := range running {
		if t != current {
			p.setDesired(t, skiffpb.TaskState_TASK_STATE_SHUTDOWN)
		}
	}
}

// failed notes a task that ended; it counts against the update if it ran
// the new spec while an update is in progress.
func (u *update) failed(t *skiffpb.Task) {
	if t.GetSpecVersion() == u.sv.GetSpecVersion() && updating(u.sv) &&
		t.GetStatus().GetState() != skiffpb.TaskState_TASK_STATE_COMPLETE {
		u.newFailures++
	}
}

func updating(sv *skiffpb.Service) bool {
	return sv.GetUpdateStatus().GetState() == skiffpb.UpdateState_UPDATE_STATE_UPDATING ||
		sv.GetUpdateStatus().GetState() == skiffpb.UpdateState_UPDATE_STATE_ROLLBACK_STARTED
}

// finish starts the next batch when it is due, and records the update's
// progress on the service.
func (u *update) finish(p *plan, sv *skiffpb.Service, tasks []*skiffpb.Task) {
	if u.newFailures > 0 && updating(sv) && u.cfg.GetFailureAction() != skiffpb.FailureAction_FAILURE_ACTION_CONTINUE {
		p.pauseUpdate(sv, "update paused due to failure of a task running the new spec")
		return
	}
	if sv.GetUpdateStatus().GetState() == skiffpb.UpdateState_UPDATE_STATE_PAUSED {
		return
	}
	if len(u.stale) == 0 {
		if u.inflight == 0 && updating(sv) {
			p.completeUpdate(sv)
		}
		delete(p.updates, sv.GetId())
		return
	}
	if u.inflight > 0 {
		// The batch is still starting; its end starts the delay.
		delete(p.updates, sv.GetId())
		return
	}
	if doneAt, ok := p.updates[sv.GetId()]; ok {
		if due := doneAt.Add(time.Duration(u.cfg.GetDelay())); p.now.Before(due) {
			p.wakeAt(wakeup{at: due, service: sv.GetId(), whole: true})
			return
		}
	} else if u.cfg.GetDelay() > 0 && updating(sv) && startedBefore(sv, tasks) {
		p.updates[sv.GetId()] = p.now
		p.wakeAt(wakeup{at: p.now.Add(time.Duration(u.cfg.GetDelay())), service: sv.GetId(), whole: true})
		return
	}
	keys := make([]uint64, 0, len(u.stale))
	for k := range u.stale {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	n := len(keys)
	if par := int(u.cfg.GetParallelism()); par > 0 && par < n {
		n = par
	}
	for _, k := range keys[:n] {
		slot := u.stale[k]
		if u.cfg.GetOrder() != skiffpb.UpdateOrder_UPDATE_ORDER_START_FIRST {
			for _, t := range slot.running {
				p.setDesired(t, skiffpb.TaskState_TASK_STATE_SHUTDOWN)
			}
		}
		p.createTask(sv, slotNumber(sv, k), slot.nodeID, 0)
	}
	delete(p.updates, sv.GetId())
}

// startedBefore reports whether an earlier batch of this update already ran,
// so the delay applies: some task already runs the new spec.
func startedBefore(sv *skiffpb.Service, tasks []*skiffpb.Task) bool {
	for _, t := range tasks {
		if t.GetSpecVersion() == sv.GetSpecVersion() && live(t) {
			return true
		}
	}
	return false
}

func (p *plan) putUpdateStatus(sv *skiffpb.Service, st *skiffpb.UpdateStatus) {
	next := proto.Clone(sv).(*skiffpb.Service)
	next.UpdateStatus = st
	next.Status = nil
	p.actions = append(p.actions, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutService{PutService: next}})
}

func (p *plan) pauseUpdate(sv *skiffpb.Service, msg string) {
	if sv.GetUpdateStatus().GetState() == skiffpb.UpdateState_UPDATE_STATE_PAUSED {
		return
	}
	if sv.GetSpec().GetUpdateConfig().GetFailureAction() == skiffpb.FailureAction_FAILURE_ACTION_ROLLBACK {
		if p.rollback(sv) {
			return
		}
	}
	p.putUpdateStatus(sv, &skiffpb.UpdateStatus{
		State: skiffpb.UpdateState_UPDATE_STATE_PAUSED, StartedAt: sv.GetUpdateStatus().GetStartedAt(), Message: msg,
	})
}

// rollback returns the service to the spec it ran before the update, as a
// new spec version, so the same rolling machinery carries it out.
func (p *plan) rollback(sv *skiffpb.Service) bool {
	prev := sv.GetPreviousSpecs()
	if len(prev) == 0 || sv.GetUpdateStatus().GetState() == skiffpb.UpdateState_UPDATE_STATE_ROLLBACK_STARTED {
		return false
	}
	next := proto.Clone(sv).(*skiffpb.Service)
	next.Status = nil
	next.Spec = proto.Clone(prev[len(prev)-1].GetSpec()).(*skiffpb.ServiceSpec)
	next.PreviousSpecs = append(next.PreviousSpecs, &skiffpb.VersionedSpec{Version: sv.GetSpecVersion(), Spec: sv.GetSpec()})
	next.SpecVersion = sv.GetSpecVersion() + 1
	next.UpdateStatus = &skiffpb.UpdateStatus{
		State: skiffpb.UpdateState_UPDATE_STATE_ROLLBACK_STARTED, StartedAt: p.now.UnixNano(),
		Message: "update failed; rolling back to the previous spec",
	}
	p.actions = append(p.actions, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutService{PutService: next}})
	return true
}

func (p *plan) completeUpdate(sv *skiffpb.Service) {
	st := skiffpb.UpdateState_UPDATE_STATE_COMPLETED
	msg := "update completed"
	if sv.GetUpdateStatus().GetState() == skiffpb.UpdateState_UPDATE_STATE_ROLLBACK_STARTED {
		st, msg = skiffpb.UpdateState_UPDATE_STATE_ROLLBACK_COMPLETED, "rollback completed"
	}
	p.putUpdateStatus(sv, &skiffpb.UpdateStatus{
		State: st, StartedAt: sv.GetUpdateStatus().GetStartedAt(), CompletedAt: p.now.UnixNano(), Message: msg,
	})
}
