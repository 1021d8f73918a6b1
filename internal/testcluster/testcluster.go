// Package testcluster runs skiff clusters inside a test process: managers
// with real Raft on disk (in temp dirs), real gRPC and gossip on loopback,
// and agents whose executor is simulated. Tests of the manager, the CLI and
// anything else that needs a live cluster share it.
package testcluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/skiffhq/skiff/agent"
	"github.com/skiffhq/skiff/agent/discovery"
	"github.com/skiffhq/skiff/agent/sim"
	"github.com/skiffhq/skiff/ca"
	"github.com/skiffhq/skiff/gossip"
	"github.com/skiffhq/skiff/identity"
	"github.com/skiffhq/skiff/manager"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// Manager is one manager of an in-process cluster: real Raft on disk in
// a temp dir, real gossip and gRPC on loopback.
type Manager struct {
	Config manager.Config
	cancel context.CancelCauseFunc
	done   chan error
}

// APIAddr is the manager's gRPC address.
func (m *Manager) APIAddr() string { return m.Config.APIAddr() }

// Running reports whether the manager has been started and not stopped.
func (m *Manager) Running() bool { return m.cancel != nil }

// Cluster is a set of managers and simulated agents.
type Cluster struct {
	t        testing.TB
	Managers []*Manager
	agents   map[string]*simAgent
	// agentDirs keeps each agent's data dir, so that an agent added again
	// under its name comes back with its certificate, as a restarted
	// skiff-agent does.
	agentDirs map[string]string
	// admin is the admin credential the first manager wrote; tokens are
	// the join tokens.
	admin                     credentials.TransportCredentials
	workerToken, managerToken string
}

// simAgent is a running simulated agent and its member of the gossip pool,
// which it owns as skiff-agent does its own.
type simAgent struct {
	exec   *sim.Executor
	pool   *gossip.Pool
	logger *slog.Logger
	cancel context.CancelFunc
	done   chan error
}

// stop stops the agent, then leaves the pool gracefully, as skiff-agent
// does on SIGTERM: the agent asks the pool for a leader until it has
// stopped, and the managers hear that the node left rather than failed.
func (a *simAgent) stop() {
	a.cancel()
	<-a.done
	if err := a.pool.Shutdown(time.Second); err != nil {
		a.logger.Debug("gossip shutdown", "error", err)
	}
}

// handedOut are the ports freePort has given this process: the kernel may
// give a port that was just closed to the next listener on port 0, and two
// members of one cluster must not be handed the same one.
var handedOut sync.Map

func freePort(t testing.TB) int {
	t.Helper()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if _, taken := handedOut.LoadOrStore(port, true); !taken {
			return port
		}
	}
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("SKIFF_TEST_LOGS") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// New starts n managers: the first bootstraps, the rest join it. The
// cluster stops when the test or benchmark ends, or at Close.
func New(t testing.TB, n int) *Cluster {
	t.Helper()
	return NewIn(t, n, t.TempDir())
}

// NewIn is New with the managers' data dirs under dir, for a test that
// needs them on a file system of its own.
func NewIn(t testing.TB, n int, dir string) *Cluster {
	t.Helper()
	c := &Cluster{t: t, agents: map[string]*simAgent{}, agentDirs: map[string]string{}}
	t.Cleanup(c.Close)
	var seed string
	for i := 1; i <= n; i++ {
		name := "m" + strconv.Itoa(i)
		cfg := manager.Config{
			Name: name, DataDir: filepath.Join(dir, name), AdvertiseAddr: "127.0.0.1",
			APIPort: freePort(t), RaftPort: freePort(t), GossipPort: freePort(t),
			DefaultAddrPool: "198.19.0.0/16", HeartbeatPeriod: 200 * time.Millisecond,
			Logger: testLogger(t).With("manager", name),
		}
		if seed != "" {
			cfg.Join = []string{seed}
			cfg.Token = c.managerToken
		} else {
			seed = net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.GossipPort))
		}
		m := &Manager{Config: cfg}
		c.Managers = append(c.Managers, m)
		c.Start(m)
		if i == 1 {
			c.loadAdmin(m)
			c.WaitLeader()
			c.Eventually(20*time.Second, func() error {
				resp, err := c.Control().JoinTokens(c.Ctx(), &skiffpb.JoinTokensRequest{})
				if err != nil {
					return err
				}
				c.workerToken, c.managerToken = resp.GetWorker(), resp.GetManager()
				return nil
			})
		}
	}
	c.Eventually(20*time.Second, func() error {
		info, err := c.Control().ClusterInfo(c.Ctx(), &skiffpb.ClusterInfoRequest{})
		if err != nil {
			return err
		}
		if len(info.GetManagers()) != n {
			return fmt.Errorf("%d of %d managers in the Raft configuration", len(info.GetManagers()), n)
		}
		// The leader writes the cluster's settings when it takes office;
		// a test's first deploy needs them.
		if info.GetClusterId() == "" {
			return errors.New("the cluster is not initialised yet")
		}
		return nil
	})
	return c
}

