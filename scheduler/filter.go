package scheduler

import (
	skiffpb "github.com/skiffhq/skiff/proto"
)

// filter is one check a node must pass to take a task. The constants are in
// the order the checks apply; a node that fails several is counted, in an
// explanation, under the first it fails.
type filter int

const (
	// filterAvailable: the node is READY and ACTIVE (PAUSE and DRAIN take
	// no new tasks).
	filterAvailable filter = iota
	// filterConstraints: the spec's placement constraints hold.
	filterConstraints
	// filterCPU: the CPU reservation fits into what is left.
	filterCPU
	// filterMemory: the memory reservation fits into what is left.
	filterMemory
	// filterHostPorts: none of the spec's host-mode ports is taken.
	filterHostPorts
	// filterMaxReplicas: the node holds fewer of the service's tasks than
	// placement.max_replicas_per_node.
	filterMaxReplicas

	numFilters
)

// available reports whether n takes new tasks at all.
func available(n *skiffpb.Node) bool {
	return n.GetStatus().GetState() == skiffpb.NodeState_NODE_STATE_READY &&
		n.GetSpec().GetAvailability() == skiffpb.NodeAvailability_NODE_AVAILABILITY_ACTIVE
}

// staticFailure applies the filters that depend only on the node object and
// the spec, which do not change while Schedule runs, so they are applied
// once per node and group.
func staticFailure(ni *NodeInfo, r *requirements) (filter, bool) {
	if !available(ni.Node) {
		return filterAvailable, true
	}
	if !MatchConstraints(r.constraints, ni.Node) {
		return filterConstraints, true
	}
	return 0, false
}

// dynamicFailure applies the filters that depend on what is committed to
// the node, which placing tasks changes. serviceTasks is the number of the
// service's tasks on the node; the caller passes it because the strategy
// already keeps it at hand, which saves a map lookup per placement.
func dynamicFailure(ni *NodeInfo, r *requirements, serviceTasks int) (filter, bool) {
	if r.need.NanoCPUs > 0 || r.need.MemoryBytes > 0 {
		// A task that reserves nothing fits even on an overcommitted node,
		// as in swarm; the capacity is only read when it matters.
		free := ni.capacity()
		free.NanoCPUs -= ni.Reserved.NanoCPUs
		free.MemoryBytes -= ni.Reserved.MemoryBytes
		if r.need.NanoCPUs > 0 && r.need.NanoCPUs > free.NanoCPUs {
			return filterCPU, true
		}
		if r.need.MemoryBytes > 0 && r.need.MemoryBytes > free.MemoryBytes {
			return filterMemory, true
		}
	}
	for _, p := range r.ports {
		if _, taken := ni.HostPorts[p]; taken {
			return filterHostPorts, true
		}
	}
	if r.maxPerNode > 0 && serviceTasks >= r.maxPerNode {
		return filterMaxReplicas, true
	}
	return 0, false
}

// firstFailure applies every filter in order and returns the first that n
// fails, if any.
func firstFailure(ni *NodeInfo, r *requirements) (filter, bool) {
	if f, failed := staticFailure(ni, r); failed {
		return f, true
	}
	return dynamicFailure(ni, r, ni.ServiceTasks[r.serviceID])
}
