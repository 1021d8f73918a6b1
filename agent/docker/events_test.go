package docker

import (
	"context"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// The tests below run real containers on the local engine; see main_test.go.

func TestExitCodes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	evs := h.events()
	failed := h.assignment("exit", "3")
	done := h.assignment("exit", "0")
	h.run(failed)
	h.run(done)
	got := waitEvents(t, evs, map[string]func(*skiffpb.TaskStatus) bool{
		failed.GetTask().GetId(): isState(skiffpb.TaskState_TASK_STATE_FAILED),
		done.GetTask().GetId():   isState(skiffpb.TaskState_TASK_STATE_COMPLETE),
	})

	st := got[failed.GetTask().GetId()]
	if st.GetExitCode() != 3 || st.GetErr() != "task: non-zero exit (3)" || st.GetOomKilled() {
		t.Errorf("FAILED event = %v, want exit 3 and docker's error text", st)
	}
	c, _ := h.containerOf(failed.GetTask().GetId())
	if c.Status.GetState() != skiffpb.TaskState_TASK_STATE_FAILED || c.Status.GetExitCode() != 3 {
		t.Errorf("Containers() = %v, want FAILED with exit 3", c.Status)
	}

	// A finished task is never run again by Start.
	if err := h.ex.Start(context.Background(), failed.GetTask().GetId()); err != nil {
		t.Errorf("Start of a finished task: %v", err)
	}
	if again, _ := h.containerOf(failed.GetTask().GetId()); again.Status.GetStartedAt() != c.Status.GetStartedAt() ||
		again.Status.GetState() != skiffpb.TaskState_TASK_STATE_FAILED {
		t.Errorf("Start of a finished task restarted it: %v", again.Status)
	}

	st = got[done.GetTask().GetId()]
	if st.GetExitCode() != 0 || st.GetErr() != "" {
		t.Errorf("COMPLETE event = %v", st)
	}
	c, _ = h.containerOf(done.GetTask().GetId())
	if c.Status.GetState() != skiffpb.TaskState_TASK_STATE_COMPLETE {
		t.Errorf("Containers() = %v, want COMPLETE", c.Status)
	}
}

func TestKillFails137(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	evs := h.events()
	a := h.assignment("sleep")
	id := a.GetTask().GetId()
	h.run(a)
	st := waitState(t, evs, id, skiffpb.TaskState_TASK_STATE_RUNNING)

	// What `docker kill` does: SIGKILL from outside skiff.
	if err := h.raw.ContainerKill(context.Background(), st.GetContainerId(), "KILL"); err != nil {
		t.Fatal(err)
	}
	st = waitState(t, evs, id, skiffpb.TaskState_TASK_STATE_FAILED)
	if st.GetExitCode() != 137 || st.GetErr() != "task: non-zero exit (137)" {
		t.Errorf("FAILED event = %v, want exit 137", st)
	}
}

// TestOOMKilled runs alone, not in parallel: under load, Docker 20.10 on
// cgroup v1 loses some OOM kills (seen: 7 of 16 concurrent `docker run
// --memory 8m` kills not flagged), and then nobody can tell.
func TestOOMKilled(t *testing.T) {
	h := newHarness(t)
	evs := h.events()
	a := h.assignment("alloc")
	a.Spec.Limits = &skiffpb.Resources{MemoryBytes: 8 << 20}
	id := a.GetTask().GetId()
	h.run(a)
	// The helper allocates on SIGUSR1, sent once the engine watches the
	// container (it does by the time it reports the start) and the helper
	// listens (it says "ready").
	running := waitState(t, evs, id, skiffpb.TaskState_TASK_STATE_RUNNING)
	h.waitReady(id)
	if err := h.raw.ContainerKill(context.Background(), running.GetContainerId(), "USR1"); err != nil {
		t.Fatal(err)
	}

	st := waitState(t, evs, id, skiffpb.TaskState_TASK_STATE_FAILED)
	if !st.GetOomKilled() {
		info, err := h.raw.ContainerInspect(context.Background(), st.GetContainerId())
		if err == nil && info.State.ExitCode == 137 && !info.State.OOMKilled {
			t.Skip("the engine lost this OOM kill itself (exit 137, OOMKilled false): nothing to check")
		}
	}
	if !st.GetOomKilled() || st.GetExitCode() != 137 || !strings.Contains(st.GetErr(), "OOM") {
		t.Errorf("FAILED event = %v, want an OOM kill with exit 137", st)
	}
	c, _ := h.containerOf(id)
	if !c.Status.GetOomKilled() {
		t.Errorf("Containers() = %v, want oom_killed", c.Status)
	}
}

