package cli

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	skiffpb "github.com/skiffhq/skiff/proto"
	"github.com/skiffhq/skiff/scheduler"
)

// maxSlotLines is how many slots get a line of their own; a larger
// service gets one line, as docker's progress shows no more than 50 bars.
const maxSlotLines = 50

// failingAfter is how many failures of a slot's tasks make the display
// call it failing.
const failingAfter = 3

// rollout is the goal of a deploy, a scale or an update: every listed
// service runs its desired tasks, all on the current spec.
type rollout struct {
	// what names the target in messages: "stack web", "service web_app".
	what string
	// psHint is the command that shows the target's tasks.
	psHint string
	// services maps each service to wait for, by name, to the
	// Meta.version its stored object must have reached: the Raft index of
	// the command's write, or 0 for a service the command did not change.
	services map[string]uint64
	// request is the Watch request.
	request *skiffpb.WatchRequest
}

func (r *rollout) watch() *skiffpb.WatchRequest { return r.request }
func (r *rollout) doneMessage() string          { return "verify: Service converged" }
func (r *rollout) timeoutMessage() string       { return r.what + " did not converge" }
func (r *rollout) interruptHint() string {
	return "the rollout goes on in the cluster: follow it with `" + r.psHint + "`"
}

func (r *rollout) names() []string {
	names := make([]string, 0, len(r.services))
	for n := range r.services {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (r *rollout) evaluate(m *model) report {
	byService := m.tasksByService()
	states := make([]serviceState, 0, len(r.services))
	for _, name := range r.names() {
		sv := m.serviceByName(name)
		st := evaluateService(name, sv, byService[sv.GetId()], m.nodes, r.services[name])
		if msg, ok := m.rolledBack[name]; ok && st.fatal == nil {
			st.fatal = fmt.Errorf("service %s: the update failed and is rolled back: %s", name, msg)
		}
		states = append(states, st)
	}
	rep := report{done: true}
	var running, desired int
	var missing []string
	for _, st := range states {
		running += st.running
		desired += st.desired
		if st.fatal != nil && rep.fatal == nil {
			rep.fatal = st.fatal
		}
		if !st.converged {
			rep.done = false
			missing = append(missing, st.missing())
		}
	}
	rep.overall = fmt.Sprintf("overall progress: %d out of %d tasks", running, desired)
	rep.missing = strings.Join(missing, "; ")
	if len(states) == 1 && len(states[0].slots) <= maxSlotLines {
		rep.lines = states[0].slotLines()
	} else {
		for _, st := range states {
			rep.lines = append(rep.lines, st.serviceLine())
		}
	}
	return rep
}

// serviceState is how far one service is.
type serviceState struct {
	name string
	// seen: the service exists, at least at the version the wait needs.
	seen     bool
	desired  int
	running  int
	slots    []slotState
	extra    int    // tasks that should not run but do not know it yet
	updating string // "updating", "rolling back" or empty
	fatal    error
	// converged: every desired task runs the current spec, nothing else
	// runs, and no update is in progress.
	converged bool
}

// slotState is one replica slot, or one node of a global service.
type slotState struct {
	label string
	// task is the slot's newest task that should run; nil before the
	// orchestrator creates one.
	task *skiffpb.Task
	// current: task runs the service's current spec version.
	current bool
	// failures counts the slot's failed tasks on the current spec, and
	// lastErr is the newest one's error.
	failures int
	lastErr  string
}

func (s slotState) running() bool {
	return s.current && s.task.GetStatus().GetState() == skiffpb.TaskState_TASK_STATE_RUNNING
}

// evaluateService judges one service from its tasks. minVersion is the
// Meta.version the service must have reached for the model to include the
// command's own write.
func evaluateService(name string, sv *skiffpb.Service, tasks []*skiffpb.Task, nodes map[string]*skiffpb.Node, minVersion uint64) serviceState {
	st := serviceState{name: name}
	if sv == nil || sv.GetMeta().GetVersion() < minVersion {
		return st
	}
	st.seen = true
	version := sv.GetSpecVersion()
	keyOf := func(t *skiffpb.Task) string { return strconv.FormatUint(t.GetSlot(), 10) }
	var slotKeys []string
	labels := map[string]string{}
	if sv.GetSpec().GetMode() == skiffpb.ServiceMode_SERVICE_MODE_GLOBAL {
		keyOf = func(t *skiffpb.Task) string { return t.GetNodeId() }
		for _, n := range eligibleNodes(sv, nodes) {
			slotKeys = append(slotKeys, n.GetId())
			labels[n.GetId()] = nodeName(n)
		}
	} else {
		replicas := sv.GetSpec().GetReplicas()
		for i := uint64(1); i <= replicas; i++ {
			k := strconv.FormatUint(i, 10)
			slotKeys = append(slotKeys, k)
			labels[k] = fmt.Sprintf("%d/%d", i, replicas)
		}
	}
	st.desired = len(slotKeys)

	bySlot := map[string][]*skiffpb.Task{}
	for _, t := range tasks {
		bySlot[keyOf(t)] = append(bySlot[keyOf(t)], t)
	}
	wanted := map[string]bool{}
	for _, k := range slotKeys {
		wanted[k] = true
		slot := judgeSlot(labels[k], bySlot[k], version)
		st.slots = append(st.slots, slot)
		if slot.running() {
			st.running++
		}
		st.extra += max(liveCount(bySlot[k])-1, 0)
	}
	for k, ts := range bySlot {
		if !wanted[k] {
			st.extra += liveCount(ts)
		}
	}

	switch us := sv.GetUpdateStatus(); us.GetState() {
	case skiffpb.UpdateState_UPDATE_STATE_UPDATING:
		st.updating = "updating"
	case skiffpb.UpdateState_UPDATE_STATE_ROLLBACK_STARTED:
		st.updating = "rolling back"
	case skiffpb.UpdateState_UPDATE_STATE_PAUSED:
		st.updating = "update paused"
		st.fatal = fmt.Errorf("service %s: update paused: %s; fix the service, then deploy again or run `skiff service update --force %s`",
			name, us.GetMessage(), name)
	}
	st.converged = st.running == st.desired && st.extra == 0 && st.updating == ""
	return st
}

// judgeSlot finds a slot's task that should run, preferring the newest
// spec, then the newest task; and counts the slot's failures on the
// current spec.
func judgeSlot(label string, tasks []*skiffpb.Task, version uint64) slotState {
	s := slotState{label: label}
	var lastFailed *skiffpb.Task
	for _, t := range tasks {
		if live(t) && (s.task == nil || newer(t, s.task)) {
			s.task = t
		}
		if failed(t) && t.GetSpecVersion() == version {
			s.failures++
			if lastFailed == nil || newer(t, lastFailed) {
				lastFailed = t
			}
		}
	}
	s.current = s.task != nil && s.task.GetSpecVersion() == version
	if lastFailed != nil {
		s.lastErr = lastFailed.GetStatus().GetErr()
	}
	return s
}

func newer(a, b *skiffpb.Task) bool {
	if a.GetSpecVersion() != b.GetSpecVersion() {
		return a.GetSpecVersion() > b.GetSpecVersion()
	}
	return a.GetMeta().GetCreatedAt() > b.GetMeta().GetCreatedAt()
}

// live reports whether a task should run.
func live(t *skiffpb.Task) bool {
	return t.GetDesiredState() <= skiffpb.TaskState_TASK_STATE_RUNNING
}

func liveCount(tasks []*skiffpb.Task) int {
	n := 0
	for _, t := range tasks {
		if live(t) {
			n++
		}
	}
	return n
}

func failed(t *skiffpb.Task) bool {
	switch t.GetStatus().GetState() {
	case skiffpb.TaskState_TASK_STATE_FAILED, skiffpb.TaskState_TASK_STATE_REJECTED:
		return true
	}
	return false
}

// eligibleNodes are the nodes a global service runs on, chosen as the
// orchestrator chooses them: ready, active, and matching the constraints.
// Sorted by name, for a stable display.
func eligibleNodes(sv *skiffpb.Service, nodes map[string]*skiffpb.Node) []*skiffpb.Node {
	cs, err := scheduler.ParseConstraints(sv.GetSpec().GetPlacement().GetConstraints())
	if err != nil {
		return nil
	}
	var out []*skiffpb.Node
	for _, n := range nodes {
		if n.GetStatus().GetState() == skiffpb.NodeState_NODE_STATE_READY &&
			n.GetSpec().GetAvailability() == skiffpb.NodeAvailability_NODE_AVAILABILITY_ACTIVE &&
			scheduler.MatchConstraints(cs, n) {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return nodeName(out[i]) < nodeName(out[j]) })
	return out
}

// stateRank places a state on docker's progress bar, which has nine steps
// from "new" to "running".
func stateRank(st skiffpb.TaskState) int {
	switch st {
	case skiffpb.TaskState_TASK_STATE_NEW:
		return 1
	case skiffpb.TaskState_TASK_STATE_PENDING:
		return 3
	case skiffpb.TaskState_TASK_STATE_ASSIGNED:
		return 4
	case skiffpb.TaskState_TASK_STATE_ACCEPTED:
		return 5
	case skiffpb.TaskState_TASK_STATE_PREPARING:
		return 6
	case skiffpb.TaskState_TASK_STATE_STARTING:
		return 8
	case skiffpb.TaskState_TASK_STATE_RUNNING:
		return 9
	}
	return 0
}

const rankRunning = 9

// progress is where the slot is: docker's word for it and its step on
// the bar. A slot still on an older spec is "outdated", at step 0, until
// the update reaches it.
func (s slotState) progress() (word string, rank int) {
	switch {
	case s.task == nil:
		return enumWord(skiffpb.TaskState_TASK_STATE_NEW), stateRank(skiffpb.TaskState_TASK_STATE_NEW)
	case !s.current:
		return "outdated", 0
	}
	st := s.task.GetStatus().GetState()
	return enumWord(st), stateRank(st)
}

// line is the slot's progress line.
func (s slotState) line(key string) progressLine {
	word, rank := s.progress()
	return progressLine{key: key, label: s.label, word: word, bar: float64(rank) / rankRunning, note: s.problem()}
}

// problem explains a slot that is stuck: its task cannot be placed, or
// its tasks keep failing.
func (s slotState) problem() string {
	switch {
	case s.failures >= failingAfter:
		return fmt.Sprintf("failed %d times: %s", s.failures, s.lastErr)
	case s.current && s.task.GetStatus().GetState() != skiffpb.TaskState_TASK_STATE_RUNNING && s.task.GetStatus().GetErr() != "":
		// Not placed yet (the scheduler's reason), or failed and waiting
		// for the restart policy to replace it.
		return s.task.GetStatus().GetErr()
	}
	return ""
}

func (st serviceState) slotLines() []progressLine {
	lines := make([]progressLine, len(st.slots))
	for i, s := range st.slots {
		lines[i] = s.line(st.name + "/" + s.label)
	}
	return lines
}

// serviceLine sums a service up in one line: its count, its least
// advanced slot's word, and its first problem.
func (st serviceState) serviceLine() progressLine {
	l := progressLine{key: st.name, label: st.name, count: fmt.Sprintf("%d/%d", st.running, st.desired), bar: 1}
	if st.desired > 0 {
		l.bar = float64(st.running) / float64(st.desired)
	}
	switch {
	case !st.seen:
		l.word, l.bar = "new", 0
	case st.updating != "":
		l.word = st.updating
	default:
		l.word = "running"
		least := rankRunning + 1
		for _, s := range st.slots {
			if word, rank := s.progress(); !s.running() && rank < least {
				least, l.word = rank, word
			}
		}
	}
	for _, s := range st.slots {
		if p := s.problem(); p != "" {
			l.note = fmt.Sprintf("%s: %s", s.label, p)
			break
		}
	}
	return l
}

// missing says what keeps the service from converging.
func (st serviceState) missing() string {
	if !st.seen {
		return st.name + ": not created yet"
	}
	var why []string
	pending := map[string]int{}
	for _, s := range st.slots {
		if p := s.problem(); p != "" {
			pending[p]++
		}
	}
	problems := make([]string, 0, len(pending))
	for p := range pending {
		problems = append(problems, p)
	}
	sort.Strings(problems)
	for _, p := range problems {
		why = append(why, fmt.Sprintf("%s: %s", plural(pending[p], "task"), p))
	}
	if st.extra > 0 {
		why = append(why, fmt.Sprintf("%s still to stop", plural(st.extra, "task")))
	}
	if st.updating != "" {
		why = append(why, st.updating)
	}
	msg := fmt.Sprintf("%s: %d of %d tasks running", st.name, st.running, st.desired)
	if len(why) > 0 {
		msg += " (" + strings.Join(why, "; ") + ")"
	}
	return msg
}

// load reads the rollout's services and their tasks.
func (r *rollout) load(ctx context.Context, ctl skiffpb.ControlClient) (*model, error) {
	m, err := loadNodes(ctx, ctl)
	if err != nil {
		return nil, err
	}
	for _, name := range r.names() {
		sv, err := ctl.GetService(ctx, &skiffpb.GetServiceRequest{Service: name})
		if status.Code(err) == codes.NotFound {
			continue // not created yet: evaluate says so
		}
		if err != nil {
			return nil, err
		}
		m.services[sv.GetId()] = sv
		resp, err := ctl.ListTasks(ctx, &skiffpb.ListTasksRequest{Service: sv.GetId()})
		if err != nil {
			return nil, err
		}
		for _, t := range resp.GetTasks() {
			m.tasks[t.GetId()] = t
		}
	}
	return m, nil
}
