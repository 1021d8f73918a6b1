package state

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// Errors Apply returns. The proposer hands them back to the writer, which
// re-reads the store and tries again (ErrVersionConflict) or reports them.
var (
	// ErrVersionConflict: a whole-object write named a version other than
	// the stored one; someone else wrote the object first.
	ErrVersionConflict = errors.New("object was changed concurrently")
	// ErrNameConflict: a create used a name another object already has.
	ErrNameConflict = errors.New("name is already in use")
	// ErrNotFound: no object has that ID or name.
	ErrNotFound = errors.New("not found")
	// ErrAmbiguous: an ID prefix matches several objects.
	ErrAmbiguous = errors.New("ambiguous ID prefix")
	// ErrInvalidCommand: the command cannot be applied as written.
	ErrInvalidCommand = errors.New("invalid command")
)

// Apply applies one committed command at Raft index. Either every action
// applies or, when one fails, none does and the error says which.
func (s *Store) Apply(index uint64, cmd *skiffpb.Command) error {
	s.mu.Lock()
	tx := &writeTx{s: s, index: index}
	for i, a := range cmd.GetActions() {
		if err := tx.apply(a); err != nil {
			tx.rollback()
			s.index = index
			s.mu.Unlock()
			return fmt.Errorf("action %d: %w", i, err)
		}
	}
	s.index = index
	events := tx.events
	s.mu.Unlock()
	s.watchers.publish(index, events)
	return nil
}

// writeTx applies actions and remembers how to undo them.
type writeTx struct {
	s      *Store
	index  uint64
	undo   []func()
	events []Event
}

func (tx *writeTx) rollback() {
	for i := len(tx.undo) - 1; i >= 0; i-- {
		tx.undo[i]()
	}
}

func (tx *writeTx) apply(a *skiffpb.StoreAction) error {
	switch act := a.GetAction().(type) {
	case *skiffpb.StoreAction_PutCluster:
		return tx.putCluster(act.PutCluster)
	case *skiffpb.StoreAction_PutNode:
		return putObject(tx, tx.s.nodes, act.PutNode, nil)
	case *skiffpb.StoreAction_PutNetwork:
		return putObject(tx, tx.s.networks, act.PutNetwork, nil)
	case *skiffpb.StoreAction_PutStack:
		return putObject(tx, tx.s.stacks, act.PutStack, nil)
	case *skiffpb.StoreAction_PutService:
		return putObject(tx, tx.s.services, act.PutService, nil)
	case *skiffpb.StoreAction_PutTask:
		return putObject(tx, tx.s.tasks, act.PutTask, tx.reindexTask)
	case *skiffpb.StoreAction_DeleteNode:
		deleteObject(tx, tx.s.nodes, act.DeleteNode, nil)
	case *skiffpb.StoreAction_DeleteNetwork:
		if deleteObject(tx, tx.s.networks, act.DeleteNetwork, nil) {
			tx.detachNetwork(act.DeleteNetwork)
		}
	case *skiffpb.StoreAction_DeleteStack:
		deleteObject(tx, tx.s.stacks, act.DeleteStack, nil)
	case *skiffpb.StoreAction_DeleteService:
		deleteObject(tx, tx.s.services, act.DeleteService, nil)
	case *skiffpb.StoreAction_DeleteTask:
		deleteObject(tx, tx.s.tasks, act.DeleteTask, tx.reindexTask)
	case *skiffpb.StoreAction_TaskStatus:
		tx.taskStatus(act.TaskStatus)
	case *skiffpb.StoreAction_TaskDesired:
		tx.taskDesired(act.TaskDesired)
	case *skiffpb.StoreAction_NodeStatus:
		tx.nodeStatus(act.NodeStatus)
	case *skiffpb.StoreAction_TaskPlacement:
		tx.taskPlacement(act.TaskPlacement)
	case *skiffpb.StoreAction_NodeAttachment:
		tx.nodeAttachment(act.NodeAttachment)
	default:
		return fmt.Errorf("%w: unknown action %T", ErrInvalidCommand, a.GetAction())
	}
	return nil
}

