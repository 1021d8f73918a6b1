package state

import (
	"sort"
	"strings"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// ReadTx is a consistent view of the store, valid inside View. Lists are
// returned sorted by ID so callers and tests see a stable order.
type ReadTx interface {
	// Index is the Raft index the view reflects.
	Index() uint64
	Cluster() *skiffpb.Cluster

	Node(id string) *skiffpb.Node
	NodeByName(name string) *skiffpb.Node
	Nodes() []*skiffpb.Node
	// EachNode calls fn for every node, in no particular order, without
	// building a sorted list; it stops when fn returns false.
	EachNode(fn func(*skiffpb.Node) bool)

	Network(id string) *skiffpb.Network
	NetworkByName(name string) *skiffpb.Network
	Networks() []*skiffpb.Network

	Stack(id string) *skiffpb.Stack
	StackByName(name string) *skiffpb.Stack
	Stacks() []*skiffpb.Stack

	Service(id string) *skiffpb.Service
	ServiceByName(name string) *skiffpb.Service
	Services() []*skiffpb.Service
	// ServicesByStack lists the services whose spec names stack.
	ServicesByStack(stack string) []*skiffpb.Service

	Task(id string) *skiffpb.Task
	Tasks() []*skiffpb.Task
	TasksByService(serviceID string) []*skiffpb.Task
	TasksByNode(nodeID string) []*skiffpb.Task
	// TasksOfSlot lists the tasks of one slot of a service, in no
	// particular order.
	TasksOfSlot(serviceID string, slot Slot) []*skiffpb.Task
	// CountTasks returns how many tasks the store holds.
	CountTasks() int
	// TaskCounts returns a service's task counts, without looking at its
	// tasks.
	TaskCounts(serviceID string) TaskCounts
	// EachTask calls fn for every task, in no particular order, without
	// building a list; it stops when fn returns false.
	EachTask(fn func(*skiffpb.Task) bool)
	// EachTaskOfNode is EachTask for one node's tasks.
	EachTaskOfNode(nodeID string, fn func(*skiffpb.Task) bool)
	// EachTaskOfService is EachTask for one service's tasks.
	EachTaskOfService(serviceID string, fn func(*skiffpb.Task) bool)
	// ServicesWithTasks lists the IDs of the services that have tasks,
	// including services that are gone, in no particular order.
	ServicesWithTasks() []string

	// SpecOf returns the service spec a task runs, or nil when it is no
	// longer known.
	SpecOf(t *skiffpb.Task) *skiffpb.ServiceSpec
}

type readTx struct{ s *Store }

func (r readTx) Index() uint64             { return r.s.index }
func (r readTx) Cluster() *skiffpb.Cluster { return r.s.cluster }

func (r readTx) Node(id string) *skiffpb.Node       { o, _ := r.s.nodes.get(id); return o }
func (r readTx) NodeByName(n string) *skiffpb.Node  { o, _ := r.s.nodes.getByName(n); return o }
func (r readTx) Nodes() []*skiffpb.Node             { return sorted(r.s.nodes.all()) }
func (r readTx) Network(id string) *skiffpb.Network { o, _ := r.s.networks.get(id); return o }
func (r readTx) NetworkByName(n string) *skiffpb.Network {
	o, _ := r.s.networks.getByName(n)
	return o
}
func (r readTx) Networks() []*skiffpb.Network   { return sorted(r.s.networks.all()) }
func (r readTx) Stack(id string) *skiffpb.Stack { o, _ := r.s.stacks.get(id); return o }
func (r readTx) StackByName(n string) *skiffpb.Stack {
	o, _ := r.s.stacks.getByName(n)
	return o
}
func (r readTx) Stacks() []*skiffpb.Stack           { return sorted(r.s.stacks.all()) }
func (r readTx) Service(id string) *skiffpb.Service { o, _ := r.s.services.get(id); return o }
func (r readTx) ServiceByName(n string) *skiffpb.Service {
	o, _ := r.s.services.getByName(n)
	return o
}
func (r readTx) Services() []*skiffpb.Service { return sorted(r.s.services.all()) }

func (r readTx) ServicesByStack(stack string) []*skiffpb.Service {
	var out []*skiffpb.Service
	for _, sv := range r.s.services.byID {
		if sv.GetSpec().GetStack() == stack {
			out = append(out, sv)
		}
	}
	return sorted(out)
}

func (r readTx) Task(id string) *skiffpb.Task { o, _ := r.s.tasks.get(id); return o }
func (r readTx) Tasks() []*skiffpb.Task       { return sorted(r.s.tasks.all()) }
func (r readTx) CountTasks() int              { return len(r.s.tasks.byID) }

func (r readTx) TaskCounts(serviceID string) TaskCounts {
	if c := r.s.taskCounts[serviceID]; c != nil {
		return *c
	}
	return TaskCounts{}
}

func (r readTx) TasksByService(id string) []*skiffpb.Task {
	var out []*skiffpb.Task
	for _, list := range r.s.tasksByService[id] {
		out = append(out, list...)
	}
	return sorted(out)
}

func (r readTx) TasksOfSlot(serviceID string, slot Slot) []*skiffpb.Task {
	list := r.s.tasksByService[serviceID][slot]
	if len(list) == 0 {
		return nil
	}
	return append([]*skiffpb.Task(nil), list...)
}

func (r readTx) TasksByNode(id string) []*skiffpb.Task {
	return sorted(values(r.s.tasksByNode[id]))
}

func (r readTx) EachTask(fn func(*skiffpb.Task) bool) {
	for _, t := range r.s.tasks.byID {
		if !fn(t) {
			return
		}
	}
}

func (r readTx) EachTaskOfNode(nodeID string, fn func(*skiffpb.Task) bool) {
	for _, t := range r.s.tasksByNode[nodeID] {
		if !fn(t) {
			return
		}
	}
}

func (r readTx) EachTaskOfService(serviceID string, fn func(*skiffpb.Task) bool) {
	for _, list := range r.s.tasksByService[serviceID] {
		for _, t := range list {
			if !fn(t) {
				return
			}
		}
	}
}

func (r readTx) ServicesWithTasks() []string {
	out := make([]string, 0, len(r.s.tasksByService))
	for id := range r.s.tasksByService {
		out = append(out, id)
	}
	return out
}

func (r readTx) EachNode(fn func(*skiffpb.Node) bool) {
	for _, n := range r.s.nodes.byID {
		if !fn(n) {
			return
		}
	}
}

func (r readTx) SpecOf(t *skiffpb.Task) *skiffpb.ServiceSpec {
	return specOf(r.s, t)
}

func specOf(s *Store, t *skiffpb.Task) *skiffpb.ServiceSpec {
	sv, ok := s.services.get(t.GetServiceId())
	if !ok {
		return nil
	}
	if sv.GetSpecVersion() == t.GetSpecVersion() {
		return sv.GetSpec()
	}
	for _, v := range sv.GetPreviousSpecs() {
		if v.GetVersion() == t.GetSpecVersion() {
			return v.GetSpec()
		}
	}
	return nil
}

func values[T any](m map[string]T) []T {
	out := make([]T, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func sorted[T interface{ GetId() string }](list []T) []T {
	sort.Slice(list, func(i, j int) bool { return list[i].GetId() < list[j].GetId() })
	return list
}

// ResolveID finds the one object among candidates whose ID is id, or whose
// name is id, or whose ID starts with id, as docker resolves a prefix. It
// returns nil when nothing matches and ErrAmbiguous when a prefix matches
// several.
func ResolveID[T interface{ GetId() string }](id string, candidates []T, name func(T) string) (T, error) {
	var zero T
	var match T
	n := 0
	for _, c := range candidates {
		if c.GetId() == id || name(c) == id {
			return c, nil
		}
		if id != "" && strings.HasPrefix(c.GetId(), id) {
			match = c
			n++
		}
	}
	switch n {
	case 0:
		return zero, ErrNotFound
	case 1:
		return match, nil
	default:
		return zero, ErrAmbiguous
	}
}
