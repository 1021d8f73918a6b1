// Command skiff-manager runs a skiff manager: a member of the Raft cluster
// that holds the cluster state, serves the Control API, and, while it leads,
// schedules tasks onto the agents.
package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiffhq/skiff/internal/envflag"
	"github.com/skiffhq/skiff/internal/hostaddr"
	"github.com/skiffhq/skiff/internal/logging"
	"github.com/skiffhq/skiff/manager"
	"github.com/skiffhq/skiff/version"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "skiff-manager:", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var cfg manager.Config
	var join []string
	var logFormat, logLevel string
	cmd := &cobra.Command{
		Use:           "skiff-manager --name NAME --data-dir DIR [--advertise-addr IP]",
		Short:         "Run a skiff manager",
		Version:       version.Version,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := envflag.Apply(cmd.Flags()); err != nil {
				return err
			}
			logger, err := logging.New(os.Stderr, logFormat, logLevel)
			if err != nil {
				return err
			}
			cfg.Logger = logger
			if cfg.AdvertiseAddr, err = hostaddr.Advertise(cfg.AdvertiseAddr, logger); err != nil {
				return err
			}
			cfg.LocalAPIAddr = localAPIAddr(cfg.AdvertiseAddr, cfg.APIPort)
			for _, j := range join {
				for _, part := range strings.Split(j, ",") {
					if part = strings.TrimSpace(part); part != "" {
						cfg.Join = append(cfg.Join, part)
					}
				}
			}
			if cfg.Token == "" {
				cfg.Token = os.Getenv("SKIFF_JOIN_TOKEN")
			}
			if cmd.Flags().Changed("cert-expiry") && len(cfg.Join) > 0 {
				// Only the manager that creates the cluster sets the
				// lifetime; a joiner's flag would otherwise do nothing.
				logger.Warn("--cert-expiry applies only when a manager creates a cluster; change it with `skiff cluster update --cert-expiry`", "cert_expiry", cfg.CertExpiry)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return manager.Run(ctx, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Name, "name", "", "node name, unique in the cluster (the same as this host's agent)")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the Raft log and snapshots")
	f.StringVar(&cfg.AdvertiseAddr, "advertise-addr", "", "IP address other hosts reach this manager at (default: the first IPv4 address of the default route's interface)")
	f.IntVar(&cfg.APIPort, "api-port", 4242, "port of the Control and Dispatcher gRPC APIs")
	f.IntVar(&cfg.RaftPort, "raft-port", 4243, "port of the Raft transport")
	f.IntVar(&cfg.GossipPort, "gossip-port", 7947, "port of the gossip pool")
	f.StringSliceVar(&join, "join", nil, "gossip addresses (HOST:PORT) of existing members, to join their cluster")
	f.StringVar(&cfg.Token, "token", "", "manager join token, needed only for the first join (env SKIFF_JOIN_TOKEN); print it with: skiff cluster join-token manager")
	f.DurationVar(&cfg.CertExpiry, "cert-expiry", 2160*time.Hour, "lifetime of node certificates, for a cluster this manager creates")
	f.StringVar(&cfg.DefaultAddrPool, "default-addr-pool", "10.0.0.0/8", "CIDR that overlay network subnets are drawn from")
	f.IntVar(&cfg.SubnetSize, "default-addr-pool-mask-length", 24, "prefix length of each overlay network's subnet")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "IP:PORT to serve Prometheus metrics on (off when empty)")
	f.StringVar(&cfg.PprofAddr, "pprof-addr", "", "IP:PORT to serve Go's profiler (/debug/pprof/) on, for performance work (off when empty)")
	f.DurationVar(&cfg.HeartbeatPeriod, "heartbeat-period", 0, "how often agents heartbeat (default 500ms)")
	f.DurationVar(&cfg.DownGrace, "node-down-grace", 0, "how long a node may miss heartbeats before it is Down (default 4 heartbeats)")
	f.DurationVar(&cfg.RaftHeartbeatTimeout, "raft-heartbeat-timeout", 0, "how long a follower waits for the leader before calling an election, and a leader for a quorum before stepping down (default 500ms; raise it on overloaded hosts)")
	f.DurationVar(&cfg.RaftElectionTimeout, "raft-election-timeout", 0, "how long a candidate waits for votes (default 500ms)")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

// localAPIAddr is where the manager also serves its API so that the CLI on
// this host reaches it with no --manager: loopback, where the CLI looks by
// default, at the API port. There is none when the API is already served
// on a loopback or wildcard address, which a second listener would clash
// with, or, for several managers on one host (bench/scale gives each its
// own 127.0.0.x), steal another manager's port.
func localAPIAddr(advertise string, apiPort int) string {
	ip, err := netip.ParseAddr(advertise)
	if err != nil || ip.IsLoopback() || ip.IsUnspecified() {
		return ""
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(apiPort))
}
