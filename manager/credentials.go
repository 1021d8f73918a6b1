package manager

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/skiffhq/skiff/ca"
	"github.com/skiffhq/skiff/identity"
	"github.com/skiffhq/skiff/manager/nodeca"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// nodeCreds are what a manager proves itself with, and checks others
// against.
type nodeCreds struct {
	pool    *x509.CertPool
	keypair *ca.Keypair
	// nodeID is this manager's node, as its certificate says.
	nodeID     string
	gossipKeys [][]byte
}

// pendingFile holds a new cluster's first command (its settings, CA and
// secrets, and the first manager's node) from the moment the manager
// creates them until its first term has written them to the store.
const pendingFile = "cluster.pending"

// AdminDir is where the first manager writes the admin client bundle.
func AdminDir(dataDir string) string { return filepath.Join(dataDir, "admin") }

// loadCredentials reads the manager's certificate, or gets one: a new
// cluster's first manager creates the CA and issues its own, and a manager
// joining with a token asks the cluster for one.
func (m *Manager) loadCredentials(ctx context.Context, fresh, bootstrap bool) (*nodeCreds, error) {
	j, err := identity.Load(m.cfg.DataDir, time.Now())
	switch {
	case err == nil:
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	case !fresh:
		return nil, fmt.Errorf("the data dir %s holds a Raft log but no certificate in %s: it was made by a skiff without mutual TLS; start this manager with an empty --data-dir and join with a manager token",
			m.cfg.DataDir, identity.Dir(m.cfg.DataDir))
	case bootstrap:
		if j, err = m.createCluster(); err != nil {
			return nil, err
		}
	default:
		if m.cfg.Token == "" {
			return nil, errors.New("joining needs a manager token: pass --token (or SKIFF_JOIN_TOKEN); print it on a manager with `skiff cluster join-token manager`")
		}
		if j, err = identity.Join(ctx, identity.Request{
			Addrs: m.cfg.Join, Token: m.cfg.Token, Name: m.cfg.Name, Role: skiffpb.NodeRole_NODE_ROLE_MANAGER,
			DataDir: m.cfg.DataDir, Logger: m.logger,
		}); err != nil {
			return nil, fmt.Errorf("join the cluster: %w", err)
		}
	}
	kp, err := j.Bundle.Keypair()
	if err != nil {
		return nil, err
	}
	if kp.Identity().Role != ca.RoleManager {
		return nil, fmt.Errorf("the certificate in %s is a %s's, not a manager's", identity.Dir(m.cfg.DataDir), kp.Identity().Role)
	}
	pool, err := j.Bundle.Pool()
	if err != nil {
		return nil, err
	}
	return &nodeCreds{pool: pool, keypair: kp, nodeID: j.NodeID, gossipKeys: j.GossipKeys}, nil
}

// createCluster makes a new cluster's identity: its CA, this manager's
// certificate, the join tokens, the gossip key and the admin bundle. They
// reach the store with the first term (see pendingCommand); until then they
// wait in the data dir.
func (m *Manager) createCluster() (identity.Joined, error) {
	now := time.Now()
	expiry := m.cfg.CertExpiry
	auth, err := ca.NewAuthority(state.NewID(), now)
	if err != nil {
		return identity.Joined{}, err
	}
	gossipKey := make([]byte, 32)
	rand.Read(gossipKey)
	cluster := nodeca.NewCluster(auth, expiry, gossipKey)
	nodeID := state.NewID()
	certPEM, keyPEM, err := auth.Issue(ca.Identity{NodeID: nodeID, Role: ca.RoleManager, ClusterID: auth.ClusterID()}, expiry, now)
	if err != nil {
		return identity.Joined{}, err
	}
	adminCert, adminKey, err := auth.Issue(ca.Identity{NodeID: "admin-" + state.NewID()[:8], Role: ca.RoleAdmin, ClusterID: auth.ClusterID()}, expiry, now)
	if err != nil {
		return identity.Joined{}, err
	}
	node := &skiffpb.Node{
		Id: nodeID, Meta: &skiffpb.Meta{CreatedAt: now.UnixNano(), UpdatedAt: now.UnixNano()}, Name: m.cfg.Name,
		Spec: &skiffpb.NodeSpec{}, Role: skiffpb.NodeRole_NODE_ROLE_MANAGER,
		Status:    &skiffpb.NodeStatus{State: skiffpb.NodeState_NODE_STATE_UNKNOWN, Message: "waiting for the node's agent"},
		Certified: []skiffpb.NodeRole{skiffpb.NodeRole_NODE_ROLE_MANAGER},
	}
	cmd := &skiffpb.Command{Actions: []*skiffpb.StoreAction{
		{Action: &skiffpb.StoreAction_PutCluster{PutCluster: cluster}},
		{Action: &skiffpb.StoreAction_PutNode{PutNode: node}},
	}}
	data, err := proto.Marshal(cmd)
	if err != nil {
		return identity.Joined{}, fmt.Errorf("encode the new cluster: %w", err)
	}
	// The pending command goes first: a manager that finds its certificate
	// on disk must also find what makes it valid.
	if err := os.MkdirAll(identity.Dir(m.cfg.DataDir), 0o700); err != nil {
		return identity.Joined{}, fmt.Errorf("create %s: %w", identity.Dir(m.cfg.DataDir), err)
	}
	if err := os.WriteFile(m.pendingPath(), data, 0o600); err != nil {
		return identity.Joined{}, fmt.Errorf("write the new cluster: %w", err)
	}
	if err := ca.WriteBundle(AdminDir(m.cfg.DataDir), ca.Bundle{CA: auth.CertPEM, Cert: adminCert, Key: adminKey}); err != nil {
		return identity.Joined{}, err
	}
	j := identity.Joined{Bundle: ca.Bundle{CA: auth.CertPEM, Cert: certPEM, Key: keyPEM}, NodeID: nodeID, GossipKeys: cluster.GetGossipKeys()}
	if err := identity.Save(m.cfg.DataDir, j); err != nil {
		return identity.Joined{}, err
	}
	worker, manager, err := nodeca.Tokens(cluster)
	if err != nil {
		return identity.Joined{}, err
	}
	join := fmt.Sprintf("%s:%d", m.cfg.AdvertiseAddr, m.cfg.GossipPort)
	m.logger.Info("created a new cluster", "cluster_id", auth.ClusterID(), "admin_credentials", AdminDir(m.cfg.DataDir))
	m.logger.Info("to add a worker, run on its host: skiff-agent --name NAME --data-dir DIR --join " + join + " --token " + worker)
	m.logger.Info("to add a manager, run on its host: skiff-manager --name NAME --data-dir DIR --advertise-addr IP --join " + join + " --token " + manager)
	return j, nil
}

