//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skiffhq/skiff/e2e/testbed"
)

// failoverLoops is how many times each leader fault is repeated; the
// SKIFF_E2E_FAILOVER_LOOPS environment variable overrides it.
const failoverLoops = 10

// replacedWithin bounds how soon the tasks of a lost host run elsewhere, as
// this test sees it: through `service ps` over mutual TLS, polled, with
// calls that fail while the leader changes. The 3 s target is the
// benchmark's (bench/run's hostfail and leaderhost, docs/benchmarks.md),
// measured without that noise; here twice it catches a lost host's tasks
// waiting out a grace they should not, without failing CI on a slow poll
// (3.03 s and 3.14 s were seen beside a median of about 2 s).
const replacedWithin = 6 * time.Second

// settleWatch is how long a fault's survivors are watched for a late,
// wrong verdict: a grace (2 s) and the second opinion's extension (2 s)
// after the new leader's term, with room to spare.
const settleWatch = 6 * time.Second

// leaderFault is one way of losing the leader.
type leaderFault struct {
	name string
	// lose and back inflict the fault on a host and undo it.
	lose, back func(ctx context.Context, tb *testbed.Testbed, host string) error
	// hostLost says whether the host's agent is cut off too, so that its
	// tasks must move.
	hostLost bool
}

var leaderFaults = []leaderFault{
	{
		name:     "partition",
		lose:     func(ctx context.Context, tb *testbed.Testbed, h string) error { return tb.Partition(ctx, h) },
		back:     func(ctx context.Context, tb *testbed.Testbed, h string) error { return tb.Heal(ctx, h) },
		hostLost: true,
	},
	{
		name:     "kill",
		lose:     func(ctx context.Context, tb *testbed.Testbed, h string) error { return tb.Kill(ctx, h) },
		back:     func(ctx context.Context, tb *testbed.Testbed, h string) error { return tb.Restart(ctx, h) },
		hostLost: true,
	},
	{
		name: "stop-manager",
		lose: func(ctx context.Context, tb *testbed.Testbed, h string) error { return tb.Stop(ctx, h, "manager") },
		back: func(ctx context.Context, tb *testbed.Testbed, h string) error { return tb.Start(ctx, h, "manager") },
	},
}

// TestLeaderLossMovesOnlyTheLostHostsTasks loses the leader again and
// again, three ways: its host partitioned, its host killed, its manager
// process alone stopped. Each time, no task of a healthy host may stop,
// the lost host's tasks must run elsewhere within 3 s, and once the host
// is back the service must be spread evenly again.
func TestLeaderLossMovesOnlyTheLostHostsTasks(t *testing.T) {
	loops := failoverLoops
	if s := os.Getenv("SKIFF_E2E_FAILOVER_LOOPS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("SKIFF_E2E_FAILOVER_LOOPS=%q: want a positive number", s)
		}
		loops = n
	}
	c := newCluster(t, 3, 3)
	file := writeCompose(t, `services:
  web:
    image: skiff-test/web:latest
    deploy:
      replicas: 6
`)
	c.mustSkiff("stack", "deploy", "-c", file, "p")
	c.waitSpread("p_web", 6, time.Minute)

	for i := 1; i <= loops; i++ {
		for _, f := range leaderFaults {
			t.Run(fmt.Sprintf("%s-%d", f.name, i), func(t *testing.T) {
				c.loseLeader(t, f)
			})
			if t.Failed() {
				return
			}
		}
	}
}

// loseLeader inflicts one fault on the leader's host and checks what
// happened to the service's tasks.
func (c *cluster) loseLeader(t *testing.T, f leaderFault) {
	leader := c.leader()
	before, err := c.runningTasks("p_web", c.managers)
	if err != nil {
		t.Fatal(err)
	}
	var survivors []string
	for i := 1; i <= 3; i++ {
		if h := testbed.Host(i); h != leader {
			survivors = append(survivors, testbed.Addr(h)+":4242")
		}
	}
	via := strings.Join(survivors, ",")

	if err := f.lose(t.Context(), c.tb, leader); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if f.hostLost {
		c.eventually(30*time.Second, func() error {
			now, err := c.runningTasks("p_web", via)
			if err != nil {
				return err
			}
			if n := len(now[leader]); n > 0 {
				return fmt.Errorf("%d tasks still run on the lost host %s", n, leader)
			}
			if n := count(now); n != 6 {
				return fmt.Errorf("%d of 6 tasks running", n)
			}
			return nil
		})
		took := time.Since(start)
		t.Logf("%s of %s: its tasks ran elsewhere after %s", f.name, leader, took.Round(10*time.Millisecond))
		if took > replacedWithin {
			t.Errorf("the lost host's tasks ran elsewhere after %s, want within %s", took.Round(10*time.Millisecond), replacedWithin)
		}
	}
	// Watch the healthy hosts' tasks until any late verdict would have
	// come: every one of them must still be running, none replaced.
	deadline := start.Add(settleWatch)
	for time.Now().Before(deadline) {
		now, err := c.runningTasks("p_web", via)
		if err != nil {
			t.Logf("listing tasks: %v", err)
			continue
		}
		for host, ids := range before {
			if f.hostLost && host == leader {
				continue
			}
			for _, id := range ids {
				if !slices.Contains(now[host], id) {
					t.Fatalf("%s of %s: task %s on healthy host %s stopped running (now %v)", f.name, leader, id, host, now)
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}

	if err := f.back(t.Context(), c.tb, leader); err != nil {
		t.Fatal(err)
	}
	c.waitNodeReady(leader)
	c.waitSpread("p_web", 6, time.Minute)
}

// runningTasks maps each host to the IDs of the service's tasks that run
// there and should, asking the managers at via.
func (c *cluster) runningTasks(service, via string) (map[string][]string, error) {
	ctx, cancel := context.WithTimeout(c.t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.skiffBin, "service", "ps", service, "--no-trunc",
		"--filter", "desired-state=running", "--format", "{{.ID}} {{.Node}} {{.CurrentState}}")
	cmd.Env = append(os.Environ(), "SKIFF_MANAGER="+via, "SKIFF_TLS_DIR="+testbed.AdminDir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("service ps %s: %w\n%s", service, err, out)
	}
	m := map[string][]string{}
	for _, l := range lines(string(out)) {
		f := strings.Fields(l)
		if len(f) >= 3 && f[2] == "Running" {
			m[f[1]] = append(m[f[1]], f[0])
		}
	}
	return m, nil
}

func count(m map[string][]string) int {
	n := 0
	for _, ids := range m {
		n += len(ids)
	}
	return n
}

// waitSpread waits until want tasks of a service run, spread evenly over
// the three hosts (no host more than one task ahead of another).
func (c *cluster) waitSpread(service string, want int, timeout time.Duration) {
	c.t.Helper()
	c.eventually(timeout, func() error {
		m, err := c.runningTasks(service, c.managers)
		if err != nil {
			return err
		}
		if n := count(m); n != want {
			return fmt.Errorf("%d of %d tasks running: %v", n, want, m)
		}
		lo, hi := want, 0
		for i := 1; i <= 3; i++ {
			n := len(m[testbed.Host(i)])
			lo, hi = min(lo, n), max(hi, n)
		}
		if hi-lo > 1 {
			return fmt.Errorf("tasks are not spread: %v", m)
		}
		return nil
	})
}
