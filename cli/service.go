package cli

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	skiffpb "github.com/skiffhq/skiff/proto"
)

func (a *app) serviceCommand() *cobra.Command {
	return groupCommand("service", "Manage services",
		a.serviceLsCommand(),
		a.servicePsCommand(),
		a.serviceInspectCommand(),
		a.serviceScaleCommand(),
		a.serviceUpdateCommand(),
		a.serviceLogsCommand(),
	)
}

// serviceRow is a service as `service ls` and its --format templates see
// it.
type serviceRow struct {
	ID       string
	Name     string
	Mode     string
	Replicas string
	Image    string
	Ports    string
}

// serviceListing says how services list.
func serviceListing() listing[serviceRow] {
	return listing[serviceRow]{
		columns: []column{
			{"ID", "ID"}, {"Name", "NAME"}, {"Mode", "MODE"}, {"Replicas", "REPLICAS"}, {"Image", "IMAGE"}, {"Ports", "PORTS"},
		},
		table: "table {{.ID}}\t{{.Name}}\t{{.Mode}}\t{{.Replicas}}\t{{.Image}}\t{{.Ports}}",
		key:   func(r serviceRow) string { return r.ID },
	}
}

// serviceRows builds rows sorted by name.
func serviceRows(services []*skiffpb.Service, noTrunc bool) []serviceRow {
	sorted := append([]*skiffpb.Service(nil), services...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].GetSpec().GetName() < sorted[j].GetSpec().GetName() })
	rows := make([]serviceRow, len(sorted))
	for i, sv := range sorted {
		spec := sv.GetSpec()
		replicas := fmt.Sprintf("%d/%d", sv.GetStatus().GetRunningTasks(), sv.GetStatus().GetDesiredTasks())
		if limit := spec.GetPlacement().GetMaxReplicasPerNode(); limit > 0 {
			replicas += fmt.Sprintf(" (max %d per node)", limit)
		}
		rows[i] = serviceRow{
			ID:       shortID(sv.GetId(), noTrunc),
			Name:     spec.GetName(),
			Mode:     enumWord(spec.GetMode()),
			Replicas: replicas,
			Image:    spec.GetContainer().GetImage(),
			Ports:    servicePorts(spec.GetEndpoint().GetPorts()),
		}
	}
	return rows
}

// servicePorts is PORTS in `service ls`: the routing mesh's published
// ports, "*:4000->80/tcp", as docker shows them; host-mode ports belong to
// tasks and show in `service ps`.
func servicePorts(ports []*skiffpb.PortConfig) string {
	var out []string
	for _, p := range ports {
		if p.GetPublishMode() != skiffpb.PublishMode_PUBLISH_MODE_INGRESS || p.GetPublishedPort() == 0 {
			continue
		}
		out = append(out, fmt.Sprintf("*:%d->%d/%s", p.GetPublishedPort(), p.GetTargetPort(), enumWord(p.GetProtocol())))
	}
	return strings.Join(out, ", ")
}

func (a *app) serviceLsCommand() *cobra.Command {
	return view[serviceRow]{
		use:     "ls [OPTIONS]",
		aliases: []string{"list"},
		short:   "List services",
		args:    noArgs,
		out:     listOutput(serviceListing(), "IDs"),
		fetch: func(cmd *cobra.Command, ctl skiffpb.ControlClient, _ []string, flags listFlags) ([]serviceRow, error) {
			resp, err := ctl.ListServices(cmd.Context(), &skiffpb.ListServicesRequest{})
			if err != nil {
				return nil, err
			}
			return serviceRows(resp.GetServices(), flags.noTrunc), nil
		},
	}.command(a)
}

func (a *app) servicePsCommand() *cobra.Command {
	return view[taskRow]{
		use:   "ps [OPTIONS] SERVICE [SERVICE...]",
		short: "List the tasks of one or more services",
		args:  minArgs(1),
		out:   taskOutput(),
		fetch: func(cmd *cobra.Command, ctl skiffpb.ControlClient, args []string, flags listFlags) ([]taskRow, error) {
			var tasks []*skiffpb.Task
			var services []*skiffpb.Service
			for _, ref := range args {
				sv, err := ctl.GetService(cmd.Context(), &skiffpb.GetServiceRequest{Service: ref})
				if err != nil {
					return nil, err
				}
				ts, err := listTasks(cmd, ctl, flags.filter, &skiffpb.ListTasksRequest{Service: sv.GetId()})
				if err != nil {
					return nil, err
				}
				services = append(services, sv)
				tasks = append(tasks, ts...)
			}
			return a.psRows(cmd.Context(), ctl, flags, tasks, services)
		},
	}.command(a)
}

func (a *app) serviceInspectCommand() *cobra.Command {
	return view[*skiffpb.Service]{
		use:   "inspect [OPTIONS] SERVICE [SERVICE...]",
		short: "Display detailed information on one or more services",
		args:  minArgs(1),
		out:   inspectOutput[*skiffpb.Service]("{{.Spec.Name}}, {{.Status.RunningTasks}}"),
		fetch: eachArg(func(cmd *cobra.Command, ctl skiffpb.ControlClient, ref string) (*skiffpb.Service, error) {
			return ctl.GetService(cmd.Context(), &skiffpb.GetServiceRequest{Service: ref})
		}),
	}.command(a)
}

