// Package agent runs skiff-agent: it holds a session with the leader, and
// runs the node's tasks through an Executor.
//
// The agent reaches the rest of the cluster through small seams, each wired
// in by its command: an Executor runs the containers, a Discovery says where
// the managers are and which leads (skiff-agent's is the gossip pool), an
// Overlay hears of the node's networks and tasks, and a Keyring takes the
// cluster's gossip keys.
//
// The agent keeps working without a leader. Running containers keep
// running, the engine's events keep updating their statuses, and the latest
// status of each task is delivered when a session is back.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/skiffhq/skiff/internal/debugserver"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// Config is skiff-agent's configuration; design.md §2 gives the flags.
type Config struct {
	Name          string
	DataDir       string
	AdvertiseAddr string
	// Labels are the node's engine labels (--label k=v).
	Labels      map[string]string
	MetricsAddr string
	// Executor runs the tasks; the command wires in the Docker one.
	Executor Executor
	Logger   *slog.Logger
	// Discovery, when set, names the managers and the leader; skiff-agent
	// wires in the gossip pool.
	Discovery Discovery
	// Managers are API addresses to try besides those Discovery names;
	// simulated agents, which have no Discovery, know only these.
	Managers []string
	// Creds are the node's certificate and the cluster's CA: every
	// connection to a manager is mutual TLS, and only a manager of this
	// cluster is trusted, whatever gossip or a redirect names.
	Creds credentials.TransportCredentials
	// Overlay, when set, is the host's overlay network: it hears of the
	// node's networks and of every task's status.
	Overlay Overlay
	// Keyring, when set, is given the cluster's gossip keyring whenever the
	// leader sends it; skiff-agent wires in its gossip pool.
	Keyring Keyring
}

// Keyring is where the agent puts the cluster's gossip keyring: the node's
// gossip pool, and the copy kept beside its certificate for its next start.
// The leader sends the keyring at the start of every session and at each
// stage of a rotation of the key.
type Keyring interface {
	// SetKeys makes the keyring exactly keys, the first of them primary.
	SetKeys(keys [][]byte) error
}

// Discovery tells the agent where the managers are and which of them leads.
// skiff-agent's is the gossip pool: managers advertise their API address,
// and the leader its term, in their gossip metadata.
type Discovery interface {
	// ManagerAPIAddrs returns the API addresses of the managers believed
	// alive.
	ManagerAPIAddrs() []string
	// Leader returns the API address of the manager announced as leader in
	// the highest term, and that term; "" and 0 while none is.
	Leader() (apiAddr string, term uint64)
	// LeaderNews has a value whenever a manager announces that it leads,
	// so that an agent waiting out a backoff, or holding a session with a
	// deposed leader, hears of it at once. The announcer never blocks on
	// it: one value waiting stands for any number of announcements.
	LeaderNews() <-chan struct{}
}

// Overlay is the host's overlay network as the agent drives it; package
// overlay/host implements it. Its gossip wiring is its command's business.
type Overlay interface {
	// Assigned is given every Assignments message before the tasks in it
	// are acted on, so a task's network exists before its sandbox.
	Assigned(*skiffpb.Assignments)
	// TaskStatus is told each task's status as it changes, and whenever
	// the task's assignment changes: the overlay publishes running tasks.
	// It is called with the worker's lock held and must not block.
	TaskStatus(a *skiffpb.Assignment, st *skiffpb.TaskStatus)
	// NodesDown is given the leader's DownNodes: every node it judges Down,
	// each call replacing the last.
	NodesDown(names []string)
	// Run runs the overlay until ctx ends.
	Run(ctx context.Context)
}

// Validate reports the first mistake in the agent's own settings: a missing
// name or data dir, or an advertise address that is not an IP. Run checks
// them again; a command that starts something before Run (skiff-agent joins
// gossip) checks them first.
func (c *Config) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("--name is required: give this node a name unique in the cluster")
	case c.DataDir == "":
		return errors.New("--data-dir is required: the agent keeps its node ID there")
	case net.ParseIP(c.AdvertiseAddr) == nil:
		return fmt.Errorf("--advertise-addr %q is not an IP address", c.AdvertiseAddr)
	}
	return nil
}

