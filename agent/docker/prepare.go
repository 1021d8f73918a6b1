package docker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/volume"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// Prepare pulls the task's image if the engine lacks it, creates the named
// volumes it mounts, and creates its container. It does nothing if the
// task's container already exists. A failed pull is returned with the
// engine's own words, for the agent to report as the task's rejection.
func (e *Executor) Prepare(ctx context.Context, a *skiffpb.Assignment) error {
	if err := e.ready(ctx); err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	cfg, host, err := containerConfig(a, e.node, e.networkMode())
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	taskID := a.GetTask().GetId()
	// No lookup first: the container's name is the task's, so the engine
	// itself says when it exists (a conflict), and the common case, a new
	// task, saves a listing of the node's containers.
	img, err := e.ensureImage(ctx, cfg.Image)
	if err != nil {
		return fmt.Errorf("prepare task %s: %w", taskID, err)
	}
	if err := e.ensureVolumes(ctx, a); err != nil {
		return fmt.Errorf("prepare task %s: %w", taskID, err)
	}
	var netA *skiffpb.Assignment
	if e.networked(a) {
		if err := e.withInit(cfg, host, img, a); err != nil {
			return fmt.Errorf("prepare task %s: %w", taskID, err)
		}
		netA = a
	}
	name := containerName(serviceName(a), e.node, a.GetTask().GetSlot(), taskID)
	resp, err := e.client.ContainerCreate(ctx, cfg, host, nil, nil, name)
	if cerrdefs.IsConflict(err) {
		// The name is taken: the task's container exists already (an
		// earlier Prepare, before the agent restarted, or a concurrent
		// one). Start looks up its state, since it may have run.
		if _, ok, ferr := e.find(ctx, taskID); ferr == nil && ok {
			e.remember(taskID, prepared{networked: netA})
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("create container for task %s: %w", taskID, err)
	}
	for _, w := range resp.Warnings {
		e.log.Warn("engine warning on create", "task", taskID, "container", resp.ID, "warning", w)
	}
	e.remember(taskID, prepared{containerID: resp.ID, networked: netA})
	e.log.Info("created container", "task", taskID, "container", resp.ID, "name", name, "image", cfg.Image)
	return nil
}

// ensureImage pulls ref unless the engine already has it, and returns the
// image's configuration. Tasks pin what they run by tag, and nodes without
// registry access must still run local images, so a present image is never
// refreshed.
func (e *Executor) ensureImage(ctx context.Context, ref string) (image.InspectResponse, error) {
	img, err := e.client.ImageInspect(ctx, ref)
	if err == nil {
		return img, nil
	}
	if !cerrdefs.IsNotFound(err) {
		return img, fmt.Errorf("inspect image %s: %w", ref, err)
	}
	e.log.Info("pulling image", "image", ref)
	rc, err := e.client.ImagePull(ctx, ref, image.PullOptions{})
	if err != nil {
		return img, fmt.Errorf("pull image %s: %w", ref, err)
	}
	defer rc.Close()
	if err := drainPull(rc); err != nil {
		return img, fmt.Errorf("pull image %s: %w", ref, err)
	}
	if img, err = e.client.ImageInspect(ctx, ref); err != nil {
		return img, fmt.Errorf("inspect pulled image %s: %w", ref, err)
	}
	return img, nil
}

// drainPull reads a pull's progress stream to its end. The engine answers
// 200 before it knows whether the pull will succeed, so a failure arrives as
// a message in the stream, not as the response's status.
func drainPull(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var msg struct {
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("read pull progress: %w", err)
		}
		if msg.ErrorDetail != nil && msg.ErrorDetail.Message != "" {
			return errors.New(msg.ErrorDetail.Message)
		}
		if msg.Error != "" {
			return errors.New(msg.Error)
		}
	}
}

// ensureVolumes creates the named volumes the task mounts that do not exist
// yet, with the driver, options and labels of their first mount. Existing
// volumes are left as they are: their data outlives tasks.
func (e *Executor) ensureVolumes(ctx context.Context, a *skiffpb.Assignment) error {
	for _, m := range a.GetSpec().GetContainer().GetMounts() {
		if m.GetType() != skiffpb.MountType_MOUNT_TYPE_VOLUME || m.GetSource() == "" {
			continue // anonymous volumes are the engine's to create
		}
		_, err := e.client.VolumeInspect(ctx, m.GetSource())
		if err == nil {
			continue
		}
		if !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("inspect volume %s: %w", m.GetSource(), err)
		}
		labels := maps.Clone(m.GetVolumeLabels())
		if stack := cmp.Or(a.GetTask().GetStack(), a.GetSpec().GetStack()); stack != "" {
			if labels == nil {
				labels = map[string]string{}
			}
			labels[LabelStack] = stack
		}
		v, err := e.client.VolumeCreate(ctx, volume.CreateOptions{
			Name:       m.GetSource(),
			Driver:     m.GetVolumeDriver(),
			DriverOpts: m.GetVolumeDriverOpts(),
			Labels:     labels,
		})
		if err != nil {
			return fmt.Errorf("create volume %s: %w", m.GetSource(), err)
		}
		e.log.Info("created volume", "volume", v.Name, "driver", v.Driver, "task", a.GetTask().GetId())
	}
	return nil
}
