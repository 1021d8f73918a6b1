// Package dispatcher holds the agents' sessions on the leader. Through a
// session a node registers, heartbeats and reports task status; down it come
// the node's assignments, first in full and then as changes, and requests
// for container logs.
//
// Heartbeats never touch Raft. The leader keeps the time each node was last
// heard from in memory and writes only a change of judgement (Ready, Down)
// to the log, so a thousand idle nodes cost nothing in disk writes. A new
// leader starts every node's clock afresh, and takes gossip's opinion of a
// node before it judges one (see health.go).
package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/skiffhq/skiff/ca"
	"github.com/skiffhq/skiff/gossip"
	"github.com/skiffhq/skiff/manager/nodeca"
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

// Membership is what the dispatcher learns from outside its sessions: the
// managers, and gossip's view of the agents. The manager implements it over
// Raft's configuration and the gossip pool.
type Membership interface {
	// LeaderAPIAddr is the leader's API address, for redirects; "" while
	// there is none.
	LeaderAPIAddr() string
	// ManagerAPIAddrs are every live manager's API address, for agents'
	// failover.
	ManagerAPIAddrs() []string
	// IsManager reports whether a node name belongs to a Raft member.
	IsManager(name string) bool
	// DeadAgents names the nodes whose agents gossip's failure detector
	// declared dead within the last within, and has not heard from since.
	// A new term starts their grace as already over, where every other
	// node's starts afresh: a leader that took office after the verdict
	// (its own host's death, say) would otherwise give a dead host a whole
	// grace more.
	DeadAgents(within time.Duration) []string
	// ProbeAgent is gossip's second opinion on a node the leader has not
	// heard from: whether its agent answers a direct probe now. It may
	// take memberlist's probe timeout.
	ProbeAgent(name string) gossip.Opinion
}

// Config configures a Dispatcher.
type Config struct {
	Store *state.Store
	Raft  Raft
	// Membership, when set, is gossip's and Raft's view of the members;
	// without it the dispatcher judges nodes by their heartbeats alone.
	Membership Membership
	// HeartbeatPeriod is how often agents heartbeat; DownGrace is how long
	// a node may stay silent before it is marked Down. Everything else
	// about node health is derived from them (see health.go).
	HeartbeatPeriod time.Duration
	DownGrace       time.Duration
	// MaxHeartbeatRate bounds the heartbeats per second the leader asks
	// for: with more sessions than HeartbeatPeriod allows at that rate, the
	// period (and the grace with it) is stretched. Zero means 2,000/s,
	// which keeps the 500 ms default up to 1,000 nodes.
	MaxHeartbeatRate float64
	Logger           *slog.Logger
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
	running context.Context
	// serving is closed when a term starts serving sessions, and replaced
	// when it ends: an agent that finds this manager leading in Raft a
	// moment before its term has started waits for it, instead of being
	// redirected to where it already is.
	serving  chan struct{}
	sessions map[string]*session // by node ID
	statuses *statusBuffer
	// health is what the term knows of each node's liveness.
	health health
	// recheck asks the node monitor to judge again now: a probe has
	// answered.
	recheck chan struct{}

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
	if cfg.Membership == nil {
		cfg.Membership = noMembership{}
	}
	d := &Dispatcher{
		cfg:      cfg,
		store:    cfg.Store,
		logger:   cfg.Logger.With("component", "dispatcher"),
		now:      time.Now,
		sessions: map[string]*session{},
		serving:  make(chan struct{}),
		recheck:  make(chan struct{}, 1),
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
	// Only fresh verdicts: an older one was acted on by the previous
	// leader, or has been overtaken by the agent's return (see
	// membership.DeadAgents), and a stale one cost a healthy host its
	// tasks in CI's failover test.
	dead := d.cfg.Membership.DeadAgents(2 * d.cfg.DownGrace)
	d.mu.Lock()
	// The hub watches before any session of this term can subscribe to it.
	changes, stopWatch := d.store.ViewAndWatch(func(tx state.ReadTx) {
		d.startTermLocked(tx, dead)
		d.hub.resetDown(tx)
	})
	d.running = ctx
	d.statuses = statuses
	close(d.serving)
	d.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); d.hub.run(ctx, changes, stopWatch) }()
	go func() { defer wg.Done(); d.monitorNodes(ctx) }()
	go func() { defer wg.Done(); d.batchStatuses(ctx, statuses) }()
	<-ctx.Done()

	d.mu.Lock()
	d.running = nil
	d.serving = make(chan struct{})
	for id, s := range d.sessions {
		s.cancel()
		delete(d.sessions, id)
	}
	d.mu.Unlock()
	wg.Wait()
}