func (m *Manager) pendingPath() string {
	return filepath.Join(identity.Dir(m.cfg.DataDir), pendingFile)
}

// pendingCommand is the new cluster's first command, if this manager
// created the cluster and its first term has not written it yet.
func (m *Manager) pendingCommand() (*skiffpb.Command, error) {
	data, err := os.ReadFile(m.pendingPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the new cluster: %w", err)
	}
	cmd := &skiffpb.Command{}
	if err := proto.Unmarshal(data, cmd); err != nil {
		return nil, fmt.Errorf("decode the new cluster in %s: %w", m.pendingPath(), err)
	}
	return cmd, nil
}

// clientCreds are the manager's credentials as a client of other managers.
func (m *Manager) clientCreds() credentials.TransportCredentials {
	return credentials.NewTLS(ca.ClientConfig(m.creds.pool, m.creds.keypair, ca.RoleManager))
}

// managersLeaderFirst lists the managers' API addresses, the leader first
// when it is known.
func (m *Manager) managersLeaderFirst() []string {
	out := []string{}
	if leader := m.members.LeaderAPIAddr(); leader != "" {
		out = append(out, leader)
	}
	for _, a := range m.members.ManagerAPIAddrs() {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// serveHello answers joiners on the gossip port, until ctx ends.
func (m *Manager) serveHello(ctx context.Context) {
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(ca.ServerConfig(m.creds.pool, m.creds.keypair))))
	skiffpb.RegisterJoinServer(srv, identity.HelloServer{Managers: m.managersLeaderFirst})
	stop := context.AfterFunc(ctx, srv.Stop)
	defer stop()
	if err := srv.Serve(m.pool.JoinListener()); err != nil && ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
		m.logger.Warn("the join port stopped", "error", err)
	}
}

// keepAdminBundle renews the admin bundle in this manager's data dir, if it
// has one, when two thirds of its certificate's life has passed, with the
// CA in the store: the CLI on this host keeps working without anyone
// handing it a new credential.
func (m *Manager) keepAdminBundle(ctx context.Context) {
	dir := AdminDir(m.cfg.DataDir)
	for ctx.Err() == nil {
		b, err := ca.ReadBundle(dir)
		if err != nil {
			return // no admin bundle here: nothing to keep
		}
		leaf, err := ca.ParseCert(b.Cert)
		if err != nil {
			m.logger.Warn("the admin bundle's certificate", "dir", dir, "error", err)
			return
		}
		due := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3)
		if wait := time.Until(due); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		if err := m.renewAdmin(dir, b, leaf); err != nil {
			m.logger.Warn("renew the admin bundle; trying again", "dir", dir, "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Second):
			}
		}
	}
}

func (m *Manager) renewAdmin(dir string, b ca.Bundle, leaf *x509.Certificate) error {
	var c *skiffpb.Cluster
	m.store.View(func(tx state.ReadTx) { c = tx.Cluster() })
	if len(c.GetCaKey()) == 0 {
		return errors.New("the store holds no CA yet")
	}
	auth, err := ca.LoadAuthority(c.GetCaCert(), c.GetCaKey())
	if err != nil {
		return err
	}
	id, err := auth.Verify(leaf, leaf.NotBefore.Add(time.Second))
	if err != nil {
		return err
	}
	expiry := time.Duration(c.GetCertExpiry())
	if expiry <= 0 {
		expiry = ca.DefaultCertExpiry
	}
	cert, key, err := auth.Issue(id, expiry, time.Now())
	if err != nil {
		return err
	}
	if err := ca.WriteBundle(dir, ca.Bundle{CA: b.CA, Cert: cert, Key: key}); err != nil {
		return err
	}
	m.logger.Info("admin bundle renewed", "dir", dir)
	return nil
}
