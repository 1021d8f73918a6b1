package orchestrator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
	"github.com/skiffhq/skiff/scheduler"
)

const testSettle = 3 * time.Second

// harnessRaft commits the orchestrator's proposals to the harness's store
// at the harness's next index, so that they interleave with the test's own
// writes.
type harnessRaft struct{ h *harness }

func (r harnessRaft) Propose(_ context.Context, cmd *skiffpb.Command) (uint64, error) {
	r.h.index++
	if err := r.h.store.Apply(r.h.index, cmd); err != nil {
		return 0, fmt.Errorf("apply at %d: %w", r.h.index, err)
	}
	return r.h.index, nil
}

// rig runs a real Orchestrator over the harness's store, as Run does but
// one reconcile at a time, with the harness's clock for its timer; and it
// plays the scheduler and the agents.
type rig struct {
	*harness
	o       *Orchestrator
	watch   <-chan state.Batch
	dirty   dirtySet
	pending map[wakeKey]time.Time
	logs    *bytes.Buffer
	// failOn are nodes whose agent fails every task it is given.
	failOn map[string]bool
	// wasLive are the tasks that were live after the last reconcile.
	wasLive map[string]bool
	// shutdowns are the tasks the orchestrator told to shut down, with
	// whether their slot then held another live task that was RUNNING.
	shutdowns map[string]bool
}

