package scheduler

import (
	"maps"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// Resources is an amount of CPU and memory. It mirrors skiffpb.Resources as a
// plain value, so that it can be copied and summed without going through
// protobuf messages (which must not be copied).
type Resources struct {
	// NanoCPUs is CPU in units of 1e-9 cores, as Docker counts it.
	NanoCPUs    int64
	MemoryBytes int64
}

// resourcesOf converts a protobuf amount; nil is zero, and negative amounts
// count as zero so that a malformed spec can never create capacity.
func resourcesOf(r *skiffpb.Resources) Resources {
	return Resources{
		NanoCPUs:    max(r.GetNanoCpus(), 0),
		MemoryBytes: max(r.GetMemoryBytes(), 0),
	}
}

// HostPort is a host-mode published port: a protocol and port number that at
// most one task may hold on a node.
type HostPort struct {
	Protocol skiffpb.Protocol
	Port     uint32
}

// NodeInfo is the scheduler's view of one node: the node object plus what is
// already committed to it. Schedule updates it as it places tasks, so that a
// NodeInfo can be kept between calls and maintained with AddTask and
// RemoveTask as tasks come and go.
type NodeInfo struct {
	// Node is the node object: spec (availability, labels), role,
	// description (hostname, resources, engine labels) and status.
	Node *skiffpb.Node
	// Reserved is the sum of the reservations of the live tasks on the node.
	Reserved Resources
	// Tasks counts the live tasks on the node, of any service.
	Tasks int
	// ServiceTasks counts the live tasks on the node per service ID.
	ServiceTasks map[string]int
	// HostPorts are the host-mode published ports the live tasks hold.
	HostPorts map[HostPort]struct{}
}

// NewNodeInfo builds the view of node n with liveTasks committed to it. A
// live task is one that holds, or is about to hold, resources on the node:
// assigned and not yet finished; the caller decides which those are. specOf
// gives the spec each task runs (its reservations and ports count); it may be
// nil, or return nil, for tasks whose spec reserves nothing.
func NewNodeInfo(n *skiffpb.Node, liveTasks []*skiffpb.Task, specOf func(*skiffpb.Task) *skiffpb.ServiceSpec) *NodeInfo {
	info := &NodeInfo{
		Node:         n,
		ServiceTasks: make(map[string]int),
		HostPorts:    make(map[HostPort]struct{}),
	}
	for _, t := range liveTasks {
		var spec *skiffpb.ServiceSpec
		if specOf != nil {
			spec = specOf(t)
		}
		info.AddTask(t, spec)
	}
	return info
}

// AddTask commits task t, which runs spec, to the node: its reservations,
// its host-mode ports and the task counts.
func (n *NodeInfo) AddTask(t *skiffpb.Task, spec *skiffpb.ServiceSpec) {
	n.add(t.GetServiceId(), usageOf(spec))
}

// RemoveTask undoes AddTask for a task that is no longer live. The node's
// host ports are a set, so removing a task frees its ports even if another
// live task claimed the same ones (which the scheduler never allows).
func (n *NodeInfo) RemoveTask(t *skiffpb.Task, spec *skiffpb.ServiceSpec) {
	u := usageOf(spec)
	n.Reserved.NanoCPUs -= u.need.NanoCPUs
	n.Reserved.MemoryBytes -= u.need.MemoryBytes
	n.Tasks--
	svc := t.GetServiceId()
	if c := n.ServiceTasks[svc]; c > 1 {
		n.ServiceTasks[svc] = c - 1
	} else {
		delete(n.ServiceTasks, svc)
	}
	for _, p := range u.ports {
		delete(n.HostPorts, p)
	}
}

// Clone returns a copy of n that can be scheduled onto without changing n.
// The node object itself is shared: the scheduler never modifies it.
func (n *NodeInfo) Clone() *NodeInfo {
	c := *n
	c.ServiceTasks = maps.Clone(n.ServiceTasks)
	c.HostPorts = maps.Clone(n.HostPorts)
	return &c
}

// capacity is what the node's engine reported it has in total.
func (n *NodeInfo) capacity() Resources {
	return resourcesOf(n.Node.GetDescription().GetResources())
}

// add commits one task of service svc that uses u.
func (n *NodeInfo) add(svc string, u usage) {
	n.Reserved.NanoCPUs += u.need.NanoCPUs
	n.Reserved.MemoryBytes += u.need.MemoryBytes
	n.Tasks++
	// A NodeInfo built by hand may have nil maps; it is still valid input.
	if n.ServiceTasks == nil {
		n.ServiceTasks = make(map[string]int)
	}
	n.ServiceTasks[svc]++
	if len(u.ports) > 0 && n.HostPorts == nil {
		n.HostPorts = make(map[HostPort]struct{}, len(u.ports))
	}
	for _, p := range u.ports {
		n.HostPorts[p] = struct{}{}
	}
}
