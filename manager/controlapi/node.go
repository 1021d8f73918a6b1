package controlapi

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// ListNodes lists the nodes, with MANAGER STATUS filled in from Raft.
func (s *Server) ListNodes(ctx context.Context, _ *skiffpb.ListNodesRequest) (*skiffpb.ListNodesResponse, error) {
	var nodes []*skiffpb.Node
	s.store.View(func(tx state.ReadTx) { nodes = tx.Nodes() })
	resp := &skiffpb.ListNodesResponse{}
	for _, n := range nodes {
		resp.Nodes = append(resp.Nodes, s.withManagerStatus(n))
	}
	return resp, nil
}

// GetNode returns one node by name, ID or ID prefix.
func (s *Server) GetNode(ctx context.Context, req *skiffpb.GetNodeRequest) (*skiffpb.Node, error) {
	var n *skiffpb.Node
	var err error
	s.store.View(func(tx state.ReadTx) { n, err = resolveNode(tx, req.GetNode()) })
	if err != nil {
		return nil, err
	}
	return s.withManagerStatus(n), nil
}

func resolveNode(tx state.ReadTx, ref string) (*skiffpb.Node, error) {
	if n := tx.NodeByName(ref); n != nil {
		return n, nil
	}
	return resolve("node", ref, tx.Nodes(), func(n *skiffpb.Node) string { return n.GetName() })
}

// withManagerStatus fills in the leader flag and reachability, which are
// facts about Raft now rather than stored state.
func (s *Server) withManagerStatus(n *skiffpb.Node) *skiffpb.Node {
	if n.GetRole() != skiffpb.NodeRole_NODE_ROLE_MANAGER {
		return n
	}
	out := proto.Clone(n).(*skiffpb.Node)
	if out.ManagerStatus == nil {
		out.ManagerStatus = &skiffpb.ManagerStatus{}
	}
	_, leaderID := s.cfg.Raft.Leader()
	out.ManagerStatus.Leader = leaderID == n.GetName()
	out.ManagerStatus.Reachability = skiffpb.Reachability_REACHABILITY_UNREACHABLE
	if out.ManagerStatus.Leader || s.cfg.Membership.Reachable(n.GetName()) {
		out.ManagerStatus.Reachability = skiffpb.Reachability_REACHABILITY_REACHABLE
	}
	return out
}

// UpdateNode changes a node's availability or labels. Draining is how an
// operator moves every task off a node.
func (s *Server) UpdateNode(ctx context.Context, req *skiffpb.UpdateNodeRequest) (*skiffpb.Node, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var next *skiffpb.Node
	var err error
	s.store.View(func(tx state.ReadTx) {
		var n *skiffpb.Node
		if n, err = resolveNode(tx, req.GetNode()); err != nil {
			return
		}
		next = proto.Clone(n).(*skiffpb.Node)
		if next.Spec == nil {
			next.Spec = &skiffpb.NodeSpec{}
		}
		if req.Availability != nil {
			next.Spec.Availability = req.GetAvailability()
		}
		if len(req.GetLabelAdd()) > 0 && next.Spec.Labels == nil {
			next.Spec.Labels = map[string]string{}
		}
		for k, v := range req.GetLabelAdd() {
			next.Spec.Labels[k] = v
		}
		for _, k := range req.GetLabelRm() {
			if _, ok := next.Spec.Labels[k]; !ok {
				err = invalid("node %s has no label %q", n.GetName(), k)
				return
			}
			delete(next.Spec.Labels, k)
		}
		next.Meta = s.meta(n.GetMeta())
	})
	if err != nil {
		return nil, err
	}
	if _, err := s.propose(ctx, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutNode{PutNode: next}}); err != nil {
		return nil, err
	}
	return s.withManagerStatus(next), nil
}

// RemoveNode deletes a node from the cluster, and a manager from Raft. A node
// that is not down is only removed with force, since its agent would
// otherwise register it again.
func (s *Server) RemoveNode(ctx context.Context, req *skiffpb.RemoveNodeRequest) (*skiffpb.RemoveNodeResponse, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var n *skiffpb.Node
	var err error
	s.store.View(func(tx state.ReadTx) { n, err = resolveNode(tx, req.GetNode()) })
	if err != nil {
		return nil, err
	}
	if n.GetStatus().GetState() != skiffpb.NodeState_NODE_STATE_DOWN && !req.GetForce() {
		return nil, status.Errorf(codes.FailedPrecondition,
			"node %s is %s, not down: stop it first, or remove it anyway with --force", n.GetName(), stateWord(n.GetStatus().GetState()))
	}
	if n.GetRole() == skiffpb.NodeRole_NODE_ROLE_MANAGER {
		if err := s.cfg.Raft.RemoveServer(ctx, n.GetName()); err != nil {
			return nil, toStatus(err)
		}
	}
	if _, err := s.propose(ctx, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_DeleteNode{DeleteNode: n.GetId()}}); err != nil {
		return nil, err
	}
	return &skiffpb.RemoveNodeResponse{}, nil
}

func stateWord(st skiffpb.NodeState) string {
	switch st {
	case skiffpb.NodeState_NODE_STATE_READY:
		return "ready"
	case skiffpb.NodeState_NODE_STATE_DOWN:
		return "down"
	default:
		return "unknown"
	}
}
