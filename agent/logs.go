package agent

import (
	"context"
	"sync"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// subscription starts or stops publishing logs for a leader's request.
func (s *agentSession) subscription(ctx context.Context, sub *skiffpb.LogSubscription) {
	if sub.GetClose() {
		if cancel, ok := s.logs.LoadAndDelete(sub.GetId()); ok {
			cancel.(context.CancelFunc)()
		}
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	s.logs.Store(sub.GetId(), cancel)
	go func() {
		defer cancel()
		defer s.logs.Delete(sub.GetId())
		if err := s.publish(ctx, sub); err != nil && ctx.Err() == nil {
			s.a.logger.Warn("publish logs", "subscription", sub.GetId(), "error", err)
		}
	}()
}

// publish streams the subscribed tasks' logs to the leader, one goroutine
// per task so that following several containers interleaves their lines.
func (s *agentSession) publish(ctx context.Context, sub *skiffpb.LogSubscription) error {
	stream, err := s.logClient.PublishLogs(ctx)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	send := func(m *skiffpb.PublishLogsMessage) error {
		mu.Lock()
		defer mu.Unlock()
		return stream.Send(m)
	}
	var wg sync.WaitGroup
	for _, id := range sub.GetTaskIds() {
		meta := s.a.worker.logMeta(id)
		if meta == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.a.cfg.Executor.Logs(ctx, id, sub.GetFollow(), sub.GetTail(), func(m *skiffpb.LogMessage) error {
				m.TaskId, m.NodeId, m.ServiceName, m.Slot = id, s.nodeID, meta.GetServiceName(), meta.GetSlot()
				return send(&skiffpb.PublishLogsMessage{SubscriptionId: sub.GetId(), NodeId: s.nodeID, Messages: []*skiffpb.LogMessage{m}})
			})
			if err != nil && ctx.Err() == nil {
				s.a.logger.Debug("task logs", "task", id, "error", err)
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	if err := send(&skiffpb.PublishLogsMessage{SubscriptionId: sub.GetId(), NodeId: s.nodeID, Close: true}); err != nil {
		return err
	}
	_, err = stream.CloseAndRecv()
	return err
}
