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
	// orchestrator a service's on every change, so both must be cheap.
	tasksByNode    map[string]map[string]*skiffpb.Task
	tasksByService map[string]map[string]*skiffpb.Task

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
	s.tasksByService = make(map[string]map[string]*skiffpb.Task)
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
