package docker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// The tests below run real containers on the local engine; see main_test.go.

func TestRunReportsRunningThenStopCompletes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	evs := h.events()
	a := h.assignment("sleep")
	id := a.GetTask().GetId()
	h.run(a)

	st := waitState(t, evs, id, skiffpb.TaskState_TASK_STATE_RUNNING)
	if st.GetContainerId() == "" || st.GetStartedAt() == 0 || st.GetTimestamp() == 0 {
		t.Errorf("RUNNING event lacks container id or times: %v", st)
	}

	info, err := h.raw.ContainerInspect(context.Background(), st.GetContainerId())
	if err != nil {
		t.Fatal(err)
	}
	if want := "/test_app.1." + id; info.Name != want {
		t.Errorf("container name = %q, want %q", info.Name, want)
	}
	wantLabels := map[string]string{
		LabelTaskID: id, LabelNode: h.node, LabelService: "test_app",
		LabelServiceID: "svc-" + id, LabelStack: "test", LabelSlot: "1",
	}
	for k, v := range wantLabels {
		if info.Config.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, info.Config.Labels[k], v)
		}
	}
	if info.HostConfig.RestartPolicy.Name != container.RestartPolicyDisabled {
		t.Errorf("restart policy = %q, want no", info.HostConfig.RestartPolicy.Name)
	}
	if info.HostConfig.NetworkMode != DefaultNetworkMode {
		t.Errorf("network mode = %q, want %q", info.HostConfig.NetworkMode, DefaultNetworkMode)
	}

	c, ok := h.containerOf(id)
	if !ok || c.Status.GetState() != skiffpb.TaskState_TASK_STATE_RUNNING || c.Status.GetContainerId() != st.GetContainerId() {
		t.Errorf("Containers() = %v (found %v), want RUNNING %s", c.Status, ok, st.GetContainerId())
	}

	// The helper exits 0 on SIGTERM: a graceful stop is a clean exit.
	h.waitReady(id)
	if err := h.ex.Stop(context.Background(), id, 5*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	st = waitState(t, evs, id, skiffpb.TaskState_TASK_STATE_COMPLETE)
	if st.GetExitCode() != 0 || st.GetErr() != "" {
		t.Errorf("COMPLETE event = %v, want exit 0 and no error", st)
	}
}

func TestRestartedExecutorAdoptsRunningContainer(t *testing.T) {
	t.Parallel()
	first := newHarness(t)
	evs := first.events()
	a := first.assignment("sleep")
	id := a.GetTask().GetId()
	first.run(a)
	running := waitState(t, evs, id, skiffpb.TaskState_TASK_STATE_RUNNING)
	first.ex.Close()

	// A new executor for the same node: what the agent gets after a restart.
	second := newHarnessWith(t, Config{Node: first.node})
	c, ok := second.containerOf(id)
	if !ok || c.Status.GetState() != skiffpb.TaskState_TASK_STATE_RUNNING || c.Status.GetContainerId() != running.GetContainerId() {
		t.Fatalf("Containers() after restart = %v (found %v), want RUNNING %s", c.Status, ok, running.GetContainerId())
	}
	// Its event stream starts with the state of what it adopted.
	evs2 := second.events()
	waitState(t, evs2, id, skiffpb.TaskState_TASK_STATE_RUNNING)

	// Preparing the adopted task again must not create a second container.
	if err := second.ex.Prepare(context.Background(), a); err != nil {
		t.Fatalf("Prepare of an adopted task: %v", err)
	}
	if n := len(second.engineContainers(id)); n != 1 {
		t.Errorf("%d containers for the task, want 1", n)
	}
	second.waitReady(id)
	if err := second.ex.Stop(context.Background(), id, time.Second); err != nil {
		t.Fatal(err)
	}
	waitState(t, evs2, id, skiffpb.TaskState_TASK_STATE_COMPLETE)
}

