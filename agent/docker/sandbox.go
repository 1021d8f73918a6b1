package docker

import (
	"context"
	"fmt"
	"strconv"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// LabelSandbox marks a task's sandbox container with the task's ID. It is
// not LabelTaskID on purpose: listings of task containers must not see
// sandboxes.
const LabelSandbox = "skiff.sandbox"

// Network connects task sandboxes to the overlay. The agent implements it;
// the executor calls Plumb after the sandbox container starts and before the
// task's container is created, so no task process ever starts before its
// network exists. This is the CNI hand-over: the executor owns containers,
// the Network owns links and addresses.
type Network interface {
	// Plumb connects the network namespace at nsPath to every network of
	// the task. It must be idempotent.
	Plumb(ctx context.Context, a *skiffpb.Assignment, nsPath string) error
	// Unplumb disconnects the task's sandbox; it must be idempotent.
	Unplumb(ctx context.Context, taskID string) error
	// Nameservers returns the DNS servers the task's containers use: this
	// host's embedded DNS in the task's networks.
	Nameservers(a *skiffpb.Assignment) []string
}

// usesSandbox reports whether a task gets a network sandbox.
func (e *Executor) usesSandbox(a *skiffpb.Assignment) bool {
	return e.Network != nil && len(a.GetTask().GetNetworks()) > 0
}

// ensureSandbox makes sure the task's sandbox container runs and is plumbed,
// and returns its ID. The sandbox carries what the engine will not set on a
// container that joins another's namespaces: hostname, DNS and extra hosts.
func (e *Executor) ensureSandbox(ctx context.Context, a *skiffpb.Assignment) (string, error) {
	taskID := a.GetTask().GetId()
	sb, ok, err := e.findSandbox(ctx, taskID)
	if err != nil {
		return "", err
	}
	id := sb.ID
	if !ok {
		if id, err = e.createSandbox(ctx, a); err != nil {
			return "", err
		}
	}
	if !ok || sb.State == container.StateCreated {
		if err := e.client.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
			return "", fmt.Errorf("start sandbox of task %s: %w", taskID, err)
		}
	}
	info, err := e.client.ContainerInspect(ctx, id)
	if err != nil {
		return "", fmt.Errorf("inspect sandbox of task %s: %w", taskID, err)
	}
	if info.State == nil || !info.State.Running || info.State.Pid == 0 {
		return "", fmt.Errorf("sandbox of task %s is not running", taskID)
	}
	nsPath := "/proc/" + strconv.Itoa(info.State.Pid) + "/ns/net"
	if err := e.Network.Plumb(ctx, a, nsPath); err != nil {
		return "", fmt.Errorf("plumb network of task %s: %w", taskID, err)
	}
	return id, nil
}

func (e *Executor) createSandbox(ctx context.Context, a *skiffpb.Assignment) (string, error) {
	taskID := a.GetTask().GetId()
	ref, err := e.ensurePauseImage(ctx)
	if err != nil {
		return "", err
	}
	cs := a.GetSpec().GetContainer()
	labels := map[string]string{LabelNode: e.node, LabelSandbox: taskID}
	cfg := &container.Config{Image: ref, Hostname: cs.GetHostname(), Labels: labels}
	host := &container.HostConfig{
		NetworkMode: "none",
		DNS:         append(e.Network.Nameservers(a), cs.GetDns()...),
		DNSSearch:   cs.GetDnsSearch(),
		ExtraHosts:  cs.GetExtraHosts(),
		// Sysctls of the net.* family act on the namespace the sandbox owns.
		Sysctls: netSysctls(cs.GetSysctls()),
	}
	name := containerName(serviceName(a), e.node, a.GetTask().GetSlot(), taskID) + ".sandbox"
	resp, err := e.client.ContainerCreate(ctx, cfg, host, nil, nil, name)
	if cerrdefs.IsConflict(err) {
		if sb, ok, ferr := e.findSandbox(ctx, taskID); ferr == nil && ok {
			return sb.ID, nil
		}
	}
	if err != nil {
		return "", fmt.Errorf("create sandbox of task %s: %w", taskID, err)
	}
	return resp.ID, nil
}

// removeSandbox kills and removes the task's sandbox and unplumbs it.
func (e *Executor) removeSandbox(ctx context.Context, taskID string) error {
	sb, ok, err := e.findSandbox(ctx, taskID)
	if err != nil {
		return err
	}
	if ok {
		err := e.client.ContainerRemove(ctx, sb.ID, container.RemoveOptions{Force: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("remove sandbox of task %s: %w", taskID, err)
		}
	}
	if e.Network != nil {
		if err := e.Network.Unplumb(ctx, taskID); err != nil {
			return fmt.Errorf("unplumb task %s: %w", taskID, err)
		}
	}
	return nil
}

func (e *Executor) findSandbox(ctx context.Context, taskID string) (container.Summary, bool, error) {
	if err := e.ready(ctx); err != nil {
		return container.Summary{}, false, err
	}
	f := filters.NewArgs(filters.Arg("label", LabelNode+"="+e.node), filters.Arg("label", LabelSandbox+"="+taskID))
	list, err := e.client.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return container.Summary{}, false, fmt.Errorf("find sandbox of task %s: %w", taskID, err)
	}
	if len(list) == 0 {
		return container.Summary{}, false, nil
	}
	return list[0], true, nil
}

// netSysctls keeps the sysctls that belong to the network namespace; the
// engine refuses them on a container that joins another's namespace.
func netSysctls(all map[string]string) map[string]string {
	var out map[string]string
	for k, v := range all {
		if len(k) > 4 && k[:4] == "net." {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}
