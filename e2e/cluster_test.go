//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skiffhq/skiff/e2e/testbed"
)

// cluster is a testbed with skiff running on it, driven the way a user
// drives it: through the skiff CLI and the hosts' own docker engines.
type cluster struct {
	t        *testing.T
	tb       *testbed.Testbed
	managers string
	skiffBin string
}

// newCluster brings up a testbed of hosts hosts, managers of them running a
// manager, waits for every node to be Ready, and tears it all down when the
// test ends (after printing the daemons' logs if the test failed).
func newCluster(t *testing.T, hosts, managers int) *cluster {
	t.Helper()
	testbed.RequireRoot(t)
	tb := testbed.New(t)
	tb.Environ = append(tb.Environ, "SKIFF_TESTBED_NO_BUILD=1")
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	// A testbed left over from an aborted run would make up fail.
	if err := tb.Down(ctx); err != nil {
		t.Fatalf("clear old testbed: %v", err)
	}
	c := &cluster{t: t, tb: tb, skiffBin: filepath.Join(tb.Root, "bin", "skiff")}
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := tb.Down(ctx); err != nil {
			t.Errorf("testbed down: %v", err)
		}
	})
	addrs, err := tb.Up(ctx, hosts, managers)
	if err != nil {
		t.Fatalf("testbed up: %v", err)
	}
	c.managers = addrs
	return c
}

// dumpLogs prints the tail of every skiff daemon's log.
func (c *cluster) dumpLogs() {
	logs, _ := filepath.Glob(filepath.Join(testbed.StateDir, "h*", "logs", "*.log"))
	for _, path := range logs {
		if strings.HasSuffix(path, "containerd.log") || strings.HasSuffix(path, "dockerd.log") {
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 60 {
			lines = lines[len(lines)-60:]
		}
		c.t.Logf("==> %s <==\n%s", path, strings.Join(lines, "\n"))
	}
}

// skiff runs the CLI against the cluster's managers.
func (c *cluster) skiff(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(c.t.Context(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.skiffBin, args...)
	cmd.Env = append(os.Environ(), "SKIFF_MANAGER="+c.managers, "SKIFF_TLS_DIR="+testbed.AdminDir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("skiff %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// mustSkiff runs the CLI and fails the test if it fails.
func (c *cluster) mustSkiff(args ...string) string {
	c.t.Helper()
	out, err := c.skiff(args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// docker runs the docker CLI against one host's own engine.
func (c *cluster) docker(host string, args ...string) (string, error) {
	return c.tb.Docker(c.t.Context(), host, args...)
}

// eventually fails the test unless f succeeds within timeout. Each new
// reason for waiting is logged with the time it appeared, so a slow
// convergence shows where the time went.
func (c *cluster) eventually(timeout time.Duration, f func() error) {
	c.t.Helper()
	start := time.Now()
	last, logged := "", time.Time{}
	testbed.Eventually(c.t, timeout, func() error {
		err := f()
		if err != nil && err.Error() != last && time.Since(logged) > time.Second {
			last, logged = err.Error(), time.Now()
			c.t.Logf("+%s waiting: %v", time.Since(start).Round(10*time.Millisecond), err)
		}
		return err
	})
}

// writeCompose writes a compose file into a temp dir and returns its path.
func writeCompose(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "docker-compose.yml")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// lines splits output into its non-empty lines.
func lines(out string) []string {
	var ls []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			ls = append(ls, l)
		}
	}
	return ls
}

// replicas returns the REPLICAS column of a service, e.g. "3/3".
func (c *cluster) replicas(service string) (string, error) {
	out, err := c.skiff("service", "ls", "--format", "{{.Name}} {{.Replicas}}")
	if err != nil {
		return "", err
	}
	for _, l := range lines(out) {
		// Docker appends "(max N per node)" to REPLICAS; only the count
		// matters here.
		if f := strings.Fields(l); len(f) >= 2 && f[0] == service {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("service %s not listed:\n%s", service, out)
}

// waitReplicas waits until a service shows want (e.g. "3/3").
func (c *cluster) waitReplicas(service, want string, timeout time.Duration) {
	c.t.Helper()
	c.eventually(timeout, func() error {
		got, err := c.replicas(service)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%s replicas %s, want %s", service, got, want)
		}
		return nil
	})
}

// containers lists the running containers of a service on a host's engine,
// as "ID NAME" lines.
func (c *cluster) containers(host, service string, all bool) ([]string, error) {
	args := []string{"ps", "--filter", "label=skiff.service=" + service, "--format", "{{.ID}} {{.Names}}"}
	if all {
		args = append(args, "-a")
	}
	out, err := c.docker(host, args...)
	if err != nil {
		return nil, err
	}
	return lines(out), nil
}
