// Package dispatcher holds the agents' sessions on the leader. Through a
// session a node registers, heartbeats and reports task status; down it come
// the node's assignments, first in full and then as changes, and requests
// for container logs.
//
// Heartbeats never touch Raft. The leader keeps the time each node was last
// heard from in memory and writes only a change of judgement (Ready, Down)
// to the log, so a thousand idle nodes cost nothing in disk writes. A new
// leader starts every node's clock afresh, giving agents a full grace period
// to find it.
package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// Raft is what the dispatcher needs of the local Raft member.
type Raft interface {
	Propose(ctx context.Context, cmd *skiffpb.Command) (uint64, error)
	// ProposeAsync enqueues cmd and returns a function that waits for its
	// commit; commands enqueued in turn commit in that order.
	ProposeAsync(ctx context.Context, cmd *skiffpb.Command) func() (uint64, error)
	IsLeader() bool
}

// Config configures a Dispatcher.
type Config struct {
	Store *state.Store
	Raft  Raft
	// LeaderAPIAddr returns the leader's API address, for redirects.
	LeaderAPIAddr func() string
	// ManagerAPIAddrs returns every manager's API address, for agents'
	// failover.
	ManagerAPIAddrs func() []string
	// IsManager reports whether a node name belongs to a Raft member.
	IsManager func(name string) bool
	// HeartbeatPeriod is how often agents heartbeat; DownGrace is how long
	// a node may stay silent before it is marked Down.
	HeartbeatPeriod time.Duration
	DownGrace       time.Duration
	// MaxHeartbeatRate bounds the heartbeats per second the leader asks
	// for: with more sessions than HeartbeatPeriod allows at that rate, the
	// period (and the grace with it) is stretched. Zero means 2,000/s,
	// which keeps the 500 ms default up to 1,000 nodes.
	MaxHeartbeatRate float64
	// GossipDead, when set, names the nodes whose agents the failure
	// detector has declared dead and not seen since. A new term starts
	// their grace as already over, where every other node's starts
	// afresh: a leader that took office after the verdict (its own host's
	// death, say) would otherwise give a dead host a whole grace more.
	GossipDead func() []string
	Logger     *slog.Logger
}

// Dispatcher implements skiffpb.DispatcherServer.
type Dispatcher struct {
	skiffpb.UnimplementedDispatcherServer
	cfg    Config
	store  *state.Store
	logger *slog.Logger
	now    func() time.Time

	mu sync.Mutex
	// running is the leader term's context; nil while not leading.
	running  context.Context
	sessions map[string]*session // by node ID
	lastSeen map[string]time.Time
	statuses *statusBuffer
	// period is the heartbeat period agents are asked for this term; it
	// only grows within a term (see heartbeatPeriodLocked).
	period time.Duration
	// nodesAtStart is how many nodes the store held when the term began:
	// they will all reconnect, so the period is stretched for them from the
	// start, not only as their sessions come back.
	nodesAtStart int

	logs *logBroker
	// hub routes the store's changes to the sessions' feeds.
	hub *hub
	// building holds a token for each session building an assignments
	// message (see streamAssignments).
	building chan struct{}
}

// New returns a Dispatcher that accepts sessions once Run is called.
func New(cfg Config) *Dispatcher {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HeartbeatPeriod == 0 {
		cfg.HeartbeatPeriod = 500 * time.Millisecond
	}
	if cfg.DownGrace == 0 {
		cfg.DownGrace = 4 * cfg.HeartbeatPeriod
	}
	if cfg.MaxHeartbeatRate <= 0 {
		cfg.MaxHeartbeatRate = 2000
	}
	if cfg.IsManager == nil {
		cfg.IsManager = func(string) bool { return false }
	}
	d := &Dispatcher{
		cfg:      cfg,
		store:    cfg.Store,
		logger:   cfg.Logger.With("component", "dispatcher"),
		now:      time.Now,
		sessions: map[string]*session{},
		lastSeen: map[string]time.Time{},
	}
	d.logs = newLogBroker(d)
	d.hub = newHub(cfg.Store)
	d.building = make(chan struct{}, max(4, 4*runtime.GOMAXPROCS(0)))
	return d
}

