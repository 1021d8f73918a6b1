//go:build e2e

// Package testbed drives deploy/testbed from end-to-end tests: it brings the
// testbed's hosts up and down, runs commands inside them and against their
// Docker engines, injects failures, and polls for conditions with deadlines.
//
// The testbed needs root; see docs/testbed.md for its layout.
package testbed

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	// StateDir is where the testbed keeps each host's data, sockets, pid
	// files and logs (StateDir/hN/logs).
	StateDir = "/run/skiff-testbed"
	// AdminDir is the admin credential h1's manager wrote when it created
	// the cluster: the CLI's SKIFF_TLS_DIR.
	AdminDir = StateDir + "/h1/manager/admin"
	// RootAddr is the root namespace's address on the underlay segment.
	RootAddr = "198.18.0.254"

	module = "github.com/skiffhq/skiff"
	script = "deploy/testbed"
	// waitDelay bounds how long a verb's output pipes may stay open after
	// it exits: the daemons it starts must not inherit them.
	waitDelay = 10 * time.Second
	// outputTail is how much of a failed verb's output an error quotes.
	outputTail = 4000
)

// Host names the testbed's i-th host, counting from 1: "h1", "h2", ….
func Host(i int) string { return "h" + strconv.Itoa(i) }

// Addr is host's address on the underlay: 198.18.0.N for hN.
func Addr(host string) string { return "198.18.0." + strings.TrimPrefix(host, "h") }

// Testbed runs deploy/testbed verbs for one repository checkout.
type Testbed struct {
	// Root is the repository root; the script is Root/deploy/testbed.
	Root string
	// Environ is added to the script's environment, for example
	// SKIFF_TESTBED_NO_BUILD=1.
	Environ []string
	// Logf, when set, receives what each verb prints on stderr: its
	// progress and timings.
	Logf func(format string, args ...any)
}

// New returns a Testbed for the repository around the working directory
// that logs through t. It fails t when there is no such repository.
func New(t testing.TB) *Testbed {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return &Testbed{Root: root, Logf: t.Logf}
}

// RequireRoot fails t unless the test runs as root, which the testbed needs
// for namespaces, cgroups and dockerd.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("end-to-end tests drive deploy/testbed and need root: run them as root, e.g. sudo -E make test-e2e")
	}
}

// RepoRoot finds the skiff repository root: the nearest directory at or
// above the working directory whose go.mod declares the skiff module.
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if declaresModule(filepath.Join(dir, "go.mod")) {
			return dir, nil
		}
		if dir == filepath.Dir(dir) {
			return "", fmt.Errorf("no go.mod of module %s at or above %s: run the tests inside the skiff repository", module, wd)
		}
	}
}

func declaresModule(gomod string) bool {
	f, err := os.Open(gomod)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) == 2 && fields[0] == "module" {
			return fields[1] == module
		}
	}
	return false
}

// Error is a failed verb: its arguments, how it ended and what it printed.
type Error struct {
	Args   []string
	Err    error
	Stdout string
	Stderr string
}

// Error says which verb failed and how, quoting the end of its output.
func (e *Error) Error() string {
	return fmt.Sprintf("%s %s: %v\nstdout:\n%s\nstderr:\n%s",
		script, strings.Join(e.Args, " "), e.Err, tail(e.Stdout), tail(e.Stderr))
}

// Unwrap returns how the verb ended, such as an *exec.ExitError.
func (e *Error) Unwrap() error { return e.Err }

func tail(s string) string {
	if len(s) <= outputTail {
		return s
	}
	return "…" + s[len(s)-outputTail:]
}

// Run runs deploy/testbed with args and returns its stdout. Its stderr goes
// to Logf; on failure the *Error carries both.
func (tb *Testbed) Run(ctx context.Context, args ...string) (string, error) {
	return tb.run(ctx, true, args...)
}

func (tb *Testbed) run(ctx context.Context, logStderr bool, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(tb.Root, script), args...)
	cmd.Dir = tb.Root
	cmd.Env = append(os.Environ(), tb.Environ...)
	cmd.WaitDelay = waitDelay
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if logStderr && tb.Logf != nil && stderr.Len() > 0 {
		tb.Logf("%s %s:\n%s", script, strings.Join(args, " "), strings.TrimRight(stderr.String(), "\n"))
	}
	if err != nil {
		return stdout.String(), &Error{Args: args, Err: err, Stdout: stdout.String(), Stderr: stderr.String()}
	}
	return stdout.String(), nil
}

func (tb *Testbed) do(ctx context.Context, args ...string) error {
	_, err := tb.Run(ctx, args...)
	return err
}

// Up creates hosts h1..hHosts with managers on the first managers of them,
// and returns the manager addresses for the CLI (SKIFF_MANAGER's value).
func (tb *Testbed) Up(ctx context.Context, hosts, managers int) (string, error) {
	out, err := tb.Run(ctx, "up", "--hosts", strconv.Itoa(hosts), "--managers", strconv.Itoa(managers))
	if err != nil {
		return "", err
	}
	return managerAddrs(out)
}

// Env returns the manager addresses of the running testbed (SKIFF_MANAGER's
// value).
func (tb *Testbed) Env(ctx context.Context) (string, error) {
	out, err := tb.Run(ctx, "env")
	if err != nil {
		return "", err
	}
	return managerAddrs(out)
}

