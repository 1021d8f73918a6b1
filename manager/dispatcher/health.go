package dispatcher

import (
	"context"
	"sync"
	"time"

	"github.com/skiffhq/skiff/gossip"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// Node health, and how its timings fit together. Everything follows from
// one setting, the heartbeat period P (500 ms by default, stretched for
// large clusters, see heartbeatPeriodLocked):
//
//   - An agent heartbeats every P, and gives up on a leader it has not heard
//     from for 3P (agent.missedAcks).
//   - A node with a session is judged after DownGrace (4P) of silence.
//   - A new leader advertises its term by gossip the moment it is elected,
//     and agents go to it at once (one gossip round, ~100 ms, then a
//     session); agents that miss the news find it by asking every manager
//     at once. So a healthy agent has a session within a few hundred
//     milliseconds of the term's start, and every node's clock starts
//     afresh with the term.
//   - Gossip gives the second opinion. A node that is questioned (silent
//     for half its grace, or still without a session P/2 into the term) is
//     probed directly through memberlist. Two unanswered probes condemn a
//     node without a session at once, which is what lets a new leader move
//     the tasks of its predecessor's dead host within about a second of
//     taking office. An answered probe vouches for a silent node for up to
//     one more grace: an agent that is alive and looking for the leader
//     keeps its tasks. A node gossip knows nothing of (it left gracefully
//     to restart, or runs without gossip) is judged by its heartbeats
//     alone.

// condemningProbes is how many probes in a row must go unanswered before
// gossip's silence counts against a node: one lost datagram is not a dead
// host.
const condemningProbes = 2

// maxProbes bounds the probes in flight: after a leader change every node
// is without a session for a moment.
const maxProbes = 64

// health is one term's knowledge of each node's liveness; the dispatcher's
// mu guards it.
type health struct {
	// start is when the term began.
	start time.Time
	// lastSeen is when each node was last heard from, by node ID; zero
	// when gossip declared its agent dead and it has not been heard since.
	lastSeen map[string]time.Time
	// probes are gossip's opinions of the nodes being questioned.
	probes map[string]*probe
	// period is the heartbeat period agents are asked for this term; it
	// only grows within a term (see heartbeatPeriodLocked).
	period time.Duration
	// nodesAtStart is how many nodes the store held when the term began:
	// they will all reconnect, so the period is stretched for them from the
	// start, not only as their sessions come back.
	nodesAtStart int
}

// probe is gossip's opinion of one questioned node.
type probe struct {
	inflight bool
	asked    time.Time
	// answered is set once a probe has returned; opinion is its result.
	answered bool
	opinion  gossip.Opinion
	// silent counts the Silent answers in a row.
	silent int
	// heard is when the node last answered.
	heard time.Time
}

// startTermLocked gives every node of the store a fresh clock, except those
// gossip declared dead before the term.
func (d *Dispatcher) startTermLocked(tx state.ReadTx, dead []string) {
	now := d.now()
	isDead := make(map[string]bool, len(dead))
	for _, name := range dead {
		isDead[name] = true
	}
	d.health = health{start: now, lastSeen: map[string]time.Time{}, probes: map[string]*probe{}, period: d.cfg.HeartbeatPeriod}
	tx.EachNode(func(n *skiffpb.Node) bool {
		d.health.lastSeen[n.GetId()] = now
		if isDead[n.GetName()] {
			d.health.lastSeen[n.GetId()] = time.Time{}
			d.logger.Info("gossip reported node dead before this term; its grace is over", "node", n.GetName())
		}
		d.health.nodesAtStart++
		return true
	})
	d.heartbeatPeriodLocked()
}

// heardLocked records a message from a node: it is alive, and no opinion
// of gossip's is needed.
func (d *Dispatcher) heardLocked(nodeID string) {
	if d.health.lastSeen == nil {
		return
	}
	d.health.lastSeen[nodeID] = d.now()
	delete(d.health.probes, nodeID)
}

// AgentDead tells the dispatcher that gossip's failure detector has
// declared the agent of the node named name dead. It ends the node's grace
// at once: the failure detector is faster than missed heartbeats, and a
// live agent's next heartbeat would make it Ready again anyway.
func (d *Dispatcher) AgentDead(name string) {
	var id string
	d.store.View(func(tx state.ReadTx) {
		if n := tx.NodeByName(name); n != nil {
			id = n.GetId()
		}
	})
	if id == "" {
		return
	}
	d.mu.Lock()
	if d.health.lastSeen != nil {
		d.health.lastSeen[id] = time.Time{}
	}
	d.mu.Unlock()
	d.logger.Info("gossip reports node dead", "node", name)
}

// judgement is what checkNodes decides about one node.
type judgement int

const (
	nodeFine judgement = iota
	// nodeAsk: the node is questioned; ask gossip (again).
	nodeAsk
	nodeDown
)

// questioned names a node to probe or mark down, and why.
type questioned struct {
	id, name string
	why      string
}

// monitorNodes judges the nodes every half period until ctx ends.
func (d *Dispatcher) monitorNodes(ctx context.Context) {
	tick := time.NewTicker(d.cfg.HeartbeatPeriod / 2)
	defer tick.Stop()
	var probes sync.WaitGroup
	defer probes.Wait()
	slots := make(chan struct{}, maxProbes)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-d.recheck:
		}
		down, ask := d.checkNodes()
		if len(down) > 0 {
			d.markDown(ctx, down)
		}
		for _, q := range ask {
			select {
			case slots <- struct{}{}:
			default:
				// Full: the rest are asked on a later tick.
				continue
			}
			probes.Add(1)
			go func() {
				defer probes.Done()
				defer func() { <-slots }()
				d.probe(q)
			}()
		}
	}
}

