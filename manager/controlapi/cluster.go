package controlapi

import (
	"context"
	"crypto/rand"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/skiffhq/skiff/ca"
	"github.com/skiffhq/skiff/gossip"
	"github.com/skiffhq/skiff/manager/nodeca"
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
		resp.MaxReplicas = maxReplicas(tx.Cluster())
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
	if err := s.checkManagerToken(req.GetToken()); err != nil {
		return nil, err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	members, err := s.cfg.Raft.Members()
	if err != nil {
		return nil, toStatus(err)
	}
	for _, m := range members {
		// Re-pointing a voter would hand its vote to whoever holds the
		// new address.
		if m.Name == req.GetName() && m.RaftAddr != req.GetRaftAddr() {
			return nil, status.Errorf(codes.FailedPrecondition,
				"manager %s is already a member at %s; demote and remove it (`skiff node demote %s`, `skiff node rm %s`) before it joins from %s",
				m.Name, m.RaftAddr, m.Name, m.Name, req.GetRaftAddr())
		}
	}
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

// checkManagerToken checks a manager join token against the cluster's.
func (s *Server) checkManagerToken(token string) error {
	tok, err := ca.ParseToken(token)
	if err != nil {
		return invalid("%v", err)
	}
	var c *skiffpb.Cluster
	s.store.View(func(tx state.ReadTx) { c = tx.Cluster() })
	if !tok.SecretMatches(c.GetManagerTokenSecret()) {
		return status.Error(codes.PermissionDenied,
			"the manager token is wrong or was rotated; print the current one with `skiff cluster join-token manager`")
	}
	return nil
}

// JoinTokens returns the join tokens, after making new secrets for those
// asked to rotate: the old token then joins nothing, and nodes that joined
// with it are unaffected.
func (s *Server) JoinTokens(ctx context.Context, req *skiffpb.JoinTokensRequest) (*skiffpb.JoinTokensResponse, error) {
	c, err := s.updateCluster(ctx, func(c *skiffpb.Cluster) bool {
		if req.GetRotateWorker() {
			c.WorkerTokenSecret = ca.NewSecret()
		}
		if req.GetRotateManager() {
			c.ManagerTokenSecret = ca.NewSecret()
		}
		return req.GetRotateWorker() || req.GetRotateManager()
	})
	if err != nil {
		return nil, err
	}
	worker, manager, err := nodeca.Tokens(c)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if req.GetRotateWorker() || req.GetRotateManager() {
		s.logger.Info("join tokens rotated", "worker", req.GetRotateWorker(), "manager", req.GetRotateManager())
	}
	return &skiffpb.JoinTokensResponse{Worker: worker, Manager: manager}, nil
}

// UpdateCluster changes cluster-wide settings.
func (s *Server) UpdateCluster(ctx context.Context, req *skiffpb.UpdateClusterRequest) (*skiffpb.ClusterInfoResponse, error) {
	if d := time.Duration(req.GetCertExpiry()); d != 0 && d < ca.MinCertExpiry {
		return nil, invalid("--cert-expiry %s is below the minimum %s", d, ca.MinCertExpiry)
	}
	var rotating error
	if _, err := s.updateCluster(ctx, func(c *skiffpb.Cluster) bool {
		changed := false
		if req.GetCertExpiry() != 0 && req.GetCertExpiry() != c.GetCertExpiry() {
			c.CertExpiry = req.GetCertExpiry()
			changed = true
		}
		if m := req.GetMaxReplicas(); m != 0 && m != c.GetMaxReplicas() {
			c.MaxReplicas = m
			changed = true
		}
		if req.GetRotateGossipKey() {
			if rotating = startGossipKeyRotation(c, s.now()); rotating != nil {
				return false
			}
			changed = true
		}
		return changed
	}); err != nil {
		return nil, err
	}
	if rotating != nil {
		return nil, rotating
	}
	if req.GetRotateGossipKey() {
		s.logger.Info("gossip key rotation started")
	}
	return s.ClusterInfo(ctx, &skiffpb.ClusterInfoRequest{})
}

// startGossipKeyRotation starts a rotation of the gossip key in c: a new
// key, installed beside the old one, which still encrypts. The leader takes
// it through the later stages (manager/gossipkeys.go). One rotation at a
// time: a second would have to be installed everywhere before the first
// key's removal, which the stages do not provide for.
func startGossipKeyRotation(c *skiffpb.Cluster, now time.Time) error {
	if st := c.GetGossipKeyStage(); st != skiffpb.GossipKeyStage_GOSSIP_KEY_STAGE_NONE {
		since := now.Sub(time.Unix(0, c.GetGossipKeysChangedAt())).Round(time.Second)
		return status.Errorf(codes.FailedPrecondition,
			"a rotation of the gossip key is under way (stage %s for %s); it finishes on its own, try again once it has",
			strings.TrimPrefix(st.String(), "GOSSIP_KEY_STAGE_"), since)
	}
	if len(c.GetGossipKeys()) != 1 {
		return status.Errorf(codes.FailedPrecondition, "the cluster holds %d gossip keys with no rotation under way; it needs exactly one to rotate it", len(c.GetGossipKeys()))
	}
	key := make([]byte, gossip.KeySize)
	rand.Read(key)
	c.GossipKeys = [][]byte{c.GetGossipKeys()[0], key}
	c.GossipKeyStage = skiffpb.GossipKeyStage_GOSSIP_KEY_STAGE_INSTALLED
	c.GossipKeysChangedAt = now.UnixNano()
	return nil
}

// updateCluster applies change to a copy of the cluster object and writes
// it, if change says it changed anything; it returns the cluster as it now
// is.
func (s *Server) updateCluster(ctx context.Context, change func(*skiffpb.Cluster) bool) (*skiffpb.Cluster, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var old *skiffpb.Cluster
	s.store.View(func(tx state.ReadTx) { old = tx.Cluster() })
	if old == nil {
		return nil, skiffpb.NoLeaderError("the cluster is still being created; retry in a moment")
	}
	next := proto.Clone(old).(*skiffpb.Cluster)
	if !change(next) {
		return old, nil
	}
	next.Meta = s.meta(old.GetMeta())
	if _, err := s.propose(ctx, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutCluster{PutCluster: next}}); err != nil {
		return nil, err
	}
	return next, nil
}
