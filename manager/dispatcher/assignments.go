package dispatcher

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
// until ctx ends.
func (d *Dispatcher) streamAssignments(ctx context.Context, s *session) error {
	sent := map[string]sentTask{}
	full := &skiffpb.Assignments{Full: true}
	var attachments []*skiffpb.NetworkAttachment
	ch, cancel := d.store.ViewAndWatch(func(tx state.ReadTx) {
		attachments = tx.Node(s.nodeID).GetAttachments()
		full.NodeAttachments = attachments
		full.NodeNetworks = networksOf(tx, attachments)
		for _, t := range tx.TasksByNode(s.nodeID) {
			if assigned(t) {
				full.Updated = append(full.Updated, assignment(tx, t))
				sent[t.GetId()] = sentTask{desired: t.GetDesiredState()}
			}
		}
	})
	defer cancel()
	if err := s.send(&skiffpb.ManagerMessage{Msg: &skiffpb.ManagerMessage_Assignments{Assignments: full}}); err != nil {
		return err
	}
	for {
		var batches []state.Batch
		select {
		case <-ctx.Done():
			return ctx.Err()
		case b, ok := <-ch:
			if !ok {
				return status.Error(codes.Unavailable, "assignment stream fell behind; reconnect")
			}
			batches = append(batches, b)
		}
		// Coalesce whatever else is already queued into one message.
	drain:
		for {
			select {
			case b, ok := <-ch:
				if !ok {
					return status.Error(codes.Unavailable, "assignment stream fell behind; reconnect")
				}
				batches = append(batches, b)
			default:
				break drain
			}
		}
		msg := d.changes(s.nodeID, sent, batches)
		if latest := nodeAttachments(s.nodeID, batches); latest != nil && !sameAttachments(latest, attachments) {
			attachments = latest
			if msg == nil {
				msg = &skiffpb.Assignments{}
			}
		}
		if msg == nil {
			continue
		}
		// Every message carries the node's whole set of networks: an empty
		// list must read as "none", which an absent one could not.
		msg.NodeAttachments = attachments
		d.store.View(func(tx state.ReadTx) { msg.NodeNetworks = networksOf(tx, attachments) })
		if err := s.send(&skiffpb.ManagerMessage{Msg: &skiffpb.ManagerMessage_Assignments{Assignments: msg}}); err != nil {
			return err
		}
	}
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