// checkNodes judges every node that is not Down.
func (d *Dispatcher) checkNodes() (down, ask []questioned) {
	d.store.View(func(tx state.ReadTx) {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.health.lastSeen == nil {
			return
		}
		now := d.now()
		tx.EachNode(func(n *skiffpb.Node) bool {
			// A Down node has been judged; an Unknown one never had an
			// agent (it joined, or it is a manager without one) and runs
			// nothing that could need moving.
			if st := n.GetStatus().GetState(); st == skiffpb.NodeState_NODE_STATE_DOWN || st == skiffpb.NodeState_NODE_STATE_UNKNOWN {
				delete(d.health.probes, n.GetId())
				return true
			}
			j, why := d.judgeLocked(n.GetId(), now)
			q := questioned{id: n.GetId(), name: n.GetName(), why: why}
			switch j {
			case nodeDown:
				down = append(down, q)
			case nodeAsk:
				p := d.health.probes[q.id]
				if !p.inflight && now.Sub(p.asked) >= d.cfg.HeartbeatPeriod/2 {
					p.inflight, p.asked = true, now
					ask = append(ask, q)
				}
			}
			return true
		})
	})
	return down, ask
}

// judgeLocked decides about one node that is not Down.
func (d *Dispatcher) judgeLocked(id string, now time.Time) (judgement, string) {
	h := &d.health
	seen, ok := h.lastSeen[id]
	if !ok {
		// A node registered during the term: its clock starts now.
		h.lastSeen[id] = now
		return nodeFine, ""
	}
	if seen.IsZero() {
		return nodeDown, "gossip declared its agent dead"
	}
	grace := d.graceLocked()
	silence := now.Sub(seen)
	_, inSession := d.sessions[id]
	if silence <= grace/2 && (inSession || now.Sub(h.start) <= h.period/2) {
		delete(h.probes, id)
		return nodeFine, ""
	}
	p := h.probes[id]
	if p == nil {
		p = &probe{}
		h.probes[id] = p
	}
	switch {
	case !p.answered || p.opinion == gossip.Unknown:
		// Without an opinion (none yet, or gossip has no say) the
		// heartbeats alone decide.
		if silence > grace {
			return nodeDown, "missed its heartbeats"
		}
	case p.opinion == gossip.Silent:
		if p.silent >= condemningProbes && (silence > grace || !inSession) {
			return nodeDown, "missed its heartbeats, and does not answer gossip's probes"
		}
	case p.opinion == gossip.Heard:
		if silence > 2*grace {
			return nodeDown, "missed its heartbeats for twice the grace, though gossip still hears it"
		}
	}
	return nodeAsk, ""
}

