package controlapi

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// Watch streams the matching objects as they are now, then every change to
// them. A progress display needs nothing else: it keeps the latest version
// of each object it was sent.
func (s *Server) Watch(req *skiffpb.WatchRequest, stream grpc.ServerStreamingServer[skiffpb.WatchEvent]) error {
	f := newWatchFilter(req)
	var initial []*skiffpb.WatchEvent
	ch, cancel := s.store.ViewAndWatch(func(tx state.ReadTx) {
		if req.GetService() != "" {
			sv, err := resolveService(tx, req.GetService())
			if err == nil {
				f.serviceID = sv.GetId()
			}
		}
		idx := tx.Index()
		if f.kinds[skiffpb.WatchKind_WATCH_KIND_NODE] {
			for _, n := range tx.Nodes() {
				initial = append(initial, &skiffpb.WatchEvent{Index: idx, Object: &skiffpb.WatchEvent_Node{Node: n}})
			}
		}
		if f.kinds[skiffpb.WatchKind_WATCH_KIND_SERVICE] {
			for _, sv := range tx.Services() {
				if f.matchService(sv) {
					initial = append(initial, &skiffpb.WatchEvent{Index: idx, Object: &skiffpb.WatchEvent_Service{Service: withStatus(tx, sv)}})
				}
			}
		}
		if f.kinds[skiffpb.WatchKind_WATCH_KIND_TASK] {
			for _, t := range tx.Tasks() {
				if f.matchTask(t) {
					initial = append(initial, &skiffpb.WatchEvent{Index: idx, Object: &skiffpb.WatchEvent_Task{Task: t}})
				}
			}
		}
	})
	defer cancel()
	for _, ev := range initial {
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
	for {
		select {
		case <-stream.Context().Done():
			return stream.Context().Err()
		case b, ok := <-ch:
			if !ok {
				return status.Error(codes.Unavailable, "watch fell behind the cluster's changes; watch again")
			}
			for _, ev := range b.Events {
				out := f.event(b.Index, ev)
				if out == nil {
					continue
				}
				if err := stream.Send(out); err != nil {
					return err
				}
			}
		}
	}
}

// watchFilter selects the events a watch asked for.
type watchFilter struct {
	kinds     map[skiffpb.WatchKind]bool
	stack     string
	service   string
	serviceID string
}

func newWatchFilter(req *skiffpb.WatchRequest) *watchFilter {
	f := &watchFilter{kinds: map[skiffpb.WatchKind]bool{}, stack: req.GetStack(), service: req.GetService()}
	for _, k := range req.GetKinds() {
		f.kinds[k] = true
	}
	if len(f.kinds) == 0 {
		f.kinds[skiffpb.WatchKind_WATCH_KIND_TASK] = true
		f.kinds[skiffpb.WatchKind_WATCH_KIND_SERVICE] = true
		f.kinds[skiffpb.WatchKind_WATCH_KIND_NODE] = true
	}
	return f
}

func (f *watchFilter) matchService(sv *skiffpb.Service) bool {
	if f.stack != "" && sv.GetSpec().GetStack() != f.stack {
		return false
	}
	if f.service != "" && sv.GetId() != f.serviceID && sv.GetSpec().GetName() != f.service {
		return false
	}
	return true
}

func (f *watchFilter) matchTask(t *skiffpb.Task) bool {
	if f.stack != "" && t.GetStack() != f.stack {
		return false
	}
	if f.service != "" && t.GetServiceId() != f.serviceID && t.GetServiceName() != f.service {
		return false
	}
	return true
}

func (f *watchFilter) event(index uint64, ev state.Event) *skiffpb.WatchEvent {
	out := &skiffpb.WatchEvent{Index: index}
	if ev.Deleted {
		out.Action = skiffpb.WatchAction_WATCH_ACTION_DELETE
	}
	switch o := ev.Object.(type) {
	case *skiffpb.Task:
		if !f.kinds[skiffpb.WatchKind_WATCH_KIND_TASK] || !f.matchTask(o) {
			return nil
		}
		out.Object = &skiffpb.WatchEvent_Task{Task: o}
	case *skiffpb.Service:
		if !f.kinds[skiffpb.WatchKind_WATCH_KIND_SERVICE] || !f.matchService(o) {
			return nil
		}
		out.Object = &skiffpb.WatchEvent_Service{Service: o}
	case *skiffpb.Node:
		if !f.kinds[skiffpb.WatchKind_WATCH_KIND_NODE] {
			return nil
		}
		out.Object = &skiffpb.WatchEvent_Node{Node: o}
	default:
		return nil
	}
	return out
}

// ServiceLogs streams a service's container logs from the agents. With
// follow, tasks that start later are followed too, from their first line,
// as `docker service logs -f` does.
func (s *Server) ServiceLogs(req *skiffpb.ServiceLogsRequest, stream grpc.ServerStreamingServer[skiffpb.LogMessage]) error {
	if s.cfg.Logs == nil {
		return status.Error(codes.Unimplemented, "this manager cannot gather logs")
	}
	var (
		serviceID string
		tasks     []*skiffpb.Task
		err       error
	)
	hasLogs := func(t *skiffpb.Task) bool { return t.GetNodeId() != "" && t.GetStatus().GetContainerId() != "" }
	ch, cancel := s.store.ViewAndWatch(func(tx state.ReadTx) {
		var sv *skiffpb.Service
		if sv, err = resolveService(tx, req.GetService()); err != nil {
			return
		}
		serviceID = sv.GetId()
		for _, t := range tx.TasksByService(serviceID) {
			if hasLogs(t) {
				tasks = append(tasks, t)
			}
		}
	})
	defer cancel()
	if err != nil {
		return err
	}
	if !req.GetFollow() {
		return s.cfg.Logs.SubscribeLogs(stream.Context(), tasks, false, req.GetTail(), stream.Send)
	}

	ctx, stop := context.WithCancel(stream.Context())
	var wg sync.WaitGroup
	// Stop the followers, then wait for them: none may send after return.
	defer func() { stop(); wg.Wait() }()
	var sendMu sync.Mutex
	send := func(m *skiffpb.LogMessage) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(m)
	}
	errc := make(chan error, 1)
	follow := func(ts []*skiffpb.Task, tail int64) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.cfg.Logs.SubscribeLogs(ctx, ts, true, tail, send); err != nil && ctx.Err() == nil {
				select {
				case errc <- err:
				default:
				}
			}
		}()
	}
	seen := map[string]bool{}
	for _, t := range tasks {
		seen[t.GetId()] = true
	}
	follow(tasks, req.GetTail())
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			return err
		case b, ok := <-ch:
			if !ok {
				return status.Error(codes.Unavailable, "log follow fell behind the cluster's changes; run it again")
			}
			var fresh []*skiffpb.Task
			for _, ev := range b.Events {
				t, ok := ev.Object.(*skiffpb.Task)
				if !ok || ev.Deleted || t.GetServiceId() != serviceID || seen[t.GetId()] || !hasLogs(t) {
					continue
				}
				seen[t.GetId()] = true
				fresh = append(fresh, t)
			}
			if len(fresh) > 0 {
				follow(fresh, -1)
			}
		}
	}
}
