package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/skiffhq/skiff/agent"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// helperImage is built by TestMain from testdata/helper and imported into the
// engine, so that the tests need no registry and no prebuilt image. Its tag
// is the test process's own, so that concurrent runs on one engine never
// remove each other's image.
var helperImage string

// initBinary is the network init built by TestMain, for networked tasks.
var initBinary string

// waitTimeout bounds every wait for the engine. It is generous because it is
// a deadline, not a guess: waits return as soon as the event arrives.
const waitTimeout = 30 * time.Second

// engineSkip says why the tests that need an engine cannot run; empty when
// they can.
var engineSkip string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		engineSkip = "-short: skipping tests against the Docker engine"
		os.Exit(m.Run())
	}
	cleanup, err := buildHelperImage()
	if err != nil {
		engineSkip = "no usable Docker engine: " + err.Error()
	}
	code := m.Run()
	if cleanup != nil {
		cleanup()
	}
	os.Exit(code)
}

// buildHelperImage compiles the helper as a static binary and imports it as
// a one-file image whose entrypoint it is.
func buildHelperImage() (cleanup func(), err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var tag [6]byte
	if _, err := rand.Read(tag[:]); err != nil {
		return nil, err
	}
	helperImage = "skiff-test-exec/helper:" + hex.EncodeToString(tag[:])
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, err
	}
	if _, err := cli.Ping(ctx); err != nil {
		cli.Close()
		return nil, err
	}

	dir, err := os.MkdirTemp("", "skiff-docker-test")
	if err != nil {
		return nil, err
	}
	keep := false
	defer func() {
		if !keep {
			os.RemoveAll(dir)
		}
	}()
	bin := filepath.Join(dir, "helper")
	initBinary = filepath.Join(dir, "netinit")
	for out, pkg := range map[string]string{bin: "./testdata/helper", initBinary: "./testdata/netinit"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build %s: %v\n%s", pkg, err, b)
		}
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	var tarball bytes.Buffer
	tw := tar.NewWriter(&tarball)
	if err := tw.WriteHeader(&tar.Header{Name: "helper", Mode: 0o755, Size: int64(len(data)), ModTime: time.Now()}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	rc, err := cli.ImageImport(ctx, image.ImportSource{Source: &tarball, SourceName: "-"}, helperImage,
		image.ImportOptions{Changes: []string{`ENTRYPOINT ["/helper"]`}})
	if err != nil {
		return nil, fmt.Errorf("import helper image: %w", err)
	}
	defer rc.Close()
	if err := drainPull(rc); err != nil {
		return nil, fmt.Errorf("import helper image: %w", err)
	}
	keep = true
	return func() {
		_, _ = cli.ImageRemove(context.Background(), helperImage, image.RemoveOptions{PruneChildren: true})
		cli.Close()
		os.RemoveAll(dir)
	}, nil
}

// harness is one test's executor, on a node identity of its own so that
// parallel tests never see each other's containers.
type harness struct {
	t    *testing.T
	ex   *Executor
	node string
	// raw is a plain engine client, for doing to containers what only an
	// outsider would (kill, inspect) and for checking the executor's work.
	raw *client.Client
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessWith(t, Config{Node: "test-node-" + randID(t)})
}

// newHarnessWith opens an executor built from cfg, logging to the test.
// Every container of cfg.Node is removed when the test ends.
func newHarnessWith(t *testing.T, cfg Config) *harness {
	t.Helper()
	if engineSkip != "" {
		t.Skip(engineSkip)
	}
	cfg.Logger = testLogger(t)
	node := cfg.Node
	ex, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, ex: ex, node: node, raw: raw}
	t.Cleanup(func() {
		ctx := context.Background()
		list, err := raw.ContainerList(ctx, container.ListOptions{All: true,
			Filters: filters.NewArgs(filters.Arg("label", LabelNode+"="+node))})
		if err != nil {
			t.Errorf("cleanup: list containers: %v", err)
		}
		for _, c := range list {
			if err := raw.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
				t.Errorf("cleanup: remove container %s: %v", c.ID, err)
			}
		}
		ex.Close()
		raw.Close()
	})
	return h
}

// assignment is a one-replica task of the helper image running args.
func (h *harness) assignment(args ...string) *skiffpb.Assignment {
	id := randID(h.t)
	return &skiffpb.Assignment{
		Task: &skiffpb.Task{Id: id, ServiceId: "svc-" + id, ServiceName: "test_app", Stack: "test", Slot: 1},
		Spec: &skiffpb.ServiceSpec{
			Name:      "test_app",
			Stack:     "test",
			Container: &skiffpb.ContainerSpec{Image: helperImage, Command: args},
		},
	}
}

