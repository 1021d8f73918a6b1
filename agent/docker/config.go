package docker

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/strslice"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// Labels every task container carries. LabelNode is the ownership mark: an
// executor only ever touches containers whose LabelNode equals its node.
const (
	LabelTaskID    = "skiff.task.id"
	LabelNode      = "skiff.node"
	LabelService   = "skiff.service"
	LabelServiceID = "skiff.service.id"
	LabelStack     = "skiff.stack"
	LabelSlot      = "skiff.slot"
)

// DefaultNetworkMode is the network mode of task containers unless the
// Executor is told otherwise, or finds the engine has no default bridge (see
// Executor.isolatedNetworkMode): skiff's overlay plumbs task networking
// itself, into a namespace that has only a loopback.
const DefaultNetworkMode = "none"

// containerName names a task's container as swarm does, so that `docker ps`
// reads the same: <service>.<slot>.<task> for replicas, and
// <service>.<node>.<task> for global tasks, which have no slot.
func containerName(service, node string, slot uint64, taskID string) string {
	middle := node
	if slot != 0 {
		middle = strconv.FormatUint(slot, 10)
	}
	return service + "." + middle + "." + taskID
}

// containerConfig translates an assignment into the engine's container
// configuration. It is pure: everything it needs is in its arguments.
func containerConfig(a *skiffpb.Assignment, node, networkMode string) (*container.Config, *container.HostConfig, error) {
	if a == nil || a.GetTask() == nil || a.GetSpec() == nil || a.GetSpec().GetContainer() == nil {
		return nil, nil, errors.New("assignment without task, service spec or container spec")
	}
	task, spec, cs := a.GetTask(), a.GetSpec(), a.GetSpec().GetContainer()
	if task.GetId() == "" {
		return nil, nil, errors.New("assignment without task id")
	}
	if cs.GetImage() == "" {
		return nil, nil, fmt.Errorf("task %s: no image", task.GetId())
	}

	labels := make(map[string]string, len(cs.GetLabels())+6)
	maps.Copy(labels, cs.GetLabels())
	// Ownership labels are written last so that a user's container label can
	// never claim a container for another node or task.
	maps.Copy(labels, ownershipLabels(a, node))

	cfg := &container.Config{
		Image:       cs.GetImage(),
		Entrypoint:  strslice.StrSlice(cs.GetEntrypoint()),
		Cmd:         strslice.StrSlice(cs.GetCommand()),
		Env:         cs.GetEnv(),
		WorkingDir:  cs.GetWorkingDir(),
		User:        cs.GetUser(),
		Hostname:    cs.GetHostname(),
		Labels:      labels,
		StopSignal:  cs.GetStopSignal(),
		Healthcheck: healthConfig(cs.GetHealthcheck()),
		Tty:         cs.GetTty(),
		OpenStdin:   cs.GetStdinOpen(),
	}
	if g := cs.GetStopGracePeriod(); g > 0 {
		secs := ceilSeconds(time.Duration(g))
		cfg.StopTimeout = &secs
	}

	binds, mounts, err := convertMounts(cs.GetMounts())
	if err != nil {
		return nil, nil, fmt.Errorf("task %s: %w", task.GetId(), err)
	}

	host := &container.HostConfig{
		NetworkMode: container.NetworkMode(networkMode),
		// The orchestrator restarts tasks as new tasks; an engine restart
		// would hide failures from it and run the task twice.
		RestartPolicy:  container.RestartPolicy{Name: container.RestartPolicyDisabled},
		Binds:          binds,
		Mounts:         mounts,
		CapAdd:         strslice.StrSlice(cs.GetCapAdd()),
		CapDrop:        strslice.StrSlice(cs.GetCapDrop()),
		Sysctls:        cs.GetSysctls(),
		ReadonlyRootfs: cs.GetReadOnly(),
		ExtraHosts:     cs.GetExtraHosts(),
		DNS:            cs.GetDns(),
		DNSSearch:      cs.GetDnsSearch(),
		GroupAdd:       cs.GetGroupAdd(),
		ShmSize:        cs.GetShmSizeBytes(),
		Resources:      resources(spec.GetLimits(), cs),
	}
	if cs.GetInit() {
		// Left nil otherwise, so that the engine's own --init default holds.
		on := true
		host.Init = &on
	}
	return cfg, host, nil
}

// ownershipLabels are the labels that tie a container to its task and node.
func ownershipLabels(a *skiffpb.Assignment, node string) map[string]string {
	task, spec := a.GetTask(), a.GetSpec()
	return map[string]string{
		LabelTaskID:    task.GetId(),
		LabelNode:      node,
		LabelService:   serviceName(a),
		LabelServiceID: task.GetServiceId(),
		LabelStack:     cmp.Or(task.GetStack(), spec.GetStack()),
		LabelSlot:      strconv.FormatUint(task.GetSlot(), 10),
	}
}

// serviceName prefers the spec's name, which is what the task runs, and falls
// back to the name the task recorded.
func serviceName(a *skiffpb.Assignment) string {
	return cmp.Or(a.GetSpec().GetName(), a.GetTask().GetServiceName())
}

