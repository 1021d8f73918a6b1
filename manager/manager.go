// Package manager runs skiff-manager: one member of the Raft cluster that
// holds the cluster state. Every manager serves the Control API (forwarding
// to the leader) and gossips; only the leader runs the dispatcher, the
// orchestrator and placement, which start when it takes office and stop when
// it loses it.
package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/skiffhq/skiff/ca"
	"github.com/skiffhq/skiff/gossip"
	"github.com/skiffhq/skiff/identity"
	"github.com/skiffhq/skiff/internal/debugserver"
	"github.com/skiffhq/skiff/manager/authz"
	"github.com/skiffhq/skiff/manager/controlapi"
	"github.com/skiffhq/skiff/manager/dispatcher"
	"github.com/skiffhq/skiff/manager/nodeca"
	"github.com/skiffhq/skiff/manager/raftnode"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
	"github.com/skiffhq/skiff/version"
)

// Config is skiff-manager's configuration; design.md §2 gives the flags.
type Config struct {
	Name          string
	DataDir       string
	AdvertiseAddr string
	APIPort       int
	RaftPort      int
	GossipPort    int
	// LocalAPIAddr, when set, is a second address the API is served on,
	// for the CLI on this host: skiff-manager sets it to loopback at the
	// API port, where the CLI looks when it is given no manager. It is
	// served by the same server, under the same mutual TLS, as the
	// advertised address. An address that cannot be listened on is logged
	// and left out: the manager's job does not depend on it.
	LocalAPIAddr string
	// Join lists gossip addresses (host:port) of existing members. With an
	// empty data dir, the manager joins their cluster instead of creating
	// one.
	Join []string
	// Token is the manager join token, needed only for the first join;
	// afterwards the manager has its certificate in its data dir.
	Token string
	// CertExpiry is the lifetime of node certificates in a cluster this
	// manager creates.
	CertExpiry      time.Duration
	DefaultAddrPool string
	// SubnetSize is the prefix length of each overlay network's subnet.
	SubnetSize  int
	MetricsAddr string
	// PprofAddr, when set, is where the manager serves Go's profiler
	// (/debug/pprof/), on a listener of its own so that it is never exposed
	// by accident along with the metrics.
	PprofAddr string
	// HeartbeatPeriod and DownGrace tune node failure detection.
	HeartbeatPeriod time.Duration
	DownGrace       time.Duration
	// Raft timing; zero takes raftnode's LAN defaults.
	RaftHeartbeatTimeout time.Duration
	RaftElectionTimeout  time.Duration
	Logger               *slog.Logger
}

