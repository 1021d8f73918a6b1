package cli

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	skiffpb "github.com/skiffhq/skiff/proto"
	"github.com/skiffhq/skiff/version"
)

// versionTimeout bounds the server half of `skiff version`, which is
// informative: without a reachable cluster the client half still prints.
const versionTimeout = 5 * time.Second

func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Show the skiff version information",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := a.stdout()
			fmt.Fprintln(w, "Client:")
			fmt.Fprintf(w, " Version:     %s\n", version.Version)
			fmt.Fprintf(w, " Go version:  %s\n", runtime.Version())
			fmt.Fprintf(w, " OS/Arch:     %s/%s\n", runtime.GOOS, runtime.GOARCH)

			ctl, err := a.control()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), versionTimeout)
			defer cancel()
			info, err := ctl.ClusterInfo(ctx, &skiffpb.ClusterInfoRequest{})
			if err != nil {
				// The client's version is what was asked for; the server's
				// is a bonus, so its absence is a warning, not a failure.
				fmt.Fprintf(a.stderr(), "WARNING: no server version: %v\n", err)
				return nil
			}
			fmt.Fprintln(w)
			fmt.Fprintln(w, "Server:")
			fmt.Fprintf(w, " Version:     %s\n", info.GetVersion())
			fmt.Fprintf(w, " Cluster ID:  %s\n", info.GetClusterId())
			fmt.Fprintf(w, " Manager:     %s\n", a.conn.currentAddr())
			return nil
		},
	}
}