// scaleArg is one SERVICE=REPLICAS of `service scale`.
type scaleArg struct {
	service  string
	replicas uint64
}

// parseScale reads SERVICE=REPLICAS, worded as docker's errors.
func parseScale(arg string) (scaleArg, error) {
	name, n, ok := strings.Cut(arg, "=")
	if !ok || name == "" {
		return scaleArg{}, fmt.Errorf("invalid scale specifier %q: expected format is SERVICE=REPLICAS", arg)
	}
	replicas, err := strconv.ParseUint(n, 10, 64)
	if err != nil {
		return scaleArg{}, fmt.Errorf("invalid replicas value %q for %s: expected a whole number of 0 or more", n, name)
	}
	return scaleArg{service: name, replicas: replicas}, nil
}

func (a *app) serviceScaleCommand() *cobra.Command {
	var wait waitFlags
	cmd := &cobra.Command{
		Use:   "scale SERVICE=REPLICAS [SERVICE=REPLICAS...]",
		Short: "Scale one or more replicated services",
		Args:  minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Every argument is checked before any service changes.
			scales := make([]scaleArg, len(args))
			for i, arg := range args {
				s, err := parseScale(arg)
				if err != nil {
					return usageError(cmd, "%v", err)
				}
				scales[i] = s
			}
			ctl, err := a.control()
			if err != nil {
				return err
			}
			changed := map[string]uint64{}
			var updated []*skiffpb.Service
			for _, s := range scales {
				resp, err := ctl.UpdateService(cmd.Context(), &skiffpb.UpdateServiceRequest{Service: s.service, Replicas: &s.replicas}, idempotent())
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout(), "%s scaled to %d\n", s.service, s.replicas)
				changed[resp.GetService().GetSpec().GetName()] = resp.GetIndex()
				updated = append(updated, resp.GetService())
			}
			if wait.detach {
				return nil
			}
			return a.wait(cmd.Context(), serviceRollout(updated, changed), wait.timeout)
		},
	}
	wait.register(cmd, "until the services converge")
	return cmd
}

// serviceRollout is the goal of commands that change services: the Watch
// narrows to the one service, or to the one stack they share.
func serviceRollout(services []*skiffpb.Service, minVersions map[string]uint64) *rollout {
	req := &skiffpb.WatchRequest{Kinds: []skiffpb.WatchKind{
		skiffpb.WatchKind_WATCH_KIND_SERVICE, skiffpb.WatchKind_WATCH_KIND_TASK, skiffpb.WatchKind_WATCH_KIND_NODE,
	}}
	stacks := map[string]bool{}
	names := make([]string, 0, len(services))
	for _, sv := range services {
		stacks[sv.GetSpec().GetStack()] = true
		names = append(names, sv.GetSpec().GetName())
	}
	r := &rollout{services: minVersions, request: req, what: "services " + strings.Join(names, ", "), psHint: "skiff service ps " + strings.Join(names, " ")}
	switch {
	case len(services) == 1:
		req.Service = services[0].GetId()
		r.what = "service " + names[0]
	case len(stacks) == 1:
		req.Stack = services[0].GetSpec().GetStack()
	}
	return r
}

func (a *app) serviceUpdateCommand() *cobra.Command {
	var (
		image    string
		replicas uint64
		force    bool
		wait     waitFlags
	)
	cmd := &cobra.Command{
		Use:   "update [OPTIONS] SERVICE",
		Short: "Update a service's image or replicas, or restart its tasks",
		Long: "Update a service's image or replica count, or with --force restart all its tasks.\n\n" +
			"A new image rolls out as the service's update_config says; unless --detach, the command waits until it has.",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &skiffpb.UpdateServiceRequest{Service: args[0], Force: force}
			if cmd.Flags().Changed("image") {
				req.Image = &image
			}
			if cmd.Flags().Changed("replicas") {
				req.Replicas = &replicas
			}
			if req.Image == nil && req.Replicas == nil && !force {
				return usageError(cmd, "nothing to update: give --image, --replicas or --force")
			}
			ctl, err := a.control()
			if err != nil {
				return err
			}
			resp, err := ctl.UpdateService(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout(), args[0])
			if wait.detach {
				return nil
			}
			sv := resp.GetService()
			return a.wait(cmd.Context(), serviceRollout([]*skiffpb.Service{sv}, map[string]uint64{sv.GetSpec().GetName(): resp.GetIndex()}), wait.timeout)
		},
	}
	f := cmd.Flags()
	f.StringVar(&image, "image", "", "Service image tag")
	f.Uint64Var(&replicas, "replicas", 0, "Number of tasks")
	f.BoolVar(&force, "force", false, "Force the update even if no changes require it")
	wait.register(cmd, "until the service converges")
	return cmd
}
