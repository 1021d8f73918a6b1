package controlapi

import (
	"context"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
	"github.com/skiffhq/skiff/scheduler"
)

// ListServices lists services, with their running and desired task counts.
func (s *Server) ListServices(ctx context.Context, req *skiffpb.ListServicesRequest) (*skiffpb.ListServicesResponse, error) {
	resp := &skiffpb.ListServicesResponse{}
	s.store.View(func(tx state.ReadTx) {
		list := tx.Services()
		if req.GetStack() != "" {
			list = tx.ServicesByStack(req.GetStack())
		}
		for _, sv := range list {
			resp.Services = append(resp.Services, withStatus(tx, sv))
		}
	})
	if req.GetStack() != "" && len(resp.Services) == 0 {
		return nil, notFound("stack", req.GetStack())
	}
	return resp, nil
}

// GetService returns one service by name, ID or ID prefix.
func (s *Server) GetService(ctx context.Context, req *skiffpb.GetServiceRequest) (*skiffpb.Service, error) {
	var sv *skiffpb.Service
	var err error
	s.store.View(func(tx state.ReadTx) {
		sv, err = resolveService(tx, req.GetService())
		if err == nil {
			sv = withStatus(tx, sv)
		}
	})
	return sv, err
}

func resolveService(tx state.ReadTx, ref string) (*skiffpb.Service, error) {
	if sv := tx.ServiceByName(ref); sv != nil {
		return sv, nil
	}
	return resolve("service", ref, tx.Services(), func(sv *skiffpb.Service) string { return sv.GetSpec().GetName() })
}

// withStatus returns a copy of sv with its task counts filled in, as
// `service ls` shows them: running tasks that should run, over the desired
// count.
func withStatus(tx state.ReadTx, sv *skiffpb.Service) *skiffpb.Service {
	// The store keeps the counts as tasks change: walking a big service's
	// tasks here would cost the leader a second per `service ls` at a
	// million tasks, under the store's read lock.
	c := tx.TaskCounts(sv.GetId())
	st := &skiffpb.ServiceStatus{RunningTasks: c.Running, CompletedTasks: c.Completed}
	if sv.GetSpec().GetMode() == skiffpb.ServiceMode_SERVICE_MODE_GLOBAL {
		st.DesiredTasks = c.DesiredRunning
	}
	if sv.GetSpec().GetMode() == skiffpb.ServiceMode_SERVICE_MODE_REPLICATED {
		st.DesiredTasks = sv.GetSpec().GetReplicas()
	}
	out := proto.Clone(sv).(*skiffpb.Service)
	out.Status = st
	return out
}

// UpdateService changes a service's image or replica count, or forces a
// rolling restart. A scale alone is not a new spec version: replicas do not
// change what a task runs, so scaling never restarts existing tasks.
func (s *Server) UpdateService(ctx context.Context, req *skiffpb.UpdateServiceRequest) (*skiffpb.UpdateServiceResponse, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var next *skiffpb.Service
	var err error
	s.store.View(func(tx state.ReadTx) {
		var sv *skiffpb.Service
		sv, err = resolveService(tx, req.GetService())
		if err != nil {
			return
		}
		spec := proto.Clone(sv.GetSpec()).(*skiffpb.ServiceSpec)
		if req.Replicas != nil {
			if spec.GetMode() == skiffpb.ServiceMode_SERVICE_MODE_GLOBAL {
				err = invalid("service %s is global: it runs one task per node and cannot be scaled", spec.GetName())
				return
			}
			spec.Replicas = req.GetReplicas()
			if err = checkReplicas(tx.Cluster(), spec); err != nil {
				return
			}
		}
		rolling := false
		if req.Image != nil && req.GetImage() != spec.GetContainer().GetImage() {
			if req.GetImage() == "" {
				err = invalid("image cannot be empty")
				return
			}
			spec.Container.Image = req.GetImage()
			rolling = true
		}
		if req.GetForce() {
			spec.ForceUpdate++
			rolling = true
		}
		if rolling {
			next = s.withNewSpec(tx, sv, spec)
			return
		}
		next = proto.Clone(sv).(*skiffpb.Service)
		next.Spec = spec
		next.Meta = s.meta(sv.GetMeta())
	})
	if err != nil {
		return nil, err
	}
	idx, err := s.propose(ctx, putService(next))
	if err != nil {
		return nil, err
	}
	return &skiffpb.UpdateServiceResponse{Service: next, Index: idx}, nil
}

// validateConstraints parses placement constraints now, so that a typo fails
// the deploy instead of leaving tasks pending forever.
func validateConstraints(ss *skiffpb.ServiceSpec) error {
	if _, err := scheduler.ParseConstraints(ss.GetPlacement().GetConstraints()); err != nil {
		return invalid("service %s: %v", ss.GetName(), err)
	}
	return nil
}

func itoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

func protoName(p skiffpb.Protocol) string {
	return strings.ToLower(strings.TrimPrefix(p.String(), "PROTOCOL_"))
}