func newRig(t *testing.T) *rig {
	h := newHarness(t)
	var logs bytes.Buffer
	r := &rig{
		harness: h, dirty: dirtySet{all: true}, pending: map[wakeKey]time.Time{}, logs: &logs,
		failOn: map[string]bool{}, wasLive: map[string]bool{}, shutdowns: map[string]bool{},
	}
	r.o = New(Config{
		Store: h.store, Raft: harnessRaft{h}, IPAM: h.ipam, RebalanceSettle: testSettle,
		Now:    func() time.Time { return h.now },
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	ch, cancel := h.store.ViewAndWatch(nil)
	t.Cleanup(cancel)
	r.watch = ch
	return r
}

// reconcile runs the orchestrator until it has nothing left to do now:
// what each change in the store and each due wake-up asks for.
func (r *rig) reconcile() {
	r.t.Helper()
	for range 100 {
	drain:
		for {
			select {
			case b := <-r.watch:
				r.dirty.add(b)
			default:
				break drain
			}
		}
		takeDue(r.pending, r.now, &r.dirty)
		if r.dirty.empty() {
			r.noteShutdowns()
			return
		}
		dirty := r.dirty
		r.dirty = dirtySet{}
		addWakeups(r.pending, r.o.reconcile(context.Background(), dirty))
	}
	r.t.Fatal("the orchestrator did not come to rest")
}

// noteShutdowns records the tasks told to shut down since the last look.
// Agents only report between reconciles, so the state seen now is the one
// the orchestrator decided on.
func (r *rig) noteShutdowns() {
	running := map[string]map[uint64]int{}
	all := r.allTasks()
	for _, t := range all {
		if live(t) && t.GetStatus().GetState() == stRunning {
			if running[t.GetServiceId()] == nil {
				running[t.GetServiceId()] = map[uint64]int{}
			}
			running[t.GetServiceId()][t.GetSlot()]++
		}
	}
	for _, t := range all {
		if !live(t) && r.wasLive[t.GetId()] {
			r.shutdowns[t.GetId()] = running[t.GetServiceId()][t.GetSlot()] > 0
		}
		r.wasLive[t.GetId()] = live(t)
	}
}

func (r *rig) allTasks() []*skiffpb.Task {
	var out []*skiffpb.Task
	r.store.View(func(tx state.ReadTx) { out = tx.Tasks() })
	return out
}

// place does the scheduler's part: pending tasks get a node.
func (r *rig) place() {
	var infos []*scheduler.NodeInfo
	var reqs []scheduler.Request
	r.store.View(func(tx state.ReadTx) {
		for _, n := range tx.Nodes() {
			infos = append(infos, scheduler.NewNodeInfo(n, liveTasksOn(tx, n.GetId()), tx.SpecOf))
		}
		for _, t := range tx.Tasks() {
			if t.GetNodeId() == "" && live(t) && t.GetStatus().GetState() == stPending {
				reqs = append(reqs, scheduler.Request{Task: t, Spec: tx.SpecOf(t)})
			}
		}
	})
	for _, d := range scheduler.Schedule(infos, reqs) {
		if d.Placed() {
			r.apply(placeAction(d.TaskID, d.NodeID))
		}
	}
}

// act does the agents' part on Ready nodes: assigned tasks start (or fail,
// on the nodes in failOn), tasks told to stop stop.
func (r *rig) act() {
	for _, t := range r.allTasks() {
		var n *skiffpb.Node
		r.store.View(func(tx state.ReadTx) { n = tx.Node(t.GetNodeId()) })
		if n.GetStatus().GetState() != ready {
			continue
		}
		st := t.GetStatus().GetState()
		switch {
		case live(t) && st >= stAssigned && st < stRunning && r.failOn[n.GetId()]:
			r.setStatus(t.GetId(), stFailed)
		case live(t) && st >= stAssigned && st < stRunning:
			r.setStatus(t.GetId(), stRunning)
		case !live(t) && st < skiffpb.TaskState_TASK_STATE_COMPLETE:
			r.setStatus(t.GetId(), stShutdown)
		}
	}
}

// converge runs the orchestrator, the scheduler and the agents in turn
// until none of them has anything to do at the current time.
func (r *rig) converge() {
	r.t.Helper()
	for range 100 {
		before := r.index
		r.reconcile()
		r.place()
		r.act()
		r.reconcile()
		if r.index == before {
			return
		}
		r.now = r.now.Add(time.Millisecond)
	}
	r.t.Fatal("the cluster did not converge")
}

// putNode stores a node that became Ready at readyAt.
func (r *rig) putNode(id string, readyAt time.Time, labels ...string) {
	r.t.Helper()
	l := map[string]string{}
	for _, kv := range labels {
		k, v, _ := strings.Cut(kv, "=")
		l[k] = v
	}
	r.apply(&skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutNode{PutNode: &skiffpb.Node{
		Id: id, Meta: &skiffpb.Meta{}, Name: "host-" + id,
		Spec:   &skiffpb.NodeSpec{Labels: l},
		Status: &skiffpb.NodeStatus{State: ready, Timestamp: readyAt.UnixNano()},
	}}})
}

// setState changes a node's state now, as the dispatcher does.
func (r *rig) setState(id string, st skiffpb.NodeState) {
	r.t.Helper()
	r.apply(&skiffpb.StoreAction{Action: &skiffpb.StoreAction_NodeStatus{NodeStatus: &skiffpb.NodeStatusUpdate{
		NodeId: id, Status: &skiffpb.NodeStatus{State: st, Timestamp: r.now.UnixNano()},
	}}})
}

// perNode counts a service's live tasks per node, over nodes.
func (r *rig) perNode(svID string, nodes ...string) []int {
	out := make([]int, len(nodes))
	for _, t := range r.liveTasks(svID) {
		for i, n := range nodes {
			if t.GetNodeId() == n {
				out[i]++
			}
		}
	}
	return out
}

// loggedMove is a move as logged.
type loggedMove struct {
	Service string `json:"service"`
	Slot    uint64 `json:"slot"`
	From    string `json:"from"`
	To      string `json:"to"`
}

// moves returns the moves logged so far.
func (r *rig) moves() []loggedMove {
	var out []loggedMove
	for _, line := range strings.Split(strings.TrimSpace(r.logs.String()), "\n") {
		var rec struct {
			Msg   string `json:"msg"`
			Level string `json:"level"`
			loggedMove
		}
		if json.Unmarshal([]byte(line), &rec) == nil && strings.HasPrefix(rec.Msg, "rebalancing: moving") {
			if rec.Level != "INFO" {
				r.t.Errorf("move logged at %s", rec.Level)
			}
			out = append(out, rec.loggedMove)
		}
	}
	return out
}

// threeNodes deploys web with 6 replicas on n1..n3, Ready for an hour, and
// lets n3 fail: its tasks are replaced on n1 and n2. It returns when n3 has
// just come back.
func threeNodes(t *testing.T, r *rig, labels ...string) {
	t.Helper()
	for _, id := range []string{"n1", "n2", "n3"} {
		r.putNode(id, r.now.Add(-time.Hour), labels...)
	}
	r.putService(replicated("web", 6))
	r.converge()
	if got := r.perNode("web", "n1", "n2", "n3"); !reflect.DeepEqual(got, []int{2, 2, 2}) {
		t.Fatalf("deployed %v per node, want [2 2 2]", got)
	}
	r.setState("n3", skiffpb.NodeState_NODE_STATE_DOWN)
	r.converge()
	if got := r.perNode("web", "n1", "n2", "n3"); !reflect.DeepEqual(got, []int{3, 3, 0}) {
		t.Fatalf("after n3 failed %v per node, want [3 3 0]", got)
	}
	r.advance(time.Minute)
	r.setState("n3", ready)
}

// TestRebalanceAfterNodeReturns: a node fails, its tasks are replaced on
// the others, and it comes back. After the settle delay, and not before,
// the service is spread again, in as many moves as it was out of balance,
// each start-first.
func TestRebalanceAfterNodeReturns(t *testing.T) {
	r := newRig(t)
	threeNodes(t, r)
	back := r.now
	r.converge()
	r.now = back.Add(testSettle - time.Millisecond)
	r.converge()
	if m := r.moves(); len(m) != 0 {
		t.Fatalf("moved before the node settled: %+v", m)
	}
	for id, startFirst := range r.shutdowns {
		if startFirst {
			t.Fatalf("task %s was replaced start-first before any move", id)
		}
	}
	r.shutdowns = map[string]bool{}

	r.now = back.Add(testSettle)
	r.converge()
	if got := r.perNode("web", "n1", "n2", "n3"); !reflect.DeepEqual(got, []int{2, 2, 2}) {
		t.Fatalf("after rebalancing %v per node, want [2 2 2]", got)
	}
	moves := r.moves()
	if len(moves) != 2 {
		t.Fatalf("%d moves, want 2 (the imbalance): %+v", len(moves), moves)
	}
	from := map[string]int{}
	for _, m := range moves {
		if m.Service != "st_web" || m.To != "n3" || m.Slot < 1 || m.Slot > 6 {
			t.Errorf("move %+v", m)
		}
		from[m.From]++
	}
	if want := map[string]int{"n1": 1, "n2": 1}; !reflect.DeepEqual(from, want) {
		t.Errorf("moves from %v, want %v", from, want)
	}
	if len(r.shutdowns) != 2 {
		t.Fatalf("%d tasks shut down by the moves, want 2: %v", len(r.shutdowns), r.shutdowns)
	}
	for id, startFirst := range r.shutdowns {
		if !startFirst {
			t.Errorf("task %s was shut down before its replacement ran", id)
		}
	}
	for slot := uint64(1); slot <= 6; slot++ {
		if live := r.liveInSlot("web", slot); len(live) != 1 || live[0].GetStatus().GetState() != stRunning {
			t.Errorf("slot %d live tasks %v", slot, live)
		}
	}

	// At rest, later passes move nothing.
	r.setState("n3", skiffpb.NodeState_NODE_STATE_DOWN)
	r.setState("n3", ready)
	r.advance(10 * testSettle)
	r.converge()
	if got := r.perNode("web", "n1", "n2", "n3"); len(r.moves()) != 2 || !reflect.DeepEqual(got, []int{2, 2, 2}) {
		t.Fatalf("a balanced service moved: %v per node, moves %+v", got, r.moves())
	}
}

// TestRebalanceRespectsConstraints: a node that comes back no longer
// meeting the service's constraints gets nothing, and nothing else moves.
func TestRebalanceRespectsConstraints(t *testing.T) {
	r := newRig(t)
	r.putNode("n1", r.now.Add(-time.Hour), "tier=web")
	r.putNode("n2", r.now.Add(-time.Hour), "tier=web")
	r.putNode("n3", r.now.Add(-time.Hour), "tier=web")
	sv := replicated("web", 6)
	sv.Spec.Placement = &skiffpb.Placement{Constraints: []string{"node.labels.tier==web"}}
	r.putService(sv)
	r.converge()
	r.setState("n3", skiffpb.NodeState_NODE_STATE_DOWN)
	r.converge()

	// It returns relabelled.
	var n *skiffpb.Node
	r.store.View(func(tx state.ReadTx) { n = proto.Clone(tx.Node("n3")).(*skiffpb.Node) })
	n.Spec.Labels = map[string]string{"tier": "db"}
	n.Status = &skiffpb.NodeStatus{State: ready, Timestamp: r.now.UnixNano()}
	r.apply(&skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutNode{PutNode: n}})
	r.advance(10 * testSettle)
	r.converge()
	if got := r.perNode("web", "n1", "n2", "n3"); !reflect.DeepEqual(got, []int{3, 3, 0}) {
		t.Fatalf("%v per node, want [3 3 0]", got)
	}
	if m := r.moves(); len(m) != 0 {
		t.Fatalf("moves %+v", m)
	}
}

