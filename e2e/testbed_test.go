//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skiffhq/skiff/e2e/testbed"
)

const (
	testbedHosts = 3
	// testbedUpTimeout covers make, image loading and every node getting
	// Ready; the wait for Ready alone is bounded by the script (90 s).
	testbedUpTimeout   = 5 * time.Minute
	testbedDownTimeout = 2 * time.Minute
	// reachTimeout bounds how long a change of the underlay (a link going
	// up or down) may take to show in the hosts' reachability.
	reachTimeout = 15 * time.Second
)

// testbedImages are the images up loads into every host's engine.
var testbedImages = []string{"skiff-test/web", "skiff-test/redis", "skiff-test/probe", "skiff-test/iperf3"}

// TestTestbed checks deploy/testbed itself, which every other end-to-end test
// stands on. The sub-tests share one testbed and run in order: each leaves it
// in the state the next one expects.
func TestTestbed(t *testing.T) {
	testbed.RequireRoot(t)
	c := &testbedCheck{t: t, tb: testbed.New(t)}
	t.Cleanup(c.down)
	c.up()

	// survivor is a container on h3 still running when down is called.
	var survivor int

	t.Run("HostsReachEachOther", func(t *testing.T) {
		c := c.with(t)
		for _, from := range c.hosts() {
			for _, to := range c.hosts() {
				if from != to {
					c.reach(from, to)
				}
			}
			c.reach("", from)
			c.noDefaultRoute(from)
		}
	})

	t.Run("EachHostHasItsOwnEngine", func(t *testing.T) {
		c := c.with(t)
		for _, host := range c.hosts() {
			c.equal(host, "hostname in the UTS namespace", c.exec(host, "hostname"), host)
			c.equal(host, "engine name", c.docker(host, "info", "--format", "{{.Name}}"), host)
			images := strings.Fields(c.docker(host, "images", "--format", "{{.Repository}}"))
			for _, image := range testbedImages {
				if !slices.Contains(images, image) {
					t.Errorf("%s: engine lacks %s; it has %v", host, image, images)
				}
			}
		}
	})

	t.Run("KillAndRestart", func(t *testing.T) {
		c := c.with(t)
		victim := c.runProbe("h2", "victim")
		daemons := c.hostPids("h2")
		c.must(c.tb.Kill(c.ctx(), "h2"))

		c.noReach("h1", "h2")
		c.dead("h2's container", victim)
		for name, pid := range daemons {
			c.dead(name, pid)
		}

		c.must(c.tb.Restart(c.ctx(), "h2"))
		c.reach("h1", "h2")
		c.reach("h2", "h1")
		c.equal("h2", "state of the killed container", c.docker("h2", "inspect", "-f", "{{.State.Running}}", "victim"), "false")
		c.docker("h2", "run", "--rm", "--network", "none", "skiff-test/probe", "exit", "0")
	})

	t.Run("PartitionAndHeal", func(t *testing.T) {
		c := c.with(t)
		survivor = c.runProbe("h3", "survivor")
		daemons := c.hostPids("h3")
		c.must(c.tb.Partition(c.ctx(), "h3"))

		c.noReach("h1", "h3")
		c.noReach("h3", "h1")
		c.noReach("", "h3")
		c.alive("h3's container", survivor)
		for name, pid := range daemons {
			c.alive(name, pid)
		}
		c.docker("h3", "ps") // its engine still answers locally

		c.must(c.tb.Heal(c.ctx(), "h3"))
		c.reach("h1", "h3")
		c.reach("h3", "h1")
		c.reach("", "h3")
		c.alive("h3's container", survivor)
		if got := c.hostPids("h3"); !maps.Equal(got, daemons) {
			t.Errorf("h3's daemons changed through the partition: before %v, after %v", daemons, got)
		}
	})

	t.Run("StopAndStartAgent", func(t *testing.T) {
		c := c.with(t)
		before, ok := c.hostPids("h1")["h1/agent"]
		if !ok {
			t.Skip("h1 runs no agent: bin/skiff-agent is not built")
		}
		c.must(c.tb.Stop(c.ctx(), "h1", "agent"))
		c.dead("h1's stopped agent", before)
		c.must(c.tb.Start(c.ctx(), "h1", "agent"))
		after := c.hostPids("h1")["h1/agent"]
		if after == before {
			t.Errorf("h1's agent still has pid %d after stop and start", before)
		}
	})

	t.Run("DownLeavesNothing", func(t *testing.T) {
		c := c.with(t)
		pids := c.allPids()
		if survivor != 0 {
			pids["h3/container survivor"] = survivor
		}
		c.must(c.tb.Down(c.ctx()))
		c.nothingLeft(pids)
	})

	t.Run("UpAndDownAgain", func(t *testing.T) {
		c := c.with(t)
		c.up()
		for _, host := range c.hosts() {
			c.reach("", host)
		}
		pids := c.allPids()
		c.must(c.tb.Down(c.ctx()))
		c.nothingLeft(pids)
	})
}

