// Package nodeca serves the NodeCA API: it gives a joining node, which
// proves itself with a join token, the certificate every later connection
// is authenticated with, and renews it before it expires.
//
// A certificate binds a node's ID and role. The ID is chosen here, at the
// first join under a name, and written to the store with the roles it was
// certified for, before the certificate is handed out: a name can then be
// claimed once per role, a second joiner under the same name is refused,
// and removing the node (`skiff node rm`) is what revokes its certificates,
// since a certificate whose node is not in the store opens nothing.
package nodeca

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/skiffhq/skiff/ca"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// Raft is the part of the Raft node the server writes through.
type Raft interface {
	Propose(ctx context.Context, cmd *skiffpb.Command) (uint64, error)
}

// Config wires a Server.
type Config struct {
	Store  *state.Store
	Raft   Raft
	Logger *slog.Logger
	// Now is the clock certificates are dated by; time.Now when nil.
	Now func() time.Time
}

// Server implements skiffpb.NodeCAServer on the leader. Followers forward
// IssueCertificate to it; RenewCertificate is asked of the leader directly,
// since the caller's own certificate is what authenticates it.
type Server struct {
	skiffpb.UnimplementedNodeCAServer
	cfg Config
}

// New returns a Server.
func New(cfg Config) *Server {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg}
}

// RoleOf maps a node role to the certificate role.
func RoleOf(r skiffpb.NodeRole) ca.Role {
	if r == skiffpb.NodeRole_NODE_ROLE_MANAGER {
		return ca.RoleManager
	}
	return ca.RoleWorker
}

// authority loads the cluster's CA and settings from the store.
func (s *Server) authority() (*ca.Authority, *skiffpb.Cluster, error) {
	var c *skiffpb.Cluster
	s.cfg.Store.View(func(tx state.ReadTx) { c = tx.Cluster() })
	if c == nil || len(c.GetCaKey()) == 0 {
		return nil, nil, status.Error(codes.Unavailable, "the cluster is still being created; retry in a moment")
	}
	a, err := ca.LoadAuthority(c.GetCaCert(), c.GetCaKey())
	if err != nil {
		return nil, nil, status.Errorf(codes.Internal, "load the cluster's CA: %v", err)
	}
	return a, c, nil
}

// IssueCertificate checks the join token and the name, records the node
// and signs its request.
func (s *Server) IssueCertificate(ctx context.Context, req *skiffpb.IssueCertificateRequest) (*skiffpb.IssueCertificateResponse, error) {
	tok, err := ca.ParseToken(req.GetToken())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "join: the node needs a name (--name)")
	}
	if _, ok := skiffpb.NodeRole_name[int32(req.GetRole())]; !ok {
		return nil, status.Errorf(codes.InvalidArgument, "join: unknown node role %d", req.GetRole())
	}
	auth, cluster, err := s.authority()
	if err != nil {
		return nil, err
	}
	role := RoleOf(req.GetRole())
	if tok.Digest != auth.Digest() {
		return nil, status.Error(codes.PermissionDenied, "join: the token belongs to another cluster")
	}
	secret := cluster.GetWorkerTokenSecret()
	if role == ca.RoleManager {
		secret = cluster.GetManagerTokenSecret()
	}
	if !tok.SecretMatches(secret) {
		return nil, status.Errorf(codes.PermissionDenied,
			"join: the %s token is wrong or was rotated; print the current one on a manager with `skiff cluster join-token %s`", role, role)
	}
	key, err := ca.RequestKey(req.GetCsr())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "join: %v", err)
	}
	var id ca.Identity
	cert, err := s.certify(ctx, req.GetName(), req.GetRole(), key, func(nodeID string) ([]byte, error) {
		id = ca.Identity{NodeID: nodeID, Role: role, ClusterID: auth.ClusterID()}
		return auth.Sign(req.GetCsr(), id, certExpiry(cluster), s.cfg.Now())
	})
	if err != nil {
		return nil, err
	}
	s.cfg.Logger.Info("node joined", "node", req.GetName(), "node_id", id.NodeID, "role", role)
	return &skiffpb.IssueCertificateResponse{
		Cert: cert, Ca: auth.CertPEM, NodeId: id.NodeID, GossipKeys: cluster.GetGossipKeys(),
	}, nil
}

