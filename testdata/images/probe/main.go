// Command probe is the multi-tool that skiff's end-to-end tests run inside
// containers. Its image holds this one static binary and nothing else, so
// every check a test needs (DNS, HTTP, TCP, UDP, exit codes) lives here.
//
// Usage:
//
//	probe sleep                          block until SIGTERM or SIGINT, then exit 0
//	probe http URL [-n N] [-timeout D]   GET URL N times, print each body
//	probe lookup NAME [-timeout D]       print NAME's addresses, one per line
//	probe tcp-echo ADDR                  echo every TCP connection on ADDR
//	probe udp-echo ADDR                  echo every UDP datagram on ADDR
//	probe dial tcp|udp ADDR MSG [-timeout D]
//	                                     send MSG to an echo server, print the reply
//	probe exit CODE                      exit with CODE at once
//	probe serve ADDR                     HTTP server answering its hostname
//
// Servers run until SIGTERM or SIGINT and then exit 0. Any failure exits 1,
// and a usage error exits 2.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

// command is one subcommand: run gets the arguments after the subcommand's
// name and writes its results to out.
type command struct {
	usage string
	run   func(ctx context.Context, args []string, out io.Writer) error
}

var commands = map[string]command{
	"sleep":    {"sleep", runSleep},
	"http":     {"http URL [-n N] [-timeout D]", runHTTP},
	"lookup":   {"lookup NAME [-timeout D]", runLookup},
	"tcp-echo": {"tcp-echo ADDR", runTCPEcho},
	"udp-echo": {"udp-echo ADDR", runUDPEcho},
	"dial":     {"dial tcp|udp ADDR MSG [-timeout D]", runDial},
	"exit":     {"exit CODE", runExit},
	"serve":    {"serve ADDR", runServe},
}

// logger writes to stderr, leaving stdout to the results that tests read.
var logger = slog.New(slog.NewTextHandler(os.Stderr, nil))

func main() {
	// As PID 1 of a container, probe gets no default signal handling from
	// the kernel: without this, docker stop would wait for its SIGKILL.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// execute runs the subcommand named by args[0] and returns the exit code.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(stderr)
		return 2
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "probe: unknown command %q\n", args[0])
		printUsage(stderr)
		return 2
	}
	err := cmd.run(ctx, args[1:], stdout)
	var exit exitCode
	var usage usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return int(exit)
	case errors.As(err, &usage), errors.Is(err, flag.ErrHelp):
		fmt.Fprintf(stderr, "probe: %v\nusage: probe %s\n", err, cmd.usage)
		return 2
	default:
		fmt.Fprintf(stderr, "probe %s: %v\n", args[0], err)
		return 1
	}
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage:")
	for _, name := range []string{"sleep", "http", "lookup", "tcp-echo", "udp-echo", "dial", "exit", "serve"} {
		fmt.Fprintf(w, "  probe %s\n", commands[name].usage)
	}
}

// usageError reports arguments that do not fit the subcommand.
type usageError string

func (e usageError) Error() string { return string(e) }

// exitCode asks execute to exit with a given code; it is how "probe exit"
// returns its code without calling os.Exit where tests can't survive it.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// parseArgs parses flags that may stand before, between or after the
// positional arguments ("probe http URL -n 3" reads naturally, but the flag
// package stops at the first positional) and checks their count.
func parseArgs(fs *flag.FlagSet, args []string, positional int) ([]string, error) {
	fs.SetOutput(io.Discard) // execute prints the usage line itself
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageError(err.Error())
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != positional {
		return nil, usageError(fmt.Sprintf("got %d arguments, want %d", len(pos), positional))
	}
	return pos, nil
}

// runSleep blocks until probe is asked to stop, making probe a stand-in for
// a long-running service whose only job is to exist.
func runSleep(ctx context.Context, args []string, _ io.Writer) error {
	if _, err := parseArgs(flag.NewFlagSet("sleep", flag.ContinueOnError), args, 0); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// runExit exits with the given code, so tests can drive restart policies.
func runExit(_ context.Context, args []string, _ io.Writer) error {
	pos, err := parseArgs(flag.NewFlagSet("exit", flag.ContinueOnError), args, 1)
	if err != nil {
		return err
	}
	code, err := strconv.Atoi(pos[0])
	if err != nil || code < 0 || code > 255 {
		return usageError(fmt.Sprintf("exit code %q is not an integer in 0..255", pos[0]))
	}
	logger.Info("exiting", "code", code)
	return exitCode(code)
}
