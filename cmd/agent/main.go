// Command skiff-agent runs a skiff agent: it joins the cluster by gossip,
// holds a session with the leading manager, and runs the node's tasks as
// containers of the local Docker engine.
//
// The command wires the agent's seams: the Docker executor, the host's
// overlay network (which is also the executor's Network), and the gossip
// pool, which carries the overlay's records and is the agent's Discovery of
// the managers.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/skiffhq/skiff/agent"
	"github.com/skiffhq/skiff/agent/docker"
	"github.com/skiffhq/skiff/agent/netinit"
	"github.com/skiffhq/skiff/internal/envflag"
	"github.com/skiffhq/skiff/internal/hostaddr"
	"github.com/skiffhq/skiff/internal/logging"
	"github.com/skiffhq/skiff/overlay/host"
	"github.com/skiffhq/skiff/version"
)

func main() {
	// The same binary is the network init of task containers (see package
	// netinit), mounted into them; it must not start an agent there.
	if netinit.IsInit() {
		os.Exit(netinit.Main())
	}
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "skiff-agent:", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var cfg agent.Config
	var join, labels []string
	var gossipPort int
	var dockerHost, logFormat, logLevel, token string
	cmd := &cobra.Command{
		Use:           "skiff-agent --name NAME --data-dir DIR [--advertise-addr IP] --join HOST:PORT",
		Short:         "Run a skiff agent",
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
			seeds := splitList(join)
			cfg.Labels = map[string]string{}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok || k == "" {
					return fmt.Errorf("--label %q: use KEY=VALUE", l)
				}
				cfg.Labels[k] = v
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			if len(seeds) == 0 {
				return errors.New("--join is required: give the gossip address (HOST:PORT) of any manager or agent")
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// Join first: a node the cluster refuses leaves nothing behind
			// on its host, no overlay device and no engine connection.
			if token == "" {
				token = os.Getenv("SKIFF_JOIN_TOKEN")
			}
			id, err := loadIdentity(ctx, cfg, seeds, token, logger)
			if err != nil {
				return err
			}
			vtep, err := netip.ParseAddr(cfg.AdvertiseAddr)
			if err != nil {
				return fmt.Errorf("--advertise-addr %q is not an IP address", cfg.AdvertiseAddr)
			}
			ov, err := host.New(host.Config{Node: cfg.Name, VTEP: vtep, Logger: logger})
			if err != nil {
				return fmt.Errorf("set up the overlay network: %w", err)
			}
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find the agent's own executable, the network init of task containers: %w", err)
			}
			// Ownership labels carry the node name: it is unique in the
			// cluster and known before the first session, so a restarted
			// agent finds its containers even before it reaches a leader.
			exec, err := docker.New(docker.Config{
				Host: dockerHost, Node: cfg.Name, Network: ov, InitPath: self,
				StateDir: filepath.Join(cfg.DataDir, "tasks"), Logger: logger,
			})
			if err != nil {
				return err
			}
			defer exec.Close()
			pool, disc, err := joinGossip(ctx, gossipConfig{
				name: cfg.Name, addr: cfg.AdvertiseAddr, port: gossipPort, join: seeds, keys: id.gossipKeys,
				logger: logger.With("node", cfg.Name),
			}, ov)
			if err != nil {
				return err
			}
			defer func() {
				if err := pool.Shutdown(time.Second); err != nil {
					logger.Debug("gossip shutdown", "error", err)
				}
			}()
			cfg.Executor, cfg.Overlay = exec, ov
			cfg.Discovery = &seedDiscovery{Discovery: disc, ctx: ctx, seeds: seeds, digest: id.caDigest, logger: logger}
			cfg.Keyring = poolKeyring{pool: pool, dataDir: cfg.DataDir}
			cfg.Creds = id.clientCreds()
			return id.run(ctx, cfg, pool, disc, func(ctx context.Context) error { return agent.Run(ctx, cfg) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Name, "name", "", "node name, unique in the cluster (the same as this host's manager, if any)")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the agent's state")
	f.StringVar(&cfg.AdvertiseAddr, "advertise-addr", "", "IP address other hosts reach this one at (default: the first IPv4 address of the default route's interface)")
	f.StringSliceVar(&join, "join", nil, "gossip addresses (HOST:PORT) of any managers or agents")
	f.IntVar(&gossipPort, "gossip-port", 7946, "port of the gossip pool")
	f.StringVar(&token, "token", "", "worker join token, needed only for the first join (env SKIFF_JOIN_TOKEN); print it with: skiff cluster join-token worker")
	f.StringVar(&dockerHost, "docker-host", "unix:///var/run/docker.sock", "Docker engine to run tasks on")
	f.StringArrayVar(&labels, "label", nil, "node label KEY=VALUE, for placement constraints (engine.labels.KEY); repeatable")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "IP:PORT to serve Prometheus metrics on (off when empty)")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

func splitList(values []string) []string {
	var out []string
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
	}
	return out
}
