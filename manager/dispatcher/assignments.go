package dispatcher

import (
	"bytes"
	"context"
	"slices"
	"time"

	"golang.org/x/time/rate"

	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// assigned reports whether a node must still hear about a task: while the
// task should run, or while it should stop but has not been seen stopped.
// Once a task is finished and meant to stay so, the agent forgets it and
// removes its container.
func assigned(t *skiffpb.Task) bool {
	if t.GetDesiredState() <= skiffpb.TaskState_TASK_STATE_RUNNING {
		return true
	}
	return t.GetStatus().GetState() < skiffpb.TaskState_TASK_STATE_COMPLETE
}

// sentTask is what a session last told the agent about a task; the agent
// needs to hear again only when the orchestrator's intent changes, not when
// the agent's own status report comes back through the store.
type sentTask struct {
	desired skiffpb.TaskState
}

// streamAssignments sends the node's full task set, then the changes to it,
// until ctx ends. The changes come from the dispatcher's hub, which watches
// the store once for every session.
func (d *Dispatcher) streamAssignments(ctx context.Context, s *session) error {
	// Subscribe before reading the view: a change applied in between shows
	// in both, and is dropped from the feed by its index.
	f := d.hub.subscribe(s.nodeID)
	defer d.hub.unsubscribe(f)
	// The keyring goes first: an agent that was away while the gossip key
	// was rotated can gossip again before its assignments are built.
	clusterChanged := d.hub.clusterWatch()
	sentKeys, err := d.sendGossipKeys(s, nil)
	if err != nil {
		return err
	}
	sent := map[string]sentTask{}
	full := &skiffpb.Assignments{Full: true}
	var attachments []*skiffpb.NetworkAttachment
	var seen uint64
	if err := d.startBuilding(ctx); err != nil {
		return err
	}
	d.store.View(func(tx state.ReadTx) {
		seen = tx.Index()
		attachments = tx.Node(s.nodeID).GetAttachments()
		full.NodeAttachments = attachments
		full.NodeNetworks = networksOf(tx, attachments)
		tx.EachTaskOfNode(s.nodeID, func(t *skiffpb.Task) bool {
			if assigned(t) {
				full.Updated = append(full.Updated, assignment(tx, t))
				sent[t.GetId()] = sentTask{desired: t.GetDesiredState()}
			}
			return true
		})
	})
	d.doneBuilding()
	if err := s.send(&skiffpb.ManagerMessage{Msg: &skiffpb.ManagerMessage_Assignments{Assignments: full}}); err != nil {
		return err
	}
	sentDown, downChanged := d.hub.downNodes()
	if err := sendDown(s, sentDown); err != nil {
		return err
	}
	// A change of the Down set after a quiet spell goes at once; changes
	// that follow it closely go together, so that many nodes failing
	// together (a rack, a partition) cost each agent a message a second,
	// not one per verdict.
	downPace := rate.NewLimiter(rate.Every(downNodesInterval), 1)
	downTimer := time.NewTimer(downNodesInterval)
	downTimer.Stop()
	defer downTimer.Stop()
	downPending := false // the timer will send the latest set
	flushDown := func() error {
		latest, _ := d.hub.downNodes()
		if slices.Equal(latest, sentDown) {
			return nil
		}
		sentDown = latest
		return sendDown(s, latest)
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-downChanged:
			_, downChanged = d.hub.downNodes()
			if downPending {
				continue
			}
			if delay := downPace.Reserve().Delay(); delay > 0 {
				downPending = true
				downTimer.Reset(delay)
				continue
			}
			if err := flushDown(); err != nil {
				return err
			}
			continue
		case <-downTimer.C:
			downPending = false
			if err := flushDown(); err != nil {
				return err
			}
			continue
		case <-clusterChanged:
			clusterChanged = d.hub.clusterWatch()
			if sentKeys, err = d.sendGossipKeys(s, sentKeys); err != nil {
				return err
			}
			continue
		case <-f.notify:
		}
		if err := d.startBuilding(ctx); err != nil {
			return err
		}
		var msg *skiffpb.Assignments
		msg, attachments = d.nextAssignments(s.nodeID, f, sent, attachments, &seen)
		d.doneBuilding()
		if msg == nil {
			continue
		}
		if err := s.send(&skiffpb.ManagerMessage{Msg: &skiffpb.ManagerMessage_Assignments{Assignments: msg}}); err != nil {
			return err
		}
	}
}

