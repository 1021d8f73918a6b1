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
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/skiffhq/skiff/gossip"
	"github.com/skiffhq/skiff/manager/controlapi"
	"github.com/skiffhq/skiff/manager/dispatcher"
	"github.com/skiffhq/skiff/manager/orchestrator"
	"github.com/skiffhq/skiff/manager/placement"
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
	// Join lists gossip addresses (host:port) of existing members. With an
	// empty data dir, the manager joins their cluster instead of creating
	// one.
	Join            []string
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

	m := &Manager{cfg: cfg, logger: logger, store: state.New()}
	m.metrics = newMetrics(m)
	node, err := raftnode.Open(raftnode.Config{
		ID:               cfg.Name,
		DataDir:          raftDir,
		BindAddr:         net.JoinHostPort(cfg.AdvertiseAddr, strconv.Itoa(cfg.RaftPort)),
		Bootstrap:        fresh && len(cfg.Join) == 0,
		HeartbeatTimeout: cfg.RaftHeartbeatTimeout,
		ElectionTimeout:  cfg.RaftElectionTimeout,
		Logger:           logger,
	}, m.store)
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	m.raft = node
	m.members = newMembership(cfg.Name, node, m.store)
	defer func() {
		if err := node.Close(); err != nil {
			logger.Warn("raft shutdown", "error", err)
		}
	}()

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
		BindAddr: cfg.AdvertiseAddr, Port: cfg.GossipPort, Join: cfg.Join,
		OnEvent: m.members.observe, Logger: logger,
	})
	if err != nil {
		return err
	}
	m.pool = pool
	m.members.pool = pool
	defer func() {
		if crashed(ctx) {
			pool.Kill()
			return
		}
		if err := pool.Shutdown(time.Second); err != nil {
			logger.Debug("gossip shutdown", "error", err)
		}
	}()

	lis, err := net.Listen("tcp", cfg.APIAddr())
	if err != nil {
		return fmt.Errorf("listen for the API on %s: %w", cfg.APIAddr(), err)
	}
	fwd := newForwarder(node.IsLeader, m.members.leaderAPIAddr)
	defer fwd.close()
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(fwd.unary),
		grpc.ChainStreamInterceptor(fwd.stream),
		// Agents' sessions are long-lived; keepalives notice a dead peer
		// whose TCP connection never closed (a host that lost power), so
		// its stream and goroutines are freed. They are only the fallback:
		// the dispatcher judges a node by its heartbeats, and a ping after
		// every 2 s of quiet would cost 10,000 agents, whose heartbeats are
		// stretched to 5 s, thousands of frames a second.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 20 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}),
	)
	skiffpb.RegisterControlServer(srv, m.control)
	skiffpb.RegisterDispatcherServer(srv, m.dispatch)

	var wg sync.WaitGroup
	errc := make(chan error, 3)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errc <- fmt.Errorf("serve API: %w", err)
		}
	}()
	if cfg.MetricsAddr != "" {
		ms, err := m.metrics.serve(cfg.MetricsAddr)
		if err != nil {
			srv.Stop()
			return err
		}
		defer ms.Close()
	}
	if cfg.PprofAddr != "" {
		ps, err := servePprof(cfg.PprofAddr)
		if err != nil {
			srv.Stop()
			return err
		}
		defer ps.Close()
	}
	// Not cancelled with ctx: a leader keeps leading until it has handed over.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	if fresh && len(cfg.Join) > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); m.joinCluster(runCtx) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); m.leadWhileLeader(runCtx) }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.raft.ObserveLeader(runCtx, func() {
			leader, _ := m.members.leaderAPIAddr() // none: close them all
			fwd.retain(leader)
		})
	}()
	logger.Info("manager started", "api", cfg.APIAddr(), "raft", node.Addr(), "bootstrap", fresh && len(cfg.Join) == 0)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	if !crashed(ctx) {
		// A leader stopped on purpose hands over first: the cluster then
		// has a new leader in a round trip, not an election timeout.
		hctx, hcancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := node.HandOff(hctx); err != nil {
			logger.Warn("hand the leadership over", "error", err)
		}
		hcancel()
	}
	cancel()
	// GracefulStop waits for streams, and agents' sessions never end on
	// their own; give them a moment, then cut them.
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		srv.Stop()
	}
	wg.Wait()
	logger.Info("manager stopped")
	return runErr
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

// leadWhileLeader runs the leader's components for as long as this manager
// leads, and stops them the moment it does not.
func (m *Manager) leadWhileLeader(ctx context.Context) {
	leaderCh := m.raft.LeaderCh()
	term := &leaderTerm{}
	defer term.end()
	for {
		select {
		case <-ctx.Done():
			return
		case isLeader := <-leaderCh:
			term.end()
			if !isLeader {
				m.logger.Info("lost leadership")
				m.announceLead(0)
				continue
			}
			t := m.raft.Term()
			m.logger.Info("became leader", "term", t)
			term.start(ctx, m.lead)
			m.announceLead(t)
		}
	}
}

// announceLead advertises by gossip that this manager leads in term t (0:
// that it does not), so that agents come to it at once. The dispatcher of
// a term that has not started serving yet holds their sessions until it
// does.
func (m *Manager) announceLead(t uint64) {
	// UpdateNode returns once the news is on its way to one member; a
	// leader cut off from everyone should not wait long for that.
	if err := m.pool.SetLead(t, 250*time.Millisecond); err != nil {
		m.logger.Debug("announce leadership by gossip", "term", t, "error", err)
	}
}

// leaderTerm is the running leader components of one term.
type leaderTerm struct {
	stop context.CancelFunc
	done chan struct{}
}

