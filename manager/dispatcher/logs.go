package dispatcher

import (
	"context"
	"errors"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// logBroker routes container logs from agents to the clients that asked for
// them. A client's request becomes one subscription, sent to every node that
// runs one of the tasks; each node answers on its own PublishLogs stream.
type logBroker struct {
	d    *Dispatcher
	mu   sync.Mutex
	subs map[string]*logSub
}

type logSub struct {
	id       string
	messages chan *skiffpb.LogMessage
	// pending are the nodes that have not closed their part yet.
	pending map[string]bool
	done    chan struct{}
}

func newLogBroker(d *Dispatcher) *logBroker {
	return &logBroker{d: d, subs: map[string]*logSub{}}
}

// SubscribeLogs implements controlapi.LogSource.
func (d *Dispatcher) SubscribeLogs(ctx context.Context, tasks []*skiffpb.Task, follow bool, tail int64, fn func(*skiffpb.LogMessage) error) error {
	return d.logs.subscribe(ctx, tasks, follow, tail, fn)
}

func (b *logBroker) subscribe(ctx context.Context, tasks []*skiffpb.Task, follow bool, tail int64, fn func(*skiffpb.LogMessage) error) error {
	byNode := map[string][]string{}
	for _, t := range tasks {
		byNode[t.GetNodeId()] = append(byNode[t.GetNodeId()], t.GetId())
	}
	sub := &logSub{id: state.NewID(), messages: make(chan *skiffpb.LogMessage, 1024), pending: map[string]bool{}, done: make(chan struct{})}

	b.d.mu.Lock()
	var targets []*session
	for nodeID := range byNode {
		if s := b.d.sessions[nodeID]; s != nil {
			targets = append(targets, s)
			sub.pending[nodeID] = true
		}
	}
	b.d.mu.Unlock()
	if len(targets) == 0 {
		return nil
	}
	b.mu.Lock()
	b.subs[sub.id] = sub
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.subs, sub.id)
		b.mu.Unlock()
		for _, s := range targets {
			// Tell the agents to stop, so that a follow ends on their side
			// too; a send error means the session is gone anyway.
			_ = s.send(&skiffpb.ManagerMessage{Msg: &skiffpb.ManagerMessage_LogSubscription{
				LogSubscription: &skiffpb.LogSubscription{Id: sub.id, Close: true},
			}})
		}
	}()
	for _, s := range targets {
		if err := s.send(&skiffpb.ManagerMessage{Msg: &skiffpb.ManagerMessage_LogSubscription{LogSubscription: &skiffpb.LogSubscription{
			Id: sub.id, TaskIds: byNode[s.nodeID], Follow: follow, Tail: tail,
		}}}); err != nil {
			b.nodeDone(sub.id, s.nodeID)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m := <-sub.messages:
			if err := fn(m); err != nil {
				return err
			}
		case <-sub.done:
			// Drain what arrived before the last node closed.
			for {
				select {
				case m := <-sub.messages:
					if err := fn(m); err != nil {
						return err
					}
				default:
					return nil
				}
			}
		}
	}
}

// nodeDone records that a node finished its part of a subscription.
func (b *logBroker) nodeDone(subID, nodeID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	sub := b.subs[subID]
	if sub == nil || !sub.pending[nodeID] {
		return
	}
	delete(sub.pending, nodeID)
	if len(sub.pending) == 0 {
		close(sub.done)
	}
}

// nodeGone ends a node's part of every subscription when its session ends.
func (b *logBroker) nodeGone(nodeID string) {
	b.mu.Lock()
	ids := make([]string, 0, len(b.subs))
	for id := range b.subs {
		ids = append(ids, id)
	}
	b.mu.Unlock()
	for _, id := range ids {
		b.nodeDone(id, nodeID)
	}
}

// PublishLogs receives one node's log lines for subscriptions.
func (d *Dispatcher) PublishLogs(stream grpc.ClientStreamingServer[skiffpb.PublishLogsMessage, skiffpb.PublishLogsResponse]) error {
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&skiffpb.PublishLogsResponse{})
		}
		if err != nil {
			return err
		}
		d.logs.mu.Lock()
		sub := d.logs.subs[msg.GetSubscriptionId()]
		d.logs.mu.Unlock()
		if sub == nil {
			return status.Error(codes.NotFound, "log subscription is closed")
		}
		for _, m := range msg.GetMessages() {
			select {
			case sub.messages <- m:
			case <-sub.done:
			case <-stream.Context().Done():
				return stream.Context().Err()
			}
		}
		if msg.GetClose() {
			d.logs.nodeDone(msg.GetSubscriptionId(), msg.GetNodeId())
		}
	}
}