// TestRebalanceFailedMoveStops: a move whose new task fails leaves the old
// task running in its slot, keeps the failed one as history, and stops the
// service's moves until a node next becomes Ready.
func TestRebalanceFailedMoveStops(t *testing.T) {
	r := newRig(t)
	threeNodes(t, r)
	r.failOn["n3"] = true
	r.advance(testSettle)
	r.converge()
	moves := r.moves()
	if len(moves) != 1 {
		t.Fatalf("moves %+v, want one that failed", moves)
	}
	slot := r.liveInSlot("web", moves[0].Slot)
	if len(slot) != 1 || slot[0].GetNodeId() != moves[0].From || slot[0].GetStatus().GetState() != stRunning {
		t.Fatalf("slot %d after the failed move: %v", moves[0].Slot, slot)
	}
	var failed []*skiffpb.Task
	for _, tk := range r.tasks("web") {
		if tk.GetNodeId() == "n3" && tk.GetStatus().GetState() == stFailed {
			failed = append(failed, tk)
		}
	}
	if len(failed) != 1 || failed[0].GetDesiredState() != stShutdown || failed[0].GetSlot() != moves[0].Slot {
		t.Fatalf("failed tasks on n3: %v", failed)
	}
	if got := r.perNode("web", "n1", "n2", "n3"); !reflect.DeepEqual(got, []int{3, 3, 0}) {
		t.Fatalf("%v per node, want [3 3 0]", got)
	}

	// No retries while nothing changes, however long.
	r.advance(100 * testSettle)
	r.converge()
	if m := r.moves(); len(m) != 1 {
		t.Fatalf("moves %+v after the failure", m)
	}

	// n3 is fixed and comes back once more: a new trigger, a new try.
	r.failOn["n3"] = false
	r.setState("n3", skiffpb.NodeState_NODE_STATE_DOWN)
	r.setState("n3", ready)
	r.advance(testSettle)
	r.converge()
	if got := r.perNode("web", "n1", "n2", "n3"); !reflect.DeepEqual(got, []int{2, 2, 2}) {
		t.Fatalf("after the next trigger %v per node, want [2 2 2]", got)
	}
	if m := r.moves(); len(m) != 3 {
		t.Fatalf("moves %+v, want the failed one and two more", m)
	}
}

