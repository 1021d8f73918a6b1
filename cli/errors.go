package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// apiError is an error of a Control API call, with its message made fit
// for a user: the manager's own text without gRPC's "rpc error: code =
// ... desc =" wrapping, plus a hint where the manager gave none. It keeps
// the code and the reason, so that status.Code and skiffpb.IsNoLeader
// still work on it.
type apiError struct {
	code codes.Code
	// reason is the ErrorInfo reason the manager gave, in
	// skiffpb.ErrorDomain; "" when it gave none.
	reason string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

// GRPCStatus lets status.Code and status.FromError see the original code,
// and skiffpb.IsNoLeader the original reason.
func (e *apiError) GRPCStatus() *status.Status {
	st := status.New(e.code, e.msg)
	if e.reason != "" {
		if d, err := st.WithDetails(&errdetails.ErrorInfo{Domain: skiffpb.ErrorDomain, Reason: e.reason}); err == nil {
			st = d
		}
	}
	return st
}

// fromRPC converts an error returned by gRPC into an apiError; nil, io.EOF
// and errors that did not come from gRPC pass through.
func fromRPC(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	var ae *apiError
	if errors.As(err, &ae) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	reason := skiffpb.ReasonOf(st)
	return &apiError{code: st.Code(), reason: reason, msg: userMessage(st.Code(), reason, st.Message())}
}

// userMessage words a gRPC status for the user. The managers already word
// their errors for users (NotFound reads `service "x" not found`), so
// most codes keep the text as it is.
func userMessage(code codes.Code, reason, msg string) string {
	switch code {
	case codes.Unavailable:
		switch reason {
		case "":
			// Not a manager's verdict, such as a connection that broke
			// mid-call: the likeliest cause is an election.
			return msg + "; the cluster may have no leader right now: retry in a moment, or check `skiff cluster info`"
		case skiffpb.ReasonQuorumLost:
			// The manager says to bring managers back; which ones is
			// what the user needs next.
			return msg + "; `skiff cluster info` shows which managers are unreachable"
		default:
			// No leader yet, a leader lost mid-call: the manager's
			// words say what to do.
			return msg
		}
	case codes.DeadlineExceeded:
		return "the manager did not answer in time (" + msg + "); the cluster may have lost quorum: check `skiff cluster info`"
	case codes.Canceled:
		return "interrupted"
	case codes.Unimplemented:
		return "the manager does not support this (" + msg + "); is it older than this skiff?"
	case codes.Internal, codes.Unknown, codes.DataLoss:
		return "internal error in the manager: " + msg
	default:
		return msg
	}
}

// attempt is one manager address that did not answer, and why.
type attempt struct {
	addr string
	err  error
}

// unreachableError says that no manager answered, which addresses were
// tried, and what to check.
type unreachableError struct {
	tried []attempt
}

func (e *unreachableError) Error() string {
	addrs := make([]string, len(e.tried))
	reasons := map[string]bool{}
	for i, a := range e.tried {
		addrs[i] = a.addr
		reasons[a.err.Error()] = true
	}
	// One reason is said once; different ones are said per address.
	var why string
	if len(reasons) == 1 {
		why = e.tried[0].err.Error()
	} else {
		parts := make([]string, len(e.tried))
		for i, a := range e.tried {
			parts[i] = a.addr + ": " + a.err.Error()
		}
		why = strings.Join(parts, ", ")
	}
	return fmt.Sprintf("cannot reach any manager (tried %s): %s; check --manager or SKIFF_MANAGER", strings.Join(addrs, ", "), why)
}

// GRPCStatus makes an unreachable cluster read as Unavailable to code that
// re-subscribes streams.
func (e *unreachableError) GRPCStatus() *status.Status {
	return status.New(codes.Unavailable, e.Error())
}

// commandError is a command line that names no command of skiff's. Its
// message is whole as docker words it, so ErrorText prints it without the
// "Error:" that other errors get.
type commandError struct{ msg string }

func (e *commandError) Error() string { return e.msg }

// unknownCommand is the root's error for `skiff nosuch`, worded as docker
// worded its own until version 28 (`docker: 'nosuch' is not a docker
// command.`), which is the wording design.md §3 fixes.
func unknownCommand(root *cobra.Command, name string) error {
	return &commandError{fmt.Sprintf("%[1]s: '%[2]s' is not a %[1]s command.\nSee '%[1]s --help'", root.Name(), name)}
}

// unknownSubcommand is a group's error for `skiff service nosuch`. Docker
// until version 28 printed only the group's usage for it; docker 28 says
// which command is unknown, and that is mirrored here.
func unknownSubcommand(group *cobra.Command, name string) error {
	return &commandError{fmt.Sprintf("%s: unknown command: %s %s\n\nUsage:  %s\n\nRun '%s --help' for more information",
		group.Root().Name(), group.CommandPath(), name, group.UseLine(), group.CommandPath())}
}

// ErrorText is an error of Execute as the user reads it on stderr: most
// read "Error: " and the message, but an unknown command reads exactly as
// docker's does.
func ErrorText(err error) string {
	var ce *commandError
	if errors.As(err, &ce) {
		return ce.msg
	}
	return "Error: " + err.Error()
}

// usageError is a command line the CLI cannot run, worded as docker words
// it, with a pointer to the command's help.
func usageError(cmd *cobra.Command, format string, args ...any) error {
	return fmt.Errorf("%s\nSee '%s --help'.", fmt.Sprintf(format, args...), cmd.CommandPath())
}

// flagError is the root command's FlagErrorFunc: cobra's message, with
// the pointer to help.
func flagError(cmd *cobra.Command, err error) error {
	return usageError(cmd, "%v", err)
}

// exactArgs checks a command's positional arguments with docker's
// wording: `"skiff service ps" requires exactly 1 argument.`
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError(cmd, "%q requires exactly %s.", cmd.CommandPath(), plural(n, "argument"))
		}
		return nil
	}
}

// minArgs is exactArgs for commands that take a list.
func minArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usageError(cmd, "%q requires at least %s.", cmd.CommandPath(), plural(n, "argument"))
		}
		return nil
	}
}

// noArgs is exactArgs(0) in docker's wording for it.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError(cmd, "%q accepts no arguments.", cmd.CommandPath())
	}
	return nil
}

func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}
