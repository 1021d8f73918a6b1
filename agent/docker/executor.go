package docker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/skiffhq/skiff/agent"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// ErrNoContainer is returned (wrapped) by Start and Logs when the node owns
// no container for the task, for instance because it was never prepared or
// someone removed it behind the agent's back.
var ErrNoContainer = errors.New("no container for task")

// Config is what an Executor is built from.
type Config struct {
	// Host is the engine's address, for example unix:///var/run/docker.sock;
	// empty means the DOCKER_HOST environment or the platform's default
	// socket.
	Host string
	// Node is the identity the executor stamps on, and looks for in, the
	// skiff.node label of its containers. It must be stable across agent
	// restarts, since it is how a restarted agent finds its containers
	// again.
	Node string
	// NetworkMode is the engine network mode of task containers without
	// overlay networks; empty picks the cheapest mode that gives a
	// container a namespace of its own with only a loopback (see
	// DefaultNetworkMode).
	NetworkMode string
	// Network, when set, connects every task that has overlay networks;
	// such a task's container starts with the network init in front of its
	// program (see package netinit). InitPath is then required.
	Network Network
	// InitPath is the host path of the executable mounted into networked
	// task containers as their network init: the agent's own binary, which
	// runs netinit.Main when started under that name.
	InitPath string
	// StateDir is where the executor keeps files of its own for networked
	// tasks (their resolv.conf, see network.go); required with Network. It
	// must be a host path the engine can bind-mount from.
	StateDir string
	// Logger receives the executor's logs; nil discards them.
	Logger *slog.Logger
}

// Executor runs tasks as containers of one Docker engine, on behalf of one
// node. It is safe for concurrent use.
type Executor struct {
	client *client.Client
	node   string
	log    *slog.Logger
	// network and initPath are Config's; network is nil without an
	// overlay.
	network  Network
	initPath string
	stateDir string
	// netMode is Config.NetworkMode: empty until ready picks isolatedMode.
	netMode string

	// negotiated gates every engine call behind one API version
	// negotiation; see ready.
	negotiated  atomic.Bool
	negotiateMu sync.Mutex
	// isolatedMode is the cheapest network mode that gives a container a
	// network namespace of its own with only a loopback; ready picks it.
	isolatedMode string

	// pending holds what Prepare learnt of a task until Start has used it.
	pendingMu sync.Mutex
	pending   map[string]prepared
}

var _ agent.Executor = (*Executor)(nil)

// New returns an executor for the engine at cfg.Host that owns the
// containers labelled with cfg.Node. It does not contact the engine: an
// engine that is down now may be up by the first call.
func New(cfg Config) (*Executor, error) {
	if cfg.Node == "" {
		return nil, errors.New("docker executor: empty node identity")
	}
	if cfg.Network != nil && cfg.InitPath == "" {
		return nil, errors.New("docker executor: a network needs the network init's path (InitPath)")
	}
	if cfg.Network != nil && cfg.StateDir == "" {
		return nil, errors.New("docker executor: a network needs a directory for the tasks' resolv.conf (StateDir)")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if cfg.Host != "" {
		opts = append(opts, client.WithHost(cfg.Host))
	}
	c, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker client for %s: %w", cfg.Host, err)
	}
	return &Executor{
		client:   c,
		node:     cfg.Node,
		log:      logger.With("component", "docker-executor", "node", cfg.Node),
		network:  cfg.Network,
		initPath: cfg.InitPath,
		stateDir: cfg.StateDir,
		netMode:  cfg.NetworkMode,
		pending:  map[string]prepared{},
	}, nil
}

// Close releases the connection to the engine. The containers keep running.
func (e *Executor) Close() error {
	return e.client.Close()
}

// Node returns the identity the executor stamps on, and looks for in, the
// skiff.node label.
func (e *Executor) Node() string {
	return e.node
}

