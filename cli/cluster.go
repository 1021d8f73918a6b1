package cli

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	skiffpb "github.com/skiffhq/skiff/proto"
)

func (a *app) clusterCommand() *cobra.Command {
	return groupCommand("cluster", "Show the cluster's state", a.clusterInfoCommand(), a.joinTokenCommand(), a.clusterUpdateCommand())
}

// joinTokenCommand prints, and rotates, a join token, as `docker swarm
// join-token` does.
func (a *app) joinTokenCommand() *cobra.Command {
	var rotate, quiet bool
	cmd := &cobra.Command{
		Use:   "join-token [OPTIONS] (worker|manager)",
		Short: "Manage join tokens",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			role := args[0]
			if role != "worker" && role != "manager" {
				return fmt.Errorf("unknown role %q: use worker or manager", role)
			}
			ctl, err := a.control()
			if err != nil {
				return err
			}
			// Where the printed command joins, found before a rotation so
			// that a failure here rotates nothing.
			var join string
			if !quiet {
				info, err := ctl.ClusterInfo(cmd.Context(), &skiffpb.ClusterInfoRequest{})
				if err != nil {
					return err
				}
				join = net.JoinHostPort(joinHost(a.conn.currentAddr(), info), "7947")
			}
			resp, err := ctl.JoinTokens(cmd.Context(), &skiffpb.JoinTokensRequest{
				RotateWorker: rotate && role == "worker", RotateManager: rotate && role == "manager",
			})
			if err != nil {
				return err
			}
			token := resp.GetWorker()
			if role == "manager" {
				token = resp.GetManager()
			}
			if quiet {
				fmt.Fprintln(a.stdout(), token)
				return nil
			}
			if rotate {
				fmt.Fprintf(a.stdout(), "Successfully rotated %s join token.\n\n", role)
			}
			// --advertise-addr is left out, as docker's join command
			// leaves it out: it defaults to the joiner's default route.
			if role == "worker" {
				fmt.Fprintf(a.stdout(), "To add a worker to this cluster, run the following command on its host:\n\n    skiff-agent --name NAME --data-dir DIR --join %s --token %s\n\n", join, token)
			} else {
				fmt.Fprintf(a.stdout(), "To add a manager to this cluster, run the following command on its host:\n\n    skiff-manager --name NAME --data-dir DIR --join %s --token %s\n\n", join, token)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&rotate, "rotate", false, "Rotate join token")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "Only display token")
	return cmd
}

// joinHost is the host of the gossip address a join command names: that
// of the manager the CLI reached, which is the one the user knows, unless
// it was reached on loopback (the local address a manager also serves
// on), which means nothing on another host; then the leader's advertised
// address, or any manager's.
func joinHost(current string, info *skiffpb.ClusterInfoResponse) string {
	host, _, err := net.SplitHostPort(current)
	if err != nil {
		host = current
	}
	if ip, err := netip.ParseAddr(host); host != "localhost" && (err != nil || !ip.IsLoopback()) {
		return host
	}
	var other string
	for _, m := range info.GetManagers() {
		// A manager's Raft, API and gossip ports share its advertised
		// address, and the API address is recorded only once it is known.
		addr := m.GetApiAddr()
		if addr == "" {
			addr = m.GetRaftAddr()
		}
		h, _, err := net.SplitHostPort(addr)
		if err != nil {
			continue
		}
		if m.GetLeader() {
			return h
		}
		if other == "" {
			other = h
		}
	}
	if other != "" {
		return other
	}
	return host
}

// clusterUpdateCommand changes cluster-wide settings.
func (a *app) clusterUpdateCommand() *cobra.Command {
	var expiry time.Duration
	var rotateGossipKey bool
	var maxReplicas uint64
	cmd := &cobra.Command{
		Use:   "update [OPTIONS]",
		Short: "Update the cluster's settings",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			setExpiry := cmd.Flags().Changed("cert-expiry")
			setMax := cmd.Flags().Changed("max-replicas")
			if !setExpiry && !rotateGossipKey && !setMax {
				return errors.New("nothing to update: give --cert-expiry, --max-replicas or --rotate-gossip-key")
			}
			if setMax && maxReplicas == 0 {
				return errors.New("--max-replicas must be at least 1")
			}
			ctl, err := a.control()
			if err != nil {
				return err
			}
			if _, err := ctl.UpdateCluster(cmd.Context(), &skiffpb.UpdateClusterRequest{
				CertExpiry: int64(expiry), RotateGossipKey: rotateGossipKey, MaxReplicas: maxReplicas,
			}); err != nil {
				return err
			}
			if setExpiry {
				fmt.Fprintln(a.stdout(), "Cluster updated; certificates issued from now on, renewals included, last", expiry)
			}
			if setMax {
				fmt.Fprintln(a.stdout(), "Cluster updated; a service may have up to", maxReplicas, "replicas")
			}
			if rotateGossipKey {
				fmt.Fprintln(a.stdout(), "Gossip key rotation started: every node installs the new key now, encrypts with it in about 10s, and drops the old one about 10s later.")
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&expiry, "cert-expiry", 0, "Validity period for node certificates (ns|us|ms|s|m|h), for example 2160h")
	cmd.Flags().Uint64Var(&maxReplicas, "max-replicas", 0, "Most replicas one service may have (default 100000)")
	cmd.Flags().BoolVar(&rotateGossipKey, "rotate-gossip-key", false, "Replace the gossip encryption key with a new one, without a pause in gossip")
	return cmd
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
	fmt.Fprintf(tw, "Replicas:\tat most %d per service\n", info.GetMaxReplicas())
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
