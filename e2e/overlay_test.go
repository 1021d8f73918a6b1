//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/skiffhq/skiff/e2e/testbed"
)

// overlayStack is the tutorial's stack placed by constraints: web on h1
// and h2, redis on a node labelled db=yes (h3, with h2 as the standby).
const overlayStack = `
version: "3"
services:
  web:
    image: skiff-test/web:latest
    ports: ["4000:80"]
    links: [redis]
    deploy:
      replicas: 2
      placement:
        constraints: ["node.hostname != h3"]
        max_replicas_per_node: 1
  redis:
    image: skiff-test/redis:latest
    deploy:
      placement:
        constraints: ["node.labels.db == yes"]
  hostweb:
    image: skiff-test/web:latest
    ports:
      - target: 80
        published: 4100
        mode: host
    deploy:
      placement:
        constraints: ["node.hostname == h2"]
`

// otherStack is a second stack, which must not reach the first.
const otherStack = `
services:
  intruder:
    image: skiff-test/probe:latest
    command: ["sleep"]
    deploy:
      placement:
        constraints: ["node.hostname == h1"]
`

// TestOverlayAcrossHosts: linked services on different hosts reach each
// other by name; every host answers the published port; when the linked
// service's host dies, the name follows it to its new host; and stacks are
// isolated from each other.
func TestOverlayAcrossHosts(t *testing.T) {
	c := newCluster(t, 3, 3)
	c.mustSkiff("node", "update", "--label-add", "db=yes", "h3")
	c.mustSkiff("stack", "deploy", "--detach", "-c", writeCompose(t, overlayStack), "lab")
	c.waitReplicas("lab_web", "2/2", time.Minute)
	c.waitReplicas("lab_redis", "1/1", time.Minute)
	if node := c.taskNode("lab_redis"); node != "h3" {
		t.Fatalf("redis runs on %s, want h3", node)
	}

	t.Run("CounterThroughTheNameRedisOnEveryHost", func(t *testing.T) {
		c.eventually(30*time.Second, func() error { return counterWorks("h1", "h2", "h3") })
	})

	t.Run("HostModePortAnswersOnlyOnItsHost", func(t *testing.T) {
		c.waitReplicas("lab_hostweb", "1/1", time.Minute)
		client := http.Client{Timeout: 3 * time.Second}
		c.eventually(30*time.Second, func() error {
			resp, err := client.Get("http://" + testbed.Addr("h2") + ":4100/")
			if err != nil {
				return err
			}
			resp.Body.Close()
			return nil
		})
		if resp, err := client.Get("http://" + testbed.Addr("h1") + ":4100/"); err == nil {
			resp.Body.Close()
			t.Errorf("h1 answers host-mode port 4100 of a task on h2")
		}
	})

	t.Run("StacksAreIsolated", func(t *testing.T) {
		redisIP := c.lookupFromService("h1", "lab_web", "redis")
		c.mustSkiff("stack", "deploy", "--detach", "-c", writeCompose(t, otherStack), "other")
		c.waitReplicas("other_intruder", "1/1", time.Minute)
		intruder := c.containerOf("h1", "other_intruder")
		if out, err := c.docker("h1", "exec", intruder, "/probe", "lookup", "redis"); err == nil {
			t.Errorf("another stack resolves redis: %s", out)
		}
		out, err := c.docker("h1", "exec", intruder, "/probe", "dial", "tcp", redisIP+":6379", "PING\r\n")
		if err == nil && strings.Contains(out, "PONG") {
			t.Fatalf("another stack reached lab's redis at %s: %s", redisIP, out)
		}
	})

	t.Run("RedisHostKilledNameFollows", func(t *testing.T) {
		before := c.lookupFromService("h1", "lab_web", "redis")
		c.mustSkiff("node", "update", "--label-add", "db=yes", "h2")
		if err := c.tb.Kill(t.Context(), "h3"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		c.eventually(time.Minute, func() error {
			if node := c.taskNode("lab_redis"); node != "h2" {
				return fmt.Errorf("redis runs on %q, want h2", node)
			}
			return counterWorks("h1", "h2")
		})
		t.Logf("counter works again %s after redis's host was killed", time.Since(start).Round(100*time.Millisecond))
		if after := c.lookupFromService("h1", "lab_web", "redis"); after == before {
			t.Errorf("redis still resolves to its old address %s", before)
		}
	})
}

// taskNode returns the node of a service's running task, or "".
func (c *cluster) taskNode(service string) string {
	out, err := c.skiff("service", "ps", service, "--format", "{{.Node}} {{.DesiredState}} {{.CurrentState}}")
	if err != nil {
		return ""
	}
	for _, l := range lines(out) {
		f := strings.Fields(l)
		if len(f) >= 3 && f[1] == "Running" && f[2] == "Running" {
			return f[0]
		}
	}
	return ""
}

// containerOf returns the ID of a service's running container on host.
func (c *cluster) containerOf(host, service string) string {
	c.t.Helper()
	var id string
	c.eventually(30*time.Second, func() error {
		cs, err := c.containers(host, service, false)
		if err != nil {
			return err
		}
		if len(cs) == 0 {
			return fmt.Errorf("no container of %s on %s", service, host)
		}
		id = strings.Fields(cs[0])[0]
		return nil
	})
	return id
}

// lookupFromService resolves name the way a task of service on host does:
// from its network namespace, with its resolver (a container that joins
// another's network shares its resolv.conf).
func (c *cluster) lookupFromService(host, service, name string) string {
	c.t.Helper()
	var ip string
	c.eventually(30*time.Second, func() error {
		tasks, err := c.docker(host, "ps", "--filter", "label=skiff.service="+service, "-q")
		if err != nil {
			return err
		}
		ids := lines(tasks)
		if len(ids) == 0 {
			return fmt.Errorf("no container of %s on %s", service, host)
		}
		out, err := c.docker(host, "run", "--rm", "--network", "container:"+ids[0], "skiff-test/probe:latest", "lookup", name)
		if err != nil {
			return err
		}
		addrs := lines(out)
		if len(addrs) == 0 {
			return fmt.Errorf("%s resolves to nothing", name)
		}
		ip = addrs[0]
		return nil
	})
	return ip
}
