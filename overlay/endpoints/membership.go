package endpoints

import (
	"github.com/skiffhq/skiff/gossip"
	"github.com/skiffhq/skiff/overlay"
)

// HandleEvent applies a gossip membership event: pass it as (or call it
// from) gossip.Config.OnEvent. An agent member that joined is NodeJoined,
// one that left or died is NodeLeft; managers' events are ignored, since a
// manager holds no endpoints even when it shares a node's name with its
// agent.
//
// It is safe to call from memberlist's goroutine, which holds memberlist's
// node lock: the table never waits for memberlist while holding its own
// lock (see SetNumNodes), so this cannot deadlock, and it holds the lock
// only to flip the visibility of the node's records.
func (t *Table) HandleEvent(ev gossip.Event) {
	if ev.Member.Role != gossip.RoleAgent {
		return
	}
	switch ev.Kind {
	case gossip.MemberJoined, gossip.MemberUpdated:
		t.NodeJoined(ev.Member.Name)
	case gossip.MemberLeft, gossip.MemberFailed:
		t.NodeLeft(ev.Member.Name)
	}
}

// NodeJoined marks a node as a live member: its records, those already
// kept and those to come, are live endpoints. Records of a node that is not
// a member are kept but hidden, so a record that arrives a moment before
// memberlist reports its node shows up when the node does. When the node is
// coming back after NodeLeft (a restart, or a false alarm), this node also
// broadcasts its own records again, in case the other missed them while it
// was cut off. Joining twice, or this node's own name, does nothing.
func (t *Table) NodeJoined(node string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if node == t.node {
		return
	}
	if _, ok := t.members[node]; ok {
		return
	}
	t.members[node] = struct{}{}
	_, returning := t.left[node]
	delete(t.left, node)
	if !t.visible(node) {
		t.logger.Info("node joined; its endpoints stay hidden while the leader holds it Down", "node", node)
	} else if n := t.showOrigin(node, true); n > 0 || returning {
		t.logger.Info("node joined; its endpoints are live", "node", node, "endpoints", n, "returning", returning)
	}
	if returning {
		t.reannounce()
	}
}

// NodeLeft hides, at once, every record of a node that memberlist declared
// dead or gone. The records stay, so that copies still travelling cannot
// bring them back, and so that they are live again at once if the node
// returns (NodeJoined) after a false alarm; they are dropped once the node
// has been gone for the tombstone TTL. Leaving twice, or this node's own
// name, does nothing.
func (t *Table) NodeLeft(node string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.members[node]; !ok || node == t.node {
		return
	}
	wasVisible := t.visible(node)
	delete(t.members, node)
	t.left[node] = t.now()
	if wasVisible {
		n := t.showOrigin(node, false)
		t.logger.Info("node left; its endpoints are hidden", "node", node, "endpoints", n)
	}
}

// SetDown replaces the set of nodes the leader has judged Down (a session's
// DownNodes). Their records are hidden while they are, whatever memberlist
// says of them: the leader's verdict, from missed heartbeats, usually comes
// before the failure detector's, and it is the one that reschedules their
// tasks elsewhere. This node's own records are never hidden.
func (t *Table) SetDown(names []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	next := make(map[string]struct{}, len(names))
	for _, n := range names {
		if n != t.node {
			next[n] = struct{}{}
		}
	}
	for n := range t.down {
		if _, still := next[n]; still {
			continue
		}
		delete(t.down, n)
		if t.visible(n) {
			c := t.showOrigin(n, true)
			t.logger.Info("leader holds node up again; its endpoints are live", "node", n, "endpoints", c)
		}
	}
	for n := range next {
		if _, already := t.down[n]; already {
			continue
		}
		wasVisible := t.visible(n)
		t.down[n] = struct{}{}
		if wasVisible {
			c := t.showOrigin(n, false)
			t.logger.Info("leader holds node down; its endpoints are hidden", "node", n, "endpoints", c)
		}
	}
}

// showOrigin reports the live records of node appearing (show) or
// disappearing, after its membership changed, and returns how many there
// are.
func (t *Table) showOrigin(node string, show bool) int {
	n := 0
	for _, byIP := range t.nets {
		for _, e := range byIP {
			if e.rec.origin != node || e.rec.deleted {
				continue
			}
			if show {
				t.emit(overlay.Endpoint{}, false, e.rec.ep, true)
			} else {
				t.emit(e.rec.ep, true, overlay.Endpoint{}, false)
			}
			n++
		}
	}
	return n
}

// reannounce queues a broadcast of every record this node wrote. The
// records keep their clocks: hosts that have them ignore them, hosts that
// missed them take them.
func (t *Table) reannounce() {
	for _, byIP := range t.nets {
		for _, e := range byIP {
			if e.rec.origin != t.node {
				continue
			}
			if msg, err := encode(e.rec); err == nil {
				t.queueBroadcast(e.rec.key, msg)
			}
		}
	}
}