func TestOtherNodesContainersAreNeverTouched(t *testing.T) {
	t.Parallel()
	mine := newHarness(t)
	other := newHarness(t)
	myEvents := mine.events()
	otherEvents := other.events()
	ctx := context.Background()

	theirs := other.assignment("sleep")
	theirID := theirs.GetTask().GetId()
	other.run(theirs)
	theirStatus := waitState(t, otherEvents, theirID, skiffpb.TaskState_TASK_STATE_RUNNING)

	if _, ok := mine.containerOf(theirID); ok {
		t.Error("Containers() lists another node's container")
	}
	if err := mine.ex.Stop(ctx, theirID, time.Second); err != nil {
		t.Errorf("Stop of another node's task: %v", err)
	}
	if err := mine.ex.Remove(ctx, theirID); err != nil {
		t.Errorf("Remove of another node's task: %v", err)
	}
	if err := mine.ex.Start(ctx, theirID); !errors.Is(err, ErrNoContainer) {
		t.Errorf("Start of another node's task = %v, want ErrNoContainer", err)
	}
	if err := mine.ex.Logs(ctx, theirID, false, -1, func(*skiffpb.LogMessage) error { return nil }); !errors.Is(err, ErrNoContainer) {
		t.Errorf("Logs of another node's task = %v, want ErrNoContainer", err)
	}
	// Same task, same container name: the engine refuses the name, and the
	// executor must not mistake the other node's container for its own.
	if err := mine.ex.Prepare(ctx, theirs); err == nil {
		t.Error("Prepare of a task whose name another node's container holds succeeded")
	}
	info, err := mine.raw.ContainerInspect(ctx, theirStatus.GetContainerId())
	if err != nil || !info.State.Running {
		t.Fatalf("another node's container was disturbed: running=%v err=%v", info.State != nil && info.State.Running, err)
	}

	// Events are in engine order: if my own task's events arrive with
	// nothing of theirs among them, while their container starts and dies,
	// their container is not in my stream.
	own := mine.assignment("sleep")
	ownID := own.GetTask().GetId()
	untilOwn := func(want skiffpb.TaskState) {
		t.Helper()
		deadline := time.After(waitTimeout)
		for {
			select {
			case ev := <-myEvents:
				if ev.TaskID == theirID {
					t.Fatalf("my event stream reported another node's task: %v", ev.Status)
				}
				if ev.TaskID == ownID && ev.Status.GetState() == want {
					return
				}
			case <-deadline:
				t.Fatalf("no %v event for my own task", want)
			}
		}
	}
	mine.run(own)
	untilOwn(skiffpb.TaskState_TASK_STATE_RUNNING)
	if err := mine.raw.ContainerKill(ctx, theirStatus.GetContainerId(), "KILL"); err != nil {
		t.Fatal(err)
	}
	waitState(t, otherEvents, theirID, skiffpb.TaskState_TASK_STATE_FAILED)
	mine.waitReady(ownID)
	if err := mine.ex.Stop(ctx, ownID, time.Second); err != nil {
		t.Fatal(err)
	}
	untilOwn(skiffpb.TaskState_TASK_STATE_COMPLETE)
}

func TestMethodsAreIdempotent(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	evs := h.events()
	ctx := context.Background()
	a := h.assignment("sleep")
	id := a.GetTask().GetId()

	for i := range 2 {
		if err := h.ex.Prepare(ctx, a); err != nil {
			t.Fatalf("Prepare #%d: %v", i+1, err)
		}
	}
	if n := len(h.engineContainers(id)); n != 1 {
		t.Fatalf("%d containers after two Prepares, want 1", n)
	}
	if c, _ := h.containerOf(id); c.Status.GetState() != skiffpb.TaskState_TASK_STATE_PREPARING {
		t.Errorf("created container reported as %v, want PREPARING", c.Status)
	}
	for i := range 2 {
		if err := h.ex.Start(ctx, id); err != nil {
			t.Fatalf("Start #%d: %v", i+1, err)
		}
	}
	waitState(t, evs, id, skiffpb.TaskState_TASK_STATE_RUNNING)
	h.waitReady(id)
	for i := range 2 {
		if err := h.ex.Stop(ctx, id, time.Second); err != nil {
			t.Fatalf("Stop #%d: %v", i+1, err)
		}
	}
	waitState(t, evs, id, skiffpb.TaskState_TASK_STATE_COMPLETE)
	for i := range 2 {
		if err := h.ex.Remove(ctx, id); err != nil {
			t.Fatalf("Remove #%d: %v", i+1, err)
		}
	}
	if n := len(h.engineContainers(id)); n != 0 {
		t.Errorf("%d containers after Remove, want 0", n)
	}

	// Never-prepared tasks.
	unknown := "never-" + randID(t)
	if err := h.ex.Stop(ctx, unknown, time.Second); err != nil {
		t.Errorf("Stop of a missing container: %v", err)
	}
	if err := h.ex.Remove(ctx, unknown); err != nil {
		t.Errorf("Remove of a missing container: %v", err)
	}
	if err := h.ex.Start(ctx, unknown); !errors.Is(err, ErrNoContainer) {
		t.Errorf("Start of a missing container = %v, want ErrNoContainer", err)
	}
}

func TestDescribe(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	d, err := h.ex.Describe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	info, err := h.raw.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if d.GetHostname() != info.Name || d.GetEngineVersion() != info.ServerVersion ||
		d.GetResources().GetNanoCpus() != int64(info.NCPU)*1e9 || d.GetResources().GetMemoryBytes() != info.MemTotal ||
		d.GetOs() != "linux" || d.GetArch() == "" {
		t.Errorf("Describe() = %v, engine says %s %s %d CPUs %d bytes", d, info.Name, info.ServerVersion, info.NCPU, info.MemTotal)
	}
}
