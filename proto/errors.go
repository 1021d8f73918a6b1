package skiffpb

import (
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the domain of the ErrorInfo details skiff's managers put
// on the statuses a client may act on.
const ErrorDomain = "skiff"

// ReasonNoLeader marks an Unavailable status from a manager that had no
// leader to take the call: the call was not applied, so a client may send it
// again as it is once a leader is elected, which takes about a second. A
// call cut off while the leader handled it is Unavailable without this
// reason, because it may have taken effect.
const ReasonNoLeader = "NO_LEADER"

// The reasons below mark, beside ReasonNoLeader, other Unavailable statuses
// a client acts on. Clients decide by the reason, never by the words.
const (
	// ReasonQuorumLost marks a call refused or cut off because too few
	// managers are reachable to elect a leader or commit: nothing will
	// succeed until managers come back, so waiting for an election, as for
	// ReasonNoLeader, is no use. A write cut off this way may or may not
	// have taken effect.
	ReasonQuorumLost = "QUORUM_LOST"
	// ReasonLeaderLost marks a call that a follower forwarded to a leader
	// that was lost while it handled the call, which may or may not have
	// taken effect.
	ReasonLeaderLost = "LEADER_LOST"
)

// NoLeaderError is the Unavailable status, with ReasonNoLeader, of a call
// refused for want of a leader; msg says why, for people.
func NoLeaderError(msg string) error { return withReason(ReasonNoLeader, msg) }

// QuorumLostError is the Unavailable status, with ReasonQuorumLost, of a
// call that failed because the cluster has lost its quorum; msg says so,
// and what to do, for people.
func QuorumLostError(msg string) error { return withReason(ReasonQuorumLost, msg) }

// LeaderLostError is the Unavailable status, with ReasonLeaderLost, of a
// forwarded call whose leader was lost; msg says so, and what to do.
func LeaderLostError(msg string) error { return withReason(ReasonLeaderLost, msg) }

func withReason(reason, msg string) error {
	st := status.New(codes.Unavailable, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Domain: ErrorDomain, Reason: reason}); err == nil {
		st = d
	}
	return st.Err()
}

// ReasonOf is the reason a manager put on st, in skiff's domain; "" for
// none.
func ReasonOf(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			return info.GetReason()
		}
	}
	return ""
}

// IsNoLeader reports whether err is, or wraps, a status made by
// NoLeaderError.
func IsNoLeader(err error) bool {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return false
	}
	st := se.GRPCStatus()
	if st.Code() != codes.Unavailable {
		return false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain && info.GetReason() == ReasonNoLeader {
			return true
		}
	}
	return false
}
