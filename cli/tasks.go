package cli

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// taskRow is a task as `service ps`, `stack ps` and `node ps` and their
// --format templates see it.
type taskRow struct {
	ID           string
	Name         string
	Image        string
	Node         string
	DesiredState string
	CurrentState string
	Error        string
	Ports        string
}

// taskListing says how tasks list.
func taskListing() listing[taskRow] {
	return listing[taskRow]{
		columns: []column{
			{"ID", "ID"}, {"Name", "NAME"}, {"Image", "IMAGE"}, {"Node", "NODE"}, {"DesiredState", "DESIRED STATE"},
			{"CurrentState", "CURRENT STATE"}, {"Error", "ERROR"}, {"Ports", "PORTS"},
		},
		table: "table {{.ID}}\t{{.Name}}\t{{.Image}}\t{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}\t{{.Ports}}",
		key:   func(r taskRow) string { return r.ID },
	}
}

// taskView is what task rows are made from besides the tasks: the
// services (for the image each task runs) and the nodes (for names).
type taskView struct {
	services map[string]*skiffpb.Service // by ID
	nodes    map[string]*skiffpb.Node    // by ID
	now      time.Time
	noTrunc  bool
	// indent writes a slot's older tasks as docker's tables do, under the
	// newest one: ` \_ web.1`.
	indent bool
}

// taskRows builds rows in docker's order: by service and slot, newest task
// first in each slot.
func (v taskView) taskRows(tasks []*skiffpb.Task) []taskRow {
	sorted := append([]*skiffpb.Task(nil), tasks...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i], sorted[j]
		if a.GetServiceName() != b.GetServiceName() {
			return a.GetServiceName() < b.GetServiceName()
		}
		if a.GetSlot() != b.GetSlot() {
			return a.GetSlot() < b.GetSlot()
		}
		// A global service's slots are its nodes.
		if a.GetSlot() == 0 && a.GetNodeId() != b.GetNodeId() {
			return v.nodeName(a.GetNodeId()) < v.nodeName(b.GetNodeId())
		}
		return a.GetMeta().GetCreatedAt() > b.GetMeta().GetCreatedAt()
	})
	rows := make([]taskRow, len(sorted))
	prev := ""
	for i, t := range sorted {
		name := v.taskName(t)
		shown := name
		if v.indent && name == prev {
			shown = ` \_ ` + name
		}
		prev = name
		rows[i] = taskRow{
			ID:           shortID(t.GetId(), v.noTrunc),
			Name:         shown,
			Image:        v.image(t),
			Node:         v.nodeName(t.GetNodeId()),
			DesiredState: capitalize(enumWord(t.GetDesiredState())),
			CurrentState: currentState(v.now, t.GetStatus()),
			Error:        taskError(t.GetStatus().GetErr(), v.noTrunc),
			Ports:        taskPorts(t.GetPorts()),
		}
	}
	return rows
}

// taskName is docker's: the service and slot ("web.1"), or for a global
// service the service and node ID.
func (v taskView) taskName(t *skiffpb.Task) string {
	if t.GetSlot() > 0 {
		return t.GetServiceName() + "." + strconv.FormatUint(t.GetSlot(), 10)
	}
	return t.GetServiceName() + "." + shortID(t.GetNodeId(), v.noTrunc)
}

func (v taskView) nodeName(id string) string {
	if id == "" {
		return ""
	}
	if n, ok := v.nodes[id]; ok {
		return nodeName(n)
	}
	return shortID(id, v.noTrunc) // a node removed since
}

// image is the image of the spec version the task runs; empty when the
// service no longer keeps that spec (no live task runs it).
func (v taskView) image(t *skiffpb.Task) string {
	sv := v.services[t.GetServiceId()]
	if sv.GetSpecVersion() == t.GetSpecVersion() {
		return sv.GetSpec().GetContainer().GetImage()
	}
	for _, p := range sv.GetPreviousSpecs() {
		if p.GetVersion() == t.GetSpecVersion() {
			return p.GetSpec().GetContainer().GetImage()
		}
	}
	return ""
}

// taskPorts is PORTS: the host-mode ports a task holds, "*:8080->80/tcp".
func taskPorts(ports []*skiffpb.PortBinding) string {
	out := make([]string, len(ports))
	for i, p := range ports {
		out[i] = fmt.Sprintf("*:%d->%d/%s", p.GetPublishedPort(), p.GetTargetPort(), enumWord(p.GetProtocol()))
	}
	return strings.Join(out, ", ")
}

// isTable reports whether a --format prints a table, where docker indents
// task history.
func isTable(format string) bool {
	return format == "" || strings.HasPrefix(format, "table")
}

// psRows makes ps rows of tasks, with the services and nodes they need.
// Node names are left out with -q, which prints only IDs, to spare the
// call.
func (a *app) psRows(ctx context.Context, ctl skiffpb.ControlClient, flags listFlags, tasks []*skiffpb.Task, services []*skiffpb.Service) ([]taskRow, error) {
	v := taskView{services: map[string]*skiffpb.Service{}, nodes: map[string]*skiffpb.Node{}, now: a.now(), noTrunc: flags.noTrunc, indent: isTable(flags.format)}
	for _, sv := range services {
		v.services[sv.GetId()] = sv
	}
	if !flags.quiet {
		resp, err := ctl.ListNodes(ctx, &skiffpb.ListNodesRequest{})
		if err != nil {
			return nil, err
		}
		for _, n := range resp.GetNodes() {
			v.nodes[n.GetId()] = n
		}
	}
	return v.taskRows(tasks), nil
}

// listTasks asks for the tasks req picks, narrowed by --filter, whose
// mistakes are the user's and so worded as usage errors.
func listTasks(cmd *cobra.Command, ctl skiffpb.ControlClient, filter taskFilter, req *skiffpb.ListTasksRequest) ([]*skiffpb.Task, error) {
	keep, err := filter.apply(req)
	if err != nil {
		return nil, usageError(cmd, "%v", err)
	}
	resp, err := ctl.ListTasks(cmd.Context(), req)
	if err != nil {
		return nil, err
	}
	return filterTasks(resp.GetTasks(), keep), nil
}

// taskFilter is `service ps`'s --filter, of which skiff knows
// desired-state (running, shutdown or accepted, as docker).
type taskFilter struct {
	filters []string
}

// apply narrows a ListTasks request, or filters the tasks it returned.
func (f taskFilter) apply(req *skiffpb.ListTasksRequest) (keep func(*skiffpb.Task) bool, err error) {
	keep = func(*skiffpb.Task) bool { return true }
	for _, expr := range f.filters {
		k, val, ok := strings.Cut(expr, "=")
		if !ok || k != "desired-state" {
			return nil, fmt.Errorf("invalid filter %q: skiff filters tasks by desired-state=running|shutdown|accepted", expr)
		}
		switch val {
		case "running", "accepted":
			req.DesiredRunning = true
		case "shutdown":
			keep = func(t *skiffpb.Task) bool { return !live(t) }
		default:
			return nil, fmt.Errorf("invalid filter %q: the desired state is running, shutdown or accepted", expr)
		}
	}
	return keep, nil
}

func filterTasks(tasks []*skiffpb.Task, keep func(*skiffpb.Task) bool) []*skiffpb.Task {
	out := tasks[:0:0]
	for _, t := range tasks {
		if keep(t) {
			out = append(out, t)
		}
	}
	return out
}
