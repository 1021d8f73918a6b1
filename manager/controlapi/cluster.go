package controlapi

import (
	"context"

	"google.golang.org/protobuf/proto"

	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// ClusterInfo describes the cluster: its managers with their Raft standing,
// and how many nodes, services and tasks it has.
func (s *Server) ClusterInfo(ctx context.Context, _ *skiffpb.ClusterInfoRequest) (*skiffpb.ClusterInfoResponse, error) {
	members, err := s.cfg.Raft.Members()
	if err != nil {
		return nil, toStatus(err)
	}
	_, leaderID := s.cfg.Raft.Leader()
	resp := &skiffpb.ClusterInfoResponse{Leader: leaderID, Version: s.cfg.Version, RaftTerm: s.cfg.Raft.Term()}
	s.store.View(func(tx state.ReadTx) {
		resp.ClusterId = tx.Cluster().GetId()
		resp.RaftIndex = tx.Index()
		resp.Services = uint64(len(tx.Services()))
		resp.Tasks = uint64(tx.CountTasks())
		tx.EachNode(func(n *skiffpb.Node) bool {
			resp.Nodes++
			if n.GetStatus().GetState() == skiffpb.NodeState_NODE_STATE_READY {
				resp.ReadyNodes++
			}
			return true
		})
		for _, mem := range members {
			mi := &skiffpb.ManagerInfo{Name: mem.Name, RaftAddr: mem.RaftAddr, Leader: mem.Name == leaderID, Suffrage: "nonvoter"}
			if mem.Voter {
				mi.Suffrage = "voter"
			}
			if n := tx.NodeByName(mem.Name); n != nil {
				mi.ApiAddr = n.GetManagerStatus().GetApiAddr()
			}
			mi.Reachability = skiffpb.Reachability_REACHABILITY_UNREACHABLE
			if mi.Leader || s.cfg.Membership.Reachable(mem.Name) {
				mi.Reachability = skiffpb.Reachability_REACHABILITY_REACHABLE
			}
			resp.Managers = append(resp.Managers, mi)
		}
	})
	return resp, nil
}

// JoinManager adds a manager to Raft as a voter and records it as a manager
// node. Re-joining with the same name and address is harmless, so a manager
// that crashed mid-join simply calls again.
func (s *Server) JoinManager(ctx context.Context, req *skiffpb.JoinManagerRequest) (*skiffpb.JoinManagerResponse, error) {
	if req.GetName() == "" || req.GetRaftAddr() == "" || req.GetApiAddr() == "" {
		return nil, invalid("a joining manager must give its name, raft address and API address")
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.cfg.Raft.AddVoter(ctx, req.GetName(), req.GetRaftAddr()); err != nil {
		return nil, toStatus(err)
	}
	if _, err := s.propose(ctx, s.managerNodeAction(req.GetName(), req.GetRaftAddr(), req.GetApiAddr())); err != nil {
		return nil, err
	}
	var id string
	s.store.View(func(tx state.ReadTx) { id = tx.Cluster().GetId() })
	s.logger.Info("manager joined", "name", req.GetName(), "raft_addr", req.GetRaftAddr())
	return &skiffpb.JoinManagerResponse{ClusterId: id}, nil
}

// RegisterManager records the manager named name as a manager node; the
// leader calls it for itself when it takes office.
func (s *Server) RegisterManager(ctx context.Context, name, raftAddr, apiAddr string) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	a := s.managerNodeAction(name, raftAddr, apiAddr)
	if a == nil {
		return nil
	}
	_, err := s.propose(ctx, a)
	return err
}

// managerNodeAction returns the write that makes the node called name a
// manager node, or nil when it already is one with these addresses.
func (s *Server) managerNodeAction(name, raftAddr, apiAddr string) *skiffpb.StoreAction {
	var n *skiffpb.Node
	s.store.View(func(tx state.ReadTx) { n = tx.NodeByName(name) })
	ms := &skiffpb.ManagerStatus{RaftAddr: raftAddr, ApiAddr: apiAddr}
	if n == nil {
		n = &skiffpb.Node{
			Id: state.NewID(), Meta: s.meta(nil), Name: name, Role: skiffpb.NodeRole_NODE_ROLE_MANAGER,
			Spec:          &skiffpb.NodeSpec{},
			Status:        &skiffpb.NodeStatus{State: skiffpb.NodeState_NODE_STATE_UNKNOWN, Message: "waiting for the node's agent"},
			ManagerStatus: ms,
		}
		return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutNode{PutNode: n}}
	}
	if n.GetRole() == skiffpb.NodeRole_NODE_ROLE_MANAGER && proto.Equal(n.GetManagerStatus(), ms) {
		return nil
	}
	next := proto.Clone(n).(*skiffpb.Node)
	next.Role = skiffpb.NodeRole_NODE_ROLE_MANAGER
	next.ManagerStatus = ms
	next.Meta = s.meta(n.GetMeta())
	return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutNode{PutNode: next}}
}
