//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skiffhq/skiff/e2e/testbed"
)

// visitsRe and hostnameRe read the tutorial app's answer.
var (
	visitsRe   = regexp.MustCompile(`Visits: (\d+)`)
	hostnameRe = regexp.MustCompile(`Hostname: (\S+)`)
)

// visit is one answer of the web app.
type visit struct {
	hostname string
	visits   int
}

// get asks the published port of host for the page.
func get(host string) (visit, error) {
	// A fresh connection per visit, as a browser's refresh after a pause
	// makes: a kept-alive connection would stay with one container.
	client := http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + testbed.Addr(host) + ":4000/")
	if err != nil {
		return visit{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return visit{}, err
	}
	m := visitsRe.FindSubmatch(body)
	h := hostnameRe.FindSubmatch(body)
	if m == nil || h == nil {
		return visit{}, fmt.Errorf("%s:4000 answered without a visit count: %q", host, body)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return visit{hostname: string(h[1]), visits: n}, nil
}

// counterWorks succeeds once every host answers with a count, and the
// counts strictly increase.
func counterWorks(hosts ...string) error {
	last := -1
	for _, h := range hosts {
		v, err := get(h)
		if err != nil {
			return err
		}
		if v.visits <= last {
			return fmt.Errorf("visit count went from %d to %d", last, v.visits)
		}
		last = v.visits
	}
	return nil
}

// TestTutorialJourney walks the Docker tutorial's part 4 on three hosts, as
// a user would: deploy, visit, scale, drain, lose a host, lose the leader,
// remove.
func TestTutorialJourney(t *testing.T) {
	c := newCluster(t, 3, 3)
	file := c.tb.Root + "/deploy/examples/getstartedlab/docker-compose.yml"
	out := c.mustSkiff("stack", "deploy", "-c", file, "getstartedlab")
	if !strings.Contains(out, "converged") {
		t.Errorf("deploy did not report convergence:\n%s", out)
	}
	c.waitReplicas("getstartedlab_web", "5/5", time.Minute)
	c.waitReplicas("getstartedlab_redis", "1/1", time.Minute)

	t.Run("EveryHostAnswersAndTheCounterIncreases", func(t *testing.T) {
		c.eventually(30*time.Second, func() error { return counterWorks("h1", "h2", "h3") })
		seen := map[string]bool{}
		last := 0
		for i := 0; i < 30; i++ {
			v, err := get(testbed.Host(i%3 + 1))
			if err != nil {
				t.Fatal(err)
			}
			if v.visits <= last {
				t.Fatalf("visit count went from %d to %d", last, v.visits)
			}
			last = v.visits
			seen[v.hostname] = true
		}
		if len(seen) < 2 {
			t.Errorf("30 visits were answered by %d container(s), want several: %v", len(seen), seen)
		}
	})

	t.Run("ScaleUpAndDown", func(t *testing.T) {
		c.mustSkiff("service", "scale", "getstartedlab_web=10")
		c.waitReplicas("getstartedlab_web", "10/10", time.Minute)
		c.mustSkiff("service", "scale", "getstartedlab_web=2")
		c.waitReplicas("getstartedlab_web", "2/2", time.Minute)
		c.eventually(30*time.Second, func() error { return counterWorks("h1", "h2", "h3") })
	})

	t.Run("DrainMovesTasks", func(t *testing.T) {
		c.mustSkiff("node", "update", "--availability", "drain", "h2")
		c.eventually(time.Minute, func() error {
			cs, err := c.docker("h2", "ps", "--filter", "label=skiff.stack=getstartedlab", "-q")
			if err != nil {
				return err
			}
			if len(lines(cs)) != 0 {
				return fmt.Errorf("h2 still runs %d containers of the stack", len(lines(cs)))
			}
			return c.checkReplicas("getstartedlab_web", "2/2")
		})
		c.mustSkiff("node", "update", "--availability", "active", "h2")
	})

	t.Run("KilledHostIsReplaced", func(t *testing.T) {
		if err := c.tb.Kill(t.Context(), "h3"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		c.eventually(time.Minute, func() error {
			if err := c.checkReplicas("getstartedlab_web", "2/2"); err != nil {
				return err
			}
			if err := c.checkReplicas("getstartedlab_redis", "1/1"); err != nil {
				return err
			}
			return counterWorks("h1", "h2")
		})
		t.Logf("replicas back and serving %s after h3 was killed", time.Since(start).Round(100*time.Millisecond))
		if err := c.tb.Restart(t.Context(), "h3"); err != nil {
			t.Fatal(err)
		}
		c.waitNodeReady("h3")
	})

	t.Run("LeaderLossThenScale", func(t *testing.T) {
		leader := c.leader()
		if err := c.tb.Kill(t.Context(), leader); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		c.eventually(30*time.Second, func() error {
			_, err := c.skiff("service", "scale", "--detach", "getstartedlab_web=3")
			return err
		})
		t.Logf("scale accepted %s after the leader %s was killed", time.Since(start).Round(100*time.Millisecond), leader)
		if err := c.tb.Restart(t.Context(), leader); err != nil {
			t.Fatal(err)
		}
		c.waitNodeReady(leader)
	})

	t.Run("StackRmLeavesNothing", func(t *testing.T) {
		c.mustSkiff("stack", "rm", "getstartedlab")
		c.eventually(time.Minute, func() error {
			for i := 1; i <= 3; i++ {
				h := testbed.Host(i)
				cs, err := c.docker(h, "ps", "-a", "--filter", "label=skiff.node", "-q")
				if err != nil {
					return err
				}
				if n := len(lines(cs)); n != 0 {
					return fmt.Errorf("%s still has %d skiff containers", h, n)
				}
				links, err := c.tb.Exec(t.Context(), h, "ip", "-o", "link", "show")
				if err != nil {
					return err
				}
				for _, l := range lines(links) {
					if strings.Contains(l, "sk-") {
						return fmt.Errorf("%s still has overlay device: %s", h, l)
					}
				}
			}
			return nil
		})
	})
}

// leader returns the name of the leading manager.
func (c *cluster) leader() string {
	c.t.Helper()
	out := c.mustSkiff("node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}")
	for _, l := range lines(out) {
		if name, status, ok := strings.Cut(l, " "); ok && status == "Leader" {
			return name
		}
	}
	c.t.Fatalf("no leader in node ls:\n%s", out)
	return ""
}