func (tx *writeTx) putCluster(c *skiffpb.Cluster) error {
	if c == nil {
		return fmt.Errorf("%w: put of an empty cluster", ErrInvalidCommand)
	}
	old := tx.s.cluster
	if old.GetMeta().GetVersion() != c.GetMeta().GetVersion() {
		return fmt.Errorf("cluster: %w", ErrVersionConflict)
	}
	c = stamp(c, tx.index)
	tx.s.cluster = c
	tx.undo = append(tx.undo, func() { tx.s.cluster = old })
	tx.events = append(tx.events, Event{Object: c})
	return nil
}

// putObject creates or replaces o after checking its version and name.
// reindex, when set, keeps secondary indexes in step (old or o may be nil).
func putObject[T object](tx *writeTx, t *table[T], o T, reindex func(old, cur T)) error {
	var zero T
	if o == zero || o.GetId() == "" {
		return fmt.Errorf("%w: put of an object without an ID", ErrInvalidCommand)
	}
	old, existed := t.get(o.GetId())
	var stored uint64
	if existed {
		stored = old.GetMeta().GetVersion()
	}
	if o.GetMeta().GetVersion() != stored {
		return fmt.Errorf("%s: %w", o.GetId(), ErrVersionConflict)
	}
	if t.name != nil {
		if holder, ok := t.getByName(t.name(o)); ok && holder.GetId() != o.GetId() {
			return fmt.Errorf("%q: %w", t.name(o), ErrNameConflict)
		}
	}
	o = stamp(o, tx.index)
	t.put(o)
	if reindex != nil {
		reindex(old, o)
	}
	tx.undo = append(tx.undo, func() {
		if existed {
			t.put(old)
		} else {
			t.remove(o.GetId())
		}
		if reindex != nil {
			reindex(o, old)
		}
	})
	tx.events = append(tx.events, Event{Object: o})
	return nil
}

// deleteObject removes id if it exists and reports whether it did; deleting
// a missing object is not an error, so that retried deletes are harmless.
func deleteObject[T object](tx *writeTx, t *table[T], id string, reindex func(old, cur T)) bool {
	var zero T
	old, existed := t.remove(id)
	if !existed {
		return false
	}
	if reindex != nil {
		reindex(old, zero)
	}
	tx.undo = append(tx.undo, func() {
		t.put(old)
		if reindex != nil {
			reindex(zero, old)
		}
	})
	tx.events = append(tx.events, Event{Object: old, Deleted: true})
	return true
}

// replace stores an updated copy of an existing object and records the undo
// and the event; the narrow updates use it.
func replace[T object](tx *writeTx, t *table[T], old, cur T, reindex func(old, cur T)) {
	t.put(cur)
	if reindex != nil {
		reindex(old, cur)
	}
	tx.undo = append(tx.undo, func() {
		t.put(old)
		if reindex != nil {
			reindex(cur, old)
		}
	})
	tx.events = append(tx.events, Event{Object: cur})
}

// stamp returns a copy of o carrying the version of the command that wrote
// it. Objects are stamped on a copy because the caller's message may be
// shared (it is the decoded log entry).
func stamp[T interface {
	proto.Message
	GetMeta() *skiffpb.Meta
}](o T, index uint64) T {
	c := proto.Clone(o).(T)
	meta := c.GetMeta()
	if meta == nil {
		setMeta(c, &skiffpb.Meta{Version: index})
		return c
	}
	meta.Version = index
	return c
}

func setMeta(o proto.Message, m *skiffpb.Meta) {
	switch v := o.(type) {
	case *skiffpb.Cluster:
		v.Meta = m
	case *skiffpb.Node:
		v.Meta = m
	case *skiffpb.Network:
		v.Meta = m
	case *skiffpb.Stack:
		v.Meta = m
	case *skiffpb.Service:
		v.Meta = m
	case *skiffpb.Task:
		v.Meta = m
	}
}

