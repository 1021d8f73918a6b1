package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skiffhq/skiff/internal/testcluster"
)

// These tests run whole commands, as a user types them, against a real
// in-process cluster: managers with Raft on disk and simulated agents.

// result is what one run of the CLI gave.
type result struct {
	stdout, stderr string
	err            error
}

// harness runs the CLI against one cluster.
type harness struct {
	t        *testing.T
	c        *testcluster.Cluster
	managers string
	terminal bool
}

func newHarness(t *testing.T, managers int, agents ...string) *harness {
	c := testcluster.New(t, managers)
	for _, a := range agents {
		c.AddAgent(a)
	}
	addrs := make([]string, len(c.Managers))
	for i, m := range c.Managers {
		addrs[i] = m.APIAddr()
	}
	h := &harness{t: t, c: c, managers: strings.Join(addrs, ",")}
	h.waitReady(agents...)
	return h
}

// run runs `skiff --manager ... args...`.
func (h *harness) run(args ...string) result {
	return h.runCtx(context.Background(), args...)
}

func (h *harness) runCtx(ctx context.Context, args ...string) result {
	h.t.Helper()
	return runCLI(ctx, Env{Terminal: h.terminal, Environ: []string{"SKIFF_TLS_DIR=" + h.c.AdminDir()}}, append([]string{"--manager", h.managers}, args...)...)
}

// mustRun runs the CLI and fails the test if the command fails.
func (h *harness) mustRun(args ...string) string {
	h.t.Helper()
	r := h.run(args...)
	if r.err != nil {
		h.t.Fatalf("skiff %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.err, r.stdout, r.stderr)
	}
	return r.stdout
}

// waitReady polls `node ls` until the agents' nodes are Ready.
func (h *harness) waitReady(names ...string) {
	h.t.Helper()
	want := map[string]bool{}
	for _, n := range names {
		want[n+" Ready"] = true
	}
	h.c.Eventually(20*time.Second, func() error {
		r := h.run("node", "ls", "--format", "{{.Hostname}} {{.Status}}")
		if r.err != nil {
			return r.err
		}
		got := 0
		for _, line := range strings.Split(r.stdout, "\n") {
			if want[line] {
				got++
			}
		}
		if got != len(want) {
			return fmt.Errorf("%d of %d nodes ready:\n%s", got, len(want), r.stdout)
		}
		return nil
	})
}

// runCLI runs the CLI in-process with env's writers replaced by buffers.
func runCLI(ctx context.Context, env Env, args ...string) result {
	if !slices.ContainsFunc(env.Environ, func(kv string) bool { return strings.HasPrefix(kv, "SKIFF_TLS_DIR=") }) {
		// Credentials of a CA no manager in the test trusts: enough for a
		// command that fails before it reaches one.
		env.Environ = append(env.Environ, "SKIFF_TLS_DIR="+strangerTLSDir())
	}
	var stdout, stderr syncBuffer
	env.Stdout, env.Stderr = &stdout, &stderr
	err := Execute(ctx, env, args)
	return result{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// syncBuffer is a bytes.Buffer that a test may read while a command still
// writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// writeCompose writes a compose file into a new temp dir and returns its
// path.
func writeCompose(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "docker-compose.yml")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// fields splits a table's lines into their whitespace-separated fields.
func fields(out string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		rows = append(rows, strings.Fields(line))
	}
	return rows
}

// rowOf finds the table row whose field i is want.
func rowOf(t *testing.T, out string, i int, want string) []string {
	t.Helper()
	for _, f := range fields(out) {
		if len(f) > i && f[i] == want {
			return f
		}
	}
	t.Fatalf("no row with %q in column %d:\n%s", want, i, out)
	return nil
}

func mustContain(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Fatalf("output lacks %q:\n%s", w, out)
		}
	}
}

const demoCompose = `services:
  web:
    image: skiff-test/web:latest
    deploy:
      replicas: 3
    ports:
      - "4000:80"
  agent:
    image: skiff-test/web:latest
    privileged: true
    deploy:
      mode: global
`

