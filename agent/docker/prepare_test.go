package docker

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// The tests below run real containers on the local engine; see main_test.go.

func TestMissingImageFailsPrepareWithEngineText(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	a := h.assignment("sleep")
	ref := "skiff-test-exec/missing-" + randID(t) + ":v0"
	a.Spec.Container.Image = ref

	err := h.ex.Prepare(ctx, a)
	if err == nil {
		t.Fatal("Prepare of a task with a missing image succeeded")
	}
	// What the engine says to anyone pulling it; unchanged in the error.
	rc, pullErr := h.raw.ImagePull(ctx, ref, image.PullOptions{})
	if pullErr == nil {
		pullErr = drainPull(rc)
		rc.Close()
	}
	if pullErr == nil {
		t.Fatalf("the engine pulled %s", ref)
	}
	if !strings.Contains(err.Error(), pullErr.Error()) || !strings.Contains(err.Error(), ref) {
		t.Errorf("Prepare error %q lacks the image or the engine's %q", err, pullErr)
	}
	if n := len(h.engineContainers(a.GetTask().GetId())); n != 0 {
		t.Errorf("%d containers created for a task whose image is missing", n)
	}
}

func TestPrepareCreatesVolumesAndMounts(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	evs := h.events()
	ctx := context.Background()
	name := "skiff-test-vol-" + randID(t)
	t.Cleanup(func() {
		// After the harness removed the container (cleanups run last first).
		if err := h.raw.VolumeRemove(context.Background(), name, true); err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("cleanup: remove volume: %v", err)
		}
	})
	a := h.assignment("sleep")
	id := a.GetTask().GetId()
	hostDir := filepath.Join(t.TempDir(), "created", "by", "engine")
	opts := map[string]string{"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}
	a.Spec.Container.Mounts = []*skiffpb.Mount{
		{Type: skiffpb.MountType_MOUNT_TYPE_VOLUME, Source: name, Target: "/data",
			VolumeDriver: "local", VolumeDriverOpts: opts, VolumeLabels: map[string]string{"purpose": "test"}},
		{Type: skiffpb.MountType_MOUNT_TYPE_VOLUME, Target: "/anon"},
		{Type: skiffpb.MountType_MOUNT_TYPE_TMPFS, Target: "/scratch", TmpfsSizeBytes: 1 << 20},
		// compose's short syntax: the host directory is created if missing.
		{Type: skiffpb.MountType_MOUNT_TYPE_BIND, Source: hostDir, Target: "/host", BindCreateHostPath: true},
	}
	h.run(a)
	st := waitState(t, evs, id, skiffpb.TaskState_TASK_STATE_RUNNING)

	v, err := h.raw.VolumeInspect(ctx, name)
	if err != nil {
		t.Fatalf("named volume not created: %v", err)
	}
	if v.Driver != "local" || !maps.Equal(v.Options, opts) || v.Labels["purpose"] != "test" || v.Labels[LabelStack] != "test" {
		t.Errorf("volume = driver %q options %v labels %v", v.Driver, v.Options, v.Labels)
	}

	info, err := h.raw.ContainerInspect(ctx, st.GetContainerId())
	if err != nil {
		t.Fatal(err)
	}
	var anon string
	seen := map[string]bool{}
	for _, m := range info.Mounts {
		seen[m.Destination] = true
		if m.Destination == "/data" && (m.Type != mount.TypeVolume || m.Name != name) {
			t.Errorf("/data mount = %+v, want volume %s", m, name)
		}
		if m.Destination == "/anon" {
			anon = m.Name
		}
	}
	if !seen["/data"] || !seen["/anon"] || !seen["/scratch"] || !seen["/host"] {
		t.Errorf("mounts = %+v, want /data, /anon, /scratch and /host", info.Mounts)
	}
	if fi, err := os.Stat(hostDir); err != nil || !fi.IsDir() {
		t.Errorf("bind source %s not created: %v", hostDir, err)
	}

	if err := h.ex.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := h.raw.VolumeInspect(ctx, anon); !cerrdefs.IsNotFound(err) {
		t.Errorf("anonymous volume %s outlived its container (err %v)", anon, err)
	}
	if _, err := h.raw.VolumeInspect(ctx, name); err != nil {
		t.Errorf("named volume removed with the container: %v", err)
	}
}
