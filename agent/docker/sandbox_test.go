package docker

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// TestPauseProgramRuns executes the generated sandbox program: it must be
// a valid static executable that blocks until killed.
func TestPauseProgramRuns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pause")
	if err := os.WriteFile(path, pauseProgram(), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start generated pause program: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// It must still be blocked in pause(2) after its first scheduling
	// quanta; poll its state rather than sleeping a guess.
	deadline := time.Now().Add(5 * time.Second)
	for {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/stat")
		if err != nil {
			t.Fatalf("pause program exited early: %v", <-done)
		}
		if fields := strings.Fields(string(stat)); len(fields) > 2 && fields[2] == "S" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pause program never went to sleep: %s", stat)
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("pause program ended with %v, want killed", err)
	}
}

// recordingNetwork plumbs a sandbox by adding a veth pair to its
// namespace: real kernel work that the test can observe.
type recordingNetwork struct {
	mu        sync.Mutex
	plumbed   map[string]string
	unplumbed []string
}

func (n *recordingNetwork) Plumb(ctx context.Context, a *skiffpb.Assignment, nsPath string) error {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	if _, err := h.LinkByName("skt0"); err != nil {
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "skt0"}, PeerName: "skt1"}); err != nil {
			return err
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.plumbed[a.GetTask().GetId()] = nsPath
	return nil
}

func (n *recordingNetwork) Unplumb(ctx context.Context, taskID string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.unplumbed = append(n.unplumbed, taskID)
	return nil
}

func (n *recordingNetwork) Nameservers(a *skiffpb.Assignment) []string {
	return []string{"198.18.99.1"}
}

func TestSandboxHoldsTheNetworkBeforeTheTaskStarts(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to enter a container's network namespace")
	}
	h := newHarness(t)
	rec := &recordingNetwork{plumbed: map[string]string{}}
	h.ex.Network = rec
	a := h.assignment("sleep")
	a.Task.Networks = []*skiffpb.NetworkAttachment{{NetworkId: "n1", Address: "198.18.99.5/24"}}
	a.Spec.Container.Hostname = "web-sandboxed"
	id := a.GetTask().GetId()
	ctx := context.Background()
	h.run(a)
	if err := h.ex.Prepare(ctx, a); err != nil {
		t.Fatalf("second Prepare: %v", err)
	}

	sb, ok, err := h.ex.findSandbox(ctx, id)
	if err != nil || !ok {
		t.Fatalf("no sandbox for the task (err %v)", err)
	}
	if rec.plumbed[id] == "" {
		t.Fatal("Plumb was not called")
	}
	app, ok, err := h.ex.find(ctx, id)
	if err != nil || !ok {
		t.Fatalf("no task container (err %v)", err)
	}
	info, err := h.raw.ContainerInspect(ctx, app.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := "container:" + sb.ID; string(info.HostConfig.NetworkMode) != want {
		t.Errorf("task network mode = %q, want %q", info.HostConfig.NetworkMode, want)
	}
	sbInfo, err := h.raw.ContainerInspect(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if sbInfo.Config.Hostname != "web-sandboxed" || len(sbInfo.HostConfig.DNS) == 0 || sbInfo.HostConfig.DNS[0] != "198.18.99.1" {
		t.Errorf("sandbox hostname %q, dns %v; want web-sandboxed and the node's DNS", sbInfo.Config.Hostname, sbInfo.HostConfig.DNS)
	}
	// The task's container sees the link the network plumbed.
	if info.State == nil || info.State.Pid == 0 {
		t.Fatalf("task container is not running: %+v", info.State)
	}
	ns, err := netns.GetFromPath("/proc/" + strconv.Itoa(info.State.Pid) + "/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	nh, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	if _, err := nh.LinkByName("skt0"); err != nil {
		t.Errorf("task container does not see the sandbox's link: %v", err)
	}

	if err := h.ex.Remove(ctx, id); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, ok, _ := h.ex.findSandbox(ctx, id); ok {
		t.Error("sandbox survived Remove")
	}
	if len(rec.unplumbed) != 1 || rec.unplumbed[0] != id {
		t.Errorf("Unplumb calls = %v, want [%s]", rec.unplumbed, id)
	}
}