// Run serves sessions for one leader term: it returns when ctx ends, after
// closing every session so the agents go find the next leader.
func (d *Dispatcher) Run(ctx context.Context) {
	statuses := newStatusBuffer()
	d.mu.Lock()
	now := d.now()
	// The hub watches before any session of this term can subscribe to it.
	var gossipDead []string
	if d.cfg.GossipDead != nil {
		gossipDead = d.cfg.GossipDead()
	}
	nodes := 0
	changes, stopWatch := d.store.ViewAndWatch(func(tx state.ReadTx) {
		tx.EachNode(func(n *skiffpb.Node) bool {
			d.lastSeen[n.GetId()] = now
			if slices.Contains(gossipDead, n.GetName()) {
				d.lastSeen[n.GetId()] = time.Time{}
				d.logger.Info("gossip reported node dead before this term; its grace is over", "node", n.GetName())
			}
			nodes++
			return true
		})
		d.hub.resetDown(tx)
	})
	d.running = ctx
	d.statuses = statuses
	d.period = d.cfg.HeartbeatPeriod
	d.nodesAtStart = nodes
	d.heartbeatPeriodLocked()
	d.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); d.hub.run(ctx, changes, stopWatch) }()
	go func() { defer wg.Done(); d.monitorNodes(ctx) }()
	go func() { defer wg.Done(); d.batchStatuses(ctx, statuses) }()
	<-ctx.Done()

	d.mu.Lock()
	d.running = nil
	for id, s := range d.sessions {
		s.cancel()
		delete(d.sessions, id)
	}
	d.mu.Unlock()
	wg.Wait()
}

// NodeHeard tells the dispatcher that gossip has declared the node named
// name dead (alive = false) or alive. A dead verdict ends the node's grace at
// once: the failure detector is faster than missed heartbeats, and a live
// agent's next heartbeat would make it Ready again anyway.
func (d *Dispatcher) NodeHeard(name string, alive bool) {
	if alive {
		return
	}
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
	d.lastSeen[id] = time.Time{}
	d.mu.Unlock()
	d.logger.Info("gossip reports node dead", "node", name)
}

// Session implements the agent's session stream.
func (d *Dispatcher) Session(stream grpc.BidiStreamingServer[skiffpb.AgentMessage, skiffpb.ManagerMessage]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	reg := first.GetRegister()
	if reg == nil {
		return status.Error(codes.InvalidArgument, "a session must start with Register")
	}
	d.mu.Lock()
	running := d.running
	d.mu.Unlock()
	if running == nil || !d.cfg.Raft.IsLeader() {
		leader := ""
		if d.cfg.LeaderAPIAddr != nil {
			leader = d.cfg.LeaderAPIAddr()
		}
		return stream.Send(&skiffpb.ManagerMessage{Msg: &skiffpb.ManagerMessage_Redirect{Redirect: &skiffpb.Redirect{LeaderAddr: leader}}})
	}
	node, err := d.register(stream.Context(), reg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stop := context.AfterFunc(running, cancel)
	defer stop()

	s := &session{nodeID: node.GetId(), name: node.GetName(), id: state.NewID(), stream: stream, cancel: cancel}
	// Nothing may write to the stream once the handler returns; the log
	// broker and the receiver can still hold the session then.
	defer s.close()
	d.mu.Lock()
	if old := d.sessions[s.nodeID]; old != nil {
		old.cancel()
	}
	d.sessions[s.nodeID] = s
	d.lastSeen[s.nodeID] = d.now()
	period := d.heartbeatPeriodLocked()
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		if d.sessions[s.nodeID] == s {
			delete(d.sessions, s.nodeID)
		}
		d.mu.Unlock()
		d.logs.nodeGone(s.nodeID)
	}()
	d.logger.Info("session started", "node", node.GetName(), "node_id", node.GetId())

	var managers []string
	if d.cfg.ManagerAPIAddrs != nil {
		managers = d.cfg.ManagerAPIAddrs()
	}
	if err := s.send(&skiffpb.ManagerMessage{Msg: &skiffpb.ManagerMessage_Accepted{Accepted: &skiffpb.SessionAccepted{
		NodeId: node.GetId(), SessionId: s.id, HeartbeatPeriod: int64(period), Managers: managers,
	}}}); err != nil {
		return err
	}

	// The receiver ends the session when it fails. Its Recv cannot be
	// interrupted, though: only the end of the stream, when this handler
	// returns, releases it. So once the session is over (the term ended, the
	// agent went away) the handler returns without waiting for the next
	// message from the agent; waiting would keep a deposed leader's session
	// open, acknowledging heartbeats, until the agent next spoke.
	errc := make(chan error, 1)
	go func() {
		err := d.receive(ctx, s)
		cancel()
		errc <- err
	}()
	sendErr := d.streamAssignments(ctx, s)
	cancel()
	var recvErr error
	select {
	case recvErr = <-errc:
	default:
	}
	if sendErr != nil && !errors.Is(sendErr, context.Canceled) {
		return sendErr
	}
	if recvErr != nil && !errors.Is(recvErr, context.Canceled) {
		return recvErr
	}
	if running.Err() != nil {
		return status.Error(codes.Unavailable, "this manager is no longer the leader; reconnect")
	}
	return nil
}

