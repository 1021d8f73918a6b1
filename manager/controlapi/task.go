package controlapi

import (
	"context"

	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// ListTasks lists tasks of a service, a stack or a node.
func (s *Server) ListTasks(ctx context.Context, req *skiffpb.ListTasksRequest) (*skiffpb.ListTasksResponse, error) {
	resp := &skiffpb.ListTasksResponse{}
	var err error
	s.store.View(func(tx state.ReadTx) {
		var tasks []*skiffpb.Task
		switch {
		case req.GetService() != "":
			var sv *skiffpb.Service
			if sv, err = resolveService(tx, req.GetService()); err != nil {
				return
			}
			tasks = tx.TasksByService(sv.GetId())
		case req.GetStack() != "":
			services := tx.ServicesByStack(req.GetStack())
			if len(services) == 0 && tx.StackByName(req.GetStack()) == nil {
				err = notFound("stack", req.GetStack())
				return
			}
			for _, sv := range services {
				tasks = append(tasks, tx.TasksByService(sv.GetId())...)
			}
		case req.GetNode() != "":
			var n *skiffpb.Node
			if n, err = resolveNode(tx, req.GetNode()); err != nil {
				return
			}
			tasks = tx.TasksByNode(n.GetId())
		default:
			tasks = tx.Tasks()
		}
		for _, t := range tasks {
			if req.GetDesiredRunning() && t.GetDesiredState() != skiffpb.TaskState_TASK_STATE_RUNNING {
				continue
			}
			resp.Tasks = append(resp.Tasks, t)
		}
	})
	return resp, err
}