// TestRebalanceSkipsIneligibleServices: a service that publishes a
// host-mode port, one whose rolling update is paused, and one with a slot
// whose task is not running (here: its restart waits for the scheduler)
// are left as they are.
func TestRebalanceSkipsIneligibleServices(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(r *rig)
	}{
		{"host port", func(r *rig) {
			r.editService("web", func(sv *skiffpb.Service) {
				sv.Spec.Endpoint = &skiffpb.EndpointSpec{Ports: []*skiffpb.PortConfig{{
					Protocol: skiffpb.Protocol_PROTOCOL_TCP, TargetPort: 80, PublishMode: skiffpb.PublishMode_PUBLISH_MODE_HOST,
				}}}
			})
		}},
		{"paused update", func(r *rig) {
			r.editService("web", func(sv *skiffpb.Service) {
				sv.UpdateStatus = &skiffpb.UpdateStatus{State: skiffpb.UpdateState_UPDATE_STATE_PAUSED}
			})
		}},
		{"task restarting", func(r *rig) {
			r.setStatus(r.liveInSlot("web", 1)[0].GetId(), stFailed)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			threeNodes(t, r)
			tc.edit(r)
			r.reconcile()
			r.advance(testSettle)
			r.reconcile()
			if m := r.moves(); len(m) != 0 {
				t.Fatalf("moves %+v", m)
			}
		})
	}
}