// ready negotiates the engine's API version once, before any other call.
// The client would negotiate lazily on its first request, but it reads the
// version it negotiates without a lock in many places (the event reader, the
// filters of a listing), so the first concurrent calls of a fresh client
// race. After this, the version never changes again.
func (e *Executor) ready(ctx context.Context) error {
	if e.negotiated.Load() {
		return nil
	}
	e.negotiateMu.Lock()
	defer e.negotiateMu.Unlock()
	if e.negotiated.Load() {
		return nil
	}
	ping, err := e.client.Ping(ctx)
	if err != nil {
		return fmt.Errorf("reach engine: %w", err)
	}
	e.client.NegotiateAPIVersionPing(ping)
	mode, err := e.isolatedNetworkMode(ctx)
	if err != nil {
		return err
	}
	e.isolatedMode = mode
	e.negotiated.Store(true)
	return nil
}

// isolatedNetworkMode picks the network mode of containers that skiff
// plumbs itself. "none" joins the engine's null network, and joining any
// network costs a start about 75 ms on this engine (libnetwork's set-key
// hook runs the daemon's binary once more). An engine started with
// --bridge=none has no default network to join, so its "default" mode is
// the same empty namespace without that cost: it starts as fast as a bare
// `docker run` there.
func (e *Executor) isolatedNetworkMode(ctx context.Context) (string, error) {
	_, err := e.client.NetworkInspect(ctx, "bridge", network.InspectOptions{})
	switch {
	case err == nil:
		return DefaultNetworkMode, nil
	case cerrdefs.IsNotFound(err):
		return "default", nil
	default:
		return "", fmt.Errorf("look for the engine's default bridge: %w", err)
	}
}

// networkMode is the mode task containers are created in; ready must have
// run.
func (e *Executor) networkMode() string {
	if e.netMode == "" {
		return e.isolatedMode
	}
	return e.netMode
}

// Describe reports the engine's host: its name, CPUs, memory, engine
// version, OS and architecture. The agent adds its advertise address and its
// --label flags, which the engine does not know.
func (e *Executor) Describe(ctx context.Context) (*skiffpb.NodeDescription, error) {
	if err := e.ready(ctx); err != nil {
		return nil, fmt.Errorf("describe engine: %w", err)
	}
	info, err := e.client.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("describe engine: %w", err)
	}
	return &skiffpb.NodeDescription{
		Hostname: info.Name,
		Resources: &skiffpb.Resources{
			NanoCpus:    int64(info.NCPU) * 1e9,
			MemoryBytes: info.MemTotal,
		},
		EngineVersion: info.ServerVersion,
		Os:            info.OSType,
		Arch:          info.Architecture,
	}, nil
}

// Containers lists every container the node owns, stopped ones included,
// with the task status each one stands for:
//
//	engine state                 task state  notes
//	created                      PREPARING   prepared, waiting for Start
//	created, with an error       FAILED      the engine could not start it; err is its reason
//	running, paused, restarting  RUNNING     health from the healthcheck, if any
//	exited 0                     COMPLETE
//	exited N != 0                FAILED      err "task: non-zero exit (N)"
//	exited, OOM killed           FAILED      err "...: OOM killed", oom_killed set
//	exited, with an error        FAILED      err is the engine's reason
//	dead                         FAILED      err "container is dead" unless the engine says more
//
// The executor cannot tell a stop the agent asked for from a crash: a task
// the agent stopped is reported COMPLETE or FAILED by its exit code, and the
// agent, which knows, reports it SHUTDOWN.
func (e *Executor) Containers(ctx context.Context) ([]agent.Container, error) {
	if err := e.ready(ctx); err != nil {
		return nil, fmt.Errorf("list containers of node %s: %w", e.node, err)
	}
	list, err := e.client.ContainerList(ctx, container.ListOptions{All: true, Filters: e.owned()})
	if err != nil {
		return nil, fmt.Errorf("list containers of node %s: %w", e.node, err)
	}
	now := time.Now()
	out := make([]agent.Container, 0, len(list))
	for _, c := range list {
		taskID := c.Labels[LabelTaskID]
		if taskID == "" {
			continue
		}
		info, err := e.client.ContainerInspect(ctx, c.ID)
		if cerrdefs.IsNotFound(err) {
			continue // removed since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("inspect container %s of task %s: %w", c.ID, taskID, err)
		}
		out = append(out, agent.Container{TaskID: taskID, Status: statusFromInspect(info, now)})
	}
	return out, nil
}