// Sessions is how many agents hold a session with this manager now; zero
// while it does not lead. A new leader's count climbing back to the number
// of nodes is the agents finding it.
func (d *Dispatcher) Sessions() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.sessions)
}

// termWait bounds how long a session waits for the term of a manager that
// has just won an election to start serving (its barrier: applying what
// the previous leader committed).
const termWait = 2 * time.Second

// termFor returns the running term's context, waiting up to termWait for
// it when this manager leads in Raft but its term has not started yet; nil
// when it does not lead.
func (d *Dispatcher) termFor(ctx context.Context) context.Context {
	d.mu.Lock()
	running, serving := d.running, d.serving
	d.mu.Unlock()
	if running != nil || !d.cfg.Raft.IsLeader() {
		return running
	}
	t := time.NewTimer(termWait)
	defer t.Stop()
	select {
	case <-serving:
	case <-t.C:
	case <-ctx.Done():
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.running
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
	running := d.termFor(stream.Context())
	if running == nil || !d.cfg.Raft.IsLeader() {
		leader := d.cfg.Membership.LeaderAPIAddr()
		return stream.Send(&skiffpb.ManagerMessage{Msg: &skiffpb.ManagerMessage_Redirect{Redirect: &skiffpb.Redirect{LeaderAddr: leader}}})
	}
	id, err := ca.PeerIdentity(stream.Context())
	if err != nil {
		return status.Error(codes.Unauthenticated, "a session needs the node's certificate")
	}
	node, err := d.register(stream.Context(), id, reg)
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
	d.heardLocked(s.nodeID)
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

	managers := d.cfg.Membership.ManagerAPIAddrs()
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

// register marks the certificate's node Ready with the description its
// agent sent. The node is the one the certificate names: it was recorded
// when the node joined, and the name the agent sends must be its own.
func (d *Dispatcher) register(ctx context.Context, id ca.Identity, reg *skiffpb.Register) (*skiffpb.Node, error) {
	if err := nodeca.Admitted(d.store, id); err != nil {
		return nil, err
	}
	now := d.now().UnixNano()
	var old *skiffpb.Node
	d.store.View(func(tx state.ReadTx) { old = tx.Node(id.NodeID) })
	if old == nil {
		return nil, status.Errorf(codes.PermissionDenied, "node %s was removed from the cluster; join again with a token", id.NodeID)
	}
	if reg.GetName() != old.GetName() {
		return nil, status.Errorf(codes.PermissionDenied,
			"this certificate belongs to node %q (%s); it may not register as %q", old.GetName(), id.NodeID, reg.GetName())
	}
	if old.GetStatus().GetState() == skiffpb.NodeState_NODE_STATE_READY &&
		proto.Equal(old.GetDescription(), reg.GetDescription()) {
		// A reconnect (a new leader, a lost connection) of a node that is
		// Ready as it was: nothing to write. A thousand agents finding a new
		// leader at once then cost it no Raft commit each.
		return old, nil
	}
	ready := &skiffpb.NodeStatus{State: skiffpb.NodeState_NODE_STATE_READY, Timestamp: now}
	next := proto.Clone(old).(*skiffpb.Node)
	next.Description = reg.GetDescription()
	next.Status = ready
	next.Meta.UpdatedAt = now
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
		d.heardLocked(s.nodeID)
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