func (c *Config) setDefaults() {
	if c.APIPort == 0 {
		c.APIPort = 4242
	}
	if c.RaftPort == 0 {
		c.RaftPort = 4243
	}
	if c.GossipPort == 0 {
		c.GossipPort = 7947
	}
	if c.DefaultAddrPool == "" {
		c.DefaultAddrPool = "10.0.0.0/8"
	}
	if c.SubnetSize == 0 {
		c.SubnetSize = 24
	}
	if c.CertExpiry == 0 {
		c.CertExpiry = ca.DefaultCertExpiry
	}
	if c.HeartbeatPeriod == 0 {
		c.HeartbeatPeriod = 500 * time.Millisecond
	}
	if c.DownGrace == 0 {
		c.DownGrace = 4 * c.HeartbeatPeriod
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) validate() error {
	switch {
	case c.Name == "":
		return errors.New("--name is required: give this manager a name unique in the cluster")
	case c.DataDir == "":
		return errors.New("--data-dir is required: the manager keeps its Raft log there")
	case net.ParseIP(c.AdvertiseAddr) == nil:
		return fmt.Errorf("--advertise-addr %q is not an IP address: give the address other hosts reach this one at", c.AdvertiseAddr)
	}
	return nil
}

// Manager is a running manager.
type Manager struct {
	cfg      Config
	logger   *slog.Logger
	store    *state.Store
	raft     *raftnode.Node
	pool     *gossip.Pool
	control  *controlapi.Server
	dispatch *dispatcher.Dispatcher
	metrics  *metrics
	members  *membership
	creds    *nodeCreds
}

// APIAddr is where the manager serves gRPC.
func (c *Config) APIAddr() string {
	return net.JoinHostPort(c.AdvertiseAddr, strconv.Itoa(c.APIPort))
}

// Run starts a manager and blocks until ctx ends, then shuts down cleanly.
func Run(ctx context.Context, cfg Config) error {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return err
	}
	logger := cfg.Logger.With("node", cfg.Name)
	raftDir := filepath.Join(cfg.DataDir, "raft")
	fresh := !raftnode.HasState(raftDir)
	if !fresh && len(cfg.Join) > 0 {
		logger.Info("data dir holds Raft state; resuming and ignoring --join", "data_dir", cfg.DataDir)
	}
	bootstrap := fresh && len(cfg.Join) == 0

	m := &Manager{cfg: cfg, logger: logger, store: state.New()}
	creds, err := m.loadCredentials(ctx, fresh, bootstrap)
	if err != nil {
		return err
	}
	m.creds = creds
	node, err := raftnode.Open(raftnode.Config{
		ID:               cfg.Name,
		DataDir:          raftDir,
		BindAddr:         net.JoinHostPort(cfg.AdvertiseAddr, strconv.Itoa(cfg.RaftPort)),
		Bootstrap:        bootstrap,
		HeartbeatTimeout: cfg.RaftHeartbeatTimeout,
		ElectionTimeout:  cfg.RaftElectionTimeout,
		TLS:              &raftnode.TLS{Pool: creds.pool, Keypair: creds.keypair},
		Logger:           logger,
	}, m.store)
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	defer func() {
		if err := node.Close(); err != nil {
			logger.Warn("raft shutdown", "error", err)
		}
	}()
	m.raft = node
	m.metrics = newMetrics(node, m.store)
	m.members = newMembership(cfg.Name, node, m.store)
	m.dispatch = dispatcher.New(dispatcher.Config{
		Store: m.store, Raft: node, Membership: m.members,
		HeartbeatPeriod: cfg.HeartbeatPeriod, DownGrace: cfg.DownGrace, Logger: logger,
	})
	m.members.onAgentDead = m.dispatch.AgentDead
	m.control = controlapi.New(controlapi.Config{
		Store: m.store, Raft: controlRaft{node}, Logs: m.dispatch,
		Membership: m.members, Version: version.Version, Logger: logger,
	})

	pool, err := gossip.Start(ctx, gossip.Config{
		Meta:     gossip.Meta{Name: cfg.Name, Role: gossip.RoleManager, Addr: cfg.AdvertiseAddr, APIAddr: cfg.APIAddr()},
		BindAddr: cfg.AdvertiseAddr, Port: cfg.GossipPort, Join: cfg.Join, Keys: creds.gossipKeys,
		OnEvent: m.members.observe, Logger: logger,
	})
	if err != nil {
		return err
	}
	m.pool = pool
	m.members.pool = pool
	defer m.leaveGossip(ctx)

	lis, err := m.listenAPI()
	if err != nil {
		return err
	}
	debug, err := m.listenDebug()
	if err != nil {
		for _, l := range lis {
			l.Close()
		}
		return err
	}
	fwd := newForwarder(m.clientCreds(), node.IsLeader, m.members.leaderAPIAddr)
	defer fwd.close()
	logger.Info("manager started", "api", cfg.APIAddr(), "raft", node.Addr(), "bootstrap", bootstrap)
	err = m.serve(ctx, lis, debug, fwd, fresh && !bootstrap)
	logger.Info("manager stopped")
	return err
}