// TestRebalancePassesAreSpaced: a pass moves nothing onto a node that
// has not settled, and passes are at least a settle delay apart, however
// often nodes change.
func TestRebalancePassesAreSpaced(t *testing.T) {
	r := newRig(t)
	threeNodes(t, r)
	back := r.now
	r.reconcile()
	if at, want := r.pending[wakeKey{rebalance: true}], back.Add(testSettle); !at.Equal(want) {
		t.Fatalf("pass due at %v, want %v", at, want)
	}
	// A second later n1, settled long ago, changes: that asks for a pass
	// at once, which finds n3 not settled yet.
	r.now = back.Add(time.Second)
	var n *skiffpb.Node
	r.store.View(func(tx state.ReadTx) { n = proto.Clone(tx.Node("n1")).(*skiffpb.Node) })
	n.Spec.Labels = map[string]string{"rack": "r1"}
	r.apply(&skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutNode{PutNode: n}})
	r.reconcile()
	if m := r.moves(); len(m) != 0 {
		t.Fatalf("moved onto a node that had not settled: %+v", m)
	}
	// n3 settles at back+settle, but the next pass is a settle delay
	// after that one.
	if at, want := r.pending[wakeKey{rebalance: true}], r.now.Add(testSettle); !at.Equal(want) {
		t.Fatalf("next pass due at %v, want %v", at, want)
	}
	r.now = back.Add(testSettle)
	r.reconcile()
	if m := r.moves(); len(m) != 0 {
		t.Fatalf("a pass within a settle delay of the last: %+v", m)
	}
	r.now = back.Add(time.Second + testSettle)
	r.reconcile()
	if m := r.moves(); len(m) != 1 || m[0].To != "n3" {
		t.Fatalf("moves %+v, want one to n3", m)
	}
}

// TestRunRebalances drives Orchestrator.Run with its real timer: three
// nodes hold a service 3/3/0, the empty one having just become Ready; once
// it has settled the service is spread 2/2/2.
func TestRunRebalances(t *testing.T) {
	store := state.New()
	settle := 50 * time.Millisecond
	fr, _ := runOrchestrator(t, store, Config{RebalanceSettle: settle})
	for _, id := range []string{"n1", "n2", "n3"} {
		at := time.Now().Add(-time.Hour)
		if id == "n3" {
			at = time.Now()
		}
		write(t, fr, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutNode{PutNode: &skiffpb.Node{
			Id: id, Meta: &skiffpb.Meta{}, Name: "host-" + id, Spec: &skiffpb.NodeSpec{},
			Status: &skiffpb.NodeStatus{State: ready, Timestamp: at.UnixNano()},
		}}})
	}
	sv := replicated("web", 6)
	var puts []*skiffpb.StoreAction
	puts = append(puts, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutService{PutService: sv}})
	for slot := uint64(1); slot <= 6; slot++ {
		puts = append(puts, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutTask{PutTask: &skiffpb.Task{
			Id: fmt.Sprintf("t%d", slot), Meta: &skiffpb.Meta{CreatedAt: 1}, ServiceId: "web", Slot: slot,
			NodeId: []string{"n1", "n2"}[slot%2], SpecVersion: 1, DesiredState: stRunning,
			Status: &skiffpb.TaskStatus{State: stRunning},
		}}})
	}
	write(t, fr, puts...)

	// Poll as the agents would, starting and stopping what they are told.
	eventually(t, 10*time.Second, func() error {
		var acts []*skiffpb.StoreAction
		perNode := map[string]int{}
		store.View(func(tx state.ReadTx) {
			for _, tk := range tx.TasksByService("web") {
				st := tk.GetStatus().GetState()
				switch {
				case live(tk) && st < stRunning:
					acts = append(acts, statusAction(tk.GetId(), stRunning))
				case !live(tk) && st < skiffpb.TaskState_TASK_STATE_COMPLETE:
					acts = append(acts, statusAction(tk.GetId(), stShutdown))
				case live(tk):
					perNode[tk.GetNodeId()]++
				}
			}
		})
		if len(acts) > 0 {
			write(t, fr, acts...)
			return fmt.Errorf("agents acted")
		}
		counts := []int{perNode["n1"], perNode["n2"], perNode["n3"]}
		sort.Ints(counts)
		if !reflect.DeepEqual(counts, []int{2, 2, 2}) {
			return fmt.Errorf("per node %v", perNode)
		}
		return nil
	})
}