// TestCLI walks through a cluster's life: nodes, a deploy, scaling, an
// update, a drain, logs, removal, and finally the loss of quorum. The
// steps share one cluster, so they run in order.
func TestCLI(t *testing.T) {
	h := newHarness(t, 3, "h1", "h2", "h3")
	compose := writeCompose(t, demoCompose)

	t.Run("node ls", func(t *testing.T) {
		out := h.mustRun("node", "ls")
		if got := fields(out)[0]; strings.Join(got, " ") != "ID HOSTNAME STATUS AVAILABILITY MANAGER STATUS" {
			t.Fatalf("header = %q", got)
		}
		row := rowOf(t, out, 1, "h1")
		if row[2] != "Ready" || row[3] != "Active" || len(row) != 4 {
			t.Fatalf("h1 row = %q, want Ready Active and no manager status", row)
		}
		// The CLI talks to m1, the first address, which bootstrapped
		// the cluster and leads it.
		if row := rowOf(t, out, 2, "m1"); row[1] != "*" || row[5] != "Leader" {
			t.Fatalf("m1 row = %q, want it marked * and Leader", row)
		}
		for _, m := range []string{"m2", "m3"} {
			if row := rowOf(t, out, 1, m); row[len(row)-1] != "Reachable" {
				t.Fatalf("%s row = %q, want Reachable", m, row)
			}
		}
	})

	t.Run("node ls -q and --format json", func(t *testing.T) {
		ids := strings.Fields(h.mustRun("node", "ls", "-q"))
		if len(ids) != 6 || len(ids[0]) != shortIDLen {
			t.Fatalf("node ls -q = %q, want 6 IDs of %d characters", ids, shortIDLen)
		}
		full := strings.Fields(h.mustRun("node", "ls", "-q", "--no-trunc"))
		if len(full[0]) <= shortIDLen || !strings.HasPrefix(full[0], ids[0]) {
			t.Fatalf("node ls -q --no-trunc = %q, want whole IDs", full)
		}
		lines := strings.Split(strings.TrimSpace(h.mustRun("node", "ls", "--format", "json")), "\n")
		if len(lines) != 6 {
			t.Fatalf("--format json gave %d lines, want 6", len(lines))
		}
		var n nodeRow
		if err := json.Unmarshal([]byte(lines[0]), &n); err != nil || n.Hostname != "h1" || n.Status != "Ready" {
			t.Fatalf("first line %s: %+v, %v", lines[0], n, err)
		}
	})

	t.Run("stack deploy", func(t *testing.T) {
		r := h.run("stack", "deploy", "-c", compose, "demo")
		if r.err != nil {
			t.Fatalf("deploy: %v\n%s", r.err, r.stdout)
		}
		mustContain(t, r.stdout,
			"Creating service demo_agent\n", "Creating service demo_web\n",
			"overall progress: 6 out of 6 tasks\n", "verify: Service converged\n")
		mustContain(t, r.stderr, "WARNING: "+compose+`:10: service agent: ignoring unsupported key "privileged"`)
	})

	t.Run("service ls", func(t *testing.T) {
		out := h.mustRun("service", "ls")
		if got := strings.Join(fields(out)[0], " "); got != "ID NAME MODE REPLICAS IMAGE PORTS" {
			t.Fatalf("header = %q", got)
		}
		if row := rowOf(t, out, 1, "demo_web"); strings.Join(row[2:], " ") != "replicated 3/3 skiff-test/web:latest *:4000->80/tcp" {
			t.Fatalf("demo_web row = %q", row)
		}
		if row := rowOf(t, out, 1, "demo_agent"); strings.Join(row[2:], " ") != "global 3/3 skiff-test/web:latest" {
			t.Fatalf("demo_agent row = %q", row)
		}
		got := h.mustRun("service", "ls", "--format", "{{.Name}} {{.Replicas}}")
		if got != "demo_agent 3/3\ndemo_web 3/3\n" {
			t.Fatalf("--format = %q", got)
		}
		table := h.mustRun("service", "ls", "--format", `table {{.Name}}\t{{.Mode}}`)
		if got := fields(table); strings.Join(got[0], " ") != "NAME MODE" || strings.Join(got[2], " ") != "demo_web replicated" {
			t.Fatalf("table format = %q", table)
		}
	})

	t.Run("stack redeploy changes nothing", func(t *testing.T) {
		out := h.mustRun("stack", "deploy", "-c", compose, "demo")
		if strings.Contains(out, "Creating") || strings.Contains(out, "Updating") {
			t.Fatalf("redeploy of the same file reported changes:\n%s", out)
		}
		mustContain(t, out, "verify: Service converged")
	})

	t.Run("service logs", func(t *testing.T) {
		out := h.mustRun("service", "logs", "demo_web")
		line := regexp.MustCompile(`^demo_web\.([1-3])\.[a-z0-9]{12}@h[1-3] +\| simulated task [a-z0-9]+$`)
		slots := map[string]bool{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			m := line.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("log line %q does not look like docker's", l)
			}
			slots[m[1]] = true
		}
		if len(slots) != 3 {
			t.Fatalf("logs of %d slots, want 3:\n%s", len(slots), out)
		}
	})

	t.Run("service logs -f ends on interrupt", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var stdout syncBuffer
		done := make(chan error, 1)
		go func() {
			done <- Execute(ctx, Env{Stdout: &stdout, Stderr: &stdout, Environ: []string{"SKIFF_TLS_DIR=" + h.c.AdminDir()}}, []string{"--manager", h.managers, "service", "logs", "-f", "demo_web"})
		}()
		h.c.Eventually(10*time.Second, func() error {
			if n := strings.Count(stdout.String(), "\n"); n < 3 {
				return fmt.Errorf("%d lines so far", n)
			}
			return nil
		})
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("logs -f after interrupt: %v", err)
		}
	})

	t.Run("service scale", func(t *testing.T) {
		out := h.mustRun("service", "scale", "demo_web=5")
		mustContain(t, out, "demo_web scaled to 5\n", "overall progress: 5 out of 5 tasks\n", "5/5: running\n", "verify: Service converged\n")
		ps := h.mustRun("service", "ps", "demo_web")
		if got := strings.Join(fields(ps)[0], " "); got != "ID NAME IMAGE NODE DESIRED STATE CURRENT STATE ERROR PORTS" {
			t.Fatalf("service ps header = %q", got)
		}
		for i := 1; i <= 5; i++ {
			row := rowOf(t, ps, 1, fmt.Sprintf("demo_web.%d", i))
			if strings.Join(row[2:6], " ") != "skiff-test/web:latest "+row[3]+" Running Running" || !strings.HasPrefix(row[3], "h") {
				t.Fatalf("slot %d row = %q", i, row)
			}
			if !strings.Contains(strings.Join(row, " "), " ago") {
				t.Fatalf("slot %d row = %q: no relative time", i, row)
			}
		}
	})

	t.Run("service update --force keeps history", func(t *testing.T) {
		out := h.mustRun("service", "update", "--force", "demo_web")
		mustContain(t, out, "demo_web\n", "verify: Service converged\n")
		ps := h.mustRun("service", "ps", "demo_web")
		if n := strings.Count(ps, `\_ demo_web.`); n != 5 {
			t.Fatalf("%d history rows, want one per slot:\n%s", n, ps)
		}
		for _, line := range strings.Split(ps, "\n") {
			if strings.Contains(line, `\_ demo_web.1 `) && !strings.Contains(line, " Shutdown ") {
				t.Fatalf("history row %q, want desired Shutdown", line)
			}
		}
		running := h.mustRun("service", "ps", "-q", "-f", "desired-state=running", "demo_web")
		if n := len(strings.Fields(running)); n != 5 {
			t.Fatalf("-f desired-state=running gave %d tasks, want 5", n)
		}
		// Templates see names without the table's indentation.
		names := h.mustRun("service", "ps", "--format", "{{.Name}}", "demo_web")
		if strings.Contains(names, `\_`) {
			t.Fatalf("--format names are indented:\n%s", names)
		}
	})

	t.Run("inspect", func(t *testing.T) {
		if got := h.mustRun("service", "inspect", "--format", "{{.Spec.Replicas}} {{.Spec.Mode}}", "demo_web"); got != "5 replicated\n" {
			t.Fatalf("service inspect --format = %q", got)
		}
		var docs []map[string]any
		if err := json.Unmarshal([]byte(h.mustRun("node", "inspect", "h1")), &docs); err != nil {
			t.Fatal(err)
		}
		if len(docs) != 1 || docs[0]["Name"] != "h1" || docs[0]["Status"].(map[string]any)["State"] != "ready" {
			t.Fatalf("node inspect = %v", docs)
		}
		if got := h.mustRun("node", "inspect", "--format", "{{.Name}}", "self"); got != "m1\n" {
			t.Fatalf("node inspect self = %q", got)
		}
	})

	t.Run("cluster info", func(t *testing.T) {
		out := h.mustRun("cluster", "info")
		mustContain(t, out, "Leader:      m1\n", "Managers:    3 (3 reachable, 2 needed for quorum)\n", "Nodes:       3 ready / 6 total\n", "Services:    2\n")
		if row := rowOf(t, out, 0, "m1"); strings.Join(row[2:], " ") != "voter Leader" || row[1] != h.c.Managers[0].APIAddr() {
			t.Fatalf("m1 row = %q", row)
		}
		if got := h.mustRun("cluster", "info", "--format", "{{.Leader}} {{len .Managers}}"); got != "m1 3\n" {
			t.Fatalf("cluster info --format = %q", got)
		}
	})

	t.Run("cluster update --rotate-gossip-key", func(t *testing.T) {
		out := h.mustRun("cluster", "update", "--rotate-gossip-key")
		mustContain(t, out, "Gossip key rotation started")
		// The rotation goes on through the steps that follow, which must
		// not notice it.
		r := h.run("cluster", "update", "--rotate-gossip-key")
		if r.err == nil || !strings.Contains(r.err.Error(), "a rotation of the gossip key is under way") {
			t.Fatalf("a second rotation at once: err = %v, want it refused as under way", r.err)
		}
	})

	t.Run("node update --availability drain", func(t *testing.T) {
		out := h.mustRun("node", "update", "--availability", "drain", "h1")
		mustContain(t, out, "h1\n", "verify: Node drained\n")
		if left := h.mustRun("node", "ps", "-q", "-f", "desired-state=running", "h1"); left != "" {
			t.Fatalf("tasks still meant to run on drained h1: %q", left)
		}
		if row := rowOf(t, h.mustRun("node", "ls"), 1, "h1"); row[3] != "Drain" {
			t.Fatalf("h1 row = %q, want Drain", row)
		}
		// The global service has one node fewer; the replicated one
		// moved its tasks.
		out = h.mustRun("stack", "services", "demo")
		if row := rowOf(t, out, 1, "demo_agent"); row[3] != "2/2" {
			t.Fatalf("demo_agent after drain = %q, want 2/2", row)
		}
		h.c.Eventually(10*time.Second, func() error {
			if row := rowOf(t, h.mustRun("service", "ls"), 1, "demo_web"); row[3] != "5/5" {
				return fmt.Errorf("demo_web = %q", row)
			}
			return nil
		})
		h.mustRun("node", "update", "--availability", "active", "--label-add", "zone=a", "h1")
		if got := h.mustRun("node", "inspect", "-f", "{{.Spec.Availability}} {{.Spec.Labels.zone}}", "h1"); got != "active a\n" {
			t.Fatalf("after update: %q", got)
		}
	})

	t.Run("stack ls and ps", func(t *testing.T) {
		if got := h.mustRun("stack", "ls"); strings.Join(fields(got)[1], " ") != "demo 2" {
			t.Fatalf("stack ls = %q", got)
		}
		if got := h.mustRun("stack", "ls", "-q"); got != "demo\n" {
			t.Fatalf("stack ls -q = %q", got)
		}
		ps := h.mustRun("stack", "ps", "demo")
		mustContain(t, ps, "demo_web.1", `\_ demo_web.1`, "demo_agent.")
	})

	t.Run("unknown objects", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"service", "ps", "nosuch"}, `service "nosuch" not found`},
			{[]string{"service", "inspect", "nosuch"}, `service "nosuch" not found`},
			{[]string{"service", "scale", "nosuch=2"}, `service "nosuch" not found`},
			{[]string{"node", "inspect", "nosuch"}, `node "nosuch" not found`},
			{[]string{"stack", "ps", "nosuch"}, `stack "nosuch" not found`},
			{[]string{"stack", "services", "nosuch"}, `stack "nosuch" not found`},
			{[]string{"stack", "rm", "nosuch"}, `stack "nosuch" not found`},
		} {
			r := h.run(tc.args...)
			if r.err == nil || r.err.Error() != tc.want {
				t.Errorf("skiff %s: err = %v, want %q", strings.Join(tc.args, " "), r.err, tc.want)
			}
		}
	})

	t.Run("deploy that cannot be placed times out", func(t *testing.T) {
		stuck := writeCompose(t, `services:
  web:
    image: skiff-test/web:latest
    deploy:
      placement:
        constraints: ["node.labels.zone == nowhere"]
`)
		r := h.run("stack", "deploy", "-c", stuck, "--timeout", "2s", "stuck")
		want := "stack stuck did not converge within 2s: stuck_web: 0 of 1 tasks running (1 task: no suitable node ("
		if r.err == nil || !strings.HasPrefix(r.err.Error(), want) || !strings.Contains(r.err.Error(), "scheduling constraints not satisfied") {
			t.Fatalf("err = %v, want it to start %q and name the constraints\nstdout:\n%s", r.err, want, r.stdout)
		}
		mustContain(t, r.stdout, "1/1: pending   no suitable node")
		h.mustRun("stack", "rm", "stuck")
	})

	t.Run("stack rm", func(t *testing.T) {
		out := h.mustRun("stack", "rm", "demo")
		if out != "Removing service demo_agent\nRemoving service demo_web\n" {
			t.Fatalf("stack rm = %q", out)
		}
		if got := h.mustRun("stack", "ls", "-q"); got != "" {
			t.Fatalf("stack ls after rm = %q", got)
		}
	})

	t.Run("failover to the next manager", func(t *testing.T) {
		r := runCLI(context.Background(), Env{Environ: []string{"SKIFF_TLS_DIR=" + h.c.AdminDir()}}, "--manager", "127.0.0.1:1,"+h.c.Managers[1].APIAddr(), "node", "ls", "-q")
		if r.err != nil || len(strings.Fields(r.stdout)) != 6 {
			t.Fatalf("node ls past a dead address: %v\n%s", r.err, r.stdout)
		}
	})

	t.Run("a wait survives the loss of its manager", func(t *testing.T) {
		needsB := writeCompose(t, `services:
  web:
    image: skiff-test/web:latest
    deploy:
      placement:
        constraints: ["node.labels.zone == b"]
`)
		// The wait watches through m2, a follower, until m2 goes away.
		managers := h.c.Managers[1].APIAddr() + "," + h.c.Managers[0].APIAddr()
		var stdout syncBuffer
		done := make(chan error, 1)
		go func() {
			done <- Execute(context.Background(), Env{Stdout: &stdout, Stderr: &stdout, Environ: []string{"SKIFF_TLS_DIR=" + h.c.AdminDir()}},
				[]string{"--manager", managers, "stack", "deploy", "-c", needsB, "--timeout", "60s", "later"})
		}()
		h.c.Eventually(10*time.Second, func() error {
			if !strings.Contains(stdout.String(), "1/1: pending   no suitable node") {
				return fmt.Errorf("no pending task shown yet:\n%s", stdout.String())
			}
			return nil
		})
		h.c.Stop(h.c.Managers[1])
		h.mustRun("node", "update", "--label-add", "zone=b", "h2")
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("deploy: %v\n%s", err, stdout.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("the deploy did not finish:\n%s", stdout.String())
		}
		mustContain(t, stdout.String(), "1/1: running\n", "verify: Service converged\n")
		h.mustRun("stack", "rm", "later")
	})

	t.Run("lost quorum", func(t *testing.T) {
		h.c.Stop(h.c.Managers[2])
		// m2 is down, so the CLI goes on to m1, which answers that it has
		// no leader; that answer is the one to show.
		managers := h.c.Managers[1].APIAddr() + "," + h.c.Managers[0].APIAddr()
		var err error
		h.c.Eventually(30*time.Second, func() error {
			err = runCLI(context.Background(), Env{Environ: []string{"SKIFF_TLS_DIR=" + h.c.AdminDir()}}, "--manager", managers, "node", "ls").err
			if err == nil {
				return fmt.Errorf("node ls still works")
			}
			return nil
		})
		if msg := err.Error(); !strings.Contains(msg, "quorum") || strings.Contains(msg, "rpc error") {
			t.Fatalf("err = %q, want a plain message about quorum", msg)
		}
	})
}