// probe asks gossip about a node and records the answer, unless the node
// was heard from (or the term ended) meanwhile. A silent node is asked
// again at once, until it has been silent condemningProbes times in a
// row, and the verdict is taken without waiting for the next tick: each of
// those waits would be added to the time a dead host's tasks wait for a
// new home.
func (d *Dispatcher) probe(q questioned) {
	defer func() {
		select {
		case d.recheck <- struct{}{}:
		default:
		}
	}()
	for {
		op := d.cfg.Membership.ProbeAgent(q.name)
		d.mu.Lock()
		p := d.health.probes[q.id]
		if p == nil || !p.inflight {
			d.mu.Unlock()
			return
		}
		p.answered, p.opinion = true, op
		switch op {
		case gossip.Heard:
			p.silent, p.heard = 0, d.now()
		case gossip.Silent:
			p.silent++
		default:
			p.silent = 0
		}
		again := op == gossip.Silent && p.silent < condemningProbes
		if !again {
			p.inflight = false
		}
		d.mu.Unlock()
		if op != gossip.Unknown {
			d.logger.Debug("gossip's opinion of a questioned node", "node", q.name, "opinion", op.String())
		}
		if !again {
			return
		}
	}
}

// heartbeatPeriodLocked returns the period agents are asked to heartbeat
// at: the configured one, stretched so that all sessions together send at
// most MaxHeartbeatRate heartbeats a second. Every heartbeat costs the
// leader a receive and an acknowledgement; at 10,000 nodes and 500 ms they
// would take most of a core, and starve Raft and the agents' own sessions.
//
// The period grows as sessions arrive but never shrinks within a term: an
// agent learns a new period only from its next acknowledgement, and a
// grace shortened before it heard would mark a healthy node down. It counts
// the nodes the store held at the start of the term too: after a change of
// leader they all come back at once, and the grace must already be theirs
// while they reconnect, or the new leader would mark them all down.
func (d *Dispatcher) heartbeatPeriodLocked() time.Duration {
	agents := max(len(d.sessions), d.health.nodesAtStart)
	need := time.Duration(float64(agents) / d.cfg.MaxHeartbeatRate * float64(time.Second))
	d.health.period = max(d.health.period, d.cfg.HeartbeatPeriod, need)
	return d.health.period
}

// graceLocked is how long a node may stay silent now: DownGrace, stretched
// as the heartbeat period is.
func (d *Dispatcher) graceLocked() time.Duration {
	period := max(d.health.period, d.cfg.HeartbeatPeriod)
	return time.Duration(float64(d.cfg.DownGrace) * float64(period) / float64(d.cfg.HeartbeatPeriod))
}

// markDownBatch bounds the node_status actions of one command: when a
// switch fails, a whole rack of nodes goes silent at once, and one write
// per node would take seconds to commit.
const markDownBatch = 1024

// markDown marks the nodes down, in as few Raft commands as it can.
func (d *Dispatcher) markDown(ctx context.Context, nodes []questioned) {
	now := d.now().UnixNano()
	for len(nodes) > 0 {
		n := min(len(nodes), markDownBatch)
		cmd := &skiffpb.Command{Actions: make([]*skiffpb.StoreAction, 0, n)}
		for _, q := range nodes[:n] {
			d.logger.Warn("marking node down", "node", q.name, "node_id", q.id, "reason", q.why)
			// Docker's wording, whatever the evidence was.
			cmd.Actions = append(cmd.Actions, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_NodeStatus{NodeStatus: &skiffpb.NodeStatusUpdate{
				NodeId: q.id, Status: &skiffpb.NodeStatus{State: skiffpb.NodeState_NODE_STATE_DOWN, Message: "heartbeat failure", Timestamp: now},
			}}})
		}
		if _, err := d.cfg.Raft.Propose(ctx, cmd); err != nil && ctx.Err() == nil {
			d.logger.Error("mark nodes down", "nodes", n, "error", err)
		}
		nodes = nodes[n:]
	}
}

// noMembership stands for a dispatcher without gossip or Raft membership
// (a test's, or a simulation's): nodes are judged by heartbeats alone.
type noMembership struct{}

func (noMembership) LeaderAPIAddr() string             { return "" }
func (noMembership) ManagerAPIAddrs() []string         { return nil }
func (noMembership) IsManager(string) bool             { return false }
func (noMembership) DeadAgents(time.Duration) []string { return nil }
func (noMembership) ProbeAgent(string) gossip.Opinion  { return gossip.Unknown }