// resources follows swarm: only limits reach the engine. Reservations are a
// scheduling promise, kept by the scheduler, not by cgroups.
func resources(limits *skiffpb.Resources, cs *skiffpb.ContainerSpec) container.Resources {
	r := container.Resources{
		NanoCPUs: limits.GetNanoCpus(),
		Memory:   limits.GetMemoryBytes(),
	}
	if p := cs.GetPidsLimit(); p > 0 {
		r.PidsLimit = &p
	}
	for _, u := range cs.GetUlimits() {
		r.Ulimits = append(r.Ulimits, &container.Ulimit{Name: u.GetName(), Soft: u.GetSoft(), Hard: u.GetHard()})
	}
	return r
}

// healthConfig returns nil when the spec says nothing, so that the image's
// own HEALTHCHECK applies; ["NONE"] is passed through to disable it.
func healthConfig(h *skiffpb.HealthConfig) *container.HealthConfig {
	if h == nil || (len(h.GetTest()) == 0 && h.GetInterval() == 0 && h.GetTimeout() == 0 &&
		h.GetStartPeriod() == 0 && h.GetStartInterval() == 0 && h.GetRetries() == 0) {
		return nil
	}
	return &container.HealthConfig{
		Test:          h.GetTest(),
		Interval:      time.Duration(h.GetInterval()),
		Timeout:       time.Duration(h.GetTimeout()),
		StartPeriod:   time.Duration(h.GetStartPeriod()),
		StartInterval: time.Duration(h.GetStartInterval()),
		Retries:       int(h.GetRetries()),
	}
}

// convertMounts splits the spec's mounts between the legacy Binds list and
// the Mounts API. A bind mount that may create its host path must go through
// Binds: the Mounts API of engines before API 1.44 refuses a missing source,
// and compose's short syntax expects the directory to be created.
func convertMounts(ms []*skiffpb.Mount) (binds []string, mounts []mount.Mount, err error) {
	for _, m := range ms {
		if m.GetTarget() == "" {
			return nil, nil, fmt.Errorf("mount of %q: no target", m.GetSource())
		}
		switch m.GetType() {
		case skiffpb.MountType_MOUNT_TYPE_BIND:
			if m.GetSource() == "" {
				return nil, nil, fmt.Errorf("bind mount on %s: no source", m.GetTarget())
			}
			if m.GetBindCreateHostPath() && !strings.Contains(m.GetSource()+m.GetTarget(), ":") {
				binds = append(binds, bindSpec(m))
				continue
			}
			bm := mount.Mount{Type: mount.TypeBind, Source: m.GetSource(), Target: m.GetTarget(), ReadOnly: m.GetReadOnly()}
			if p := m.GetBindPropagation(); p != "" || m.GetBindCreateHostPath() {
				bm.BindOptions = &mount.BindOptions{Propagation: mount.Propagation(p), CreateMountpoint: m.GetBindCreateHostPath()}
			}
			mounts = append(mounts, bm)
		case skiffpb.MountType_MOUNT_TYPE_VOLUME:
			vm := mount.Mount{Type: mount.TypeVolume, Source: m.GetSource(), Target: m.GetTarget(), ReadOnly: m.GetReadOnly()}
			if m.GetVolumeNoCopy() || len(m.GetVolumeLabels()) > 0 || m.GetVolumeDriver() != "" || len(m.GetVolumeDriverOpts()) > 0 {
				vm.VolumeOptions = &mount.VolumeOptions{NoCopy: m.GetVolumeNoCopy(), Labels: m.GetVolumeLabels()}
				if m.GetVolumeDriver() != "" || len(m.GetVolumeDriverOpts()) > 0 {
					vm.VolumeOptions.DriverConfig = &mount.Driver{Name: m.GetVolumeDriver(), Options: m.GetVolumeDriverOpts()}
				}
			}
			mounts = append(mounts, vm)
		case skiffpb.MountType_MOUNT_TYPE_TMPFS:
			tm := mount.Mount{Type: mount.TypeTmpfs, Target: m.GetTarget(), ReadOnly: m.GetReadOnly()}
			if m.GetTmpfsSizeBytes() != 0 || m.GetTmpfsMode() != 0 {
				tm.TmpfsOptions = &mount.TmpfsOptions{SizeBytes: m.GetTmpfsSizeBytes(), Mode: os.FileMode(m.GetTmpfsMode())}
			}
			mounts = append(mounts, tm)
		default:
			return nil, nil, fmt.Errorf("mount on %s: unsupported type %v", m.GetTarget(), m.GetType())
		}
	}
	return binds, mounts, nil
}

// bindSpec writes a bind mount in the engine's "src:dst[:opts]" form.
func bindSpec(m *skiffpb.Mount) string {
	var opts []string
	if m.GetReadOnly() {
		opts = append(opts, "ro")
	}
	if p := m.GetBindPropagation(); p != "" {
		opts = append(opts, p)
	}
	s := m.GetSource() + ":" + m.GetTarget()
	if len(opts) > 0 {
		s += ":" + strings.Join(opts, ",")
	}
	return s
}

// ceilSeconds rounds up, so that a grace period is never cut short.
func ceilSeconds(d time.Duration) int {
	return int((d + time.Second - 1) / time.Second)
}
