package cli

import (
	"errors"
	"io"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	skiffpb "github.com/skiffhq/skiff/proto"
)

func TestFromRPC(t *testing.T) {
	for _, tc := range []struct {
		in   error
		want string
	}{
		{status.Error(codes.NotFound, `service "x" not found`), `service "x" not found`},
		{status.Error(codes.InvalidArgument, `service web: replicas cannot be set for a global service`), `service web: replicas cannot be set for a global service`},
		{skiffpb.QuorumLostError("no leader: the cluster may have lost quorum (1 of 3 managers reachable, 2 needed); bring managers back"),
			"no leader: the cluster may have lost quorum (1 of 3 managers reachable, 2 needed); bring managers back; `skiff cluster info` shows which managers are unreachable"},
		{skiffpb.NoLeaderError("no leader: an election is under way (2 of 3 managers reachable, 2 needed); retry in a moment"),
			"no leader: an election is under way (2 of 3 managers reachable, 2 needed); retry in a moment"},
		{skiffpb.LeaderLostError("the leader was lost while it handled this call, which may or may not have taken effect: check, and retry"),
			"the leader was lost while it handled this call, which may or may not have taken effect: check, and retry"},
		// Words alone decide nothing: without a reason, even a status that
		// speaks of quorum gets the advice.
		{status.Error(codes.Unavailable, "lost quorum; retry"),
			"lost quorum; retry; the cluster may have no leader right now: retry in a moment, or check `skiff cluster info`"},
		{status.Error(codes.Unavailable, "watch fell behind"),
			"watch fell behind; the cluster may have no leader right now: retry in a moment, or check `skiff cluster info`"},
		{status.Error(codes.DeadlineExceeded, "context deadline exceeded"),
			"the manager did not answer in time (context deadline exceeded); the cluster may have lost quorum: check `skiff cluster info`"},
		{status.Error(codes.Internal, "boom"), "internal error in the manager: boom"},
		{errors.New("plain"), "plain"},
	} {
		got := fromRPC(tc.in)
		if got.Error() != tc.want {
			t.Errorf("fromRPC(%v) = %q, want %q", tc.in, got, tc.want)
		}
		if s, ok := status.FromError(tc.in); ok && status.Code(got) != s.Code() {
			t.Errorf("fromRPC(%v) lost the code: %v", tc.in, status.Code(got))
		}
	}
	if fromRPC(nil) != nil || fromRPC(io.EOF) != io.EOF {
		t.Error("nil and io.EOF must pass through")
	}
}

// TestReasonSurvivesConversion: an error made fit for the user still
// carries the manager's reason, so that the failover and the commands can
// decide by it.
func TestReasonSurvivesConversion(t *testing.T) {
	for _, tc := range []struct {
		err    error
		reason string
	}{
		{skiffpb.QuorumLostError("no quorum"), skiffpb.ReasonQuorumLost},
		{skiffpb.LeaderLostError("leader lost"), skiffpb.ReasonLeaderLost},
		{skiffpb.NoLeaderError("no leader"), skiffpb.ReasonNoLeader},
		{status.Error(codes.Unavailable, "plain"), ""},
	} {
		got := fromRPC(tc.err)
		if r := skiffpb.ReasonOf(status.Convert(got)); r != tc.reason {
			t.Errorf("fromRPC(%v): reason %q, want %q", tc.err, r, tc.reason)
		}
		if skiffpb.IsNoLeader(got) != (tc.reason == skiffpb.ReasonNoLeader) {
			t.Errorf("fromRPC(%v): IsNoLeader = %v", tc.err, skiffpb.IsNoLeader(got))
		}
		// Converting twice changes nothing.
		if again := fromRPC(got); again.Error() != got.Error() {
			t.Errorf("fromRPC twice: %q, then %q", got, again)
		}
	}
}

func TestUnreachableError(t *testing.T) {
	same := &unreachableError{tried: []attempt{
		{"198.18.0.1:4242", errors.New("connection refused")},
		{"198.18.0.2:4242", errors.New("connection refused")},
	}}
	want := "cannot reach any manager (tried 198.18.0.1:4242, 198.18.0.2:4242): connection refused; check --manager or SKIFF_MANAGER"
	if same.Error() != want {
		t.Errorf("got %q\nwant %q", same.Error(), want)
	}
	mixed := &unreachableError{tried: []attempt{
		{"198.18.0.1:4242", errors.New("no answer within 2s")},
		{"198.18.0.2:4242", errors.New("connection refused")},
	}}
	want = "cannot reach any manager (tried 198.18.0.1:4242, 198.18.0.2:4242): 198.18.0.1:4242: no answer within 2s, 198.18.0.2:4242: connection refused; check --manager or SKIFF_MANAGER"
	if mixed.Error() != want {
		t.Errorf("got %q\nwant %q", mixed.Error(), want)
	}
	if status.Code(mixed) != codes.Unavailable {
		t.Error("an unreachable cluster must read as Unavailable, so that watches re-subscribe")
	}
}

func TestParseManagers(t *testing.T) {
	got, err := parseManagers(" 198.18.0.1:4242, 198.18.0.2:4242,,")
	if err != nil || len(got) != 2 || got[1] != "198.18.0.2:4242" {
		t.Fatalf("parseManagers = %q, %v", got, err)
	}
	for _, bad := range []string{"", ",", "198.18.0.1", "host:1:2"} {
		if _, err := parseManagers(bad); err == nil {
			t.Errorf("parseManagers(%q) accepted it", bad)
		}
	}
}

func TestManagersFromEnv(t *testing.T) {
	a := &app{env: Env{Environ: []string{"PATH=/bin", "SKIFF_MANAGER=10.0.0.1:4242,10.0.0.2:4242"}}}
	if got, _ := a.managers(); len(got) != 2 || got[0] != "10.0.0.1:4242" {
		t.Fatalf("from SKIFF_MANAGER: %q", got)
	}
	a.managerFlag = "10.0.0.9:4242"
	if got, _ := a.managers(); len(got) != 1 || got[0] != "10.0.0.9:4242" {
		t.Fatalf("--manager must win over SKIFF_MANAGER: %q", got)
	}
	if got, _ := (&app{}).managers(); len(got) != 1 || got[0] != defaultManager {
		t.Fatalf("default: %q", got)
	}
}
