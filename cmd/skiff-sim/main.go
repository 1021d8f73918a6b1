// Command skiff-sim runs many simulated agents in one process, for scale
// benchmarks. Each agent is a real agent.Run with its own data dir and its
// own gRPC session to the managers; only the container engine is simulated
// (agent/sim), so everything the managers see is what real agents would
// send them. Each joins the cluster with the worker token as skiff-agent
// does, and holds a certificate of its own.
//
//	skiff-sim --agents 1000 --managers 127.0.0.1:4242,127.0.0.2:4242,127.0.0.3:4242 --token SKFTKN-1-...
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/docker/go-units"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/procfs"
	"github.com/spf13/cobra"

	"github.com/skiffhq/skiff/agent"
	"github.com/skiffhq/skiff/agent/sim"
	"github.com/skiffhq/skiff/ca"
	"github.com/skiffhq/skiff/internal/debugserver"
	"github.com/skiffhq/skiff/internal/logging"
	skiffpb "github.com/skiffhq/skiff/proto"
	"github.com/skiffhq/skiff/version"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "skiff-sim:", err)
		os.Exit(1)
	}
}

// config is skiff-sim's configuration.
type config struct {
	agents     int
	namePrefix string
	managers   []string
	// token is the worker join token; agents whose data dir already holds
	// a certificate need none.
	token         string
	cpus          float64
	memory        string
	dataDir       string
	advertiseAddr string
	metricsAddr   string
	// startRate is how many agents start per second; 0 starts them all at
	// once. A ramp keeps thousands of first registrations from arriving at
	// the leader in the same instant, as they would not on real hosts.
	startRate      float64
	reportInterval time.Duration
}

func newCommand() *cobra.Command {
	var cfg config
	var logFormat, logLevel string
	cmd := &cobra.Command{
		Use:   "skiff-sim --agents N --managers HOST:PORT[,HOST:PORT...] --token TOKEN",
		Short: "Run simulated skiff agents for scale benchmarks",
		Long: "Run N simulated agents in one process. Each holds its own session with the managers " +
			"and runs its tasks in a simulated engine: tasks start at once and run until stopped. " +
			"Each joins the cluster with the worker token, or uses the certificate its data dir kept from an earlier run.",
		Version:       version.Version,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := logging.New(os.Stderr, logFormat, logLevel)
			if err != nil {
				return err
			}
			if cfg.token == "" {
				cfg.token = os.Getenv("SKIFF_JOIN_TOKEN")
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return run(ctx, cfg, logger)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.agents, "agents", 1000, "number of simulated agents")
	f.StringVar(&cfg.namePrefix, "name-prefix", "sim", "node names are this prefix and a zero-padded number")
	f.StringSliceVar(&cfg.managers, "managers", nil, "API addresses (HOST:PORT) of the managers")
	f.StringVar(&cfg.token, "token", "", "worker join token (env SKIFF_JOIN_TOKEN); print it with 'skiff cluster join-token worker'")
	f.Float64Var(&cfg.cpus, "cpus", 4, "CPUs each simulated node reports")
	f.StringVar(&cfg.memory, "memory", "8GiB", "memory each simulated node reports (e.g. 512MiB, 8GiB)")
	f.StringVar(&cfg.dataDir, "data-dir", "", "directory for the agents' data dirs (default: a temporary one, removed on exit)")
	f.StringVar(&cfg.advertiseAddr, "advertise-addr", "127.0.0.1", "address the simulated nodes report")
	f.StringVar(&cfg.metricsAddr, "metrics-addr", "", "IP:PORT to serve Prometheus metrics and pprof on (off when empty)")
	f.Float64Var(&cfg.startRate, "start-rate", 500, "agents started per second (0: all at once)")
	f.DurationVar(&cfg.reportInterval, "report-interval", 10*time.Second, "how often to log progress and memory (0: never)")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&logLevel, "log-level", "warn", "log level: debug, info, warn or error")
	return cmd
}