// reindexTask moves a task between the by-node and by-service indexes, and
// keeps its service's counts.
func (tx *writeTx) reindexTask(old, cur *skiffpb.Task) {
	s := tx.s
	if old != nil {
		countTask(s.taskCounts, old, -1)
	}
	if cur != nil {
		countTask(s.taskCounts, cur, 1)
	}
	if old != nil && cur != nil && old.GetServiceId() == cur.GetServiceId() && SlotOf(old) == SlotOf(cur) &&
		replaceInSlot(s.tasksByService, cur) {
		// The common case, a task's status or desired state changing,
		// keeps its slot: swap the object in place.
		if old.GetNodeId() == cur.GetNodeId() {
			if m := s.tasksByNode[cur.GetNodeId()]; m != nil {
				m[cur.GetId()] = cur
			}
			return
		}
		removeFrom(s.tasksByNode, old.GetNodeId(), old.GetId())
		addTo(s.tasksByNode, cur.GetNodeId(), cur)
		return
	}
	if old != nil {
		removeFrom(s.tasksByNode, old.GetNodeId(), old.GetId())
		removeFromSlot(s.tasksByService, old)
	}
	if cur != nil {
		addTo(s.tasksByNode, cur.GetNodeId(), cur)
		addToSlot(s.tasksByService, cur)
	}
}

// countTask adds or takes away t's contribution to its service's counts,
// and forgets a service whose tasks are all gone.
func countTask(counts map[string]*TaskCounts, t *skiffpb.Task, sign int) {
	if t.GetServiceId() == "" {
		return
	}
	c := counts[t.GetServiceId()]
	if c == nil {
		c = &TaskCounts{}
		counts[t.GetServiceId()] = c
	}
	c.add(t, sign)
	if *c == (TaskCounts{}) {
		delete(counts, t.GetServiceId())
	}
}

// replaceInSlot puts t in place of the task with its ID in its slot, and
// reports whether that task was there.
func replaceInSlot(idx map[string]map[Slot][]*skiffpb.Task, t *skiffpb.Task) bool {
	list := idx[t.GetServiceId()][SlotOf(t)]
	for i, o := range list {
		if o.GetId() == t.GetId() {
			list[i] = t
			return true
		}
	}
	return false
}

// addToSlot files t under its service and slot. Slots hold a handful of
// tasks (the running one and its history), so a slice is cheaper than a
// map per slot.
func addToSlot(idx map[string]map[Slot][]*skiffpb.Task, t *skiffpb.Task) {
	if t.GetServiceId() == "" {
		return
	}
	slots := idx[t.GetServiceId()]
	if slots == nil {
		slots = make(map[Slot][]*skiffpb.Task)
		idx[t.GetServiceId()] = slots
	}
	slot := SlotOf(t)
	slots[slot] = append(slots[slot], t)
}

// removeFromSlot takes the task with t's ID out of its slot. The slot's
// slice is edited in place: readers only ever get copies of it (ReadTx
// hands out lists it built), and Apply holds the write lock.
func removeFromSlot(idx map[string]map[Slot][]*skiffpb.Task, t *skiffpb.Task) {
	slots := idx[t.GetServiceId()]
	if slots == nil {
		return
	}
	slot := SlotOf(t)
	list := slots[slot]
	for i, o := range list {
		if o.GetId() == t.GetId() {
			last := len(list) - 1
			list[i] = list[last]
			list[last] = nil
			list = list[:last]
			break
		}
	}
	switch {
	case len(list) > 0:
		slots[slot] = list
	case len(slots) > 1:
		delete(slots, slot)
	default:
		delete(idx, t.GetServiceId())
	}
}

func addTo(idx map[string]map[string]*skiffpb.Task, key string, t *skiffpb.Task) {
	if key == "" {
		return
	}
	m := idx[key]
	if m == nil {
		m = make(map[string]*skiffpb.Task)
		idx[key] = m
	}
	m[t.GetId()] = t
}

func removeFrom(idx map[string]map[string]*skiffpb.Task, key, id string) {
	m := idx[key]
	if m == nil {
		return
	}
	delete(m, id)
	if len(m) == 0 {
		delete(idx, key)
	}
}

// taskStatus moves a task's observed state forward. Reports arrive late and
// out of order (an agent replays after reconnecting), so an older state than
// the stored one is dropped rather than rejected.
func (tx *writeTx) taskStatus(u *skiffpb.TaskStatusUpdate) {
	old, ok := tx.s.tasks.get(u.GetTaskId())
	if !ok || u.GetStatus() == nil {
		return
	}
	cur := old.GetStatus()
	if u.GetStatus().GetState() < cur.GetState() {
		return
	}
	if u.GetStatus().GetState() == cur.GetState() && proto.Equal(u.GetStatus(), cur) {
		return
	}
	t := proto.Clone(old).(*skiffpb.Task)
	t.Status = proto.Clone(u.GetStatus()).(*skiffpb.TaskStatus)
	t.Meta.Version = tx.index
	replace(tx, tx.s.tasks, old, t, tx.reindexTask)
}

