package cli

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	skiffpb "github.com/skiffhq/skiff/proto"
)

func (a *app) nodeCommand() *cobra.Command {
	return groupCommand("node", "Manage the cluster's nodes",
		a.nodeLsCommand(),
		a.nodeInspectCommand(),
		a.nodePsCommand(),
		a.nodeUpdateCommand(),
		a.nodeRmCommand(),
	)
}

// nodeRow is a node as `node ls` and its --format templates see it.
type nodeRow struct {
	ID            string
	Hostname      string
	Status        string
	Availability  string
	ManagerStatus string
	EngineVersion string
	// Self marks the node of the manager the CLI is talking to; the table
	// shows it as a "*" after the ID, as docker does.
	Self bool
}

// nodeListing says how nodes list.
func nodeListing() listing[nodeRow] {
	return listing[nodeRow]{
		columns: []column{
			{"ID", "ID"}, {"Hostname", "HOSTNAME"}, {"Status", "STATUS"}, {"Availability", "AVAILABILITY"},
			{"ManagerStatus", "MANAGER STATUS"}, {"EngineVersion", "ENGINE VERSION"}, {"Self", ""},
		},
		table: "table {{.ID}}{{if .Self}} *{{end}}\t{{.Hostname}}\t{{.Status}}\t{{.Availability}}\t{{.ManagerStatus}}",
		key:   func(r nodeRow) string { return r.ID },
	}
}

// nodeRows builds node ls rows sorted by name; self is the API address of
// the manager that answered.
func nodeRows(nodes []*skiffpb.Node, self string, noTrunc bool) []nodeRow {
	sorted := append([]*skiffpb.Node(nil), nodes...)
	sort.Slice(sorted, func(i, j int) bool { return nodeName(sorted[i]) < nodeName(sorted[j]) })
	rows := make([]nodeRow, len(sorted))
	for i, n := range sorted {
		rows[i] = nodeRow{
			ID:            shortID(n.GetId(), noTrunc),
			Hostname:      nodeName(n),
			Status:        capitalize(enumWord(n.GetStatus().GetState())),
			Availability:  capitalize(enumWord(n.GetSpec().GetAvailability())),
			ManagerStatus: managerStatusWord(n),
			EngineVersion: n.GetDescription().GetEngineVersion(),
			Self:          self != "" && n.GetManagerStatus().GetApiAddr() == self,
		}
	}
	return rows
}

func (a *app) nodeLsCommand() *cobra.Command {
	return view[nodeRow]{
		use:     "ls [OPTIONS]",
		aliases: []string{"list"},
		short:   "List nodes in the cluster",
		args:    noArgs,
		out:     listOutput(nodeListing(), "IDs"),
		fetch: func(cmd *cobra.Command, ctl skiffpb.ControlClient, _ []string, flags listFlags) ([]nodeRow, error) {
			resp, err := ctl.ListNodes(cmd.Context(), &skiffpb.ListNodesRequest{})
			if err != nil {
				return nil, err
			}
			return nodeRows(resp.GetNodes(), a.conn.currentAddr(), flags.noTrunc), nil
		},
	}.command(a)
}

func (a *app) nodeInspectCommand() *cobra.Command {
	return view[*skiffpb.Node]{
		use:   "inspect [OPTIONS] NODE [NODE...]",
		short: "Display detailed information on one or more nodes",
		long:  "Display detailed information on one or more nodes, by name, ID or ID prefix; \"self\" is the node of the manager the CLI talks to.",
		args:  minArgs(1),
		out:   inspectOutput[*skiffpb.Node]("{{.Spec.Availability}}, {{.Status.State}}"),
		fetch: eachArg(func(cmd *cobra.Command, ctl skiffpb.ControlClient, ref string) (*skiffpb.Node, error) {
			if ref == "self" {
				id, err := a.selfNode(cmd.Context(), ctl)
				if err != nil {
					return nil, err
				}
				ref = id
			}
			return ctl.GetNode(cmd.Context(), &skiffpb.GetNodeRequest{Node: ref})
		}),
	}.command(a)
}