// listenAPI listens on the advertised API address, and on the local one
// when there is one and it is free.
func (m *Manager) listenAPI() ([]net.Listener, error) {
	lis, err := net.Listen("tcp", m.cfg.APIAddr())
	if err != nil {
		return nil, fmt.Errorf("listen for the API on %s: %w", m.cfg.APIAddr(), err)
	}
	if m.cfg.LocalAPIAddr == "" {
		return []net.Listener{lis}, nil
	}
	local, err := net.Listen("tcp", m.cfg.LocalAPIAddr)
	if err != nil {
		m.logger.Warn("the API is not served on the local address too: the CLI on this host needs --manager "+m.cfg.APIAddr(),
			"local_api", m.cfg.LocalAPIAddr, "error", err)
		return []net.Listener{lis}, nil
	}
	m.logger.Info("the API is also served on the local address, for the CLI on this host", "local_api", m.cfg.LocalAPIAddr)
	return []net.Listener{lis, local}, nil
}

// serve runs the manager's parts until ctx ends or the API server fails.
// Then, unless ctx ended with ErrCrash, a leader hands over before
// anything stops: its parts run on a context of their own, which ends only
// after the hand-off.
func (m *Manager) serve(ctx context.Context, lis []net.Listener, debug []*debugserver.Server, fwd *forwarder, join bool) error {
	srv := m.newAPIServer(fwd)
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRun()
	// failed ends when the API server fails; nothing else returns an error.
	g, failed := errgroup.WithContext(runCtx)
	for _, l := range lis {
		g.Go(func() error {
			if err := srv.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				return fmt.Errorf("serve API on %s: %w", l.Addr(), err)
			}
			return nil
		})
	}
	for _, d := range debug {
		g.Go(func() error {
			// The debug endpoints are for people; losing one must not
			// take the manager down with it.
			if err := d.Serve(runCtx); err != nil {
				m.logger.Error("debug server stopped", "error", err)
			}
			return nil
		})
	}
	if join {
		g.Go(func() error { m.joinCluster(runCtx); return nil })
	}
	g.Go(func() error { m.leadWhileLeader(runCtx); return nil })
	g.Go(func() error { m.serveHello(runCtx); return nil })
	g.Go(func() error { m.keepAdminBundle(runCtx); return nil })
	g.Go(func() error { m.followGossipKeys(runCtx); return nil })
	g.Go(func() error {
		(&identity.Renewer{
			DataDir: m.cfg.DataDir, Pool: m.creds.pool, Keypair: m.creds.keypair,
			Managers: m.managersLeaderFirst, Logger: m.logger,
		}).Run(runCtx)
		return nil
	})
	g.Go(func() error {
		m.raft.ObserveLeader(runCtx, func() {
			leader, _ := m.members.leaderAPIAddr() // none: close them all
			fwd.retain(leader)
		})
		return nil
	})
	g.Go(func() error {
		select {
		case <-ctx.Done():
		case <-failed.Done():
		}
		if !crashed(ctx) {
			m.handOff()
		}
		stopRun()
		stopServing(srv)
		return nil
	})
	return g.Wait()
}

