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

// NoLeaderError is the Unavailable status, with ReasonNoLeader, of a call
// refused for want of a leader; msg says why, for people.
func NoLeaderError(msg string) error {
	st := status.New(codes.Unavailable, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Domain: ErrorDomain, Reason: ReasonNoLeader}); err == nil {
		st = d
	}
	return st.Err()
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