func managerAddrs(out string) (string, error) {
	const prefix = "export SKIFF_MANAGER="
	for line := range strings.Lines(out) {
		if addrs, ok := strings.CutPrefix(strings.TrimSpace(line), prefix); ok {
			return addrs, nil
		}
	}
	return "", fmt.Errorf("%s printed no %q line:\n%s", script, prefix, out)
}

// Down removes the testbed; it succeeds when nothing is up.
func (tb *Testbed) Down(ctx context.Context) error { return tb.do(ctx, "down") }

// Status returns the status table.
func (tb *Testbed) Status(ctx context.Context) (string, error) { return tb.Run(ctx, "status") }

// Exec runs args inside host's namespaces and returns its stdout.
func (tb *Testbed) Exec(ctx context.Context, host string, args ...string) (string, error) {
	return tb.Run(ctx, append([]string{"exec", host}, args...)...)
}

// Docker runs the docker CLI against host's own engine and returns its
// stdout.
func (tb *Testbed) Docker(ctx context.Context, host string, args ...string) (string, error) {
	return tb.Run(ctx, append([]string{"docker", host}, args...)...)
}

// Load loads an image tarball into every running host's engine.
func (tb *Testbed) Load(ctx context.Context, tar string) error { return tb.do(ctx, "load", tar) }

// Kill fails host abruptly: all its processes die at once, its link goes down.
func (tb *Testbed) Kill(ctx context.Context, host string) error { return tb.do(ctx, "kill", host) }

// Restart boots a killed host again with its old data dirs.
func (tb *Testbed) Restart(ctx context.Context, host string) error {
	return tb.do(ctx, "restart", host)
}

// Partition cuts host's link; its processes keep running.
func (tb *Testbed) Partition(ctx context.Context, host string) error {
	return tb.do(ctx, "partition", host)
}

// Heal restores a partitioned host's link.
func (tb *Testbed) Heal(ctx context.Context, host string) error { return tb.do(ctx, "heal", host) }

// Stop stops host's daemon, "manager" or "agent".
func (tb *Testbed) Stop(ctx context.Context, host, daemon string) error {
	return tb.do(ctx, "stop", host, daemon)
}

// Start starts host's daemon, "manager" or "agent", again.
func (tb *Testbed) Start(ctx context.Context, host, daemon string) error {
	return tb.do(ctx, "start", host, daemon)
}

// Pids returns the pids the testbed recorded for its daemons, keyed by
// "hN/NAME" (NAME is containerd, dockerd, manager or agent), whether or not
// they still run.
func Pids() (map[string]int, error) {
	files, err := filepath.Glob(filepath.Join(StateDir, "h*", "pids", "*"))
	if err != nil {
		return nil, err
	}
	pids := make(map[string]int, len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("pid file %s: %w", f, err)
		}
		host := filepath.Base(filepath.Dir(filepath.Dir(f)))
		pids[host+"/"+filepath.Base(f)] = pid
	}
	return pids, nil
}

// Alive reports whether process pid runs. A zombie counts as dead: where
// pid 1 does not reap orphans, killed daemons stay zombies for good.
func Alive(pid int) bool {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(status)) {
		if state, ok := strings.CutPrefix(line, "State:"); ok {
			return !strings.HasPrefix(strings.TrimSpace(state), "Z")
		}
	}
	return false
}

// reachProbe opens a TCP connection to port 9 of $1 from a shell inside a
// host: bash's /dev/tcp needs nothing the machine may lack (such as ping).
const reachProbe = `exec 3<>/dev/tcp/$1/9`

// reachWait is how long Reach waits for an answer. The underlay is one
// bridge on one machine: an answer takes well under a millisecond.
const reachWait = time.Second

// Reach checks that addr answers from host, or from the root namespace when
// host is "". It opens a TCP connection to port 9: whether that connects or
// is refused, a reply came back. A timeout or "no route" means addr is
// unreachable.
func (tb *Testbed) Reach(ctx context.Context, host, addr string) error {
	if host == "" {
		return reachFromRoot(addr)
	}
	wait := strconv.Itoa(int(reachWait.Seconds()))
	out, err := tb.run(ctx, false, "exec", host, "timeout", wait, "bash", "-c", reachProbe, "reach", addr)
	var e *Error
	if err == nil || errors.As(err, &e) && strings.Contains(e.Stderr, "Connection refused") {
		return nil
	}
	return fmt.Errorf("%s does not reach %s: %v %s", host, addr, err, out)
}

func reachFromRoot(addr string) error {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, "9"), reachWait)
	if err == nil {
		return c.Close()
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil
	}
	return fmt.Errorf("the root namespace does not reach %s: %w", addr, err)
}

// pollInterval is how often Poll and Eventually try again.
const pollInterval = 100 * time.Millisecond

// Poll calls f until it returns nil, and fails with f's last error once
// timeout has passed or ctx is done. f should return promptly.
func Poll(ctx context.Context, timeout time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("still failing after %v: %w", timeout, err)
		case <-tick.C:
		}
	}
}

// Eventually fails t unless f returns nil within timeout.
func Eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	if err := Poll(t.Context(), timeout, f); err != nil {
		t.Fatal(err)
	}
}
