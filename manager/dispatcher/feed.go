package dispatcher

import (
	"context"
	"maps"
	"slices"
	"sync"

	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// hub follows the store once for every session and routes each change to
// the feed of the node it concerns. Without it, every session would watch
// the whole store and scan every event for its own node: with a thousand
// agents a change would be looked at a thousand times, and the sessions'
// watch buffers alone would hold hundreds of megabytes.
type hub struct {
	store *state.Store

	mu    sync.Mutex
	feeds map[string]map[*feed]struct{} // by node ID

	// down names the nodes judged Down, by node ID, for every session's
	// DownNodes; downNames is the same as a sorted list, shared and never
	// modified, and downChanged is closed (and replaced) when it changes.
	downMu      sync.Mutex
	down        map[string]string
	downNames   []string
	downChanged chan struct{}

	// clusterChanged is closed (and replaced) when the cluster object may
	// have changed: sessions then compare its gossip keys with those they
	// sent. The cluster object changes a few times a year, so every
	// session looking at it then costs nothing worth keeping a copy for.
	clusterMu      sync.Mutex
	clusterChanged chan struct{}
}

func newHub(store *state.Store) *hub {
	return &hub{
		store: store, feeds: map[string]map[*feed]struct{}{}, down: map[string]string{}, downChanged: make(chan struct{}),
		clusterChanged: make(chan struct{}),
	}
}

// clusterWatch returns a channel closed at the next change of the cluster
// object. A session takes it before it reads the cluster, so that no
// change falls between the two.
func (h *hub) clusterWatch() <-chan struct{} {
	h.clusterMu.Lock()
	defer h.clusterMu.Unlock()
	return h.clusterChanged
}

func (h *hub) noteCluster() {
	h.clusterMu.Lock()
	defer h.clusterMu.Unlock()
	close(h.clusterChanged)
	h.clusterChanged = make(chan struct{})
}

// downNodes returns the names of the nodes judged Down, sorted (the caller
// must not modify them), and a channel closed at the next change.
func (h *hub) downNodes() ([]string, <-chan struct{}) {
	h.downMu.Lock()
	defer h.downMu.Unlock()
	return h.downNames, h.downChanged
}

// noteNodes takes node events (the node's latest version, or its removal)
// into the Down set; with reset, the set is rebuilt from them alone.
func (h *hub) noteNodes(events []state.Event, reset bool) {
	h.downMu.Lock()
	defer h.downMu.Unlock()
	changed := false
	if reset && len(h.down) > 0 {
		h.down = map[string]string{}
		changed = true
	}
	for _, ev := range events {
		n := ev.Object.(*skiffpb.Node)
		name, was := h.down[n.GetId()]
		isDown := !ev.Deleted && n.GetStatus().GetState() == skiffpb.NodeState_NODE_STATE_DOWN
		switch {
		case isDown && (!was || name != n.GetName()):
			h.down[n.GetId()] = n.GetName()
			changed = true
		case !isDown && was:
			delete(h.down, n.GetId())
			changed = true
		}
	}
	if !changed {
		return
	}
	names := slices.Sorted(maps.Values(h.down))
	h.downNames = names
	close(h.downChanged)
	h.downChanged = make(chan struct{})
}

// resetDown rebuilds the Down set from a view of the store.
func (h *hub) resetDown(tx state.ReadTx) {
	var nodes []state.Event
	tx.EachNode(func(n *skiffpb.Node) bool {
		nodes = append(nodes, state.Event{Object: n})
		return true
	})
	h.noteNodes(nodes, true)
}

// feed is what one session has yet to hear about its node: the latest
// version of each task that changed, and of the node itself. It holds at
// most one entry per task, so a session that is slow to send costs memory
// bounded by its node's tasks, never a growing queue, and never falls
// behind the way a store watch does.
type feed struct {
	nodeID string
	// notify has room for one signal: "there is something to take".
	notify chan struct{}

	mu    sync.Mutex
	tasks map[string]taskChange
	node  *skiffpb.Node
	// nodeIndex is the store index of node's event.
	nodeIndex uint64
	// resync says events were lost: the session must re-read its node.
	resync bool
}

// taskChange is the latest event about one task.
type taskChange struct {
	task    *skiffpb.Task
	deleted bool
	index   uint64
}

// subscribe starts collecting changes for nodeID. The caller reads its view
// of the store after subscribing, and ignores changes at or below that
// view's index, so nothing falls between the view and the feed.
func (h *hub) subscribe(nodeID string) *feed {
	f := &feed{nodeID: nodeID, notify: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	fs := h.feeds[nodeID]
	if fs == nil {
		fs = map[*feed]struct{}{}
		h.feeds[nodeID] = fs
	}
	fs[f] = struct{}{}
	return f
}

func (h *hub) unsubscribe(f *feed) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if fs := h.feeds[f.nodeID]; fs != nil {
		delete(fs, f)
		if len(fs) == 0 {
			delete(h.feeds, f.nodeID)
		}
	}
}

// run routes the store's changes until ctx ends. ch is a watch the caller
// opened before any session could subscribe, so no session misses a change
// made after it took its view. When the watch is cut off (the hub fell
// behind), the hub watches again and tells every feed to resync from the
// store.
func (h *hub) run(ctx context.Context, ch <-chan state.Batch, cancel func()) {
	h.store.FollowWatch(ctx, ch, cancel, state.Follower{View: h.reread, Apply: h.route})
}

// reread starts over after the watch was cut off. It runs under the
// store's read lock, before the new watch is in place, and that is soon
// enough to tell the feeds: a session that resyncs reads the store, which
// no command can change until the new watch is in place.
func (h *hub) reread(tx state.ReadTx) {
	h.resetDown(tx)
	h.resyncAll()
	h.noteCluster()
}

// route hands one batch's events to the feeds of the nodes they concern.
func (h *hub) route(b state.Batch) {
	byNode := map[string][]state.Event{}
	var nodes []state.Event
	cluster := false
	for _, ev := range b.Events {
		var nodeID string
		switch o := ev.Object.(type) {
		case *skiffpb.Task:
			nodeID = o.GetNodeId()
		case *skiffpb.Node:
			nodeID = o.GetId()
			nodes = append(nodes, ev)
		case *skiffpb.Cluster:
			cluster = true
		}
		if nodeID != "" {
			byNode[nodeID] = append(byNode[nodeID], ev)
		}
	}
	if len(nodes) > 0 {
		h.noteNodes(nodes, false)
	}
	if cluster {
		h.noteCluster()
	}
	if len(byNode) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for nodeID, events := range byNode {
		for f := range h.feeds[nodeID] {
			f.add(b.Index, events)
		}
	}
}

func (h *hub) resyncAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, fs := range h.feeds {
		for f := range fs {
			f.mu.Lock()
			f.resync = true
			f.tasks = nil
			f.node = nil
			f.mu.Unlock()
			f.signal()
		}
	}
}

func (f *feed) add(index uint64, events []state.Event) {
	f.mu.Lock()
	for _, ev := range events {
		switch o := ev.Object.(type) {
		case *skiffpb.Task:
			if f.tasks == nil {
				f.tasks = map[string]taskChange{}
			}
			f.tasks[o.GetId()] = taskChange{task: o, deleted: ev.Deleted, index: index}
		case *skiffpb.Node:
			if !ev.Deleted {
				f.node, f.nodeIndex = o, index
			}
		}
	}
	f.mu.Unlock()
	f.signal()
}

func (f *feed) signal() {
	select {
	case f.notify <- struct{}{}:
	default:
	}
}

// take returns and clears what the feed collected, leaving out changes at
// or below after: the session's view already holds them.
func (f *feed) take(after uint64) (tasks []taskChange, node *skiffpb.Node, resync bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.tasks {
		if c.index > after {
			tasks = append(tasks, c)
		}
	}
	// A fresh map rather than a cleared one: an idle session should not
	// keep the buckets of its busiest moment.
	f.tasks = nil
	if f.node != nil && f.nodeIndex > after {
		node = f.node
	}
	f.node = nil
	resync, f.resync = f.resync, false
	return tasks, node, resync
}
