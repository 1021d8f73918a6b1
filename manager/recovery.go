package manager

import (
	"context"
	"log/slog"
	"runtime/debug"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// recoverPanics turns a handler's panic into an Internal error for its
// caller, with the stack in the manager's log: one bad request (a nil
// field no validation foresaw) must not take the manager, and with it a
// Raft voter, down. The recovery middleware is the field's; only what it
// says and logs is skiff's.
func recoverPanics(logger *slog.Logger) recovery.Option {
	return recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		logger.Error("a call panicked; the manager carries on", "panic", p, "stack", string(debug.Stack()))
		return status.Errorf(codes.Internal, "the manager failed on this call (%v); it logged the details, please report them", p)
	})
}
