// Package agent runs skiff-agent: it finds the managers by gossip, holds a
// session with the leader, and runs the node's tasks through an Executor.
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
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/hashicorp/memberlist"

	"github.com/skiffhq/skiff/gossip"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// Config is skiff-agent's configuration; design.md §2 gives the flags.
type Config struct {
	Name          string
	DataDir       string
	AdvertiseAddr string
	GossipPort    int
	// Join lists gossip addresses (host:port) of members to join.
	Join []string
	// Labels are the node's engine labels (--label k=v).
	Labels      map[string]string
	MetricsAddr string
	// Executor runs the tasks; the command wires in the Docker one.
	Executor Executor
	Logger   *slog.Logger
	// Managers, when set, are API addresses to try besides those gossip
	// finds; simulated agents use it to skip gossip.
	Managers []string
	// NoGossip skips joining the gossip pool (simulated agents).
	NoGossip bool
	// Overlay, when set, is the host's overlay network: it hears of the
	// node's networks and of every task's status, and rides on gossip.
	Overlay Overlay
}

// Overlay is the host's overlay network as the agent drives it; package
// overlay/host implements it.
type Overlay interface {
	// Assigned is given every Assignments message before the tasks in it
	// are acted on, so a task's network exists before its sandbox.
	Assigned(*skiffpb.Assignments)
	// TaskStatus is told each task's status as it changes, and whenever
	// the task's assignment changes: the overlay publishes running tasks.
	TaskStatus(a *skiffpb.Assignment, st *skiffpb.TaskStatus)
	// Delegate and HandleGossip carry the overlay's records and follow
	// membership through the gossip pool.
	Delegate() memberlist.Delegate
	HandleGossip(gossip.Event)
	SetPool(*gossip.Pool)
	// NodesDown is given the leader's DownNodes: every node it judges Down,
	// each call replacing the last.
	NodesDown(names []string)
	// Run runs the overlay until ctx ends.
	Run(ctx context.Context)
}

func (c *Config) validate() error {
	switch {
	case c.Name == "":
		return errors.New("--name is required: give this node a name unique in the cluster")
	case c.DataDir == "":
		return errors.New("--data-dir is required: the agent keeps its node ID there")
	case net.ParseIP(c.AdvertiseAddr) == nil:
		return fmt.Errorf("--advertise-addr %q is not an IP address", c.AdvertiseAddr)
	case len(c.Join) == 0 && len(c.Managers) == 0:
		return errors.New("--join is required: give the gossip address (HOST:PORT) of any manager or agent")
	case c.Executor == nil:
		return errors.New("no executor configured")
	}
	return nil
}

// Agent is a running agent.
type Agent struct {
	cfg    Config
	logger *slog.Logger
	worker *worker
	pool   *gossip.Pool

	mu       sync.Mutex
	nodeID   string
	managers []string // from the last SessionAccepted
	// connected reports whether a session is up, for metrics.
	connected bool
	// leaderNews is signalled when gossip announces a leader.
	leaderNews chan struct{}

	sessions prometheus.Counter
}

// Run starts the agent and blocks until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.GossipPort == 0 {
		cfg.GossipPort = 7946
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	a := &Agent{cfg: cfg, logger: cfg.Logger.With("node", cfg.Name), managers: cfg.Managers, leaderNews: make(chan struct{}, 1)}
	a.nodeID = a.readNodeID()
	a.sessions = prometheus.NewCounter(prometheus.CounterOpts{Name: "skiff_agent_sessions_total", Help: "Sessions opened with a leader."})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.worker = newWorker(ctx, cfg.Executor, cfg.Name, a.logger)
	if cfg.Overlay != nil {
		a.worker.onStatus = cfg.Overlay.TaskStatus
	}
	containers, err := cfg.Executor.Containers(ctx)
	if err != nil {
		return fmt.Errorf("list this node's containers: %w", err)
	}
	a.worker.adopt(containers)
	a.logger.Info("agent starting", "containers_found", len(containers))

	var wg sync.WaitGroup
	if !cfg.NoGossip {
		gc := gossip.Config{
			Meta:     gossip.Meta{Name: cfg.Name, Role: gossip.RoleAgent, Addr: cfg.AdvertiseAddr},
			BindAddr: cfg.AdvertiseAddr, Port: cfg.GossipPort, Join: cfg.Join, Logger: a.logger,
		}
		gc.OnEvent = a.observeGossip
		if cfg.Overlay != nil {
			gc.Delegate = cfg.Overlay.Delegate()
			gc.OnEvent = func(ev gossip.Event) {
				cfg.Overlay.HandleGossip(ev)
				a.observeGossip(ev)
			}
		}
		pool, err := gossip.Start(ctx, gc)
		if err != nil {
			return err
		}
		a.pool = pool
		if cfg.Overlay != nil {
			cfg.Overlay.SetPool(pool)
			wg.Add(1)
			go func() { defer wg.Done(); cfg.Overlay.Run(ctx) }()
		}
		defer func() {
			if err := pool.Shutdown(time.Second); err != nil {
				a.logger.Debug("gossip shutdown", "error", err)
			}
		}()
	}
	if cfg.MetricsAddr != "" {
		srv, err := a.serveMetrics(cfg.MetricsAddr)
		if err != nil {
			return err
		}
		defer srv.Close()
	}

	wg.Add(2)
	go func() { defer wg.Done(); a.followEvents(ctx) }()
	go func() { defer wg.Done(); a.sessionLoop(ctx) }()
	<-ctx.Done()
	wg.Wait()
	a.worker.wait()
	a.logger.Info("agent stopped")
	return nil
}

func (a *Agent) nodeIDPath() string { return filepath.Join(a.cfg.DataDir, "node-id") }

func (a *Agent) readNodeID() string {
	b, err := os.ReadFile(a.nodeIDPath())
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
	tmp := a.nodeIDPath() + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err == nil {
		err = os.Rename(tmp, a.nodeIDPath())
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
// leader can be found.
func (a *Agent) sessionLoop(ctx context.Context) {
	backoff := newBackoff()
	for ctx.Err() == nil {
		est, err := a.connect(ctx)
		if errors.Is(err, errNewLeader) {
			// At most once per term: the next round starts from it.
			continue
		}
		if err != nil {
			a.logger.Debug("no session with a leader yet", "error", err)
			backoff.wait(ctx, a.leaderNews)
			continue
		}
		backoff.reset()
		a.run(ctx, est)
	}
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

func (a *Agent) serveMetrics(addr string) (*http.Server, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(a.sessions, prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "skiff_agent_tasks", Help: "Tasks this agent holds."}, func() float64 {
			a.worker.mu.Lock()
			defer a.worker.mu.Unlock()
			return float64(len(a.worker.tasks))
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "skiff_agent_connected", Help: "1 while a session with the leader is up."}, func() float64 {
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.connected {
				return 1
			}
			return 0
		}))
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for metrics on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go s.Serve(lis)
	return s, nil
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
func dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxAssignmentsMessage)),
		// Gossip may still list a leader that just died; a 2 s connect
		// timeout (gRPC's default is 20 s) lets the agent move on to the
		// next manager instead of waiting on the dead one.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: grpcbackoff.DefaultConfig, MinConnectTimeout: 2 * time.Second}),
	)
}