// TestFailedMoveBecomesHistory: in a slot whose task runs, a newer task of
// the same spec that ended (a move that failed, whoever started it) is
// made history, not restarted, and the running task stays.
func TestFailedMoveBecomesHistory(t *testing.T) {
	h := newHarness(t)
	h.readyNode("n1")
	h.readyNode("n2")
	h.putService(replicated("web", 1))
	h.running("old", "web", 1, "n1")
	h.task("new", "web", taskOpts{slot: 1, node: "n2", state: stFailed, age: time.Second})
	o := h.step()
	if want := map[string]skiffpb.TaskState{"new": stShutdown}; !reflect.DeepEqual(o.desired, want) || len(o.creates) != 0 {
		t.Fatalf("desired %v, creates %v; want %v and none", o.desired, o.creates, want)
	}
	if o := h.step(); !o.empty() {
		t.Fatalf("second step: %+v", o)
	}
	if live := h.liveInSlot("web", 1); len(live) != 1 || live[0].GetId() != "old" {
		t.Fatalf("slot 1 live tasks %v", live)
	}
}

// TestRebalanceUnsettledHolderTakesNothing: a node that holds tasks of the
// service but became Ready again only now (it re-registered) counts towards
// the spread and takes nothing until it has settled.
func TestRebalanceUnsettledHolderTakesNothing(t *testing.T) {
	r := newRig(t)
	r.putNode("n1", r.now.Add(-time.Hour))
	r.putNode("n2", r.now)
	r.putService(replicated("web", 5))
	for slot := uint64(1); slot <= 5; slot++ {
		node := "n1"
		if slot == 5 {
			node = "n2"
		}
		r.running(fmt.Sprintf("t%d", slot), "web", slot, node)
	}
	r.converge()
	if m := r.moves(); len(m) != 0 {
		t.Fatalf("moved onto a node that had not settled: %+v", m)
	}
	r.advance(testSettle)
	r.converge()
	if got := r.perNode("web", "n1", "n2"); !reflect.DeepEqual(got, []int{3, 2}) {
		t.Fatalf("once settled %v per node, want [3 2]", got)
	}
}