// loadAdmin reads the admin credentials the first manager writes when it
// creates the cluster.
func (c *Cluster) loadAdmin(m *Manager) {
	c.t.Helper()
	dir := manager.AdminDir(m.Config.DataDir)
	c.Eventually(20*time.Second, func() error {
		if !ca.Exists(dir) {
			return fmt.Errorf("no admin credentials in %s yet", dir)
		}
		b, err := ca.ReadBundle(dir)
		if err != nil {
			return err
		}
		c.admin, err = b.ClientCredentials(ca.RoleManager)
		return err
	})
}

// AdminCreds are the cluster's admin credentials, as the CLI presents them.
func (c *Cluster) AdminCreds() credentials.TransportCredentials { return c.admin }

// AdminDir is the folder of the admin bundle, for a CLI's --tls-dir.
func (c *Cluster) AdminDir() string { return manager.AdminDir(c.Managers[0].Config.DataDir) }

// WorkerToken is the worker join token.
func (c *Cluster) WorkerToken() string { return c.workerToken }

// Start starts (or restarts, from its data dir) a manager.
func (c *Cluster) Start(m *Manager) {
	ctx, cancel := context.WithCancelCause(context.Background())
	m.cancel = cancel
	m.done = make(chan error, 1)
	go func() { m.done <- manager.Run(ctx, m.Config) }()
}

// Stop shuts a manager down as an operator would: a leader hands its
// leadership over, and the manager says goodbye to the gossip pool.
func (c *Cluster) Stop(m *Manager) { c.stop(m, nil) }

// Kill stops a manager the way a crash looks to its peers: no hand-over,
// no goodbye; its connections close and it stops answering.
func (c *Cluster) Kill(m *Manager) { c.stop(m, manager.ErrCrash) }

func (c *Cluster) stop(m *Manager, cause error) {
	if m.cancel == nil {
		return
	}
	m.cancel(cause)
	if err := <-m.done; err != nil {
		c.t.Errorf("manager %s exited with %v", m.Config.Name, err)
	}
	m.cancel = nil
}

// Close stops every agent and manager; a benchmark that starts a cluster
// per iteration closes each before the next. Closing twice is harmless.
func (c *Cluster) Close() {
	for name, a := range c.agents {
		a.stop()
		delete(c.agents, name)
	}
	for _, m := range c.Managers {
		c.Stop(m)
	}
}

// AddAgent starts a simulated agent named name. It joins the managers'
// gossip pool, as a real agent does, and finds the managers and the leader
// through it.
func (c *Cluster) AddAgent(name string) *sim.Executor {
	c.t.Helper()
	exec := sim.New(name)
	logger := testLogger(c.t).With("agent", name)
	var addrs, seeds []string
	for _, m := range c.Managers {
		addrs = append(addrs, m.APIAddr())
		seeds = append(seeds, net.JoinHostPort(m.Config.AdvertiseAddr, strconv.Itoa(m.Config.GossipPort)))
	}
	dir, ok := c.agentDirs[name]
	if !ok {
		dir = filepath.Join(c.t.TempDir(), name)
		c.agentDirs[name] = dir
	}
	j, err := identity.Load(dir, time.Now())
	if errors.Is(err, fs.ErrNotExist) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		j, err = identity.Join(ctx, identity.Request{
			Addrs: seeds, Token: c.workerToken, Name: name, Role: skiffpb.NodeRole_NODE_ROLE_WORKER, DataDir: dir, Logger: logger,
		})
		cancel()
	}
	if err != nil {
		c.t.Fatalf("agent %s: %v", name, err)
	}
	creds, err := j.Bundle.ClientCredentials(ca.RoleManager)
	if err != nil {
		c.t.Fatalf("agent %s: %v", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	const addr = "127.0.0.1"
	disc, err := discovery.Start(ctx, gossip.Config{
		Meta:     gossip.Meta{Name: name, Role: gossip.RoleAgent, Addr: addr},
		BindAddr: addr,
		Port:     freePort(c.t),
		Join:     seeds,
		Keys:     j.GossipKeys,
		Logger:   logger.With("node", name),
	})
	if err != nil {
		cancel()
		c.t.Fatalf("agent %s: join gossip: %v", name, err)
	}
	a := &simAgent{exec: exec, pool: disc.Pool(), logger: logger, cancel: cancel, done: make(chan error, 1)}
	cfg := agent.Config{
		Name: name, DataDir: dir, AdvertiseAddr: addr,
		Discovery: disc, Managers: addrs, Executor: exec, Creds: creds, Logger: logger,
		Keyring: keyring{pool: a.pool, dataDir: dir},
	}
	go func() { a.done <- agent.Run(ctx, cfg) }()
	c.agents[name] = a
	return exec
}

// keyring is a simulated agent's Keyring, as skiff-agent's: its pool, and
// the copy in its data dir that a restart under its name starts with.
type keyring struct {
	pool    *gossip.Pool
	dataDir string
}

func (k keyring) SetKeys(keys [][]byte) error {
	if err := k.pool.SetKeys(keys); err != nil {
		return err
	}
	return identity.SaveKeys(k.dataDir, keys)
}

// AgentGossipKeys lists the keys in a running simulated agent's gossip
// pool, the primary first.
func (c *Cluster) AgentGossipKeys(name string) [][]byte {
	c.t.Helper()
	a, ok := c.agents[name]
	if !ok {
		c.t.Fatalf("no agent %s is running", name)
	}
	return a.pool.ListKeys()
}

// StopAgent stops a simulated agent; its node goes down.
func (c *Cluster) StopAgent(name string) {
	c.agents[name].stop()
	delete(c.agents, name)
}

// Ctx returns a context with a deadline for one call.
func (c *Cluster) Ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	c.t.Cleanup(cancel)
	return ctx
}

