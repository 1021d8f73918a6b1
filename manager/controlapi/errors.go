package controlapi

import (
	"context"
	"errors"
	"syscall"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiffhq/skiff/manager/raftnode"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// The reasons below mark, beside skiffpb.ReasonNoLeader, Unavailable
// statuses a client acts on: each is an ErrorInfo in skiffpb.ErrorDomain,
// and the status's message says what the user should do. Clients decide by
// the reason, never by the words.
const (
	// ReasonQuorumLost marks a call refused or cut off because too few
	// managers are reachable to elect a leader or commit: nothing will
	// succeed until managers come back, so waiting for an election, as
	// for ReasonNoLeader, is no use. A write cut off this way may or may
	// not have taken effect.
	ReasonQuorumLost = "QUORUM_LOST"
	// ReasonLeaderLost marks a call that a follower forwarded to a leader
	// that was lost while it handled the call, which may or may not have
	// taken effect.
	ReasonLeaderLost = "LEADER_LOST"
)

// QuorumLostError is the Unavailable status, with ReasonQuorumLost, of a
// call that failed because the cluster has lost its quorum; msg says so,
// and what to do, for people.
func QuorumLostError(msg string) error { return withReason(codes.Unavailable, ReasonQuorumLost, msg) }

// LeaderLostError is the Unavailable status, with ReasonLeaderLost, of a
// forwarded call whose leader was lost; msg says so, and what to do, for
// people.
func LeaderLostError(msg string) error { return withReason(codes.Unavailable, ReasonLeaderLost, msg) }

func withReason(code codes.Code, reason, msg string) error {
	st := status.New(code, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Domain: skiffpb.ErrorDomain, Reason: reason}); err == nil {
		st = d
	}
	return st.Err()
}

// toStatus gives an error the gRPC code that tells the CLI what happened.
func toStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, state.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, state.ErrAmbiguous):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, state.ErrVersionConflict):
		return status.Error(codes.Aborted, err.Error()+"; retry the command")
	case errors.Is(err, state.ErrNameConflict):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, raftnode.ErrStorage):
		return storageStatus(err)
	case errors.Is(err, raftnode.ErrNotLeader):
		// Refused before it reached the log: safe to send again.
		return skiffpb.NoLeaderError(err.Error() + "; retry in a moment")
	case errors.Is(err, raftnode.ErrNoQuorum):
		return QuorumLostError(err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	default:
		return status.Error(codes.Internal, err.Error())
	}
}

// storageStatus is the status of a call that failed because a manager's
// disk did: ResourceExhausted when it is full, Unavailable otherwise.
func storageStatus(err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return status.Error(codes.ResourceExhausted, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}

// StorageStatus is storageStatus for the manager's own answers.
func StorageStatus(err error) error { return storageStatus(err) }
