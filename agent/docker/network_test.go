package docker

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/skiffhq/skiff/agent/netinit"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// vethNetwork plumbs a task by putting a veth named eth0, with the task's
// address, into its namespace: the kernel work the overlay does, minus the
// bridge. It can hold a plumbing back, to show the task waits for it.
type vethNetwork struct {
	delay time.Duration

	mu        sync.Mutex
	plumbedAt map[string]time.Time
	unplumbed []string
}

func (n *vethNetwork) Plumb(ctx context.Context, a *skiffpb.Assignment, nsPath string) error {
	time.Sleep(n.delay) // the test's stand-in for slow plumbing, not a wait
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
	if _, err := h.LinkByName("eth0"); err != nil {
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}); err != nil {
			return err
		}
	}
	link, err := h.LinkByName("eth0")
	if err != nil {
		return err
	}
	addr, err := netlink.ParseAddr(a.GetTask().GetNetworks()[0].GetAddress())
	if err != nil {
		return err
	}
	if err := h.AddrReplace(link, addr); err != nil {
		return err
	}
	for _, name := range []string{"peer0", "eth0"} {
		l, err := h.LinkByName(name)
		if err != nil {
			return err
		}
		if err := h.LinkSetUp(l); err != nil {
			return err
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.plumbedAt[a.GetTask().GetId()] = time.Now()
	return nil
}

func (n *vethNetwork) Unplumb(ctx context.Context, taskID string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.unplumbed = append(n.unplumbed, taskID)
	return nil
}

func (n *vethNetwork) Nameservers(a *skiffpb.Assignment) []string { return []string{"198.18.99.1"} }

func TestProgram(t *testing.T) {
	withCfg := func(ep, cmd []string) image.InspectResponse {
		r := image.InspectResponse{Config: &dockerspec.DockerOCIImageConfig{}}
		r.Config.Entrypoint, r.Config.Cmd = ep, cmd
		return r
	}
	cases := []struct {
		name            string
		entrypoint, cmd []string
		img             image.InspectResponse
		want            []string
	}{
		{"image's own", nil, nil, withCfg([]string{"/web"}, []string{"-v"}), []string{"/web", "-v"}},
		{"command replaces image cmd", nil, []string{"x"}, withCfg([]string{"/web"}, []string{"-v"}), []string{"/web", "x"}},
		{"entrypoint drops image cmd", []string{"/sh"}, nil, withCfg([]string{"/web"}, []string{"-v"}), []string{"/sh"}},
		{"entrypoint and command", []string{"/sh"}, []string{"-c", "y"}, withCfg([]string{"/web"}, []string{"-v"}), []string{"/sh", "-c", "y"}},
		{"cmd only image", nil, nil, withCfg(nil, []string{"redis-server"}), []string{"redis-server"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := program(tc.entrypoint, tc.cmd, tc.img); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("program = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestNetworkedTaskRunsAfterPlumbing: a task with networks starts its
// program only once its interface is up, in one container.
func TestNetworkedTaskRunsAfterPlumbing(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to enter a container's network namespace")
	}
	nw := &vethNetwork{delay: 300 * time.Millisecond, plumbedAt: map[string]time.Time{}}
	stateDir := t.TempDir()
	h := newHarnessWith(t, Config{Node: "test-node-" + randID(t), Network: nw, InitPath: initBinary, StateDir: stateDir})
	evs := h.events()
	a := h.assignment("sleep")
	a.Task.Networks = []*skiffpb.NetworkAttachment{{NetworkId: "n1", Address: "198.18.99.5/24"}}
	id := a.GetTask().GetId()
	h.run(a)
	st := waitState(t, evs, id, skiffpb.TaskState_TASK_STATE_RUNNING)
	h.waitReady(id)

	ctx := context.Background()
	info, err := h.raw.ContainerInspect(ctx, st.GetContainerId())
	if err != nil {
		t.Fatal(err)
	}
	// No engine networking at all: no libnetwork sandbox, hence no
	// network of the engine's joined.
	if !info.Config.NetworkDisabled || len(info.NetworkSettings.Networks) != 0 {
		t.Errorf("network disabled %t, networks %v; want the engine's networking off", info.Config.NetworkDisabled, info.NetworkSettings.Networks)
	}
	// The task's resolv.conf is the executor's, with the node's DNS.
	resolv, err := os.ReadFile("/proc/" + strconv.Itoa(info.State.Pid) + "/root/etc/resolv.conf")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(resolv), "nameserver 198.18.99.1\n") {
		t.Errorf("the container's resolv.conf has no nameserver 198.18.99.1:\n%s", resolv)
	}
	if got := []string(info.Config.Entrypoint); len(got) < 1 || got[0] != netinit.Path {
		t.Errorf("entrypoint %v does not start with the network init", got)
	}
	// The init replaced itself with the task's program.
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(info.State.Pid) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	if argv0 := strings.Split(string(cmdline), "\x00")[0]; argv0 != "/helper" {
		t.Errorf("container process is %q, want the task's program /helper", argv0)
	}
	// ...and it started only after the plumbing was done.
	var first time.Time
	err = h.ex.Logs(ctx, id, false, -1, func(m *skiffpb.LogMessage) error {
		if first.IsZero() {
			first = time.Unix(0, m.GetTimestamp())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	nw.mu.Lock()
	plumbed := nw.plumbedAt[id]
	nw.mu.Unlock()
	if plumbed.IsZero() || first.Before(plumbed) {
		t.Errorf("task printed its first line at %s, before its network was plumbed at %s", first, plumbed)
	}
	// The task sees its address.
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
	link, err := nh.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := nh.AddrList(link, netlink.FAMILY_V4)
	if err != nil || len(addrs) == 0 || !addrs[0].IP.Equal(net.ParseIP("198.18.99.5")) {
		t.Errorf("eth0 addresses %v (err %v), want 198.18.99.5", addrs, err)
	}

	if err := h.ex.Remove(ctx, id); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if len(nw.unplumbed) != 1 || nw.unplumbed[0] != id {
		t.Errorf("Unplumb calls = %v, want [%s]", nw.unplumbed, id)
	}
	if _, err := h.raw.ContainerInspect(ctx, st.GetContainerId()); err == nil {
		t.Error("container survived Remove")
	}
	if left, _ := filepath.Glob(filepath.Join(stateDir, "resolv", "*")); len(left) != 0 {
		t.Errorf("Remove left %v behind", left)
	}
}

// TestNewNeedsInitForNetwork: an executor given a network but no network
// init could not start a networked task, so it is refused when built rather
// than when such a task arrives.
func TestNewNeedsInitForNetwork(t *testing.T) {
	if _, err := New(Config{Node: "n1", Network: &vethNetwork{}, StateDir: t.TempDir()}); err == nil {
		t.Error("New with a Network and no InitPath succeeded")
	}
	if _, err := New(Config{Node: "n1", Network: &vethNetwork{}, InitPath: "/bin/true"}); err == nil {
		t.Error("New with a Network and no StateDir succeeded")
	}
	ex, err := New(Config{Node: "n1", Network: &vethNetwork{}, InitPath: "/bin/true", StateDir: t.TempDir()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ex.Close()
}