// taskDesired raises a task's desired state. It never lowers it: once the
// orchestrator decided a task should stop, a late decision cannot revive it.
func (tx *writeTx) taskDesired(u *skiffpb.TaskDesiredUpdate) {
	old, ok := tx.s.tasks.get(u.GetTaskId())
	if !ok || u.GetDesiredState() <= old.GetDesiredState() {
		return
	}
	t := proto.Clone(old).(*skiffpb.Task)
	t.DesiredState = u.GetDesiredState()
	t.Meta.Version = tx.index
	replace(tx, tx.s.tasks, old, t, tx.reindexTask)
}

func (tx *writeTx) nodeStatus(u *skiffpb.NodeStatusUpdate) {
	old, ok := tx.s.nodes.get(u.GetNodeId())
	if !ok || u.GetStatus() == nil {
		return
	}
	if old.GetStatus().GetState() == u.GetStatus().GetState() &&
		old.GetStatus().GetMessage() == u.GetStatus().GetMessage() {
		return
	}
	n := proto.Clone(old).(*skiffpb.Node)
	n.Status = proto.Clone(u.GetStatus()).(*skiffpb.NodeStatus)
	n.Meta.Version = tx.index
	replace(tx, tx.s.nodes, old, n, nil)
}

// taskPlacement binds a still-pending task to a node, or records why it
// could not be placed. A placement for a task that meanwhile left PENDING, or
// is no longer wanted, is dropped: the scheduler decided on a stale view.
func (tx *writeTx) taskPlacement(p *skiffpb.TaskPlacement) {
	old, ok := tx.s.tasks.get(p.GetTaskId())
	if !ok || old.GetNodeId() != "" || old.GetStatus().GetState() > skiffpb.TaskState_TASK_STATE_PENDING ||
		old.GetDesiredState() > skiffpb.TaskState_TASK_STATE_RUNNING {
		return
	}
	if p.GetNodeId() != "" {
		if _, ok := tx.s.nodes.get(p.GetNodeId()); !ok {
			return
		}
	}
	t := proto.Clone(old).(*skiffpb.Task)
	t.NodeId = p.GetNodeId()
	if p.GetStatus() != nil {
		t.Status = proto.Clone(p.GetStatus()).(*skiffpb.TaskStatus)
	}
	t.Ports = nil
	for _, pb := range p.GetPorts() {
		t.Ports = append(t.Ports, proto.Clone(pb).(*skiffpb.PortBinding))
	}
	t.Meta.Version = tx.index
	replace(tx, tx.s.tasks, old, t, tx.reindexTask)
}

// nodeAttachment gives a node an address in a network unless it already has
// one there: the first allocation wins, so two placements racing to attach
// the same node agree on its address.
func (tx *writeTx) nodeAttachment(u *skiffpb.NodeAttachmentUpdate) {
	old, ok := tx.s.nodes.get(u.GetNodeId())
	if !ok || u.GetAttachment() == nil {
		return
	}
	if _, ok := tx.s.networks.get(u.GetAttachment().GetNetworkId()); !ok {
		return
	}
	for _, a := range old.GetAttachments() {
		if a.GetNetworkId() == u.GetAttachment().GetNetworkId() {
			return
		}
	}
	n := proto.Clone(old).(*skiffpb.Node)
	n.Attachments = append(n.Attachments, proto.Clone(u.GetAttachment()).(*skiffpb.NetworkAttachment))
	n.Meta.Version = tx.index
	replace(tx, tx.s.nodes, old, n, nil)
}

// detachNetwork removes every node's address in a deleted network.
func (tx *writeTx) detachNetwork(networkID string) {
	for _, old := range tx.s.nodes.all() {
		keep := make([]*skiffpb.NetworkAttachment, 0, len(old.GetAttachments()))
		for _, a := range old.GetAttachments() {
			if a.GetNetworkId() != networkID {
				keep = append(keep, a)
			}
		}
		if len(keep) == len(old.GetAttachments()) {
			continue
		}
		n := proto.Clone(old).(*skiffpb.Node)
		n.Attachments = keep
		n.Meta.Version = tx.index
		replace(tx, tx.s.nodes, old, n, nil)
	}
}
