package controlapi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiffhq/skiff/manager/raftnode"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// reasonOf is the ErrorInfo reason of err in skiff's domain, as a client
// reads it off the wire; "" for none.
func reasonOf(t *testing.T, err error) string {
	t.Helper()
	st := status.FromProto(status.Convert(err).Proto())
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == skiffpb.ErrorDomain {
			return info.GetReason()
		}
	}
	return ""
}

// TestToStatus: each failure a write can meet reaches the client with the
// code and reason it decides by, and words that say what to do.
func TestToStatus(t *testing.T) {
	for _, tc := range []struct {
		err    error
		code   codes.Code
		reason string
		// words must appear in the message.
		words string
	}{
		{fmt.Errorf("commit: %w", raftnode.ErrNoQuorum), codes.Unavailable, skiffpb.ReasonQuorumLost, "bring managers back"},
		{fmt.Errorf("commit: %w", raftnode.ErrNotLeader), codes.Unavailable, skiffpb.ReasonNoLeader, "retry in a moment"},
		{fmt.Errorf("commit: %w (%w)", raftnode.ErrStorage, syscall.ENOSPC), codes.ResourceExhausted, "", "free space"},
		{fmt.Errorf("commit: %w (%w)", raftnode.ErrStorage, syscall.EIO), codes.Unavailable, "", "fix the disk"},
		{fmt.Errorf("put: %w", state.ErrVersionConflict), codes.Aborted, "", "retry the command"},
		{fmt.Errorf("get: %w", state.ErrNotFound), codes.NotFound, "", ""},
		{context.DeadlineExceeded, codes.DeadlineExceeded, "", ""},
		{errors.New("boom"), codes.Internal, "", "boom"},
		// A status made on purpose passes through as it is.
		{skiffpb.QuorumLostError("no leader: lost quorum"), codes.Unavailable, skiffpb.ReasonQuorumLost, "no leader: lost quorum"},
	} {
		got := toStatus(tc.err)
		if status.Code(got) != tc.code {
			t.Errorf("toStatus(%v): code %s, want %s", tc.err, status.Code(got), tc.code)
		}
		if r := reasonOf(t, got); r != tc.reason {
			t.Errorf("toStatus(%v): reason %q, want %q", tc.err, r, tc.reason)
		}
		if msg := status.Convert(got).Message(); !strings.Contains(msg, tc.words) {
			t.Errorf("toStatus(%v): message %q lacks %q", tc.err, msg, tc.words)
		}
	}
}

// TestReasonedErrors: the quorum-lost and leader-lost statuses are
// Unavailable with their own reasons, and neither reads as no-leader,
// which a client would send again as it is.
func TestReasonedErrors(t *testing.T) {
	for _, tc := range []struct {
		err    error
		reason string
	}{
		{skiffpb.QuorumLostError("no quorum"), skiffpb.ReasonQuorumLost},
		{skiffpb.LeaderLostError("leader lost"), skiffpb.ReasonLeaderLost},
	} {
		if status.Code(tc.err) != codes.Unavailable {
			t.Errorf("%v: code %s, want Unavailable", tc.err, status.Code(tc.err))
		}
		if r := reasonOf(t, tc.err); r != tc.reason {
			t.Errorf("%v: reason %q, want %q", tc.err, r, tc.reason)
		}
		if skiffpb.IsNoLeader(tc.err) {
			t.Errorf("%v reads as no-leader", tc.err)
		}
	}
}