func (a *app) nodePsCommand() *cobra.Command {
	return view[taskRow]{
		use:   "ps [OPTIONS] NODE [NODE...]",
		short: "List the tasks on one or more nodes",
		args:  minArgs(1),
		out:   taskOutput(),
		fetch: func(cmd *cobra.Command, ctl skiffpb.ControlClient, args []string, flags listFlags) ([]taskRow, error) {
			var tasks []*skiffpb.Task
			for _, ref := range args {
				ts, err := listTasks(cmd, ctl, flags.filter, &skiffpb.ListTasksRequest{Node: ref})
				if err != nil {
					return nil, err
				}
				tasks = append(tasks, ts...)
			}
			// The services give each task's image.
			services, err := ctl.ListServices(cmd.Context(), &skiffpb.ListServicesRequest{})
			if err != nil {
				return nil, err
			}
			return a.psRows(cmd.Context(), ctl, flags, tasks, services.GetServices())
		},
	}.command(a)
}

// selfNode finds the ID of the node whose manager answers the CLI.
func (a *app) selfNode(ctx context.Context, ctl skiffpb.ControlClient) (string, error) {
	resp, err := ctl.ListNodes(ctx, &skiffpb.ListNodesRequest{})
	if err != nil {
		return "", err
	}
	for _, n := range resp.GetNodes() {
		if n.GetManagerStatus().GetApiAddr() == a.conn.currentAddr() {
			return n.GetId(), nil
		}
	}
	return "", fmt.Errorf("no node has the API address %s that the CLI talks to; name the node instead of \"self\"", a.conn.currentAddr())
}

func (a *app) nodeUpdateCommand() *cobra.Command {
	var (
		availability string
		labelAdd     []string
		labelRm      []string
		wait         waitFlags
	)
	cmd := &cobra.Command{
		Use:   "update [OPTIONS] NODE",
		Short: "Update a node's availability or labels",
		Long: "Update a node's availability or labels.\n\n" +
			"Draining a node moves its tasks to other nodes; unless --detach, the command waits until none is left on it.",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &skiffpb.UpdateNodeRequest{Node: args[0], LabelRm: labelRm}
			if cmd.Flags().Changed("availability") {
				av, err := parseAvailability(availability)
				if err != nil {
					return usageError(cmd, "%v", err)
				}
				req.Availability = &av
			}
			if len(labelAdd) > 0 {
				req.LabelAdd = map[string]string{}
				for _, kv := range labelAdd {
					k, v, _ := strings.Cut(kv, "=")
					if k == "" {
						return usageError(cmd, "invalid label %q: use KEY=VALUE", kv)
					}
					req.LabelAdd[k] = v
				}
			}
			if req.Availability == nil && len(req.LabelAdd) == 0 && len(req.LabelRm) == 0 {
				return usageError(cmd, "nothing to update: give --availability, --label-add or --label-rm")
			}
			ctl, err := a.control()
			if err != nil {
				return err
			}
			n, err := ctl.UpdateNode(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout(), nodeName(n))
			if req.GetAvailability() != skiffpb.NodeAvailability_NODE_AVAILABILITY_DRAIN || wait.detach {
				return nil
			}
			return a.wait(cmd.Context(), drainTarget(n), wait.timeout)
		},
	}
	f := cmd.Flags()
	f.StringVar(&availability, "availability", "", `Availability of the node ("active", "pause", "drain")`)
	f.StringArrayVar(&labelAdd, "label-add", nil, "Add or update a node label (KEY=VALUE)")
	f.StringArrayVar(&labelRm, "label-rm", nil, "Remove a node label if exists")
	wait.register(cmd, "until the drained node's tasks have left it")
	return cmd
}

func parseAvailability(s string) (skiffpb.NodeAvailability, error) {
	switch strings.ToLower(s) {
	case "active":
		return skiffpb.NodeAvailability_NODE_AVAILABILITY_ACTIVE, nil
	case "pause":
		return skiffpb.NodeAvailability_NODE_AVAILABILITY_PAUSE, nil
	case "drain":
		return skiffpb.NodeAvailability_NODE_AVAILABILITY_DRAIN, nil
	}
	return 0, fmt.Errorf("invalid availability %q: use active, pause or drain", s)
}

func (a *app) nodeRmCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm [OPTIONS] NODE [NODE...]",
		Aliases: []string{"remove"},
		Short:   "Remove one or more nodes from the cluster",
		Args:    minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctl, err := a.control()
			if err != nil {
				return err
			}
			for _, ref := range args {
				if _, err := ctl.RemoveNode(cmd.Context(), &skiffpb.RemoveNodeRequest{Node: ref, Force: force}); err != nil {
					return err
				}
				fmt.Fprintln(a.stdout(), ref)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "Force remove a node that is not down (and a manager from Raft)")
	return cmd
}
