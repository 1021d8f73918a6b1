package cli

import (
	"context"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	skiffpb "github.com/skiffhq/skiff/proto"
	"github.com/skiffhq/skiff/version"
)

// Env is everything the CLI takes from the process it runs in. Execute
// touches nothing else of the process, so that tests run whole commands
// in-process against buffers.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Environ holds the environment as KEY=VALUE pairs: SKIFF_MANAGER is
	// read from it, and compose files are interpolated with it.
	Environ []string
	// Terminal says that Stdout is a terminal: progress displays then
	// redraw in place rather than print each change on a line of its own.
	Terminal bool
}

// SystemEnv is the Env of the running process.
func SystemEnv() Env {
	return Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Environ: os.Environ(), Terminal: isTerminal(os.Stdout)}
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// getenv looks a variable up in the Env's environment.
func (e Env) getenv(key string) string {
	for _, kv := range e.Environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// Execute runs the skiff command line args (without the program's name).
// The error, if any, is worded for the user and meant to be printed as is;
// output has already gone to env's writers.
func Execute(ctx context.Context, env Env, args []string) error {
	a := &app{env: env, now: time.Now}
	defer a.close()
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	return root.ExecuteContext(ctx)
}

// app is one run of the CLI: the global flags, and the connection the
// commands share.
type app struct {
	env Env
	now func() time.Time

	managerFlag string
	// tlsDirFlag is --tls-dir: where the admin credentials are.
	tlsDirFlag string
	conn       *failoverConn
}

func (a *app) close() {
	if a.conn != nil {
		a.conn.Close()
	}
}

// managers are the addresses to try: --manager, else SKIFF_MANAGER, else
// the local default.
func (a *app) managers() ([]string, error) {
	switch {
	case a.managerFlag != "":
		return parseManagers(a.managerFlag)
	case a.env.getenv("SKIFF_MANAGER") != "":
		return parseManagers(a.env.getenv("SKIFF_MANAGER"))
	default:
		return []string{defaultManager}, nil
	}
}

// control returns the Control API client. Connecting is lazy: the first
// call finds a manager that answers.
func (a *app) control() (skiffpb.ControlClient, error) {
	if a.conn == nil {
		addrs, err := a.managers()
		if err != nil {
			return nil, err
		}
		creds, err := a.transportCredentials()
		if err != nil {
			return nil, err
		}
		a.conn = newFailoverConn(addrs, creds)
	}
	return skiffpb.NewControlClient(a.conn), nil
}

func (a *app) stdout() io.Writer { return a.env.Stdout }
func (a *app) stderr() io.Writer { return a.env.Stderr }

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "skiff",
		Short: "Run docker-compose stacks on a skiff cluster",
		Long: "skiff runs docker-compose files on a cluster of hosts, as Docker Swarm does.\n\n" +
			"It talks to a manager given with --manager or SKIFF_MANAGER (HOST:PORT, comma-separated\n" +
			"for several; the next is tried when one is down), else to the manager on this host.",
		Version: version.Version,
		// Without a RunE, cobra answers an unknown command with the help
		// and exit status 0, so a typo in a script would pass unnoticed.
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return unknownCommand(cmd, args[0])
			}
			return cmd.Help()
		},
		SilenceUsage:      true,
		SilenceErrors:     true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	root.SetVersionTemplate("skiff version {{.Version}}\n")
	root.PersistentFlags().StringVar(&a.managerFlag, "manager", "",
		"Manager addresses, HOST:PORT[,HOST:PORT...] (env SKIFF_MANAGER; default "+defaultManager+")")
	root.PersistentFlags().StringVar(&a.tlsDirFlag, "tls-dir", "",
		"Folder with the admin credentials ca.pem, cert.pem, key.pem (env SKIFF_TLS_DIR; default ~/.skiff/tls, then "+localManagerAdmin+")")
	root.SetFlagErrorFunc(flagError)
	root.AddCommand(
		a.nodeCommand(),
		a.stackCommand(),
		a.serviceCommand(),
		a.clusterCommand(),
		a.versionCommand(),
	)
	// Each Use line spells out its options already.
	var plain func(*cobra.Command)
	plain = func(c *cobra.Command) {
		c.DisableFlagsInUseLine = true
		for _, sub := range c.Commands() {
			plain(sub)
		}
	}
	plain(root)
	return root
}

// groupCommand is a command that only holds subcommands, such as `skiff
// node`: alone it prints its help, as docker's do, and with an unknown
// subcommand it fails instead of printing help with exit status 0.
func groupCommand(use, short string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return unknownSubcommand(cmd, args[0])
			}
			return cmd.Help()
		},
	}
	cmd.AddCommand(subs...)
	return cmd
}