// sendGossipKeys sends the agent the cluster's gossip keyring unless it
// is the one sent already, and returns the keyring the agent has. A
// cluster without keys sends nothing: its pool does not encrypt.
func (d *Dispatcher) sendGossipKeys(s *session, sent [][]byte) ([][]byte, error) {
	var keys [][]byte
	d.store.View(func(tx state.ReadTx) { keys = tx.Cluster().GetGossipKeys() })
	if len(keys) == 0 || slices.EqualFunc(keys, sent, bytes.Equal) {
		return sent, nil
	}
	if err := s.send(&skiffpb.ManagerMessage{Msg: &skiffpb.ManagerMessage_GossipKeys{GossipKeys: &skiffpb.GossipKeys{Keys: keys}}}); err != nil {
		return sent, err
	}
	return keys, nil
}

// downNodesInterval is the least time between two DownNodes messages to one
// agent.
const downNodesInterval = time.Second

// sendDown tells the agent which nodes are Down.
func sendDown(s *session, names []string) error {
	return s.send(&skiffpb.ManagerMessage{Msg: &skiffpb.ManagerMessage_DownNodes{DownNodes: &skiffpb.DownNodes{Names: names}}})
}

// startBuilding waits for a turn to build an assignments message, and
// doneBuilding ends it. A commit of thousands of placements wakes thousands
// of sessions at once; were they all to run, the leader's run queue would
// hold thousands of goroutines, and Raft's heartbeats, queued behind them,
// would be late enough for the followers to start an election. A few turns
// per CPU keep the CPUs busy and the queue short.
func (d *Dispatcher) startBuilding(ctx context.Context) error {
	select {
	case d.building <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *Dispatcher) doneBuilding() { <-d.building }

// nextAssignments turns what the feed collected into the message to send,
// or nil when nothing concerns the agent, and returns the node's addresses
// as of the message. seen is the store index the session is up to date
// with; a resync moves it.
func (d *Dispatcher) nextAssignments(nodeID string, f *feed, sent map[string]sentTask, attachments []*skiffpb.NetworkAttachment, seen *uint64) (*skiffpb.Assignments, []*skiffpb.NetworkAttachment) {
	tasks, node, resync := f.take(*seen)
	var batch state.Batch
	if resync {
		batch, *seen = d.resyncBatch(nodeID, sent)
	} else {
		batch = feedBatch(tasks, node)
	}
	batches := []state.Batch{batch}
	msg := d.changes(nodeID, sent, batches)
	if latest := nodeAttachments(nodeID, batches); latest != nil && !sameAttachments(latest, attachments) {
		attachments = latest
		if msg == nil {
			msg = &skiffpb.Assignments{}
		}
	}
	if msg == nil {
		return nil, attachments
	}
	// Every message carries the node's whole set of networks: an empty
	// list must read as "none", which an absent one could not.
	msg.NodeAttachments = attachments
	d.store.View(func(tx state.ReadTx) { msg.NodeNetworks = networksOf(tx, attachments) })
	return msg, attachments
}

// feedBatch turns what a feed collected into one batch of events, the form
// changes and nodeAttachments read.
func feedBatch(tasks []taskChange, node *skiffpb.Node) state.Batch {
	var b state.Batch
	for _, c := range tasks {
		b.Events = append(b.Events, state.Event{Object: c.task, Deleted: c.deleted})
		b.Index = max(b.Index, c.index)
	}
	if node != nil {
		b.Events = append(b.Events, state.Event{Object: node})
	}
	return b
}

// resyncBatch describes the node's tasks as they are now, as events, after
// the hub lost track of changes: every task of the node as an update, and
// every task the agent was sent that is gone as a delete. It returns the
// index the batch reflects.
func (d *Dispatcher) resyncBatch(nodeID string, sent map[string]sentTask) (state.Batch, uint64) {
	var b state.Batch
	d.store.View(func(tx state.ReadTx) {
		b.Index = tx.Index()
		tx.EachTaskOfNode(nodeID, func(t *skiffpb.Task) bool {
			b.Events = append(b.Events, state.Event{Object: t})
			return true
		})
		for id := range sent {
			if t := tx.Task(id); t == nil || t.GetNodeId() != nodeID {
				b.Events = append(b.Events, state.Event{Object: &skiffpb.Task{Id: id, NodeId: nodeID}, Deleted: true})
			}
		}
		if n := tx.Node(nodeID); n != nil {
			b.Events = append(b.Events, state.Event{Object: n})
		}
	})
	return b, b.Index
}

// changes turns store events into the node's assignment changes, or nil
// when nothing concerns the node.
func (d *Dispatcher) changes(nodeID string, sent map[string]sentTask, batches []state.Batch) *skiffpb.Assignments {
	touched := map[string]*skiffpb.Task{}
	removed := map[string]bool{}
	for _, b := range batches {
		for _, ev := range b.Events {
			t, ok := ev.Object.(*skiffpb.Task)
			if !ok || t.GetNodeId() != nodeID {
				continue
			}
			if ev.Deleted {
				delete(touched, t.GetId())
				removed[t.GetId()] = true
				continue
			}
			touched[t.GetId()] = t
			delete(removed, t.GetId())
		}
	}
	out := &skiffpb.Assignments{}
	if len(touched) > 0 {
		d.store.View(func(tx state.ReadTx) {
			for id, t := range touched {
				prev, wasSent := sent[id]
				switch {
				case !assigned(t):
					if wasSent {
						out.Removed = append(out.Removed, id)
						delete(sent, id)
					}
				case !wasSent || prev.desired != t.GetDesiredState():
					out.Updated = append(out.Updated, assignment(tx, t))
					sent[id] = sentTask{desired: t.GetDesiredState()}
				}
			}
		})
	}
	for id := range removed {
		if _, ok := sent[id]; ok {
			out.Removed = append(out.Removed, id)
			delete(sent, id)
		}
	}
	if len(out.Updated) == 0 && len(out.Removed) == 0 {
		return nil
	}
	return out
}

// assignment bundles a task with the exact spec it runs and its networks.
func assignment(tx state.ReadTx, t *skiffpb.Task) *skiffpb.Assignment {
	a := &skiffpb.Assignment{Task: t, Spec: tx.SpecOf(t)}
	for _, na := range t.GetNetworks() {
		if n := tx.Network(na.GetNetworkId()); n != nil {
			a.Networks = append(a.Networks, n)
		}
	}
	return a
}

// nodeAttachments returns the node's addresses as of the last event about
// it in batches, or nil if none concerns it.
func nodeAttachments(nodeID string, batches []state.Batch) []*skiffpb.NetworkAttachment {
	var latest []*skiffpb.NetworkAttachment
	for _, b := range batches {
		for _, ev := range b.Events {
			if n, ok := ev.Object.(*skiffpb.Node); ok && n.GetId() == nodeID && !ev.Deleted {
				latest = n.GetAttachments()
				if latest == nil {
					latest = []*skiffpb.NetworkAttachment{}
				}
			}
		}
	}
	return latest
}

func sameAttachments(a, b []*skiffpb.NetworkAttachment) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].GetNetworkId() != b[i].GetNetworkId() || a[i].GetAddress() != b[i].GetAddress() {
			return false
		}
	}
	return true
}

func networksOf(tx state.ReadTx, as []*skiffpb.NetworkAttachment) []*skiffpb.Network {
	var out []*skiffpb.Network
	for _, a := range as {
		if n := tx.Network(a.GetNetworkId()); n != nil {
			out = append(out, n)
		}
	}
	return out
}