// testbedCheck carries what the testbed's checks need; its methods fail t.
type testbedCheck struct {
	t  *testing.T
	tb *testbed.Testbed
}

// with returns the same checks failing and logging to the sub-test t.
func (c *testbedCheck) with(t *testing.T) *testbedCheck {
	tb := *c.tb
	tb.Logf = t.Logf
	return &testbedCheck{t: t, tb: &tb}
}

func (c *testbedCheck) ctx() context.Context { return c.t.Context() }

func (c *testbedCheck) must(err error) {
	c.t.Helper()
	if err != nil {
		c.t.Fatal(err)
	}
}

func (c *testbedCheck) hosts() []string {
	hosts := make([]string, testbedHosts)
	for i := range hosts {
		hosts[i] = testbed.Host(i + 1)
	}
	return hosts
}

func (c *testbedCheck) up() {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx(), testbedUpTimeout)
	defer cancel()
	start := time.Now()
	managers, err := c.tb.Up(ctx, testbedHosts, testbedHosts)
	c.must(err)
	c.t.Logf("testbed up in %v; SKIFF_MANAGER=%s", time.Since(start).Round(100*time.Millisecond), managers)
}

// down runs at cleanup, when the test's context is already done, and also
// after a test that failed halfway: down must always succeed.
func (c *testbedCheck) down() {
	ctx, cancel := context.WithTimeout(context.Background(), testbedDownTimeout)
	defer cancel()
	if err := c.tb.Down(ctx); err != nil {
		c.t.Errorf("cleaning up: %v", err)
	}
}

func (c *testbedCheck) exec(host string, args ...string) string {
	c.t.Helper()
	out, err := c.tb.Exec(c.ctx(), host, args...)
	c.must(err)
	return strings.TrimSpace(out)
}

func (c *testbedCheck) docker(host string, args ...string) string {
	c.t.Helper()
	out, err := c.tb.Docker(c.ctx(), host, args...)
	c.must(err)
	return strings.TrimSpace(out)
}

func (c *testbedCheck) equal(host, what, got, want string) {
	c.t.Helper()
	if got != want {
		c.t.Errorf("%s: %s is %q, want %q", host, what, got, want)
	}
}

// reach waits until from ("" is the root namespace) reaches host.
func (c *testbedCheck) reach(from, host string) {
	c.t.Helper()
	testbed.Eventually(c.t, reachTimeout, func() error {
		return c.tb.Reach(c.ctx(), from, testbed.Addr(host))
	})
}

// noReach waits until from ("" is the root namespace) no longer reaches host.
func (c *testbedCheck) noReach(from, host string) {
	c.t.Helper()
	testbed.Eventually(c.t, reachTimeout, func() error {
		if c.tb.Reach(c.ctx(), from, testbed.Addr(host)) == nil {
			return fmt.Errorf("%s still reaches %s", c.name(from), host)
		}
		return nil
	})
}

// name names host in messages; "" is the root namespace.
func (c *testbedCheck) name(host string) string {
	if host == "" {
		return "the root namespace"
	}
	return host
}

// noDefaultRoute checks that host has no route off the machine.
func (c *testbedCheck) noDefaultRoute(host string) {
	c.t.Helper()
	if routes := c.exec(host, "ip", "route", "show", "default"); routes != "" {
		c.t.Errorf("%s has a default route: %s", host, routes)
	}
}