// Control returns a client of the first running manager, as the CLI would.
func (c *Cluster) Control() skiffpb.ControlClient {
	for _, m := range c.Managers {
		if m.Running() {
			return c.ControlOf(m)
		}
	}
	c.t.Fatal("no manager is running")
	return nil
}

// ControlOf returns a client of manager m.
func (c *Cluster) ControlOf(m *Manager) skiffpb.ControlClient {
	conn, err := grpc.NewClient(m.APIAddr(), grpc.WithTransportCredentials(c.admin))
	if err != nil {
		c.t.Fatalf("dial %s: %v", m.APIAddr(), err)
	}
	c.t.Cleanup(func() { conn.Close() })
	return skiffpb.NewControlClient(conn)
}

// WaitLeader waits for a leader and returns it.
func (c *Cluster) WaitLeader() *Manager {
	var leader *Manager
	c.Eventually(20*time.Second, func() error {
		info, err := c.Control().ClusterInfo(c.Ctx(), &skiffpb.ClusterInfoRequest{})
		if err != nil {
			return err
		}
		for _, m := range c.Managers {
			if m.Running() && m.Config.Name == info.GetLeader() {
				leader = m
				return nil
			}
		}
		return fmt.Errorf("no running leader (cluster says %q)", info.GetLeader())
	})
	return leader
}

// Eventually polls f until it succeeds or the deadline passes.
func (c *Cluster) Eventually(timeout time.Duration, f func() error) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("condition not met within %s: %v", timeout, err)
}

// RunningTasks counts a service's tasks that run and should.
func (c *Cluster) RunningTasks(service string) (int, error) {
	resp, err := c.Control().ListTasks(c.Ctx(), &skiffpb.ListTasksRequest{Service: service})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, t := range resp.GetTasks() {
		if t.GetDesiredState() == skiffpb.TaskState_TASK_STATE_RUNNING && t.GetStatus().GetState() == skiffpb.TaskState_TASK_STATE_RUNNING {
			n++
		}
	}
	return n, nil
}

// WaitRunning waits until a service has want running tasks.
func (c *Cluster) WaitRunning(service string, want int) {
	c.t.Helper()
	c.Eventually(20*time.Second, func() error {
		n, err := c.RunningTasks(service)
		if err != nil {
			return err
		}
		if n != want {
			return fmt.Errorf("%s: %d running tasks, want %d", service, n, want)
		}
		return nil
	})
}

// Stack is a one-service stack spec.
func Stack(name string, replicas uint64) *skiffpb.StackSpec {
	return &skiffpb.StackSpec{
		Name:     name,
		Networks: []*skiffpb.NetworkSpec{{Name: name + "_default", Stack: name, Driver: "overlay"}},
		Services: []*skiffpb.ServiceSpec{{
			Name: name + "_web", Stack: name, Replicas: replicas,
			Container:     &skiffpb.ContainerSpec{Image: "skiff-test/web:latest"},
			RestartPolicy: &skiffpb.RestartPolicy{Condition: skiffpb.RestartCondition_RESTART_CONDITION_ANY},
			Networks:      []*skiffpb.ServiceNetwork{{Target: name + "_default"}},
		}},
	}
}

// Unavailable reports whether err is how a write fails without quorum.
func Unavailable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded)
}
