package cli

import (
	"fmt"
	"io"
	"sort"
	"text/tabwriter"

	"github.com/spf13/cobra"

	skiffpb "github.com/skiffhq/skiff/proto"
)

func (a *app) clusterCommand() *cobra.Command {
	return groupCommand("cluster", "Show the cluster's state", a.clusterInfoCommand())
}

func (a *app) clusterInfoCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "info [OPTIONS]",
		Short: "Display the cluster's leader, managers, nodes and version",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctl, err := a.control()
			if err != nil {
				return err
			}
			info, err := ctl.ClusterInfo(cmd.Context(), &skiffpb.ClusterInfoRequest{})
			if err != nil {
				return err
			}
			if format != "" {
				return printInspect(a.stdout(), format, []*skiffpb.ClusterInfoResponse{info})
			}
			return printClusterInfo(a.stdout(), info)
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "Format output using a Go template ({{.Leader}}, {{.ReadyNodes}}), or 'json'")
	return cmd
}

// printClusterInfo writes cluster info as docker's `info` writes its Swarm
// section: a summary, then a table of the managers.
func printClusterInfo(w io.Writer, info *skiffpb.ClusterInfoResponse) error {
	reachable := 0
	for _, m := range info.GetManagers() {
		if m.GetReachability() == skiffpb.Reachability_REACHABILITY_REACHABLE {
			reachable++
		}
	}
	leader := info.GetLeader()
	if leader == "" {
		leader = "none"
	}
	tw := tabwriter.NewWriter(w, 0, 1, 2, ' ', 0)
	fmt.Fprintf(tw, "Cluster ID:\t%s\n", info.GetClusterId())
	fmt.Fprintf(tw, "Leader:\t%s\n", leader)
	fmt.Fprintf(tw, "Managers:\t%d (%d reachable, %d needed for quorum)\n", len(info.GetManagers()), reachable, len(info.GetManagers())/2+1)
	fmt.Fprintf(tw, "Nodes:\t%d ready / %d total\n", info.GetReadyNodes(), info.GetNodes())
	fmt.Fprintf(tw, "Services:\t%d\n", info.GetServices())
	fmt.Fprintf(tw, "Tasks:\t%d\n", info.GetTasks())
	fmt.Fprintf(tw, "Raft:\tterm %d, index %d\n", info.GetRaftTerm(), info.GetRaftIndex())
	fmt.Fprintf(tw, "Version:\t%s\n", info.GetVersion())
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)

	managers := append([]*skiffpb.ManagerInfo(nil), info.GetManagers()...)
	sort.Slice(managers, func(i, j int) bool { return managers[i].GetName() < managers[j].GetName() })
	tw = tabwriter.NewWriter(w, 10, 1, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tRAFT\tSTATUS")
	for _, m := range managers {
		addr := m.GetApiAddr()
		if addr == "" {
			addr = m.GetRaftAddr()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.GetName(), addr, m.GetSuffrage(), managerWord(m.GetLeader(), m.GetReachability()))
	}
	return tw.Flush()
}
