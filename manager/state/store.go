// Package state is the cluster state that Raft replicates: an in-memory
// store of nodes, networks, stacks, services and tasks, with the indexes the
// orchestrator, the scheduler and the dispatcher need.
//
// The store changes only through Apply, which the Raft FSM calls with each
// committed Command. Apply is deterministic: it reads no clock, draws no
// random numbers and iterates no map in a way that reaches the result, so
// every manager that applies the same log holds the same state.
//
// Stored objects are immutable. Apply replaces an object with a modified copy
// instead of changing it in place, so a reader may keep and share any pointer
// it got from a ReadTx without a lock or a copy. This is also what makes
// snapshots cheap: Snapshot copies pointers, not objects.
package state

import (
	"sync"

	"google.golang.org/protobuf/proto"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// Store is the replicated cluster state.
type Store struct {
	mu sync.RWMutex
	// index is the Raft index of the last applied command.
	index uint64

	cluster  *skiffpb.Cluster
	nodes    *table[*skiffpb.Node]
	networks *table[*skiffpb.Network]
	stacks   *table[*skiffpb.Stack]
	services *table[*skiffpb.Service]
	tasks    *table[*skiffpb.Task]

	// Secondary indexes of tasks: the dispatcher reads a node's tasks and the
	// orchestrator a service's on every change, so both must be cheap. A
	// service's tasks are kept by slot, so that the orchestrator can look at
	// just the slots a change touched: with a million tasks, re-reading a
	// whole service per status report would cost more than everything else.
	tasksByNode    map[string]map[string]*skiffpb.Task
	tasksByService map[string]map[Slot][]*skiffpb.Task
	// taskCounts are each service's task counts, kept by Apply, so that
	// listing services (`service ls`, and every poll of a deploy's
	// progress) costs nothing per task, and never holds the read lock for
	// the time it takes to walk a million tasks.
	taskCounts map[string]*TaskCounts

	watchers watchers
}

// New returns an empty store.
func New() *Store {
	s := &Store{}
	s.reset()
	return s
}

func (s *Store) reset() {
	s.index = 0
	s.cluster = nil
	s.nodes = newTable(func(n *skiffpb.Node) string { return n.GetName() })
	s.networks = newTable(func(n *skiffpb.Network) string { return n.GetSpec().GetName() })
	s.stacks = newTable(func(st *skiffpb.Stack) string { return st.GetName() })
	s.services = newTable(func(sv *skiffpb.Service) string { return sv.GetSpec().GetName() })
	s.tasks = newTable[*skiffpb.Task](nil)
	s.tasksByNode = make(map[string]map[string]*skiffpb.Task)
	s.tasksByService = make(map[string]map[Slot][]*skiffpb.Task)
	s.taskCounts = make(map[string]*TaskCounts)
}

// Index returns the Raft index of the last applied command.
func (s *Store) Index() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.index
}

// View calls fn with a consistent read view of the store. fn must not keep
// the ReadTx after it returns, but may keep the objects it read.
func (s *Store) View(fn func(tx ReadTx)) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	fn(readTx{s})
}

// TaskCounts are the counts of a service's tasks that `service ls` shows.
type TaskCounts struct {
	// Running counts tasks that should run and do.
	Running uint64
	// Completed counts tasks that finished successfully.
	Completed uint64
	// DesiredRunning counts tasks that should run, whatever their state.
	DesiredRunning uint64
}

// add adds (sign 1) or takes away (sign -1) t's contribution.
func (c *TaskCounts) add(t *skiffpb.Task, sign int) {
	delta := uint64(sign) // wraps to subtract for -1
	desired := t.GetDesiredState() == skiffpb.TaskState_TASK_STATE_RUNNING
	if desired {
		c.DesiredRunning += delta
	}
	if desired && t.GetStatus().GetState() == skiffpb.TaskState_TASK_STATE_RUNNING {
		c.Running += delta
	}
	if t.GetStatus().GetState() == skiffpb.TaskState_TASK_STATE_COMPLETE {
		c.Completed += delta
	}
}

// Slot identifies a slot of a service: the replica number of a replicated
// service's task, or the node of a global service's task (whose slot number
// is always 0). A task never changes slots: its slot number is fixed at
// creation, and a global task is created on its node.
type Slot struct {
	Number uint64
	Node   string
}

// SlotOf returns the slot a task belongs to.
func SlotOf(t *skiffpb.Task) Slot {
	if t.GetSlot() != 0 {
		return Slot{Number: t.GetSlot()}
	}
	return Slot{Node: t.GetNodeId()}
}

// object is what every stored kind has in common.
type object interface {
	comparable
	proto.Message
	GetId() string
	GetMeta() *skiffpb.Meta
}

// table holds one kind of object by ID, and by name when the kind has one.
type table[T object] struct {
	byID   map[string]T
	byName map[string]T
	name   func(T) string
}

func newTable[T object](name func(T) string) *table[T] {
	t := &table[T]{byID: make(map[string]T), name: name}
	if name != nil {
		t.byName = make(map[string]T)
	}
	return t
}

func (t *table[T]) get(id string) (T, bool) {
	o, ok := t.byID[id]
	return o, ok
}

func (t *table[T]) getByName(name string) (T, bool) {
	o, ok := t.byName[name]
	return o, ok
}

// put stores o, replacing any object with its ID, and returns the old one.
func (t *table[T]) put(o T) (old T, existed bool) {
	old, existed = t.byID[o.GetId()]
	if existed && t.name != nil {
		delete(t.byName, t.name(old))
	}
	t.byID[o.GetId()] = o
	if t.name != nil {
		t.byName[t.name(o)] = o
	}
	return old, existed
}

func (t *table[T]) remove(id string) (old T, existed bool) {
	old, existed = t.byID[id]
	if !existed {
		return old, false
	}
	delete(t.byID, id)
	if t.name != nil {
		delete(t.byName, t.name(old))
	}
	return old, true
}

func (t *table[T]) all() []T {
	out := make([]T, 0, len(t.byID))
	for _, o := range t.byID {
		out = append(out, o)
	}
	return out
}
