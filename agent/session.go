package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// errSessionEnded: a session that was established has ended; reconnect at
// once rather than backing off.
var errSessionEnded = errors.New("session ended")

// redirectError: the manager is not the leader and named the one that is.
type redirectError struct{ leader string }

func (e *redirectError) Error() string { return "redirected to leader " + e.leader }

// missedAcks is how many heartbeat periods may pass without an answer
// before the agent gives up on the leader. A leader that died without
// closing its connections is noticed this fast, rather than when TCP gives up.
const missedAcks = 3

// statusBatchMax bounds the task statuses one message carries.
const statusBatchMax = 1024

// statusLinger is the least time between two status messages. A change
// that follows a quiet spell goes at once, so a task's RUNNING reaches the
// leader without delay; changes that follow it closely wait for the rest of
// their burst and go together. A task passes through PREPARING and STARTING
// to RUNNING in a few milliseconds when its image is present, and an
// assignment of many tasks starts them all at once: unpaced, each change
// would be a message of its own, and on a leader with thousands of agents
// the messages, not the changes, are the cost.
const statusLinger = 20 * time.Millisecond

// session runs one session with the manager at addr until it ends.
func (a *Agent) session(ctx context.Context, addr string) error {
	conn, err := dial(addr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	client := skiffpb.NewDispatcherClient(conn)
	stream, err := client.Session(ctx)
	if err != nil {
		return fmt.Errorf("open session with %s: %w", addr, err)
	}
	desc, err := a.cfg.Executor.Describe(ctx)
	if err != nil {
		return fmt.Errorf("describe node: %w", err)
	}
	desc.Addr = a.cfg.AdvertiseAddr
	if desc.EngineLabels == nil && len(a.cfg.Labels) > 0 {
		desc.EngineLabels = map[string]string{}
	}
	for k, v := range a.cfg.Labels {
		desc.EngineLabels[k] = v
	}
	a.mu.Lock()
	nodeID := a.nodeID
	a.mu.Unlock()
	if err := stream.Send(&skiffpb.AgentMessage{Msg: &skiffpb.AgentMessage_Register{Register: &skiffpb.Register{
		NodeId: nodeID, Name: a.cfg.Name, Description: desc,
	}}}); err != nil {
		return fmt.Errorf("register with %s: %w", addr, err)
	}
	first, err := stream.Recv()
	if err != nil {
		return fmt.Errorf("register with %s: %w", addr, err)
	}
	if r := first.GetRedirect(); r != nil {
		return &redirectError{leader: r.GetLeaderAddr()}
	}
	acc := first.GetAccepted()
	if acc == nil {
		return fmt.Errorf("register with %s: unexpected first message %T", addr, first.GetMsg())
	}
	a.saveNodeID(acc.GetNodeId())
	a.mu.Lock()
	if len(acc.GetManagers()) > 0 {
		a.managers = acc.GetManagers()
	}
	a.connected = true
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.connected = false
		a.mu.Unlock()
	}()
	a.sessions.Inc()
	a.logger.Info("session established", "leader", addr, "node_id", acc.GetNodeId())

	period := time.Duration(acc.GetHeartbeatPeriod())
	if period <= 0 {
		period = time.Second
	}
	s := &agentSession{a: a, stream: stream, logClient: client, nodeID: acc.GetNodeId()}
	s.period.Store(int64(period))
	s.lastAck.Store(time.Now().UnixNano())

	// The leader may have missed reports while there was no session, or
	// this may be a new leader: tell it everything.
	if err := s.sendStatuses(a.worker.statuses()); err != nil {
		return errSessionEnded
	}
	errc := make(chan error, 2)
	go func() { errc <- s.receive(ctx) }()
	go func() { errc <- s.send(ctx) }()
	err = <-errc
	cancel()
	<-errc
	a.logger.Info("session ended", "leader", addr, "reason", err)
	return errSessionEnded
}

