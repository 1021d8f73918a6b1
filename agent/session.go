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

// errLeaderSilent ends a session whose leader stopped answering.
var errLeaderSilent = errors.New("no word from the leader")

// run runs an established session until it ends, and says why.
func (a *Agent) run(ctx context.Context, est *established) error {
	defer est.close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The stream lives in the registration's context: ending this session
	// must end the stream too, or a Recv from a leader that vanished
	// without a word would hold the session open until TCP gives up.
	stop := context.AfterFunc(ctx, est.cancel)
	defer stop()
	acc := est.acc
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
	a.logger.Info("session established", "leader", est.addr, "node_id", acc.GetNodeId())

	period := time.Duration(acc.GetHeartbeatPeriod())
	if period <= 0 {
		period = time.Second
	}
	s := &agentSession{a: a, stream: est.stream, logClient: est.client, nodeID: acc.GetNodeId()}
	s.period.Store(int64(period))
	s.lastAck.Store(time.Now().UnixNano())

	// The leader may have missed reports while there was no session, or
	// this may be a new leader: tell it everything.
	if err := s.sendStatuses(a.worker.statuses()); err != nil {
		a.logger.Info("session ended", "leader", est.addr, "reason", err)
		return err
	}
	errc := make(chan error, 3)
	go func() { errc <- s.receive(ctx) }()
	go func() { errc <- s.send(ctx) }()
	go func() { errc <- a.watchLeader(ctx, est.addr) }()
	err := <-errc
	cancel()
	<-errc
	<-errc
	a.logger.Info("session ended", "leader", est.addr, "reason", err)
	return err
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
			s.a.overlay.Assigned(msg.Assignments)
			s.a.worker.assign(msg.Assignments)
		case *skiffpb.ManagerMessage_LogSubscription:
			s.subscription(ctx, msg.LogSubscription)
		case *skiffpb.ManagerMessage_DownNodes:
			s.a.overlay.NodesDown(msg.DownNodes.GetNames())
		case *skiffpb.ManagerMessage_GossipKeys:
			s.a.setGossipKeys(msg.GossipKeys.GetKeys())
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
				return fmt.Errorf("%w for %s", errLeaderSilent, heard.Round(time.Millisecond))
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

// setGossipKeys hands the leader's gossip keyring to the Keyring. A keyring
// that cannot be applied is logged, not fatal to the session: the tasks
// need the session more than the pool needs the key, and the next session
// brings the keyring again.
func (a *Agent) setGossipKeys(keys [][]byte) {
	if a.cfg.Keyring == nil {
		return
	}
	if err := a.cfg.Keyring.SetKeys(keys); err != nil {
		a.logger.Error("apply the cluster's gossip keys", "error", err)
		return
	}
	a.logger.Debug("gossip keys set", "keys", len(keys))
}
