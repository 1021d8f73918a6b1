package orchestrator

import (
	"fmt"
	"reflect"
	"sort"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// TestSlotReconcileMatchesService: reconciling a service slot by slot, as
// the orchestrator does after a task changed, decides exactly what
// reconciling the whole service decides, for any mix of nodes and tasks
// (failed, finished, stopped, on lost or paused nodes, history beyond the
// limit, restarts due or not yet due). When it cannot be sure (a rolling
// update, an out-of-date task), it declines and the whole service is
// reconciled instead.
func TestSlotReconcileMatchesService(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		now := t0
		store := state.New()
		var index uint64
		apply := func(a *skiffpb.StoreAction) {
			index++
			if err := store.Apply(index, &skiffpb.Command{Actions: []*skiffpb.StoreAction{a}}); err != nil {
				rt.Fatalf("apply: %v", err)
			}
		}

		nodeIDs := []string{"n1", "n2", "n3", "n4"}
		for _, id := range nodeIDs {
			apply(&skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutNode{PutNode: &skiffpb.Node{
				Id: id, Meta: &skiffpb.Meta{}, Name: "host-" + id,
				Spec: &skiffpb.NodeSpec{Availability: rapid.SampledFrom([]skiffpb.NodeAvailability{
					skiffpb.NodeAvailability_NODE_AVAILABILITY_ACTIVE, skiffpb.NodeAvailability_NODE_AVAILABILITY_ACTIVE,
					skiffpb.NodeAvailability_NODE_AVAILABILITY_PAUSE, skiffpb.NodeAvailability_NODE_AVAILABILITY_DRAIN,
				}).Draw(rt, "availability")},
				Status: &skiffpb.NodeStatus{State: rapid.SampledFrom([]skiffpb.NodeState{
					skiffpb.NodeState_NODE_STATE_READY, skiffpb.NodeState_NODE_STATE_READY, skiffpb.NodeState_NODE_STATE_DOWN,
				}).Draw(rt, "nodeState")},
			}}})
		}

		isGlobal := rapid.Bool().Draw(rt, "global")
		sv := replicated("sv", rapid.Uint64Range(0, 4).Draw(rt, "replicas"))
		if isGlobal {
			sv = global("sv")
		}
		sv.SpecVersion = 2
		sv.PreviousSpecs = []*skiffpb.VersionedSpec{{Version: 1, Spec: sv.GetSpec()}}
		sv.Spec.RestartPolicy = &skiffpb.RestartPolicy{
			Condition: rapid.SampledFrom([]skiffpb.RestartCondition{
				skiffpb.RestartCondition_RESTART_CONDITION_ANY, skiffpb.RestartCondition_RESTART_CONDITION_ON_FAILURE,
				skiffpb.RestartCondition_RESTART_CONDITION_NONE,
			}).Draw(rt, "condition"),
			Delay:       int64(rapid.SampledFrom([]time.Duration{0, 10 * time.Second}).Draw(rt, "delay")),
			MaxAttempts: rapid.Uint64Range(0, 3).Draw(rt, "maxAttempts"),
		}
		sv.UpdateStatus = &skiffpb.UpdateStatus{State: rapid.SampledFrom([]skiffpb.UpdateState{
			skiffpb.UpdateState_UPDATE_STATE_NONE, skiffpb.UpdateState_UPDATE_STATE_COMPLETED,
			skiffpb.UpdateState_UPDATE_STATE_COMPLETED, skiffpb.UpdateState_UPDATE_STATE_UPDATING,
			skiffpb.UpdateState_UPDATE_STATE_PAUSED,
		}).Draw(rt, "updateState")}
		apply(&skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutService{PutService: sv}})

		states := []skiffpb.TaskState{
			skiffpb.TaskState_TASK_STATE_PENDING, skiffpb.TaskState_TASK_STATE_ASSIGNED, skiffpb.TaskState_TASK_STATE_RUNNING,
			skiffpb.TaskState_TASK_STATE_RUNNING, skiffpb.TaskState_TASK_STATE_COMPLETE, skiffpb.TaskState_TASK_STATE_SHUTDOWN,
			skiffpb.TaskState_TASK_STATE_FAILED, skiffpb.TaskState_TASK_STATE_REJECTED,
		}
		desired := []skiffpb.TaskState{
			skiffpb.TaskState_TASK_STATE_RUNNING, skiffpb.TaskState_TASK_STATE_RUNNING,
			skiffpb.TaskState_TASK_STATE_SHUTDOWN, skiffpb.TaskState_TASK_STATE_REMOVE,
		}
		for i := range rapid.IntRange(0, 12).Draw(rt, "tasks") {
			node := rapid.SampledFrom(append([]string{""}, nodeIDs...)).Draw(rt, "node")
			slot := rapid.Uint64Range(1, 6).Draw(rt, "slot")
			if isGlobal {
				node = rapid.SampledFrom(nodeIDs).Draw(rt, "globalNode")
				slot = 0
			}
			at := now.Add(-time.Duration(rapid.IntRange(0, 60).Draw(rt, "ageSeconds")) * time.Second).UnixNano()
			apply(&skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutTask{PutTask: &skiffpb.Task{
				Id: fmt.Sprintf("t%02d", i), Meta: &skiffpb.Meta{CreatedAt: at}, ServiceId: "sv", Slot: slot, NodeId: node,
				SpecVersion:  rapid.SampledFrom([]uint64{2, 2, 2, 1}).Draw(rt, "version"),
				DesiredState: rapid.SampledFrom(desired).Draw(rt, "desired"),
				Status:       &skiffpb.TaskStatus{State: rapid.SampledFrom(states).Draw(rt, "state"), Timestamp: at},
				Attempt:      rapid.Uint64Range(0, 3).Draw(rt, "attempt"),
			}}})
		}

		// Every slot the service has or could want: those with tasks, the
		// replica numbers, and every node for a global service.
		slotSet := map[state.Slot]bool{}
		var tasksOf func(state.Slot) []*skiffpb.Task
		var whole []*skiffpb.Task
		var nodes []*skiffpb.Node
		store.View(func(tx state.ReadTx) {
			sv = tx.Service("sv")
			nodes = tx.Nodes()
			whole = tx.TasksByService("sv")
			for _, tk := range whole {
				slotSet[state.SlotOf(tk)] = true
			}
			// Read eagerly: the view ends with this function.
			cache := map[state.Slot][]*skiffpb.Task{}
			for s := range slotSet {
				cache[s] = tx.TasksOfSlot("sv", s)
			}
			tasksOf = func(s state.Slot) []*skiffpb.Task { return cache[s] }
		})
		if isGlobal {
			for _, id := range nodeIDs {
				slotSet[state.Slot{Node: id}] = true
			}
		} else {
			for k := uint64(1); k <= sv.GetSpec().GetReplicas(); k++ {
				slotSet[state.Slot{Number: k}] = true
			}
		}

		newPlan := func() *plan {
			return &plan{now: now, history: 3, nodes: nodes, updates: map[string]time.Time{}}
		}
		byService := newPlan()
		byService.service(sv, whole)
		bySlot := newPlan()
		if !bySlot.slots(sv, slotSet, tasksOf) {
			if len(bySlot.actions) != 0 {
				rt.Fatalf("slots declined but planned %d actions", len(bySlot.actions))
			}
			if !updating(sv) && sv.GetUpdateStatus().GetState() != skiffpb.UpdateState_UPDATE_STATE_PAUSED && !hasStaleLive(sv, whole) {
				rt.Fatalf("slots declined a steady service")
			}
			return
		}
		want, got := comparable(summarize(byService)), comparable(summarize(bySlot))
		if !reflect.DeepEqual(got, want) {
			rt.Fatalf("slot by slot:\n%+v\nwhole service:\n%+v", got, want)
		}
	})
}

func hasStaleLive(sv *skiffpb.Service, tasks []*skiffpb.Task) bool {
	for _, t := range tasks {
		if live(t) && !finished(t) && t.GetSpecVersion() != sv.GetSpecVersion() {
			return true
		}
	}
	return false
}

// planned is an outcome without what differs between two plans that decide
// the same: new tasks' IDs and the order of actions.
type planned struct {
	created  []string // "slot/node/attempt"
	desired  map[string]skiffpb.TaskState
	deletes  []string
	services int
	wake     time.Time
}

func comparable(o outcome) planned {
	p := planned{desired: o.desired, deletes: o.deletes, services: len(o.services), wake: o.wake}
	for _, t := range o.creates {
		p.created = append(p.created, fmt.Sprintf("%d/%s/%d", t.GetSlot(), t.GetNodeId(), t.GetAttempt()))
	}
	sort.Strings(p.created)
	return p
}
