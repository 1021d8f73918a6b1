package docker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"

	"github.com/skiffhq/skiff/agent/netinit"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// Network connects task containers to the overlay. The host's overlay
// (package overlay/host) implements it; skiff-agent passes it to New.
// The executor starts a networked task's container with the network init
// (package netinit) in front of its program, then calls Plumb with the
// container's network namespace; the init runs the program once the
// interfaces Plumb made are up. This is the CNI hand-over: the executor owns
// containers, the Network owns links and addresses.
type Network interface {
	// Plumb connects the network namespace at nsPath to every network of
	// the task, as eth0, eth1, … in the order of the task's networks. It
	// must be idempotent.
	Plumb(ctx context.Context, a *skiffpb.Assignment, nsPath string) error
	// Unplumb disconnects the task; it must be idempotent.
	Unplumb(ctx context.Context, taskID string) error
	// Nameservers returns the DNS servers the task's container uses: this
	// host's embedded DNS in the task's networks.
	Nameservers(a *skiffpb.Assignment) []string
}

// networked reports whether a task joins overlay networks through the
// executor's Network.
func (e *Executor) networked(a *skiffpb.Assignment) bool {
	return e.network != nil && len(a.GetTask().GetNetworks()) > 0
}

// withInit puts the network init in front of the program the container
// would run, which it works out as the engine would from the task's spec
// and the image's config, and gives the container a namespace the engine's
// networking never touches, with the task's resolvers.
//
// The engine is told the container has no network at all
// (Config.NetworkDisabled): it then makes a bare namespace with only a
// loopback and skips libnetwork, whose sandbox for even the null network
// runs the daemon's binary once more as a hook on every start; on a stock
// engine that made a start about 1.6× a bare `docker run` (see
// docs/architecture.md). Without libnetwork the engine writes no
// resolv.conf, so the executor writes the task's and bind-mounts it, which
// the engine then leaves alone, as it does any user's mount there.
func (e *Executor) withInit(cfg *container.Config, host *container.HostConfig, img image.InspectResponse, a *skiffpb.Assignment) error {
	argv := program(cfg.Entrypoint, cfg.Cmd, img)
	if len(argv) == 0 {
		return fmt.Errorf("task %s: image %s has no entrypoint or command, and the service sets none", a.GetTask().GetId(), cfg.Image)
	}
	cfg.Entrypoint = netinit.Args(len(a.GetTask().GetNetworks()), argv)
	cfg.Cmd = nil
	cfg.NetworkDisabled = true
	host.NetworkMode = container.NetworkMode(DefaultNetworkMode)
	path, err := e.writeResolvConf(a.GetTask().GetId(), append(e.network.Nameservers(a), host.DNS...), host.DNSSearch, host.DNSOptions)
	if err != nil {
		return err
	}
	host.DNS, host.DNSSearch, host.DNSOptions = nil, nil, nil
	host.Binds = append(host.Binds, e.initPath+":"+netinit.Path+":ro", path+":"+resolvConf)
	return nil
}

// resolvConf is where a container's resolver configuration lives.
const resolvConf = "/etc/resolv.conf"

// resolvConfPath is the host file a networked task's resolv.conf is
// mounted from.
func (e *Executor) resolvConfPath(taskID string) string {
	return filepath.Join(e.stateDir, "resolv", taskID+".conf")
}

// writeResolvConf writes a task's resolv.conf as the engine would have
// for these servers, search domains and options.
func (e *Executor) writeResolvConf(taskID string, servers, search, options []string) (string, error) {
	var b strings.Builder
	b.WriteString("# written by skiff-agent for task " + taskID + "\n")
	for _, s := range servers {
		b.WriteString("nameserver " + s + "\n")
	}
	if len(search) > 0 {
		b.WriteString("search " + strings.Join(search, " ") + "\n")
	}
	if len(options) > 0 {
		b.WriteString("options " + strings.Join(options, " ") + "\n")
	}
	path := e.resolvConfPath(taskID)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("task %s: create %s: %w", taskID, filepath.Dir(path), err)
	}
	// Written whole and renamed into place: a container started from a
	// half-written file would have no resolvers.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return "", fmt.Errorf("task %s: write resolv.conf: %w", taskID, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("task %s: write resolv.conf: %w", taskID, err)
	}
	return path, nil
}

// program is the argv a container runs: the service's entrypoint and
// command where set, the image's otherwise. As with the engine, setting an
// entrypoint drops the image's command.
func program(entrypoint, cmd []string, img image.InspectResponse) []string {
	var imgEntrypoint, imgCmd []string
	if img.Config != nil {
		imgEntrypoint, imgCmd = img.Config.Entrypoint, img.Config.Cmd
	}
	if len(entrypoint) > 0 {
		return append(append([]string{}, entrypoint...), cmd...)
	}
	if len(cmd) == 0 {
		cmd = imgCmd
	}
	return append(append([]string{}, imgEntrypoint...), cmd...)
}

// plumb connects a started container's namespace to the task's networks.
func (e *Executor) plumb(ctx context.Context, containerID string, a *skiffpb.Assignment) error {
	info, err := e.client.ContainerInspect(ctx, containerID)
	if err != nil {
		return fmt.Errorf("inspect container %s: %w", containerID, err)
	}
	if info.State == nil || info.State.Pid == 0 {
		return fmt.Errorf("container %s has no process to plumb", containerID)
	}
	nsPath := "/proc/" + strconv.Itoa(info.State.Pid) + "/ns/net"
	if err := e.network.Plumb(ctx, a, nsPath); err != nil {
		return fmt.Errorf("plumb network of task %s: %w", a.GetTask().GetId(), err)
	}
	return nil
}

// prepared is what Prepare leaves for Start: the container it created, so
// that Start need not look it up, and, for a networked task, the assignment
// Start plumbs.
type prepared struct {
	containerID string
	networked   *skiffpb.Assignment
}

// remember keeps what Prepare learnt of a task for Start; forget drops it.
func (e *Executor) remember(taskID string, p prepared) {
	e.pendingMu.Lock()
	defer e.pendingMu.Unlock()
	e.pending[taskID] = p
}

func (e *Executor) recall(taskID string) prepared {
	e.pendingMu.Lock()
	defer e.pendingMu.Unlock()
	return e.pending[taskID]
}

func (e *Executor) forget(taskID string) {
	e.pendingMu.Lock()
	defer e.pendingMu.Unlock()
	delete(e.pending, taskID)
}