func TestDeployProgressOnTerminal(t *testing.T) {
	h := newHarness(t, 1, "h1")
	h.terminal = true
	out := h.mustRun("stack", "deploy", "-c", writeCompose(t, "services:\n  web:\n    image: skiff-test/web:latest\n    deploy:\n      replicas: 2\n"), "tty")
	// The last drawing of the display stays on the screen.
	mustContain(t, out,
		"overall progress: 2 out of 2 tasks\n",
		"1/2: running   [==================================================>]\n",
		"2/2: running   [==================================================>]\n",
		"verify: Service converged\n")
}

func TestUnreachableManagers(t *testing.T) {
	r := runCLI(context.Background(), Env{}, "--manager", "127.0.0.1:1,127.0.0.1:2", "service", "ls")
	want := "cannot reach any manager (tried 127.0.0.1:1, 127.0.0.1:2): connection refused; check --manager or SKIFF_MANAGER"
	if r.err == nil || r.err.Error() != want {
		t.Fatalf("err = %v, want %q", r.err, want)
	}
	// SKIFF_MANAGER is read when --manager is not given.
	r = runCLI(context.Background(), Env{Environ: []string{"SKIFF_MANAGER=127.0.0.1:3"}}, "node", "ls")
	if r.err == nil || !strings.Contains(r.err.Error(), "(tried 127.0.0.1:3)") {
		t.Fatalf("with SKIFF_MANAGER: err = %v", r.err)
	}
	r = runCLI(context.Background(), Env{}, "--manager", "nonsense", "node", "ls")
	if r.err == nil || !strings.Contains(r.err.Error(), `invalid manager address "nonsense"`) {
		t.Fatalf("with a bad address: err = %v", r.err)
	}
}