// register creates the node on its first session, or refreshes its
// description and marks it Ready.
func (d *Dispatcher) register(ctx context.Context, reg *skiffpb.Register) (*skiffpb.Node, error) {
	if reg.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "register: the node needs a name")
	}
	now := d.now().UnixNano()
	var old *skiffpb.Node
	d.store.View(func(tx state.ReadTx) {
		if reg.GetNodeId() != "" {
			if n := tx.Node(reg.GetNodeId()); n != nil && n.GetName() == reg.GetName() {
				old = n
				return
			}
		}
		old = tx.NodeByName(reg.GetName())
	})
	if old != nil && old.GetStatus().GetState() == skiffpb.NodeState_NODE_STATE_READY &&
		proto.Equal(old.GetDescription(), reg.GetDescription()) {
		// A reconnect (a new leader, a lost connection) of a node that is
		// Ready as it was: nothing to write. A thousand agents finding a new
		// leader at once then cost it no Raft commit each.
		return old, nil
	}
	ready := &skiffpb.NodeStatus{State: skiffpb.NodeState_NODE_STATE_READY, Timestamp: now}
	var next *skiffpb.Node
	if old == nil {
		role := skiffpb.NodeRole_NODE_ROLE_WORKER
		if d.cfg.IsManager(reg.GetName()) {
			role = skiffpb.NodeRole_NODE_ROLE_MANAGER
		}
		next = &skiffpb.Node{
			Id: state.NewID(), Meta: &skiffpb.Meta{CreatedAt: now, UpdatedAt: now}, Name: reg.GetName(),
			Spec: &skiffpb.NodeSpec{}, Role: role, Description: reg.GetDescription(), Status: ready,
		}
	} else {
		next = proto.Clone(old).(*skiffpb.Node)
		next.Description = reg.GetDescription()
		next.Status = ready
		next.Meta.UpdatedAt = now
	}
	if _, err := d.cfg.Raft.Propose(ctx, &skiffpb.Command{Actions: []*skiffpb.StoreAction{
		{Action: &skiffpb.StoreAction_PutNode{PutNode: next}},
	}}); err != nil {
		if errors.Is(err, state.ErrVersionConflict) {
			return nil, status.Errorf(codes.Aborted, "register node %s: %v; retry", reg.GetName(), err)
		}
		return nil, status.Errorf(codes.Unavailable, "register node %s: %v", reg.GetName(), err)
	}
	return next, nil
}

// receive handles what the agent sends until the stream ends.
func (d *Dispatcher) receive(ctx context.Context, s *session) error {
	for {
		msg, err := s.stream.Recv()
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			// The session is over: a heartbeat answered now would tell the
			// agent that a manager which no longer leads still does.
			return err
		}
		d.mu.Lock()
		d.lastSeen[s.nodeID] = d.now()
		statuses := d.statuses
		period := d.heartbeatPeriodLocked()
		d.mu.Unlock()
		// Any message shows the node alive, not only a heartbeat: an agent
		// busy reporting statuses skips its heartbeats.
		if err := d.markReady(ctx, s); err != nil {
			return err
		}
		switch m := msg.GetMsg().(type) {
		case *skiffpb.AgentMessage_Heartbeat:
			// If another message is on its way to the agent, that message
			// is the acknowledgement: waiting for it to get through (an
			// agent slow to read holds it up) would stop this loop from
			// reading the agent's next messages, and a node that does talk
			// would be marked down for silence.
			if err := s.trySend(&skiffpb.ManagerMessage{Msg: &skiffpb.ManagerMessage_HeartbeatAck{
				HeartbeatAck: &skiffpb.HeartbeatAck{HeartbeatPeriod: int64(period)},
			}}); err != nil {
				return err
			}
		case *skiffpb.AgentMessage_Statuses:
			statuses.put(d.ownUpdates(s.nodeID, m.Statuses.GetUpdates()))
		}
	}
}

// markReady brings a node that was judged Down back to Ready when it turns
// out to be alive after all (a gossip false alarm, a healed partition).
func (d *Dispatcher) markReady(ctx context.Context, s *session) error {
	var st skiffpb.NodeState
	d.store.View(func(tx state.ReadTx) { st = tx.Node(s.nodeID).GetStatus().GetState() })
	if st == skiffpb.NodeState_NODE_STATE_READY {
		return nil
	}
	return d.setNodeState(ctx, s.nodeID, skiffpb.NodeState_NODE_STATE_READY, "")
}

func (d *Dispatcher) setNodeState(ctx context.Context, nodeID string, st skiffpb.NodeState, msg string) error {
	_, err := d.cfg.Raft.Propose(ctx, &skiffpb.Command{Actions: []*skiffpb.StoreAction{{
		Action: &skiffpb.StoreAction_NodeStatus{NodeStatus: &skiffpb.NodeStatusUpdate{
			NodeId: nodeID, Status: &skiffpb.NodeStatus{State: st, Message: msg, Timestamp: d.now().UnixNano()},
		}},
	}}})
	if err != nil {
		return fmt.Errorf("set node %s %s: %w", nodeID, st, err)
	}
	return nil
}

