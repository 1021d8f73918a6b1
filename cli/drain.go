package cli

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// drain is the goal of draining a node: none of its tasks should run any
// more, and those that ran have stopped.
type drain struct {
	nodeID   string
	nodeName string
}

func drainTarget(n *skiffpb.Node) *drain { return &drain{nodeID: n.GetId(), nodeName: nodeName(n)} }

func (d *drain) watch() *skiffpb.WatchRequest {
	return &skiffpb.WatchRequest{Kinds: []skiffpb.WatchKind{skiffpb.WatchKind_WATCH_KIND_TASK, skiffpb.WatchKind_WATCH_KIND_NODE}}
}
func (d *drain) doneMessage() string    { return "verify: Node drained" }
func (d *drain) timeoutMessage() string { return "node " + d.nodeName + " did not drain" }
func (d *drain) interruptHint() string {
	return "the drain goes on in the cluster: follow it with `skiff node ps " + d.nodeName + "`"
}

func (d *drain) evaluate(m *model) report {
	// A node that is not ready cannot report its tasks stopping; once they
	// should not run, they are as gone as they will get.
	reporting := m.nodes[d.nodeID].GetStatus().GetState() == skiffpb.NodeState_NODE_STATE_READY
	left := map[string]int{}
	total := 0
	for _, t := range m.tasks {
		if t.GetNodeId() != d.nodeID {
			continue
		}
		st := t.GetStatus().GetState()
		if live(t) || reporting && st >= skiffpb.TaskState_TASK_STATE_ASSIGNED && st <= skiffpb.TaskState_TASK_STATE_RUNNING {
			left[t.GetServiceName()]++
			total++
		}
	}
	rep := report{done: total == 0, overall: fmt.Sprintf("overall progress: %s left on %s", plural(total, "task"), d.nodeName)}
	names := make([]string, 0, len(left))
	for n := range left {
		names = append(names, n)
	}
	sort.Strings(names)
	var missing []string
	for _, n := range names {
		rep.lines = append(rep.lines, progressLine{key: n, label: n, count: strconv.Itoa(left[n]), word: "left", bar: -1})
		missing = append(missing, fmt.Sprintf("%s: %s", n, plural(left[n], "task")))
	}
	rep.missing = "still on it: " + strings.Join(missing, ", ")
	return rep
}

// load reads the node's tasks.
func (d *drain) load(ctx context.Context, ctl skiffpb.ControlClient) (*model, error) {
	m, err := loadNodes(ctx, ctl)
	if err != nil {
		return nil, err
	}
	resp, err := ctl.ListTasks(ctx, &skiffpb.ListTasksRequest{Node: d.nodeID})
	if err != nil {
		return nil, err
	}
	for _, t := range resp.GetTasks() {
		m.tasks[t.GetId()] = t
	}
	return m, nil
}
