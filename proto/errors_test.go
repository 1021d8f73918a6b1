package skiffpb

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestNoLeaderError: the reason survives wrapping, and a plain Unavailable
// (a call that may have taken effect) does not carry it.
func TestNoLeaderError(t *testing.T) {
	err := NoLeaderError("no leader: an election is under way")
	if status.Code(err) != codes.Unavailable {
		t.Errorf("code %s, want Unavailable", status.Code(err))
	}
	if !IsNoLeader(err) || !IsNoLeader(fmt.Errorf("deploy: %w", err)) {
		t.Error("IsNoLeader is false for a NoLeaderError")
	}
	// The round trip a client sees: the status rebuilt from its proto.
	if !IsNoLeader(status.FromProto(status.Convert(err).Proto()).Err()) {
		t.Error("the reason is lost on the wire")
	}
	for _, other := range []error{nil, fmt.Errorf("plain"), status.Error(codes.Unavailable, "the leader was lost")} {
		if IsNoLeader(other) {
			t.Errorf("IsNoLeader(%v) = true", other)
		}
	}
}