// run starts the agents and blocks until ctx ends and every agent stopped.
func run(ctx context.Context, cfg config, logger *slog.Logger) error {
	switch {
	case cfg.agents <= 0:
		return fmt.Errorf("--agents %d: give a positive number", cfg.agents)
	case len(cfg.managers) == 0:
		return errors.New("--managers is required: give the API addresses (HOST:PORT) of the managers")
	case cfg.cpus <= 0:
		return fmt.Errorf("--cpus %g: give a positive number", cfg.cpus)
	case cfg.token == "" && cfg.dataDir == "":
		// A temporary data dir holds no certificate from an earlier run.
		return errors.New("--token is required: give the worker join token (or set SKIFF_JOIN_TOKEN); print it with `skiff cluster join-token worker`")
	}
	if cfg.token != "" {
		if _, err := ca.ParseToken(cfg.token); err != nil {
			return fmt.Errorf("--token: %w", err)
		}
	}
	// Binary units whatever the spelling (8G, 8GB, 8GiB), as docker run
	// --memory reads them.
	memory, err := units.RAMInBytes(cfg.memory)
	if err != nil {
		return fmt.Errorf("--memory: %w", err)
	}
	if memory <= 0 {
		return fmt.Errorf("--memory %s: give a positive size such as 512MiB or 8GiB", cfg.memory)
	}
	// Every session is one TCP connection (a reconnect closes the old one
	// first), plus files for logs, metrics and the agents' node-id writes.
	if err := raiseFileLimit(uint64(cfg.agents + 512)); err != nil {
		return err
	}
	dataDir := cfg.dataDir
	if dataDir == "" {
		dataDir, err = os.MkdirTemp("", "skiff-sim-")
		if err != nil {
			return fmt.Errorf("create a data dir: %w", err)
		}
		defer os.RemoveAll(dataDir)
	}

	// An agent that cannot get its certificate aborts the whole run with
	// its reason: a refused token or name would refuse every agent alike,
	// and a benchmark short of agents measures nothing.
	ctx, abort := context.WithCancelCause(ctx)
	defer abort(nil)
	join := newJoiner(cfg.managers, cfg.token)

	resources := &skiffpb.Resources{NanoCpus: int64(math.Round(cfg.cpus * 1e9)), MemoryBytes: memory}
	width := len(strconv.Itoa(cfg.agents))
	// execs is filled in order as agents start; started says how much of it
	// is set, so the metrics handler can read it while the ramp runs.
	execs := make([]*sim.Executor, cfg.agents)
	var started, joined, failed atomic.Int64
	var wg sync.WaitGroup
	if cfg.metricsAddr != "" {
		srv, err := debugserver.Listen(debugserver.Config{
			Addr:    cfg.metricsAddr,
			Metrics: newRegistry(func() []*sim.Executor { return execs[:started.Load()] }, &started, &joined),
			Pprof:   true,
			Logger:  logger,
		})
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ctx); err != nil {
				logger.Error("metrics server stopped", "error", err)
			}
		}()
	}
	var interval time.Duration
	if cfg.startRate > 0 {
		interval = time.Duration(float64(time.Second) / cfg.startRate)
	}
	tick := time.Now()
	for i := 1; i <= cfg.agents && ctx.Err() == nil; i++ {
		name := fmt.Sprintf("%s%0*d", cfg.namePrefix, width, i)
		exec := sim.New(name)
		exec.Resources = resources
		execs[i-1] = exec
		acfg := agent.Config{
			Name:          name,
			DataDir:       filepath.Join(dataDir, name),
			AdvertiseAddr: cfg.advertiseAddr,
			Managers:      cfg.managers,
			Executor:      exec,
			Logger:        logger.With("agent", name),
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The join runs here, not in the ramp, so that the ramp alone
			// paces the agents however long the managers take to answer.
			creds, err := join.creds(ctx, i, acfg)
			if err != nil {
				// Once the run is over, a join cut short is no news.
				if ctx.Err() == nil {
					abort(err)
				}
				return
			}
			joined.Add(1)
			acfg.Creds = creds
			if err := agent.Run(ctx, acfg); err != nil {
				failed.Add(1)
				logger.Error("simulated agent stopped", "agent", name, "error", err)
			}
		}()
		started.Store(int64(i))
		if interval > 0 {
			tick = tick.Add(interval)
			if d := time.Until(tick); d > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(d):
				}
			}
		}
	}
	all := execs[:started.Load()]
	logger.Info("simulated agents started", "agents", len(all), "data_dir", dataDir)

	if cfg.reportInterval > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			report(ctx, cfg.reportInterval, logger, all, &joined, &failed)
		}()
	}
	<-ctx.Done()
	wg.Wait()
	if err := context.Cause(ctx); !errors.Is(err, context.Canceled) {
		return err
	}
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d simulated agents failed; see the log", n)
	}
	return nil
}

