package cli

import (
	"testing"
	"time"

	skiffpb "github.com/skiffhq/skiff/proto"
)

func TestAgo(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "less than a second ago"},
		{-time.Second, "less than a second ago"}, // a manager's clock ahead of ours
		{time.Second, "1 second ago"},
		{3 * time.Second, "3 seconds ago"},
		{65 * time.Second, "about a minute ago"},
		{2*time.Minute + 30*time.Second, "2 minutes ago"},
		{50 * time.Minute, "50 minutes ago"},
		{3 * time.Hour, "3 hours ago"},
	} {
		if got := ago(now, now.Add(-tc.d).UnixNano()); got != tc.want {
			t.Errorf("ago(%s) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestCurrentState(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	for _, tc := range []struct {
		st   *skiffpb.TaskStatus
		want string
	}{
		{&skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_RUNNING, Timestamp: now.Add(-3 * time.Second).UnixNano()}, "Running 3 seconds ago"},
		{&skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_PENDING, Timestamp: now.Add(-2 * time.Minute).UnixNano()}, "Pending 2 minutes ago"},
		{&skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_FAILED, Timestamp: now.Add(-5 * time.Second).UnixNano()}, "Failed 5 seconds ago"},
		{&skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_PREPARING, Timestamp: now.UnixNano()}, "Preparing less than a second ago"},
		{&skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_ASSIGNED}, "Assigned"},
	} {
		if got := currentState(now, tc.st); got != tc.want {
			t.Errorf("currentState(%v) = %q, want %q", tc.st, got, tc.want)
		}
	}
}

func TestTaskError(t *testing.T) {
	long := "no suitable node (insufficient memory on 2 nodes)"
	for _, tc := range []struct {
		err     string
		noTrunc bool
		want    string
	}{
		{"", false, ""},
		{"task: non-zero exit (1)", false, `"task: non-zero exit (1)"`},
		{long, false, `"no suitable node (insufficien…"`},
		{long, true, `"` + long + `"`},
	} {
		if got := taskError(tc.err, tc.noTrunc); got != tc.want {
			t.Errorf("taskError(%q, %v) = %q, want %q", tc.err, tc.noTrunc, got, tc.want)
		}
	}
}

func TestWords(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{capitalize(enumWord(skiffpb.TaskState_TASK_STATE_SHUTDOWN)), "Shutdown"},
		{capitalize(enumWord(skiffpb.TaskState_TASK_STATE_RUNNING)), "Running"},
		{enumWord(skiffpb.TaskState_TASK_STATE_PREPARING), "preparing"},
		{capitalize(enumWord(skiffpb.NodeState_NODE_STATE_DOWN)), "Down"},
		{capitalize(enumWord(skiffpb.NodeAvailability_NODE_AVAILABILITY_PAUSE)), "Pause"},
		{enumWord(skiffpb.ServiceMode_SERVICE_MODE_GLOBAL), "global"},
		{enumWord(skiffpb.Protocol_PROTOCOL_UDP), "udp"},
		{shortID("abcdefghijklmnopqrstuvwxyz", false), "abcdefghijkl"},
		{shortID("abcdefghijklmnopqrstuvwxyz", true), "abcdefghijklmnopqrstuvwxyz"},
		{shortID("abc", false), "abc"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestManagerStatusWord(t *testing.T) {
	manager := func(ms *skiffpb.ManagerStatus) *skiffpb.Node {
		return &skiffpb.Node{Role: skiffpb.NodeRole_NODE_ROLE_MANAGER, ManagerStatus: ms}
	}
	for _, tc := range []struct {
		n    *skiffpb.Node
		want string
	}{
		{&skiffpb.Node{}, ""},
		{manager(&skiffpb.ManagerStatus{Leader: true, Reachability: skiffpb.Reachability_REACHABILITY_REACHABLE}), "Leader"},
		{manager(&skiffpb.ManagerStatus{Reachability: skiffpb.Reachability_REACHABILITY_REACHABLE}), "Reachable"},
		{manager(&skiffpb.ManagerStatus{Reachability: skiffpb.Reachability_REACHABILITY_UNREACHABLE}), "Unreachable"},
		{manager(&skiffpb.ManagerStatus{}), "Unknown"},
		{manager(&skiffpb.ManagerStatus{Reachability: 9}), "Unknown"},
	} {
		if got := managerStatusWord(tc.n); got != tc.want {
			t.Errorf("managerStatusWord(%v) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

// TestNodeRowWords checks the words `node ls` prints, through the rows
// it prints them from.
func TestNodeRowWords(t *testing.T) {
	nodes := []*skiffpb.Node{
		{Id: "b", Name: "h2", Role: skiffpb.NodeRole_NODE_ROLE_MANAGER,
			Spec:          &skiffpb.NodeSpec{Availability: skiffpb.NodeAvailability_NODE_AVAILABILITY_DRAIN},
			Status:        &skiffpb.NodeStatus{State: skiffpb.NodeState_NODE_STATE_DOWN},
			ManagerStatus: &skiffpb.ManagerStatus{Reachability: skiffpb.Reachability_REACHABILITY_UNREACHABLE}},
		{Id: "a", Name: "h1", Status: &skiffpb.NodeStatus{State: skiffpb.NodeState_NODE_STATE_READY}},
	}
	want := []nodeRow{
		{ID: "a", Hostname: "h1", Status: "Ready", Availability: "Active"},
		{ID: "b", Hostname: "h2", Status: "Down", Availability: "Drain", ManagerStatus: "Unreachable"},
	}
	rows := nodeRows(nodes, "", false)
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d: %+v", len(rows), len(want), rows)
	}
	for i := range want {
		if rows[i] != want[i] {
			t.Errorf("row %d = %+v, want %+v", i, rows[i], want[i])
		}
	}
}