// agentSession is one established session.
type agentSession struct {
	a      *Agent
	stream interface {
		Send(*skiffpb.AgentMessage) error
		Recv() (*skiffpb.ManagerMessage, error)
	}
	logClient skiffpb.DispatcherClient
	// period is the heartbeat period the leader asked for, in nanoseconds:
	// first in SessionAccepted, then in every acknowledgement, since a
	// leader with many nodes stretches it.
	period  atomic.Int64
	nodeID  string
	sendMu  sync.Mutex
	lastAck atomic.Int64 // Unix nanoseconds of the last message from the leader
	// lastSent is when the last message went to the leader, in Unix
	// nanoseconds.
	lastSent atomic.Int64
	logs     sync.Map // subscription ID → cancel func
}

func (s *agentSession) sendMsg(m *skiffpb.AgentMessage) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if err := s.stream.Send(m); err != nil {
		return err
	}
	s.lastSent.Store(time.Now().UnixNano())
	return nil
}

func (s *agentSession) sendStatuses(us []*skiffpb.TaskStatusUpdate) error {
	for len(us) > 0 {
		n := min(len(us), statusBatchMax)
		if err := s.sendMsg(&skiffpb.AgentMessage{Msg: &skiffpb.AgentMessage_Statuses{Statuses: &skiffpb.TaskStatusBatch{Updates: us[:n]}}}); err != nil {
			return err
		}
		us = us[n:]
	}
	return nil
}

// receive handles the leader's messages.
func (s *agentSession) receive(ctx context.Context) error {
	defer s.logs.Range(func(_, cancel any) bool { cancel.(context.CancelFunc)(); return true })
	for {
		m, err := s.stream.Recv()
		if err != nil {
			return err
		}
		s.lastAck.Store(time.Now().UnixNano())
		switch msg := m.GetMsg().(type) {
		case *skiffpb.ManagerMessage_HeartbeatAck:
			if p := msg.HeartbeatAck.GetHeartbeatPeriod(); p > 0 {
				s.period.Store(p)
			}
		case *skiffpb.ManagerMessage_Assignments:
			if s.a.cfg.Overlay != nil {
				s.a.cfg.Overlay.Assigned(msg.Assignments)
			}
			s.a.worker.assign(msg.Assignments)
		case *skiffpb.ManagerMessage_LogSubscription:
			s.subscription(ctx, msg.LogSubscription)
		case *skiffpb.ManagerMessage_DownNodes:
			if s.a.cfg.Overlay != nil {
				s.a.cfg.Overlay.NodesDown(msg.DownNodes.GetNames())
			}
		}
	}
}

// send heartbeats and delivers task statuses as they change.
func (s *agentSession) send(ctx context.Context) error {
	period := time.Duration(s.period.Load())
	tick := time.NewTicker(period)
	defer tick.Stop()
	q := s.a.worker.reports
	pace := rate.NewLimiter(rate.Every(statusLinger), 1)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if p := time.Duration(s.period.Load()); p != period {
				period = p
				tick.Reset(period)
			}
			heard := time.Since(time.Unix(0, s.lastAck.Load()))
			if heard > missedAcks*period {
				return fmt.Errorf("no word from the leader for %s", heard.Round(time.Millisecond))
			}
			// Any message is proof of life, both ways: while statuses go
			// up and assignments come down within a period, a heartbeat
			// and its acknowledgement would only add two messages per
			// period per agent to a leader busy with a rollout.
			if heard < period && time.Since(time.Unix(0, s.lastSent.Load())) < period {
				continue
			}
			if err := s.sendMsg(&skiffpb.AgentMessage{Msg: &skiffpb.AgentMessage_Heartbeat{Heartbeat: &skiffpb.Heartbeat{}}}); err != nil {
				return err
			}
		case <-q.notify:
			if err := pace.Wait(ctx); err != nil {
				return err
			}
			for {
				batch := q.take(statusBatchMax)
				if len(batch) == 0 {
					break
				}
				if err := s.sendStatuses(batch); err != nil {
					q.requeue(batch)
					return err
				}
			}
		}
	}
}