// TestRebalanceMayMove: the eligibility test that looks at no task.
func TestRebalanceMayMove(t *testing.T) {
	r := newRebalancer(testSettle, slog.New(slog.DiscardHandler))
	at := state.TaskCounts{Running: 3, DesiredRunning: 3}
	for _, tc := range []struct {
		name    string
		edit    func(sv *skiffpb.Service)
		s       *serviceMoves
		counts  state.TaskCounts
		waiting bool
		want    bool
	}{
		{name: "at rest", counts: at, want: true},
		{name: "moves left", counts: at, s: &serviceMoves{left: 1}, want: true},
		{name: "no moves left", counts: at, s: &serviceMoves{}},
		{name: "move in flight", counts: at, s: &serviceMoves{left: 2, inflight: &move{}}},
		{name: "deploying", counts: state.TaskCounts{Running: 2, DesiredRunning: 3}},
		{name: "starting a task too many", counts: state.TaskCounts{Running: 3, DesiredRunning: 4}},
		{name: "waiting out an update delay", counts: at, waiting: true},
		{name: "one replica", counts: state.TaskCounts{Running: 1, DesiredRunning: 1}, edit: func(sv *skiffpb.Service) { sv.Spec.Replicas = 1 }},
		{name: "global", counts: at, edit: func(sv *skiffpb.Service) { sv.Spec.Mode = skiffpb.ServiceMode_SERVICE_MODE_GLOBAL }},
		{name: "updating", counts: at, edit: func(sv *skiffpb.Service) {
			sv.UpdateStatus = &skiffpb.UpdateStatus{State: skiffpb.UpdateState_UPDATE_STATE_UPDATING}
		}},
		{name: "rolling back", counts: at, edit: func(sv *skiffpb.Service) {
			sv.UpdateStatus = &skiffpb.UpdateStatus{State: skiffpb.UpdateState_UPDATE_STATE_ROLLBACK_STARTED}
		}},
		{name: "update completed", counts: at, want: true, edit: func(sv *skiffpb.Service) {
			sv.UpdateStatus = &skiffpb.UpdateStatus{State: skiffpb.UpdateState_UPDATE_STATE_COMPLETED}
		}},
		{name: "ingress port", counts: at, want: true, edit: func(sv *skiffpb.Service) {
			sv.Spec.Endpoint = &skiffpb.EndpointSpec{Ports: []*skiffpb.PortConfig{{TargetPort: 80, PublishedPort: 8080}}}
		}},
		{name: "host port", counts: at, edit: func(sv *skiffpb.Service) {
			sv.Spec.Endpoint = &skiffpb.EndpointSpec{Ports: []*skiffpb.PortConfig{{TargetPort: 80, PublishMode: skiffpb.PublishMode_PUBLISH_MODE_HOST}}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sv := replicated("web", 3)
			if tc.edit != nil {
				tc.edit(sv)
			}
			updates := map[string]time.Time{}
			if tc.waiting {
				updates["web"] = t0
			}
			if got := r.mayMove(sv, tc.s, tc.counts, updates); got != tc.want {
				t.Fatalf("mayMove = %v, want %v", got, tc.want)
			}
		})
	}
}

// benchPassStore is a cluster of 10,000 settled nodes where a service of
// 100,000 replicas is half deployed, and, if atRest, a small service runs
// at rest beside it.
func benchPassStore(b *testing.B, atRest bool) *Orchestrator {
	store := state.New()
	var actions []*skiffpb.StoreAction
	for i := range 10_000 {
		actions = append(actions, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutNode{PutNode: &skiffpb.Node{
			Id: fmt.Sprintf("n%05d", i), Meta: &skiffpb.Meta{}, Name: fmt.Sprintf("host-%05d", i), Spec: &skiffpb.NodeSpec{},
			Status: &skiffpb.NodeStatus{State: ready, Timestamp: t0.Add(-time.Hour).UnixNano()},
		}}})
	}
	big := replicated("big", 100_000)
	actions = append(actions, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutService{PutService: big}})
	for slot := uint64(1); slot <= 50_000; slot++ {
		actions = append(actions, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutTask{PutTask: &skiffpb.Task{
			Id: fmt.Sprintf("big.%d", slot), Meta: &skiffpb.Meta{}, ServiceId: "big", Slot: slot,
			NodeId: fmt.Sprintf("n%05d", slot%10_000), SpecVersion: 1, DesiredState: stRunning,
			Status: &skiffpb.TaskStatus{State: stRunning},
		}}})
	}
	if atRest {
		actions = append(actions, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutService{PutService: replicated("small", 10)}})
		for slot := uint64(1); slot <= 10; slot++ {
			actions = append(actions, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutTask{PutTask: &skiffpb.Task{
				Id: fmt.Sprintf("small.%d", slot), Meta: &skiffpb.Meta{}, ServiceId: "small", Slot: slot,
				NodeId: fmt.Sprintf("n%05d", slot), SpecVersion: 1, DesiredState: stRunning,
				Status: &skiffpb.TaskStatus{State: stRunning},
			}}})
		}
	}
	if err := store.Apply(1, &skiffpb.Command{Actions: actions}); err != nil {
		b.Fatal(err)
	}
	return New(Config{Store: store, Raft: &fakeRaft{store: store}, Now: func() time.Time { return t0 }})
}

// BenchmarkRebalancePassDeploying is a pass while a big service deploys:
// it is turned away on its task counts, without a look at its tasks or a
// node view built.
func BenchmarkRebalancePassDeploying(b *testing.B) {
	o := benchPassStore(b, false)
	for b.Loop() {
		o.rebalanceStep(context.Background(), true)
	}
}

// BenchmarkRebalancePassAtRest adds a small service at rest, already
// spread: the pass builds every settled node's view (50,000 tasks) once,
// and finds no move.
func BenchmarkRebalancePassAtRest(b *testing.B) {
	o := benchPassStore(b, true)
	for b.Loop() {
		o.rebalanceStep(context.Background(), true)
	}
}