// runProbe starts a long-running skiff-test/probe container on host and
// returns the pid of its process.
func (c *testbedCheck) runProbe(host, name string) int {
	c.t.Helper()
	c.docker(host, "run", "-d", "--name", name, "--network", "none", "skiff-test/probe")
	pid, err := strconv.Atoi(c.docker(host, "inspect", "-f", "{{.State.Pid}}", name))
	c.must(err)
	if pid == 0 || !testbed.Alive(pid) {
		c.t.Fatalf("%s: container %s is not running (pid %d)", host, name, pid)
	}
	return pid
}

func (c *testbedCheck) allPids() map[string]int {
	c.t.Helper()
	pids, err := testbed.Pids()
	c.must(err)
	if len(pids) == 0 {
		c.t.Fatalf("no pid files under %s", testbed.StateDir)
	}
	return pids
}

// hostPids returns the pids of host's daemons, all of which must be running.
func (c *testbedCheck) hostPids(host string) map[string]int {
	c.t.Helper()
	pids := maps.Clone(c.allPids())
	maps.DeleteFunc(pids, func(name string, _ int) bool { return !strings.HasPrefix(name, host+"/") })
	for name, pid := range pids {
		c.alive(name, pid)
	}
	return pids
}

func (c *testbedCheck) alive(what string, pid int) {
	c.t.Helper()
	if !testbed.Alive(pid) {
		c.t.Errorf("%s (pid %d) is not running", what, pid)
	}
}

func (c *testbedCheck) dead(what string, pid int) {
	c.t.Helper()
	if testbed.Alive(pid) {
		c.t.Errorf("%s (pid %d) still runs", what, pid)
	}
}

// testbedNetns matches the names of the testbed's network namespaces.
var testbedNetns = regexp.MustCompile(`^(h[0-9]+|skiff-ul)\b`)

// nothingLeft checks that no namespace, process, mount, cgroup, link or
// state of the testbed remains; pids are the processes it had.
func (c *testbedCheck) nothingLeft(pids map[string]int) {
	c.t.Helper()
	for name, pid := range pids {
		c.dead(name, pid)
	}
	for _, ns := range c.lines("ip", "netns", "list") {
		if testbedNetns.MatchString(ns) {
			c.t.Errorf("network namespace left: %s", ns)
		}
	}
	if out, err := exec.Command("pgrep", "-af", testbed.StateDir).Output(); err == nil {
		c.t.Errorf("processes left:\n%s", out)
	}
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	c.must(err)
	for line := range strings.Lines(string(mountinfo)) {
		if strings.Contains(line, testbed.StateDir) || isTestbedNetnsMount(line) {
			c.t.Errorf("mount left: %s", strings.TrimSpace(line))
		}
	}
	for _, link := range c.lines("ip", "-o", "link", "show") {
		if strings.Contains(link, ": skiff-") {
			c.t.Errorf("link left: %s", link)
		}
	}
	cgroups, err := filepath.Glob("/sys/fs/cgroup/*/skiff-testbed")
	c.must(err)
	if _, err := os.Stat("/sys/fs/cgroup/skiff-testbed"); err == nil {
		cgroups = append(cgroups, "/sys/fs/cgroup/skiff-testbed")
	}
	if len(cgroups) > 0 {
		c.t.Errorf("cgroups left: %v", cgroups)
	}
	if _, err := os.Stat(testbed.StateDir); !os.IsNotExist(err) {
		c.t.Errorf("%s left (stat: %v)", testbed.StateDir, err)
	}
}

// isTestbedNetnsMount reports whether a mountinfo line is the bind mount of one of
// the testbed's network namespaces.
func isTestbedNetnsMount(line string) bool {
	fields := strings.Fields(line)
	if len(fields) < 5 {
		return false
	}
	name, ok := strings.CutPrefix(fields[4], "/run/netns/")
	return ok && testbedNetns.MatchString(name)
}

func (c *testbedCheck) lines(name string, args ...string) []string {
	c.t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		c.t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return slices.DeleteFunc(strings.Split(string(out), "\n"), func(s string) bool { return s == "" })
}