func TestInvalidComposeFile(t *testing.T) {
	bad := writeCompose(t, "services:\n  web:\n    image: skiff-test/web:latest\n   ports:\n      - \"4000:80\"\n")
	// The file is loaded before any manager is asked, so none is needed.
	r := runCLI(context.Background(), Env{}, "--manager", "127.0.0.1:1", "stack", "deploy", "-c", bad, "bad")
	if r.err == nil {
		t.Fatal("a malformed compose file deployed")
	}
	msg := r.err.Error()
	if !strings.Contains(msg, bad+":4:") || strings.Contains(msg, "manager") {
		t.Fatalf("err = %q, want the compose package's error naming %s line 4", msg, bad)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"service", "scale", "web"}, `invalid scale specifier "web": expected format is SERVICE=REPLICAS`},
		{[]string{"service", "ps"}, `"skiff service ps" requires at least 1 argument.`},
		{[]string{"node", "lss"}, `skiff: unknown command: skiff node lss`},
		{[]string{"node", "ls", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"node", "update", "h1"}, "nothing to update"},
		{[]string{"cluster", "update"}, "nothing to update: give --cert-expiry, --max-replicas or --rotate-gossip-key"},
		{[]string{"node", "update", "--availability", "gone", "h1"}, `invalid availability "gone"`},
		{[]string{"stack", "deploy", "demo"}, "no compose file given"},
	} {
		r := runCLI(context.Background(), Env{}, tc.args...)
		if r.err == nil || !strings.Contains(r.err.Error(), tc.want) {
			t.Errorf("skiff %s: err = %v, want %q", strings.Join(tc.args, " "), r.err, tc.want)
		}
	}
	if r := runCLI(context.Background(), Env{}, "node", "ls", "--help"); r.err != nil || !strings.Contains(r.stdout, "skiff node ls") {
		t.Fatalf("node ls --help: %v\n%s", r.err, r.stdout)
	}
}