// report logs how many tasks run and what the process costs per agent,
// until ctx ends.
func report(ctx context.Context, every time.Duration, logger *slog.Logger, execs []*sim.Executor, joined, failed *atomic.Int64) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		running := 0
		for _, e := range execs {
			running += e.RunningCount()
		}
		rss, err := rssBytes()
		if err != nil {
			logger.Warn("read memory use", "error", err)
		}
		logger.Info("simulated agents", "agents", len(execs), "joined", joined.Load(), "failed", failed.Load(), "tasks_running", running,
			"rss_mib", rss>>20, "rss_kib_per_agent", rss/int64(len(execs))>>10)
	}
}

// raiseFileLimit makes sure the process may hold need open files: it raises
// the soft limit up to the hard one, and the hard one too if the process is
// allowed to.
func raiseFileLimit(need uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("read the open file limit: %w", err)
	}
	if lim.Cur >= need {
		return nil
	}
	want := lim
	want.Cur = max(lim.Cur, min(need, lim.Max))
	if lim.Max < need {
		want.Cur, want.Max = need, need
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
		return nil
	}
	// Not allowed to raise the hard limit: take what there is, if enough.
	want = syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		return fmt.Errorf("raise the open file limit to %d: %w", lim.Max, err)
	}
	if lim.Max < need {
		return fmt.Errorf("the open file limit is %d, and these agents need about %d: raise it (ulimit -Hn) or run fewer agents", lim.Max, need)
	}
	return nil
}

// rssBytes reads the process's resident set size from /proc.
func rssBytes() (int64, error) {
	p, err := procfs.Self()
	if err != nil {
		return 0, fmt.Errorf("find /proc/self: %w", err)
	}
	st, err := p.NewStatus()
	if err != nil {
		return 0, fmt.Errorf("read /proc/self/status: %w", err)
	}
	// procfs leaves a missing field at zero; a running process has pages.
	if st.VmRSS == 0 {
		return 0, errors.New("no VmRSS in /proc/self/status")
	}
	return int64(st.VmRSS), nil
}

// newRegistry gathers the process's metrics and the simulation's: how
// many agents started, how many have their certificate, and how many tasks
// they run. execs returns the executors started so far.
func newRegistry(execs func() []*sim.Executor, started, joined *atomic.Int64) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		prometheus.NewGoCollector(),
		prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "skiff_sim_agents", Help: "Simulated agents started."},
			func() float64 { return float64(started.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "skiff_sim_agents_joined", Help: "Simulated agents that have their certificate."},
			func() float64 { return float64(joined.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "skiff_sim_tasks_running", Help: "Tasks running across the simulated engines."},
			func() float64 {
				n := 0
				for _, e := range execs() {
					n += e.RunningCount()
				}
				return float64(n)
			}),
	)
	return reg
}