func (t *leaderTerm) start(ctx context.Context, f func(context.Context)) {
	ctx, t.stop = context.WithCancel(ctx)
	t.done = make(chan struct{})
	go func() { defer close(t.done); f(ctx) }()
}

// end stops the term's components and waits until they have stopped, so
// that no decision of an old term is made after leadership is lost.
func (t *leaderTerm) end() {
	if t.stop == nil {
		return
	}
	t.stop()
	<-t.done
	t.stop = nil
}

// lead is one leader term.
func (m *Manager) lead(ctx context.Context) {
	// Apply everything the previous leader committed before deciding
	// anything from the store.
	if err := m.raft.Barrier(ctx); err != nil {
		m.logger.Error("leader barrier failed; waiting for the next term", "error", err)
		return
	}
	if err := m.ensureCluster(ctx); err != nil {
		m.logger.Error("initialise cluster", "error", err)
		return
	}
	if err := m.control.RegisterManager(ctx, m.cfg.Name, m.raft.Addr(), m.cfg.APIAddr()); err != nil {
		m.logger.Warn("record this manager's node", "error", err)
	}
	addrs := newAddressBook(m.store, m.logger)
	var wg sync.WaitGroup
	run := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	run(addrs.run)
	run(m.dispatch.Run)
	run(orchestrator.New(orchestrator.Config{Store: m.store, Raft: m.raft, IPAM: addrs.ipam, Logger: m.logger}).Run)
	run(placement.New(placement.Config{Store: m.store, Raft: m.raft, IPAM: addrs.ipam, Logger: m.logger, Latency: m.metrics.schedulingLatency}).Run)
	wg.Wait()
}

// ensureCluster writes the cluster object on the first leadership of a new
// cluster.
func (m *Manager) ensureCluster(ctx context.Context) error {
	var exists bool
	m.store.View(func(tx state.ReadTx) { exists = tx.Cluster() != nil })
	if exists {
		return nil
	}
	now := time.Now().UnixNano()
	_, err := m.raft.Propose(ctx, &skiffpb.Command{Actions: []*skiffpb.StoreAction{{Action: &skiffpb.StoreAction_PutCluster{PutCluster: &skiffpb.Cluster{
		Id: state.NewID(), Meta: &skiffpb.Meta{CreatedAt: now, UpdatedAt: now},
		DefaultAddrPool: m.cfg.DefaultAddrPool, SubnetSize: uint32(m.cfg.SubnetSize), TaskHistoryLimit: 5,
		NodeDownGrace: int64(m.cfg.DownGrace), HeartbeatPeriod: int64(m.cfg.HeartbeatPeriod),
	}}}}})
	if err != nil && !errors.Is(err, state.ErrVersionConflict) {
		return err
	}
	return nil
}

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
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = skiffpb.NewControlClient(conn).JoinManager(ctx, &skiffpb.JoinManagerRequest{
		Name: m.cfg.Name, RaftAddr: m.raft.Addr(), ApiAddr: m.cfg.APIAddr(),
	})
	return err
}

// metrics are the manager's Prometheus metrics, on its own registry.
type metrics struct {
	registry          *prometheus.Registry
	schedulingLatency prometheus.Histogram
}

func newMetrics(m *Manager) *metrics {
	reg := prometheus.NewRegistry()
	mt := &metrics{
		registry: reg,
		schedulingLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "skiff_scheduling_latency_seconds",
			Help:    "Time from a task's creation until the scheduler placed it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
	}
	reg.MustRegister(mt.schedulingLatency, &stateCollector{m: m},
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return mt
}

func (mt *metrics) serve(addr string) (*http.Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for metrics on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(mt.registry, promhttp.HandlerOpts{}))
	s := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go s.Serve(lis)
	return s, nil
}

// servePprof serves Go's profiler on addr.
func servePprof(addr string) (*http.Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for pprof on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go s.Serve(lis)
	return s, nil
}

// stateCollector reports the store and Raft at scrape time, so the metrics
// cost nothing between scrapes.
type stateCollector struct{ m *Manager }

var (
	descRaftState = prometheus.NewDesc("skiff_raft_state", "1 for this manager's current Raft state.", []string{"state"}, nil)
	descRaftIndex = prometheus.NewDesc("skiff_raft_applied_index", "Index of the last Raft entry applied to the store.", nil, nil)
	descTasks     = prometheus.NewDesc("skiff_tasks", "Tasks by observed state.", []string{"state"}, nil)
	descNodes     = prometheus.NewDesc("skiff_nodes", "Nodes by state.", []string{"state"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRaftState
	ch <- descRaftIndex
	ch <- descTasks
	ch <- descNodes
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	if c.m.raft == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(descRaftState, prometheus.GaugeValue, 1, c.m.raft.State())
	ch <- prometheus.MustNewConstMetric(descRaftIndex, prometheus.GaugeValue, float64(c.m.raft.AppliedIndex()))
	tasks := map[skiffpb.TaskState]int{}
	nodes := map[skiffpb.NodeState]int{}
	c.m.store.View(func(tx state.ReadTx) {
		tx.EachTask(func(t *skiffpb.Task) bool { tasks[t.GetStatus().GetState()]++; return true })
		for _, n := range tx.Nodes() {
			nodes[n.GetStatus().GetState()]++
		}
	})
	for st, n := range tasks {
		ch <- prometheus.MustNewConstMetric(descTasks, prometheus.GaugeValue, float64(n), st.String())
	}
	for st, n := range nodes {
		ch <- prometheus.MustNewConstMetric(descNodes, prometheus.GaugeValue, float64(n), st.String())
	}
}
