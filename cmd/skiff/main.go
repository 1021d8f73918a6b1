// Command skiff is the skiff CLI: it deploys compose stacks to a skiff
// cluster and shows and changes the cluster's nodes, stacks and services.
// Everything but the process plumbing lives in package cli.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/skiffhq/skiff/cli"
)

func main() {
	// Ctrl-C ends a wait or a log follow cleanly rather than killing the
	// process mid-write.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	cli.RouteLibraryLogs(os.Stderr)
	err := cli.Execute(ctx, cli.SystemEnv(), os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, cli.ErrorText(err))
		os.Exit(1)
	}
}
