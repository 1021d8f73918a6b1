package scheduler

import (
	"fmt"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// Request is one task to place.
type Request struct {
	// Task is the pending task. Its NodeId is empty, or, for a global
	// service's task, names the one node it may run on. Schedule does not
	// modify it.
	Task *skiffpb.Task
	// Spec is the service spec the task runs; nil reserves nothing and
	// constrains nothing. Tasks are grouped by service ID and Spec pointer,
	// and each group's spec is parsed and filtered once, so requests of one
	// service and spec version should share the pointer.
	Spec *skiffpb.ServiceSpec
}

// Decision is where one task goes.
type Decision struct {
	// TaskID is the request's task ID.
	TaskID string
	// NodeID is the node the task is placed on, or "" if no node can take it.
	NodeID string
	// Ports are the host-mode ports the task holds on its node (those the
	// spec publishes on a fixed port), for TaskPlacement.ports. They are
	// fresh messages that the caller owns.
	Ports []*skiffpb.PortBinding
	// Explanation says why the task could not be placed, when NodeID is "".
	Explanation string
}

// Placed reports whether the task got a node.
func (d Decision) Placed() bool { return d.NodeID != "" }

// Schedule places tasks on nodes and returns one Decision per request, in
// request order. The same input always gives the same decisions, whatever
// the order of nodes, as long as node IDs are unique.
//
// It commits every placement to the NodeInfo of the chosen node, so the
// next call, or the manager keeping the NodeInfos between calls, sees it;
// callers who only want to look ahead schedule onto clones (NodeInfo.Clone).
// Nil entries in nodes are skipped.
//
// Tasks that name their node are placed first, in request order; then each
// group of tasks (one service and spec) is placed in the order the group
// first appears, all of its tasks before the next group's. A call costs
// O(n) per group to filter the nodes and build its heaps, plus O(log n) per
// task placed, so callers should batch tasks rather than call per task.
func Schedule(nodes []*NodeInfo, reqs []Request) []Decision {
	out := make([]Decision, len(reqs))
	groups, groupOf := groupRequests(reqs)

	var byID map[string]int
	for i, rq := range reqs {
		out[i].TaskID = rq.Task.GetId()
		id := rq.Task.GetNodeId()
		if id == "" {
			continue
		}
		// Built only when needed: most calls place only replicated tasks.
		if byID == nil {
			byID = indexByID(nodes)
		}
		var ni *NodeInfo
		if j, ok := byID[id]; ok {
			ni = nodes[j]
		}
		placeOn(ni, id, &groups[groupOf[i]].req, &out[i])
	}
	for g := range groups {
		placeGroup(nodes, &groups[g], out)
	}
	return out
}

// group is the requests of one service and spec, which all share the same
// requirements.
type group struct {
	req requirements
	// members are the indexes of the group's requests that still need a
	// node, in request order.
	members []int
}

// groupRequests groups reqs by service and spec. groupOf maps each request
// to its group.
func groupRequests(reqs []Request) (groups []group, groupOf []int) {
	type key struct {
		serviceID string
		spec      *skiffpb.ServiceSpec
	}
	index := make(map[key]int)
	groupOf = make([]int, len(reqs))
	for i, rq := range reqs {
		k := key{serviceID: rq.Task.GetServiceId(), spec: rq.Spec}
		g, ok := index[k]
		if !ok {
			g = len(groups)
			index[k] = g
			groups = append(groups, group{req: newRequirements(k.serviceID, k.spec)})
		}
		groupOf[i] = g
		if rq.Task.GetNodeId() == "" {
			groups[g].members = append(groups[g].members, i)
		}
	}
	return groups, groupOf
}

// indexByID maps node IDs to their index in nodes; with duplicate IDs the
// first wins.
func indexByID(nodes []*NodeInfo) map[string]int {
	m := make(map[string]int, len(nodes))
	for i, ni := range nodes {
		if ni == nil {
			continue
		}
		if _, dup := m[ni.Node.GetId()]; !dup {
			m[ni.Node.GetId()] = i
		}
	}
	return m
}

// placeOn places a task that names its node (nodeID, whose NodeInfo is ni,
// nil if unknown) there if the node passes every filter.
func placeOn(ni *NodeInfo, nodeID string, r *requirements, d *Decision) {
	switch {
	case r.err != nil:
		d.Explanation = r.err.Error()
		return
	case ni == nil:
		d.Explanation = fmt.Sprintf("%s (node %s is not in the cluster)", noSuitableNode, nodeID)
		return
	}
	if f, failed := firstFailure(ni, r); failed {
		var counts [numFilters]int
		counts[f] = 1
		d.Explanation = explainCounts(counts)
		return
	}
	ni.add(r.serviceID, r.usage)
	d.NodeID = nodeID
	d.Ports = r.portBindings()
}

// placeGroup places the waiting tasks of g, best node first.
func placeGroup(nodes []*NodeInfo, g *group, out []Decision) {
	if len(g.members) == 0 {
		return
	}
	r := &g.req
	if r.err != nil {
		for _, m := range g.members {
			out[m].Explanation = r.err.Error()
		}
		return
	}
	t := newTree(nodes, r)
	fits := func(node, serviceTasks int) bool {
		_, failed := dynamicFailure(nodes[node], r, serviceTasks)
		return !failed
	}
	for k, m := range g.members {
		i, ok := t.next(fits)
		if !ok {
			// Nothing placed from here on changes the nodes, so one
			// explanation serves every task left in the group.
			why := explain(nodes, r)
			for _, m := range g.members[k:] {
				out[m].Explanation = why
			}
			return
		}
		nodes[i].add(r.serviceID, r.usage)
		t.took()
		out[m].NodeID = nodes[i].Node.GetId()
		out[m].Ports = r.portBindings()
	}
}
