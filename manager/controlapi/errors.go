package controlapi

import (
	"context"
	"errors"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiffhq/skiff/manager/raftnode"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

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
		return skiffpb.QuorumLostError(err.Error())
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