func TestHealthEvents(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	evs := h.events()
	check := func(code string) *skiffpb.Assignment {
		a := h.assignment("sleep")
		a.Spec.Container.Healthcheck = &skiffpb.HealthConfig{
			Test:     []string{"CMD", "/helper", "exit", code},
			Interval: int64(200 * time.Millisecond),
			Timeout:  int64(5 * time.Second),
			Retries:  1,
		}
		h.run(a)
		return a
	}
	healthy, unhealthy := check("0"), check("1")
	want := map[string]skiffpb.HealthState{
		healthy.GetTask().GetId():   skiffpb.HealthState_HEALTH_STATE_HEALTHY,
		unhealthy.GetTask().GetId(): skiffpb.HealthState_HEALTH_STATE_UNHEALTHY,
	}
	matchers := map[string]func(*skiffpb.TaskStatus) bool{}
	for id, health := range want {
		matchers[id] = func(st *skiffpb.TaskStatus) bool { return st.GetHealth() == health }
	}
	for id, st := range waitEvents(t, evs, matchers) {
		if st.GetState() != skiffpb.TaskState_TASK_STATE_RUNNING {
			t.Errorf("health event = %v, want RUNNING", st)
		}
		if c, _ := h.containerOf(id); c.Status.GetHealth() != want[id] {
			t.Errorf("Containers() = %v, want health %v", c.Status, want[id])
		}
	}
}

// TestEventsResyncAfterConnectionLoss cuts the executor off from the engine,
// as an engine restart would, changes a container meanwhile, and expects the
// change once the executor is back: the stream must reconnect by itself and
// resync by listing, since the engine will never send the missed event.
func TestEventsResyncAfterConnectionLoss(t *testing.T) {
	t.Parallel()
	if engineSkip != "" {
		t.Skip(engineSkip)
	}
	proxy := startEngineProxy(t)
	h := newHarnessWith(t, Config{Host: "unix://" + proxy.path, Node: "test-node-" + randID(t)})
	evs := h.events()
	a := h.assignment("sleep")
	id := a.GetTask().GetId()
	h.run(a)
	running := waitState(t, evs, id, skiffpb.TaskState_TASK_STATE_RUNNING)

	proxy.cut()
	ctx := context.Background()
	if err := h.raw.ContainerKill(ctx, running.GetContainerId(), "KILL"); err != nil {
		t.Fatal(err)
	}
	waitc, errc := h.raw.ContainerWait(ctx, running.GetContainerId(), container.WaitConditionNotRunning)
	select {
	case <-waitc:
	case err := <-errc:
		t.Fatal(err)
	}
	proxy.restore()

	st := waitState(t, evs, id, skiffpb.TaskState_TASK_STATE_FAILED)
	if st.GetExitCode() != 137 {
		t.Errorf("status after resync = %v, want FAILED with exit 137", st)
	}
}

// engineProxy stands between an executor and the real engine, and can drop
// every connection and refuse new ones: from the executor's side, exactly
// what an engine restart looks like.
type engineProxy struct {
	path   string
	target string
	ln     net.Listener

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
}

func startEngineProxy(t *testing.T) *engineProxy {
	t.Helper()
	raw, err := client.NewClientWithOpts(client.FromEnv)
	if err != nil {
		t.Fatal(err)
	}
	host := raw.DaemonHost()
	raw.Close()
	u, err := url.Parse(host)
	if err != nil || u.Scheme != "unix" {
		t.Skipf("the engine proxy needs an engine on a unix socket, not %q", host)
	}
	p := &engineProxy{
		path:   filepath.Join(t.TempDir(), "engine.sock"),
		target: u.Path,
		conns:  map[net.Conn]struct{}{},
	}
	p.ln, err = net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { p.serve(&wg) })
	t.Cleanup(func() {
		p.ln.Close()
		p.cut()
		wg.Wait()
	})
	return p
}

func (p *engineProxy) serve(wg *sync.WaitGroup) {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		up, err := net.Dial("unix", p.target)
		if err != nil {
			c.Close()
			continue
		}
		if !p.track(c, up) {
			continue
		}
		wg.Go(func() { io.Copy(up, c); up.Close(); c.Close() })
		wg.Go(func() { io.Copy(c, up); up.Close(); c.Close() })
	}
}

// track records a live pair, unless the proxy went down meanwhile.
func (p *engineProxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

// cut drops every connection and refuses new ones until restore.
func (p *engineProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *engineProxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}