// run prepares and starts a task.
func (h *harness) run(a *skiffpb.Assignment) {
	h.t.Helper()
	ctx := context.Background()
	if err := h.ex.Prepare(ctx, a); err != nil {
		h.t.Fatalf("Prepare: %v", err)
	}
	if err := h.ex.Start(ctx, a.GetTask().GetId()); err != nil {
		h.t.Fatalf("Start: %v", err)
	}
}

// waitReady follows a task's log until the helper prints "ready": from then
// on, it handles the signals the test sends it.
func (h *harness) waitReady(taskID string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ready := errors.New("ready")
	err := h.ex.Logs(ctx, taskID, true, -1, func(m *skiffpb.LogMessage) error {
		if string(m.GetData()) == "ready" {
			return ready
		}
		return nil
	})
	if !errors.Is(err, ready) {
		h.t.Fatalf("task %s never said ready: %v", taskID, err)
	}
}

// events subscribes to the executor's events until the test ends, and waits
// then for the executor's goroutine to be gone.
func (h *harness) events() <-chan agent.Event {
	return subscribe(h.t, h.ex)
}

func subscribe(t *testing.T, ex *Executor) <-chan agent.Event {
	ctx, cancel := context.WithCancel(context.Background())
	evs := ex.Events(ctx)
	t.Cleanup(func() {
		cancel()
		for range evs {
		}
	})
	return evs
}

// waitState reads events until taskID reaches want, and fails the test if
// that does not happen within waitTimeout. Events of other tasks and earlier
// states are skipped.
func waitState(t *testing.T, evs <-chan agent.Event, taskID string, want skiffpb.TaskState) *skiffpb.TaskStatus {
	t.Helper()
	return waitEvent(t, evs, taskID, func(st *skiffpb.TaskStatus) bool { return st.GetState() == want })
}

// waitEvent reads events until one of taskID matches.
func waitEvent(t *testing.T, evs <-chan agent.Event, taskID string, match func(*skiffpb.TaskStatus) bool) *skiffpb.TaskStatus {
	t.Helper()
	return waitEvents(t, evs, map[string]func(*skiffpb.TaskStatus) bool{taskID: match})[taskID]
}

// waitEvents reads events until, for every task in want, one has matched,
// and returns the matching statuses. Events of other tasks are skipped.
func waitEvents(t *testing.T, evs <-chan agent.Event, want map[string]func(*skiffpb.TaskStatus) bool) map[string]*skiffpb.TaskStatus {
	t.Helper()
	got := map[string]*skiffpb.TaskStatus{}
	deadline := time.After(waitTimeout)
	for len(got) < len(want) {
		select {
		case ev, ok := <-evs:
			if !ok {
				t.Fatalf("event stream closed; matched %d of %d tasks", len(got), len(want))
			}
			if match, ok := want[ev.TaskID]; ok && got[ev.TaskID] == nil && match(ev.Status) {
				got[ev.TaskID] = ev.Status
			}
		case <-deadline:
			t.Fatalf("within %v, events matched only %d of tasks %v", waitTimeout, len(got), slices.Collect(maps.Keys(want)))
		}
	}
	return got
}

// isState matches a status in state.
func isState(state skiffpb.TaskState) func(*skiffpb.TaskStatus) bool {
	return func(st *skiffpb.TaskStatus) bool { return st.GetState() == state }
}

// containerOf returns the executor's view of one task's container.
func (h *harness) containerOf(taskID string) (agent.Container, bool) {
	h.t.Helper()
	list, err := h.ex.Containers(context.Background())
	if err != nil {
		h.t.Fatalf("Containers: %v", err)
	}
	for _, c := range list {
		if c.TaskID == taskID {
			return c, true
		}
	}
	return agent.Container{}, false
}

// engineContainers lists, with the raw client, every container of a task
// whatever its node.
func (h *harness) engineContainers(taskID string) []container.Summary {
	h.t.Helper()
	list, err := h.raw.ContainerList(context.Background(), container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", LabelTaskID+"="+taskID))})
	if err != nil {
		h.t.Fatal(err)
	}
	return list
}

func randID(t *testing.T) string {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// testLogger sends the executor's logs to the test's log, and drops them
// once the test is over: an executor goroutine that logs while it winds down
// must not trip the testing package.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.close) // registered first, so it runs last
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(bytes.TrimSuffix(p, []byte("\n"))))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
}
