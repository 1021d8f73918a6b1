package cli

import (
	"context"
	"errors"
	"strings"
	"testing"

	skiffpb "github.com/skiffhq/skiff/proto"
	"github.com/skiffhq/skiff/version"
)

// TestUnknownCommand: a command skiff does not have fails, worded as
// docker's, and prints no help: a typo in a script must not pass.
func TestUnknownCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"nosuch"}, "skiff: 'nosuch' is not a skiff command.\nSee 'skiff --help'"},
		{[]string{"secret", "ls"}, "skiff: 'secret' is not a skiff command.\nSee 'skiff --help'"},
		{[]string{"--manager", "127.0.0.1:1", "nosuch", "x"}, "skiff: 'nosuch' is not a skiff command.\nSee 'skiff --help'"},
		{[]string{"service", "nosuch"}, "skiff: unknown command: skiff service nosuch\n\nUsage:  skiff service\n\nRun 'skiff service --help' for more information"},
		{[]string{"cluster", "nosuch", "x"}, "skiff: unknown command: skiff cluster nosuch\n\nUsage:  skiff cluster\n\nRun 'skiff cluster --help' for more information"},
	} {
		r := runCLI(context.Background(), Env{}, tc.args...)
		if r.err == nil {
			t.Errorf("skiff %s succeeded", strings.Join(tc.args, " "))
			continue
		}
		if got := ErrorText(r.err); got != tc.want {
			t.Errorf("skiff %s printed\n%s\nwant\n%s", strings.Join(tc.args, " "), got, tc.want)
		}
		if r.stdout != "" || r.stderr != "" {
			t.Errorf("skiff %s wrote output besides the error:\nstdout: %q\nstderr: %q", strings.Join(tc.args, " "), r.stdout, r.stderr)
		}
	}
}

// TestHelpWithoutCommand: the root and the groups alone still print their
// help, and succeed, as docker's do.
func TestHelpWithoutCommand(t *testing.T) {
	for _, args := range [][]string{nil, {"service"}, {"node"}} {
		r := runCLI(context.Background(), Env{}, args...)
		if r.err != nil || !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("skiff %s: %v\n%s", strings.Join(args, " "), r.err, r.stdout)
		}
	}
}

func TestErrorText(t *testing.T) {
	if got := ErrorText(errors.New(`service "x" not found`)); got != `Error: service "x" not found` {
		t.Errorf("an ordinary error: %q", got)
	}
	wrapped := errors.Join(&commandError{msg: "skiff: 'x' is not a skiff command.\nSee 'skiff --help'"})
	if got := ErrorText(wrapped); !strings.HasPrefix(got, "skiff: 'x'") {
		t.Errorf("a wrapped unknown command: %q", got)
	}
}

func TestVersionFlag(t *testing.T) {
	for _, flag := range []string{"--version", "-v"} {
		r := runCLI(context.Background(), Env{}, flag)
		if want := "skiff version " + version.Version + "\n"; r.err != nil || r.stdout != want {
			t.Errorf("skiff %s: %v, %q; want %q", flag, r.err, r.stdout, want)
		}
	}
}

func TestJoinHost(t *testing.T) {
	info := &skiffpb.ClusterInfoResponse{Managers: []*skiffpb.ManagerInfo{
		{Name: "h2", ApiAddr: "198.18.0.2:4242"},
		{Name: "h1", ApiAddr: "198.18.0.1:4242", Leader: true},
	}}
	for _, tc := range []struct {
		current string
		info    *skiffpb.ClusterInfoResponse
		want    string
	}{
		// The manager the user named is the one the command names.
		{"198.18.0.2:4242", info, "198.18.0.2"},
		{"[2001:db8::2]:4242", info, "2001:db8::2"},
		// Loopback is this host only: the leader's address instead.
		{"127.0.0.1:4242", info, "198.18.0.1"},
		{"localhost:4242", info, "198.18.0.1"},
		{"[::1]:4242", info, "198.18.0.1"},
		// Without a leader, any manager; without an API address yet, its
		// Raft address, on the same host.
		{"127.0.0.1:4242", &skiffpb.ClusterInfoResponse{Managers: []*skiffpb.ManagerInfo{{Name: "h3", RaftAddr: "198.18.0.3:4243"}}}, "198.18.0.3"},
		// Nothing better known: what was reached.
		{"127.0.0.1:4242", &skiffpb.ClusterInfoResponse{}, "127.0.0.1"},
	} {
		if got := joinHost(tc.current, tc.info); got != tc.want {
			t.Errorf("joinHost(%q) = %q, want %q", tc.current, got, tc.want)
		}
	}
}

// TestJoinTokenCommand: the printed join commands name a manager's gossip
// address and the token, and leave --advertise-addr to its default.
func TestJoinTokenCommand(t *testing.T) {
	h := newHarness(t, 1)
	for _, role := range []string{"worker", "manager"} {
		token := strings.TrimSpace(h.mustRun("cluster", "join-token", "-q", role))
		if !strings.HasPrefix(token, "SKFTKN-1-") {
			t.Fatalf("join-token -q %s: %q", role, token)
		}
		out := h.mustRun("cluster", "join-token", role)
		want := "skiff-agent --name NAME --data-dir DIR --join 127.0.0.1:7947 --token " + token + "\n"
		if role == "manager" {
			want = "skiff-manager --name NAME --data-dir DIR --join 127.0.0.1:7947 --token " + token + "\n"
		}
		if !strings.Contains(out, want) {
			t.Errorf("join-token %s:\n%s\nwant a line\n%s", role, out, want)
		}
	}
}