// ownUpdates keeps the reports about tasks of nodeID, guarding against an
// agent reporting on another node's task. It reads the store once for the
// whole message, which may carry a thousand reports.
func (d *Dispatcher) ownUpdates(nodeID string, us []*skiffpb.TaskStatusUpdate) []*skiffpb.TaskStatusUpdate {
	out := make([]*skiffpb.TaskStatusUpdate, 0, len(us))
	d.store.View(func(tx state.ReadTx) {
		for _, u := range us {
			if tx.Task(u.GetTaskId()).GetNodeId() == nodeID {
				out = append(out, u)
			}
		}
	})
	return out
}

// monitorNodes marks nodes Down once they have been silent for the grace.
func (d *Dispatcher) monitorNodes(ctx context.Context) {
	tick := time.NewTicker(d.cfg.HeartbeatPeriod / 2)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := d.now()
		var down []string
		var grace time.Duration
		d.store.View(func(tx state.ReadTx) {
			d.mu.Lock()
			defer d.mu.Unlock()
			grace = d.graceLocked()
			tx.EachNode(func(n *skiffpb.Node) bool {
				if n.GetStatus().GetState() == skiffpb.NodeState_NODE_STATE_DOWN {
					return true
				}
				seen, ok := d.lastSeen[n.GetId()]
				if !ok {
					d.lastSeen[n.GetId()] = now
					return true
				}
				if now.Sub(seen) > grace {
					down = append(down, n.GetId())
				}
				return true
			})
		})
		if len(down) > 0 {
			d.markDown(ctx, down, grace)
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
	agents := max(len(d.sessions), d.nodesAtStart)
	need := time.Duration(float64(agents) / d.cfg.MaxHeartbeatRate * float64(time.Second))
	d.period = max(d.period, d.cfg.HeartbeatPeriod, need)
	return d.period
}

// graceLocked is how long a node may stay silent now: DownGrace, stretched
// as the heartbeat period is.
func (d *Dispatcher) graceLocked() time.Duration {
	period := max(d.period, d.cfg.HeartbeatPeriod)
	return time.Duration(float64(d.cfg.DownGrace) * float64(period) / float64(d.cfg.HeartbeatPeriod))
}

// markDownBatch bounds the node_status actions of one command: when a
// switch fails, a whole rack of nodes goes silent at once, and one write
// per node would take seconds to commit.
const markDownBatch = 1024

// markDown marks the nodes down, in as few Raft commands as it can.
func (d *Dispatcher) markDown(ctx context.Context, ids []string, grace time.Duration) {
	now := d.now().UnixNano()
	for len(ids) > 0 {
		n := min(len(ids), markDownBatch)
		cmd := &skiffpb.Command{Actions: make([]*skiffpb.StoreAction, 0, n)}
		for _, id := range ids[:n] {
			d.logger.Warn("node missed its heartbeats; marking it down", "node_id", id, "grace", grace)
			cmd.Actions = append(cmd.Actions, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_NodeStatus{NodeStatus: &skiffpb.NodeStatusUpdate{
				NodeId: id, Status: &skiffpb.NodeStatus{State: skiffpb.NodeState_NODE_STATE_DOWN, Message: "heartbeat failure", Timestamp: now},
			}}})
		}
		if _, err := d.cfg.Raft.Propose(ctx, cmd); err != nil && ctx.Err() == nil {
			d.logger.Error("mark nodes down", "nodes", n, "error", err)
		}
		ids = ids[n:]
	}
}

// session is one agent's stream.
type session struct {
	nodeID string
	name   string
	id     string
	stream grpc.BidiStreamingServer[skiffpb.AgentMessage, skiffpb.ManagerMessage]
	cancel context.CancelFunc

	sendMu sync.Mutex
	// closed is set, under sendMu, when the handler returns: the stream
	// must not be written to after that, and the receiver may outlive it.
	closed bool
}

// errSessionClosed is what sending on a session that ended returns.
var errSessionClosed = status.Error(codes.Unavailable, "the session has ended")

// send is safe for concurrent use: assignments and log subscriptions share
// the stream.
func (s *session) send(m *skiffpb.ManagerMessage) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.closed {
		return errSessionClosed
	}
	return s.stream.Send(m)
}

// trySend sends m unless another send is in progress, in which case it
// does nothing.
func (s *session) trySend(m *skiffpb.ManagerMessage) error {
	if !s.sendMu.TryLock() {
		return nil
	}
	defer s.sendMu.Unlock()
	if s.closed {
		return errSessionClosed
	}
	return s.stream.Send(m)
}

// close waits for a send in progress and makes later sends fail.
func (s *session) close() {
	s.sendMu.Lock()
	s.closed = true
	s.sendMu.Unlock()
}
