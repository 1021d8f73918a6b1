//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/skiffhq/skiff/e2e/testbed"
)

// probeStack is a service of sleeping probe containers that is restarted
// at once when it fails, so tests need not wait out Swarm's 5 s default.
const probeStack = `
services:
  sleeper:
    image: skiff-test/probe:latest
    command: ["sleep"]
    deploy:
      replicas: 3
      restart_policy:
        condition: any
        delay: 0s
`

// TestAgentsRunTasksOnTheirEngines walks the agent's life on real engines:
// tasks run as containers of each host's own dockerd; a killed container is
// replaced; a restarted agent adopts its containers; a killed host's tasks
// run elsewhere, and its stale containers go when it returns.
func TestAgentsRunTasksOnTheirEngines(t *testing.T) {
	c := newCluster(t, 3, 3)
	const svc = "probe_sleeper"
	c.mustSkiff("stack", "deploy", "--detach", "-c", writeCompose(t, probeStack), "probe")
	c.waitReplicas(svc, "3/3", time.Minute)

	// Spread: one task per host, each a container of that host's engine.
	perHost := map[string][]string{}
	for i := 1; i <= 3; i++ {
		h := testbed.Host(i)
		cs, err := c.containers(h, svc, false)
		if err != nil {
			t.Fatal(err)
		}
		perHost[h] = cs
		if len(cs) != 1 {
			t.Errorf("%s runs %d containers of %s, want 1 (spread over 3 hosts): %v", h, len(cs), svc, cs)
		}
	}

	t.Run("KilledContainerIsReplaced", func(t *testing.T) {
		victim := strings.Fields(perHost["h2"][0])[0]
		if _, err := c.docker("h2", "kill", victim); err != nil {
			t.Fatal(err)
		}
		c.eventually(30*time.Second, func() error {
			cs, err := c.containers("h2", svc, false)
			if err != nil {
				return err
			}
			for _, l := range cs {
				if strings.Fields(l)[0] == victim {
					return fmt.Errorf("killed container %s still listed as running", victim)
				}
			}
			return c.checkReplicas(svc, "3/3")
		})
		out := c.mustSkiff("service", "ps", svc, "--format", "{{.CurrentState}} {{.Error}}")
		if !strings.Contains(out, "Failed") || !strings.Contains(out, "137") {
			t.Errorf("service ps shows no failed task with exit 137:\n%s", out)
		}
	})

	t.Run("RestartedAgentAdoptsContainers", func(t *testing.T) {
		before, err := c.containers("h3", svc, false)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.tb.Stop(t.Context(), "h3", "agent"); err != nil {
			t.Fatal(err)
		}
		if err := c.tb.Start(t.Context(), "h3", "agent"); err != nil {
			t.Fatal(err)
		}
		c.waitNodeReady("h3")
		c.waitReplicas(svc, "3/3", 30*time.Second)
		after, err := c.containers("h3", svc, false)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(before, ",") != strings.Join(after, ",") {
			t.Errorf("h3's containers changed across an agent restart: before %v, after %v", before, after)
		}
		if n := c.countContainers(svc); n != 3 {
			t.Errorf("%d containers of %s run in the cluster after the agent restart, want 3", n, svc)
		}
	})

	t.Run("KilledHostsTasksRunElsewhere", func(t *testing.T) {
		if err := c.tb.Kill(t.Context(), "h3"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		c.eventually(time.Minute, func() error {
			n := 0
			for _, h := range []string{"h1", "h2"} {
				cs, err := c.containers(h, svc, false)
				if err != nil {
					return err
				}
				n += len(cs)
			}
			if n != 3 {
				return fmt.Errorf("%d containers of %s on h1 and h2, want 3", n, svc)
			}
			return nil
		})
		t.Logf("h3's task ran elsewhere %s after the kill", time.Since(start).Round(100*time.Millisecond))

		if err := c.tb.Restart(t.Context(), "h3"); err != nil {
			t.Fatal(err)
		}
		c.waitNodeReady("h3")
		c.eventually(time.Minute, func() error {
			cs, err := c.containers("h3", svc, true)
			if err != nil {
				return err
			}
			if len(cs) != 0 {
				return fmt.Errorf("h3 still has containers of %s after it returned: %v", svc, cs)
			}
			return nil
		})
		c.waitReplicas(svc, "3/3", 30*time.Second)
	})
}

// checkReplicas is replicas as an error.
func (c *cluster) checkReplicas(service, want string) error {
	got, err := c.replicas(service)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%s replicas %s, want %s", service, got, want)
	}
	return nil
}

// countContainers counts a service's running containers on every host.
func (c *cluster) countContainers(service string) int {
	n := 0
	for i := 1; i <= 3; i++ {
		cs, err := c.containers(testbed.Host(i), service, false)
		if err == nil {
			n += len(cs)
		}
	}
	return n
}

// waitNodeReady waits until node ls shows host Ready.
func (c *cluster) waitNodeReady(host string) {
	c.t.Helper()
	c.eventually(time.Minute, func() error {
		out, err := c.skiff("node", "ls", "--format", "{{.Hostname}} {{.Status}}")
		if err != nil {
			return err
		}
		for _, l := range lines(out) {
			if l == host+" Ready" {
				return nil
			}
		}
		return fmt.Errorf("%s not Ready:\n%s", host, out)
	})
}
