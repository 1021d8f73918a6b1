package cli

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiffhq/skiff/compose"
	skiffpb "github.com/skiffhq/skiff/proto"
)

func (a *app) stackCommand() *cobra.Command {
	return groupCommand("stack", "Manage stacks",
		a.stackDeployCommand(),
		a.stackLsCommand(),
		a.stackServicesCommand(),
		a.stackPsCommand(),
		a.stackRmCommand(),
	)
}

func (a *app) stackDeployCommand() *cobra.Command {
	var (
		files []string
		prune bool
		wait  waitFlags
	)
	cmd := &cobra.Command{
		Use:     "deploy [OPTIONS] STACK",
		Aliases: []string{"up"},
		Short:   "Deploy a new stack or update an existing stack",
		Long: "Deploy a new stack or update an existing stack from compose files.\n\n" +
			"Unless --detach, the command then waits until every service of the stack runs its tasks.",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(files) == 0 {
				return usageError(cmd, "no compose file given: name one with -c FILE")
			}
			name := args[0]
			opts := compose.Options{Files: files, Environ: a.env.Environ, StackName: name}
			if files[0] != "-" {
				opts.WorkingDir = filepath.Dir(files[0])
			}
			// The compose package's errors name the file, line and key
			// already; any wrapping would only add noise.
			spec, warnings, err := compose.Load(cmd.Context(), opts)
			if err != nil {
				return err
			}
			for _, w := range warnings {
				fmt.Fprintf(a.stderr(), "WARNING: %s\n", w)
			}
			ctl, err := a.control()
			if err != nil {
				return err
			}
			resp, err := ctl.DeployStack(cmd.Context(), &skiffpb.DeployStackRequest{Spec: spec, Prune: prune}, idempotent())
			if err != nil {
				return err
			}
			minVersions := map[string]uint64{}
			for _, sv := range spec.GetServices() {
				minVersions[sv.GetName()] = 0
			}
			for _, c := range resp.GetChanges() {
				switch c.GetKind() {
				case skiffpb.ServiceChangeKind_SERVICE_CHANGE_CREATED:
					fmt.Fprintf(a.stdout(), "Creating service %s\n", c.GetName())
					minVersions[c.GetName()] = resp.GetIndex()
				case skiffpb.ServiceChangeKind_SERVICE_CHANGE_UPDATED:
					fmt.Fprintf(a.stdout(), "Updating service %s\n", c.GetName())
					minVersions[c.GetName()] = resp.GetIndex()
				case skiffpb.ServiceChangeKind_SERVICE_CHANGE_REMOVED:
					fmt.Fprintf(a.stdout(), "Removing service %s\n", c.GetName())
				}
			}
			if wait.detach {
				return nil
			}
			return a.wait(cmd.Context(), &rollout{
				what:     "stack " + name,
				psHint:   "skiff stack ps " + name,
				services: minVersions,
				request: &skiffpb.WatchRequest{Stack: name, Kinds: []skiffpb.WatchKind{
					skiffpb.WatchKind_WATCH_KIND_SERVICE, skiffpb.WatchKind_WATCH_KIND_TASK, skiffpb.WatchKind_WATCH_KIND_NODE,
				}},
			}, wait.timeout)
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&files, "compose-file", "c", nil, "Path to a Compose file, or \"-\" to read from stdin (repeat to merge several)")
	f.BoolVar(&prune, "prune", false, "Prune services that are no longer referenced")
	wait.register(cmd, "until the stack's services converge")
	return cmd
}

// stackRow is a stack as `stack ls` and its --format templates see it.
type stackRow struct {
	Name     string
	Services uint64
}

// stackListing says how stacks list; -q gives names, since stacks are
// known by name.
func stackListing() listing[stackRow] {
	return listing[stackRow]{
		columns: []column{{"Name", "NAME"}, {"Services", "SERVICES"}},
		table:   "table {{.Name}}\t{{.Services}}",
		key:     func(r stackRow) string { return r.Name },
	}
}

func (a *app) stackLsCommand() *cobra.Command {
	return view[stackRow]{
		use:     "ls [OPTIONS]",
		aliases: []string{"list"},
		short:   "List stacks",
		args:    noArgs,
		out:     listOutput(stackListing(), "stack names"),
		fetch: func(cmd *cobra.Command, ctl skiffpb.ControlClient, _ []string, _ listFlags) ([]stackRow, error) {
			resp, err := ctl.ListStacks(cmd.Context(), &skiffpb.ListStacksRequest{})
			if err != nil {
				return nil, err
			}
			rows := make([]stackRow, len(resp.GetStacks()))
			for i, s := range resp.GetStacks() {
				rows[i] = stackRow{Name: s.GetStack().GetName(), Services: s.GetServices()}
			}
			return rows, nil
		},
	}.command(a)
}

func (a *app) stackServicesCommand() *cobra.Command {
	return view[serviceRow]{
		use:   "services [OPTIONS] STACK",
		short: "List the services in the stack",
		args:  exactArgs(1),
		out:   listOutput(serviceListing(), "IDs"),
		fetch: func(cmd *cobra.Command, ctl skiffpb.ControlClient, args []string, flags listFlags) ([]serviceRow, error) {
			resp, err := ctl.ListServices(cmd.Context(), &skiffpb.ListServicesRequest{Stack: args[0]})
			if err != nil {
				return nil, err
			}
			return serviceRows(resp.GetServices(), flags.noTrunc), nil
		},
	}.command(a)
}

func (a *app) stackPsCommand() *cobra.Command {
	return view[taskRow]{
		use:   "ps [OPTIONS] STACK",
		short: "List the tasks in the stack",
		args:  exactArgs(1),
		out:   taskOutput(),
		fetch: func(cmd *cobra.Command, ctl skiffpb.ControlClient, args []string, flags listFlags) ([]taskRow, error) {
			tasks, err := listTasks(cmd, ctl, flags.filter, &skiffpb.ListTasksRequest{Stack: args[0]})
			if err != nil {
				return nil, err
			}
			// The services give each task's image; a stack whose services
			// are all gone still has tasks shutting down.
			services, err := ctl.ListServices(cmd.Context(), &skiffpb.ListServicesRequest{Stack: args[0]})
			if err != nil && status.Code(err) != codes.NotFound {
				return nil, err
			}
			return a.psRows(cmd.Context(), ctl, flags, tasks, services.GetServices())
		},
	}.command(a)
}

func (a *app) stackRmCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "rm STACK [STACK...]",
		Aliases: []string{"remove", "down"},
		Short:   "Remove one or more stacks",
		Long:    "Remove one or more stacks with their services and networks. Their tasks stop in the background.",
		Args:    minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctl, err := a.control()
			if err != nil {
				return err
			}
			for _, name := range args {
				// Listed first only to say what goes, as docker does.
				services, err := ctl.ListServices(cmd.Context(), &skiffpb.ListServicesRequest{Stack: name})
				if err != nil && status.Code(err) != codes.NotFound {
					return err
				}
				if _, err := ctl.RemoveStack(cmd.Context(), &skiffpb.RemoveStackRequest{Name: name}); err != nil {
					return err
				}
				for _, row := range serviceRows(services.GetServices(), true) {
					fmt.Fprintf(a.stdout(), "Removing service %s\n", row.Name)
				}
			}
			return nil
		},
	}
	return cmd
}