// validate adds to Validate what Run needs wired in.
func (c *Config) validate() error {
	switch err := c.Validate(); {
	case err != nil:
		return err
	case c.Discovery == nil && len(c.Managers) == 0:
		return errors.New("no way to find the managers: configure a Discovery or a list of Managers")
	case c.Executor == nil:
		return errors.New("no executor configured")
	case c.Creds == nil:
		return errors.New("no credentials configured: the agent needs its node's certificate")
	}
	return nil
}

// Agent is a running agent.
type Agent struct {
	cfg       Config
	logger    *slog.Logger
	worker    *worker
	discovery Discovery
	overlay   Overlay

	mu       sync.Mutex
	nodeID   string
	managers []string // from the last SessionAccepted
	// conns are the connections to the managers, kept across sessions.
	conns *managerConns
	// connected reports whether a session is up, for metrics.
	connected bool

	sessions prometheus.Counter
}

// Run starts the agent and blocks until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	logger := cfg.Logger.With("node", cfg.Name)
	containers, err := cfg.Executor.Containers(ctx)
	if err != nil {
		return fmt.Errorf("list this node's containers: %w", err)
	}
	a := newAgent(ctx, cfg, logger)
	defer a.conns.close()
	a.worker.adopt(containers)
	a.logger.Info("agent starting", "containers_found", len(containers))

	var wg sync.WaitGroup
	if cfg.MetricsAddr != "" {
		srv, err := debugserver.Listen(debugserver.Config{Addr: cfg.MetricsAddr, Metrics: a.metrics(), Logger: a.logger})
		if err != nil {
			return err
		}
		wg.Go(func() {
			if err := srv.Serve(ctx); err != nil {
				a.logger.Warn("metrics server stopped", "error", err)
			}
		})
	}
	if cfg.Overlay != nil {
		wg.Go(func() { cfg.Overlay.Run(ctx) })
	}
	wg.Go(func() { a.followEvents(ctx) })
	var refused error
	wg.Go(func() {
		if refused = a.sessionLoop(ctx); refused != nil {
			cancel()
		}
	})
	<-ctx.Done()
	wg.Wait()
	a.worker.wait()
	a.logger.Info("agent stopped")
	return refused
}

// newAgent builds the agent of cfg, whose Logger and DataDir are set; its
// worker's calls last as long as ctx.
func newAgent(ctx context.Context, cfg Config, logger *slog.Logger) *Agent {
	ov := cfg.Overlay
	if ov == nil {
		ov = noOverlay{}
	}
	d := cfg.Discovery
	if d == nil {
		d = noDiscovery{}
	}
	return &Agent{
		cfg:       cfg,
		logger:    logger,
		worker:    newWorker(ctx, cfg.Executor, cfg.Name, logger, ov.TaskStatus),
		discovery: d,
		overlay:   ov,
		nodeID:    readNodeID(nodeIDPath(cfg.DataDir)),
		managers:  cfg.Managers,
		conns:     newManagerConns(cfg.Creds),
		sessions:  prometheus.NewCounter(prometheus.CounterOpts{Name: "skiff_agent_sessions_total", Help: "Sessions opened with a leader."}),
	}
}

// noDiscovery is the Discovery of an agent that knows only the managers it
// was given and those its leaders list.
type noDiscovery struct{}

func (noDiscovery) ManagerAPIAddrs() []string   { return nil }
func (noDiscovery) Leader() (string, uint64)    { return "", 0 }
func (noDiscovery) LeaderNews() <-chan struct{} { return nil }

// noOverlay is the Overlay of an agent without one.
type noOverlay struct{}

func (noOverlay) Assigned(*skiffpb.Assignments)                       {}
func (noOverlay) TaskStatus(*skiffpb.Assignment, *skiffpb.TaskStatus) {}
func (noOverlay) NodesDown([]string)                                  {}
func (noOverlay) Run(ctx context.Context)                             { <-ctx.Done() }

func nodeIDPath(dataDir string) string { return filepath.Join(dataDir, "node-id") }