// certify binds name to a node ID for role: a new node, or a node that so
// far has a certificate for the other role only (a manager's host whose
// agent joins, or the reverse). It returns the certificate sign makes for
// the node's ID. sign runs before the node is recorded, so that a request
// the CA refuses leaves nothing behind; the certificate is returned only
// once the node is.
func (s *Server) certify(ctx context.Context, name string, role skiffpb.NodeRole, key []byte, sign func(nodeID string) ([]byte, error)) ([]byte, error) {
	for range 5 {
		var old *skiffpb.Node
		s.cfg.Store.View(func(tx state.ReadTx) { old = tx.NodeByName(name) })
		var next *skiffpb.Node
		now := s.cfg.Now().UnixNano()
		switch {
		case old == nil:
			next = &skiffpb.Node{
				Id: state.NewID(), Meta: &skiffpb.Meta{CreatedAt: now, UpdatedAt: now}, Name: name,
				Spec: &skiffpb.NodeSpec{}, Role: role, Status: &skiffpb.NodeStatus{Timestamp: now},
			}
		case certifiedKey(old, role) != nil && bytes.Equal(certifiedKey(old, role), key):
			// The same joiner again, proven by its key: its first answer
			// was lost. It gets its certificate; nothing new is recorded.
			return sign(old.GetId())
		case slices.Contains(old.GetCertified(), role):
			return nil, status.Errorf(codes.AlreadyExists,
				"join: a node named %q has already joined as a %s (ID %s); remove it first with `skiff node rm %s`, or start this one with another --name",
				name, RoleOf(role), old.GetId(), name)
		default:
			next = proto.Clone(old).(*skiffpb.Node)
			next.Meta.UpdatedAt = now
			if role == skiffpb.NodeRole_NODE_ROLE_MANAGER {
				next.Role = role
			}
		}
		// certified_keys runs parallel to certified; nodes recorded before
		// it existed have none, and their joins cannot be retried.
		for len(next.CertifiedKeys) < len(next.Certified) {
			next.CertifiedKeys = append(next.CertifiedKeys, nil)
		}
		next.Certified = append(next.Certified, role)
		next.CertifiedKeys = append(next.CertifiedKeys, key)
		cert, err := sign(next.GetId())
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "join: %v", err)
		}
		_, err = s.cfg.Raft.Propose(ctx, &skiffpb.Command{Actions: []*skiffpb.StoreAction{
			{Action: &skiffpb.StoreAction_PutNode{PutNode: next}},
		}})
		// A conflict is a concurrent join or change under this name: look
		// again, and refuse the name if the other one claimed it.
		if errors.Is(err, state.ErrVersionConflict) || errors.Is(err, state.ErrNameConflict) {
			continue
		}
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "join: record node %s: %v", name, err)
		}
		return cert, nil
	}
	return nil, status.Errorf(codes.Aborted, "join: node %s was changed concurrently; retry", name)
}

// certifiedKey is the key fingerprint certified for role on n, if any.
func certifiedKey(n *skiffpb.Node, role skiffpb.NodeRole) []byte {
	for i, r := range n.GetCertified() {
		if r == role && i < len(n.GetCertifiedKeys()) {
			return n.GetCertifiedKeys()[i]
		}
	}
	return nil
}

// RenewCertificate signs a new request for the caller's own identity, if its
// node is still in the cluster.
func (s *Server) RenewCertificate(ctx context.Context, req *skiffpb.RenewCertificateRequest) (*skiffpb.IssueCertificateResponse, error) {
	id, err := ca.PeerIdentity(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, "renew: present the certificate to renew")
	}
	auth, cluster, err := s.authority()
	if err != nil {
		return nil, err
	}
	if id.Role == ca.RoleAdmin {
		return nil, status.Error(codes.PermissionDenied, "renew: admin credentials are renewed by a manager, not through this call")
	}
	if err := Admitted(s.cfg.Store, id); err != nil {
		return nil, err
	}
	cert, err := auth.Sign(req.GetCsr(), id, certExpiry(cluster), s.cfg.Now())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "renew: %v", err)
	}
	return &skiffpb.IssueCertificateResponse{
		Cert: cert, Ca: auth.CertPEM, NodeId: id.NodeID, GossipKeys: cluster.GetGossipKeys(),
	}, nil
}

// Admitted says whether a node certificate's identity is still good: its
// node is in the store and certified for its role. `node rm` deletes the
// node, which revokes every certificate issued under its ID.
func Admitted(store *state.Store, id ca.Identity) error {
	var n *skiffpb.Node
	store.View(func(tx state.ReadTx) { n = tx.Node(id.NodeID) })
	if n == nil {
		return status.Errorf(codes.PermissionDenied,
			"node %s was removed from the cluster; its certificate is revoked: delete the node's data dir and join again with a token", id.NodeID)
	}
	want := skiffpb.NodeRole_NODE_ROLE_WORKER
	if id.Role == ca.RoleManager {
		want = skiffpb.NodeRole_NODE_ROLE_MANAGER
	}
	if !slices.Contains(n.GetCertified(), want) {
		return status.Errorf(codes.PermissionDenied, "node %s holds no %s certificate any more", n.GetName(), id.Role)
	}
	return nil
}

func certExpiry(c *skiffpb.Cluster) time.Duration {
	if d := time.Duration(c.GetCertExpiry()); d > 0 {
		return d
	}
	return ca.DefaultCertExpiry
}

// NewCluster is the security half of a new cluster's settings: its CA, the
// join tokens' secrets, the certificate lifetime and the gossip key.
func NewCluster(auth *ca.Authority, certExpiry time.Duration, gossipKey []byte) *skiffpb.Cluster {
	return &skiffpb.Cluster{
		Id: auth.ClusterID(), CaCert: auth.CertPEM, CaKey: auth.KeyPEM(),
		WorkerTokenSecret: ca.NewSecret(), ManagerTokenSecret: ca.NewSecret(),
		CertExpiry: int64(certExpiry), GossipKeys: [][]byte{gossipKey},
	}
}

// Tokens are the join tokens of a cluster.
func Tokens(c *skiffpb.Cluster) (worker, manager string, err error) {
	cert, err := ca.ParseCert(c.GetCaCert())
	if err != nil {
		return "", "", fmt.Errorf("the cluster's CA: %w", err)
	}
	d := ca.Digest(cert)
	return ca.Token{Digest: d, Secret: c.GetWorkerTokenSecret()}.String(),
		ca.Token{Digest: d, Secret: c.GetManagerTokenSecret()}.String(), nil
}