// newAPIServer is the gRPC server of the Control and Dispatcher APIs;
// Control API calls that reach a follower go through fwd to the leader.
func (m *Manager) newAPIServer(fwd *forwarder) *grpc.Server {
	srv := grpc.NewServer(
		// Joiners have no certificate yet, so TLS lets every client in;
		// authz then refuses each call its caller's role does not allow,
		// before a follower forwards anything.
		grpc.Creds(credentials.NewTLS(ca.ServerConfig(m.creds.pool, m.creds.keypair))),
		// Recovery first, so that a panic anywhere after it, in a handler
		// or another interceptor, becomes the caller's Internal error.
		grpc.ChainUnaryInterceptor(recovery.UnaryServerInterceptor(recoverPanics(m.logger)), authz.Manager.Unary(), fwd.unary),
		grpc.ChainStreamInterceptor(recovery.StreamServerInterceptor(recoverPanics(m.logger)), authz.Manager.Stream(), fwd.stream),
		// Agents' sessions are long-lived; keepalives notice a dead peer
		// whose TCP connection never closed (a host that lost power), so
		// its stream and goroutines are freed. They are only the fallback:
		// the dispatcher judges a node by its heartbeats, and a ping after
		// every 2 s of quiet would cost 10,000 agents, whose heartbeats are
		// stretched to 5 s, thousands of frames a second.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 20 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}),
		// Every agent keeps a connection to every manager, mostly idle on
		// the followers (agent/conns.go): a write buffer held only while
		// writing keeps the idle ones cheap.
		grpc.SharedWriteBuffer(true),
		grpc.ReadBufferSize(4<<10),
	)
	skiffpb.RegisterControlServer(srv, m.control)
	skiffpb.RegisterDispatcherServer(srv, m.dispatch)
	skiffpb.RegisterNodeCAServer(srv, nodeca.New(nodeca.Config{Store: m.store, Raft: m.raft, Logger: m.logger}))
	return srv
}

// leaveGossip says goodbye to the gossip pool, unless ctx ended with
// ErrCrash: a crashed manager just falls silent.
func (m *Manager) leaveGossip(ctx context.Context) {
	if crashed(ctx) {
		m.pool.Kill()
		return
	}
	if err := m.pool.Shutdown(time.Second); err != nil {
		m.logger.Debug("gossip shutdown", "error", err)
	}
}

// handOff passes the leadership on, if this manager holds it, before the
// manager stops on purpose: the cluster then has a new leader in a round
// trip, not an election timeout.
func (m *Manager) handOff() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := m.raft.HandOff(ctx); err != nil {
		m.logger.Warn("hand the leadership over", "error", err)
	}
}

// stopServing stops the API server. GracefulStop waits for streams, and
// agents' sessions never end on their own; give them a moment, then cut
// them.
func stopServing(srv *grpc.Server) {
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		srv.Stop()
		<-stopped
	}
}

// controlRaft is the Raft member as the Control API sees it.
type controlRaft struct{ *raftnode.Node }

// Members implements controlapi.Raft.
func (r controlRaft) Members() ([]controlapi.RaftMember, error) {
	servers, err := r.Servers()
	if err != nil {
		return nil, err
	}
	members := make([]controlapi.RaftMember, len(servers))
	for i, s := range servers {
		members[i] = controlapi.RaftMember{Name: s.ID, RaftAddr: s.Address, Voter: s.Voter}
	}
	return members, nil
}

// ErrCrash, as the cause of the cancellation of Run's context, stops the
// manager the way a crash looks to its peers: no leadership hand-off and no
// farewell to the gossip pool. In-process fault tests use it; its
// connections still close, as they would when a process dies.
var ErrCrash = errors.New("manager crashed")

func crashed(ctx context.Context) bool { return errors.Is(context.Cause(ctx), ErrCrash) }

// joinCluster asks the managers found by gossip to add this one to Raft,
// until one of them (through the leader) has.
func (m *Manager) joinCluster(ctx context.Context) {
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		for _, addr := range m.pool.ManagerAPIAddrs() {
			if addr == m.cfg.APIAddr() {
				continue
			}
			if err := m.joinVia(ctx, addr); err != nil {
				m.logger.Debug("join via manager failed", "manager", addr, "error", err)
				continue
			}
			m.logger.Info("joined the cluster as a Raft voter", "via", addr)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 3*time.Second)
	}
}

func (m *Manager) joinVia(ctx context.Context, addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(m.clientCreds()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = skiffpb.NewControlClient(conn).JoinManager(ctx, &skiffpb.JoinManagerRequest{
		Name: m.cfg.Name, RaftAddr: m.raft.Addr(), ApiAddr: m.cfg.APIAddr(), Token: m.cfg.Token,
	})
	return err
}