// readNodeID returns the node ID a previous run saved at path; "" if none.
func readNodeID(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func (a *Agent) saveNodeID(id string) {
	a.mu.Lock()
	changed := a.nodeID != id
	a.nodeID = id
	a.mu.Unlock()
	if !changed {
		return
	}
	path := nodeIDPath(a.cfg.DataDir)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err == nil {
		err = os.Rename(tmp, path)
		if err != nil {
			a.logger.Warn("save node ID", "error", err)
		}
	}
}

// followEvents feeds the engine's events to the worker until ctx ends. The
// executor reconnects a broken stream and resyncs itself (see
// Executor.Events), so there is nothing to retry here.
func (a *Agent) followEvents(ctx context.Context) {
	for ev := range a.cfg.Executor.Events(ctx) {
		a.worker.observe(ev)
	}
}

// sessionLoop keeps a session with the leader: it finds the leader, runs
// the session until it ends, and does it again, backing off only while no
// leader can be found. It returns only when ctx ends, or with the leader's
// refusal of this node (removed, or not who it claims to be), which no
// retry can change.
func (a *Agent) sessionLoop(ctx context.Context) error {
	backoff := newBackoff()
	var lost lostLeader
	for ctx.Err() == nil {
		est, err := a.connect(ctx, lost)
		if errors.Is(err, errNewLeader) {
			// At most once per term: the next round starts from it.
			continue
		}
		if refusal := refusedBy(err); refusal != nil {
			a.logger.Error("the cluster refuses this node", "error", refusal)
			return fmt.Errorf("the cluster refuses this node: %w", refusal)
		}
		if err != nil {
			a.logger.Debug("no session with a leader yet", "error", err)
			backoff.wait(ctx, a.discovery.LeaderNews())
			continue
		}
		backoff.reset()
		if err := a.run(ctx, est); errors.Is(err, errLeaderSilent) {
			// The connection may be dead without a word (a host cut off):
			// a call on it would wait out the whole registration timeout,
			// where a fresh dial gives up after the connect timeout, and
			// the round of registrations waits for its slowest attempt.
			a.conns.drop(est.addr)
		}
		_, term := a.discovery.Leader()
		lost = lostLeader{addr: est.addr, term: term}
	}
	return nil
}

// refusedBy finds, in a registration's errors, a leader's refusal of this
// node's identity.
func refusedBy(err error) error {
	var found error
	var walk func(error)
	walk = func(e error) {
		if e == nil || found != nil {
			return
		}
		if c := status.Code(e); c == codes.PermissionDenied || c == codes.Unauthenticated {
			found = e
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return found
}

// backoff is capped exponential backoff with jitter, so that a thousand
// agents that lost their leader together do not reconnect in lockstep.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 50 * time.Millisecond} }

func (b *backoff) reset() { b.d = 50 * time.Millisecond }

// wait waits out the next backoff, or less if wake delivers.
func (b *backoff) wait(ctx context.Context, wake <-chan struct{}) {
	d := b.d/2 + rand.N(b.d/2+1)
	b.d = min(b.d*2, 2*time.Second)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	case <-wake:
	}
}

// metrics gathers the agent's metrics, for its /metrics endpoint.
func (a *Agent) metrics() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(a.sessions, prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "skiff_agent_tasks", Help: "Tasks this agent holds."}, func() float64 {
			return float64(a.worker.held())
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "skiff_agent_connected", Help: "1 while a session with the leader is up."}, func() float64 {
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.connected {
				return 1
			}
			return 0
		}))
	return reg
}

// maxAssignmentsMessage bounds the size of a message from the leader. The
// full assignment set of a node is one message, about 400 bytes per task
// with its spec, so gRPC's default of 4 MiB would cut off a node with ten
// thousand tasks.
const maxAssignmentsMessage = 256 << 20

// dial opens a client connection to a manager. The session's own
// heartbeats notice a dead leader within three periods; keepalives are only
// a fallback for a connection whose session has not started (gRPC allows
// clients no shorter interval than 10 s anyway).
func dial(addr string, creds credentials.TransportCredentials) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr,
		grpc.WithTransportCredentials(creds),
		// Never idle: the connection to a follower carries no call between
		// registrations, and it is kept for the next leader change (see
		// managerConns), which must not find it closed.
		grpc.WithIdleTimeout(0),
		grpc.WithSharedWriteBuffer(true),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxAssignmentsMessage)),
		// Gossip may still list a leader that just died; a 2 s connect
		// timeout (gRPC's default is 20 s) lets the agent move on to the
		// next manager instead of waiting on the dead one.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: grpcbackoff.DefaultConfig, MinConnectTimeout: 2 * time.Second}),
	)
}