// Start starts the task's prepared container. A container that has ever
// started, running or exited, is left alone, as swarm does: a task runs
// once, and the orchestrator replaces a finished task with a new one rather
// than running it again. A task without a container is an error wrapping
// ErrNoContainer.
func (e *Executor) Start(ctx context.Context, taskID string) error {
	p := e.recall(taskID)
	id := p.containerID
	if id == "" {
		c, ok, err := e.find(ctx, taskID)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("start task %s: %w", taskID, ErrNoContainer)
		}
		if c.State != container.StateCreated {
			e.forget(taskID)
			return nil
		}
		id = c.ID
	}
	if err := e.client.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		if cerrdefs.IsNotFound(err) {
			e.forget(taskID)
			return fmt.Errorf("start task %s: %w", taskID, ErrNoContainer)
		}
		return fmt.Errorf("start container %s of task %s: %w", id, taskID, err)
	}
	// Started: from now on the container's own state says what it is, and
	// a later Start must look it up rather than start it again.
	e.forget(taskID)
	if a := p.networked; a != nil {
		// The container's init waits for the interfaces made here; if
		// they cannot be made, the task must fail now rather than wait.
		if err := e.plumb(ctx, id, a); err != nil {
			_ = e.client.ContainerKill(ctx, id, "KILL")
			return fmt.Errorf("start task %s: %w", taskID, err)
		}
	}
	e.log.Info("started container", "task", taskID, "container", id)
	return nil
}

// Stop sends the container its stop signal and kills it once grace has
// passed; a grace of 0 or less uses the task's own stop_grace_period (the
// engine's 10 s if it has none). The engine counts grace in whole seconds,
// so it is rounded up. Stopping a stopped or missing container does nothing.
func (e *Executor) Stop(ctx context.Context, taskID string, grace time.Duration) error {
	c, ok, err := e.find(ctx, taskID)
	if err != nil || !ok {
		return err
	}
	switch c.State {
	case container.StateRunning, container.StatePaused, container.StateRestarting:
	default:
		return nil
	}
	var opts container.StopOptions
	if grace > 0 {
		secs := ceilSeconds(grace)
		opts.Timeout = &secs
	}
	if err := e.client.ContainerStop(ctx, c.ID, opts); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("stop container %s of task %s: %w", c.ID, taskID, err)
	}
	e.log.Info("stopped container", "task", taskID, "container", c.ID)
	return nil
}

// Remove deletes the task's container, killing it if it still runs, along
// with its anonymous volumes; named volumes stay. Removing a missing
// container does nothing.
func (e *Executor) Remove(ctx context.Context, taskID string) error {
	c, ok, err := e.find(ctx, taskID)
	if err != nil {
		return err
	}
	if ok {
		err = e.client.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("remove container %s of task %s: %w", c.ID, taskID, err)
		}
		e.log.Info("removed container", "task", taskID, "container", c.ID)
	}
	e.forget(taskID)
	if e.network != nil {
		if err := e.network.Unplumb(ctx, taskID); err != nil {
			return fmt.Errorf("unplumb task %s: %w", taskID, err)
		}
		if err := os.Remove(e.resolvConfPath(taskID)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove resolv.conf of task %s: %w", taskID, err)
		}
	}
	return nil
}

// find looks up the node's container for a task by its labels. Labels, not
// names, because Start, Stop and Remove know only the task's ID, and because
// a container of another node must never match.
func (e *Executor) find(ctx context.Context, taskID string) (container.Summary, bool, error) {
	if err := e.ready(ctx); err != nil {
		return container.Summary{}, false, fmt.Errorf("find container of task %s: %w", taskID, err)
	}
	f := e.owned()
	f.Add("label", LabelTaskID+"="+taskID)
	list, err := e.client.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return container.Summary{}, false, fmt.Errorf("find container of task %s: %w", taskID, err)
	}
	if len(list) == 0 {
		return container.Summary{}, false, nil
	}
	if len(list) > 1 {
		e.log.Warn("several containers for one task", "task", taskID, "count", len(list))
	}
	return list[0], true, nil
}

// owned filters the engine's containers down to this node's.
func (e *Executor) owned() filters.Args {
	return filters.NewArgs(filters.Arg("label", LabelNode+"="+e.node))
}
