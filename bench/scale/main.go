// Command scale is skiff's scale benchmark without Docker. It starts three
// real skiff-manager processes on loopback addresses (real Raft on disk in a
// temporary directory), one skiff-sim process with N simulated agents (each
// its own certificate and gRPC session), deploys a stack whose services
// total T replicas with `skiff stack deploy --detach`, and measures how long
// it takes until every task runs, and what the processes cost meanwhile.
// It talks to the cluster as its admin, with the bundle the first manager
// writes, and joins the others with the join tokens it then asks for.
//
//	go run ./bench/scale --bin bin --agents 1000 --tasks 100000 --out bench/out/scale.md
//
// With --leader-kill it then SIGKILLs the leader and measures the election,
// every agent's reconnect (a full TLS handshake each) to the new leader, the
// CPU that costs, and that no task moved (leaderkill.go).
//
// The result is one row of a markdown table appended to --out; progress,
// the processes' logs and the leader's CPU and heap profiles go next to it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/skiffhq/skiff/ca"
	"github.com/skiffhq/skiff/manager"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// options are the benchmark's flags.
type options struct {
	bin         string
	out         string
	workDir     string
	keep        bool
	agents      int
	tasks       int
	services    int
	budget      time.Duration
	heartbeat   time.Duration
	raftTimeout time.Duration
	startRate   float64
	profile     time.Duration
	pollEvery   time.Duration
	quietWait   time.Duration
	// leaderKill adds the leader-kill phase (leaderkill.go) once every
	// task runs; killTimeout bounds its waits.
	leaderKill  bool
	killTimeout time.Duration
	killProfile time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin", "directory holding skiff, skiff-manager and skiff-sim")
	flag.StringVar(&o.out, "out", "bench/out/scale.md", "markdown file to append the result row to; profiles and logs go next to it")
	flag.StringVar(&o.workDir, "work-dir", "", "directory for the managers' data dirs (default: a temporary one)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work dir after the run")
	flag.IntVar(&o.agents, "agents", 1000, "simulated agents")
	flag.IntVar(&o.tasks, "tasks", 100000, "replicas in total, spread evenly over the services")
	flag.IntVar(&o.services, "services", 10, "services in the stack")
	flag.DurationVar(&o.budget, "budget", 10*time.Minute, "how long to wait for every task to run before recording how far it got")
	flag.DurationVar(&o.heartbeat, "heartbeat-period", 0, "agents' heartbeat period, passed to the managers (default: theirs)")
	flag.DurationVar(&o.raftTimeout, "raft-timeout", 0, "the managers' Raft heartbeat and election timeouts (default: theirs)")
	flag.Float64Var(&o.startRate, "start-rate", 1000, "simulated agents started per second")
	flag.DurationVar(&o.profile, "profile", 30*time.Second, "length of the leader's CPU profile, taken from the deploy on (0: none)")
	flag.DurationVar(&o.pollEvery, "poll", 250*time.Millisecond, "how often to count running tasks and sample memory")
	flag.DurationVar(&o.quietWait, "quiet-wait", 2*time.Minute, "how long to wait for the machine to be idle before starting (other load skews every figure)")
	flag.BoolVar(&o.leaderKill, "leader-kill", false, "once every task runs, SIGKILL the leader and measure the election, every agent's reconnect to the new leader, its CPU meanwhile, and the tasks that moved")
	flag.DurationVar(&o.killTimeout, "leader-kill-timeout", 2*time.Minute, "how long the leader-kill phase waits for a new leader and for every agent to reconnect to it")
	flag.DurationVar(&o.killProfile, "leader-kill-profile", 0, "length of the survivors' CPU profiles, taken from the leader's kill on (0: none); profiling adds to the CPU measured")
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, logger); err != nil {
		logger.Error("scale benchmark failed", "error", err)
		os.Exit(1)
	}
}

// managerAddrs are the loopback addresses the three managers run on. They
// are outside 127.0.0.1, so a manager a developer runs locally with the
// default ports does not collide with them.
var managerAddrs = [3]string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}

const (
	apiPort     = 4242
	raftPort    = 4243
	gossipPort  = 7947
	pprofPort   = 6060
	metricsPort = 9090
	// simMetrics is where skiff-sim serves its metrics and pprof.
	simMetrics = "127.0.0.1:6070"
)

// result is what one run measured.
type result struct {
	agents, tasks  int
	registered     time.Duration // from skiff-sim's start until every node was Ready
	converged      time.Duration // from the deploy until every task ran; 0 if it did not
	running        int           // tasks running at the end
	at             time.Duration // when running was counted, from the deploy
	milestones     []milestone
	leaderPeakRSS  int64
	otherPeakRSS   int64         // the larger of the followers' peaks
	otherCPU       time.Duration // the larger of the followers' CPU times
	leaderEndRSS   int64
	simPeakRSS     int64
	leaderCPU      time.Duration
	simCPU         time.Duration
	leaderName     string
	profile, heap  string
	deployDuration time.Duration
	// busyBefore is how busy the machine was before the run, in percent.
	busyBefore int
	// raftTimeout is the managers' Raft heartbeat and election timeout;
	// zero for their default.
	raftTimeout time.Duration
	// kill is what the leader-kill phase measured; nil if it did not run.
	kill *killResult
}

type milestone struct {
	percent int
	at      time.Duration
}

func run(ctx context.Context, o options, logger *slog.Logger) error {
	if o.services <= 0 || o.tasks < o.services || o.agents <= 0 {
		return fmt.Errorf("need agents > 0 and tasks ≥ services > 0 (agents %d, tasks %d, services %d)", o.agents, o.tasks, o.services)
	}
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return fmt.Errorf("resolve --bin: %w", err)
	}
	for _, name := range []string{"skiff", "skiff-manager", "skiff-sim"} {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			return fmt.Errorf("%s is missing from %s: build it first (bench/run scale does): %w", name, bin, err)
		}
	}
	outDir := filepath.Dir(o.out)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return fmt.Errorf("create the output dir: %w", err)
	}
	work := o.workDir
	if work == "" {
		if work, err = os.MkdirTemp("", "skiff-scale-"); err != nil {
			return fmt.Errorf("create a work dir: %w", err)
		}
	}
	if !o.keep {
		defer os.RemoveAll(work)
	}
	tag := fmt.Sprintf("%dx%d", o.agents, o.tasks)
	logDir := filepath.Join(outDir, "scale-"+tag+"-logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return fmt.Errorf("create the log dir: %w", err)
	}
	logger.Info("scale benchmark", "agents", o.agents, "tasks", o.tasks, "services", o.services, "work_dir", work, "logs", logDir)
	busy := waitQuiet(ctx, o.quietWait, logger)

	if err := portsFree(); err != nil {
		return err
	}
	var procs processes
	defer procs.stopAll(logger)

	// Managers: the first creates the cluster, with its CA and the admin
	// bundle; the others join it by gossip with the manager token, which
	// only the admin can ask for.
	managerAPI := make([]string, len(managerAddrs))
	for i, addr := range managerAddrs {
		managerAPI[i] = net.JoinHostPort(addr, strconv.Itoa(apiPort))
	}
	startManager := func(i int, token string) error {
		name, addr := fmt.Sprintf("m%d", i+1), managerAddrs[i]
		args := []string{
			"--name", name, "--data-dir", filepath.Join(work, name), "--advertise-addr", addr,
			"--pprof-addr", net.JoinHostPort(addr, strconv.Itoa(pprofPort)), "--log-level", "warn",
			"--metrics-addr", net.JoinHostPort(addr, strconv.Itoa(metricsPort)),
		}
		if i > 0 {
			args = append(args, "--join", net.JoinHostPort(managerAddrs[0], strconv.Itoa(gossipPort)), "--token", token)
		}
		if o.raftTimeout > 0 {
			args = append(args, "--raft-heartbeat-timeout", o.raftTimeout.String(), "--raft-election-timeout", o.raftTimeout.String())
		}
		if o.heartbeat > 0 {
			args = append(args, "--heartbeat-period", o.heartbeat.String())
		}
		_, err := procs.start(name, filepath.Join(bin, "skiff-manager"), args, logDir)
		return err
	}
	if err := startManager(0, ""); err != nil {
		return err
	}
	adminDir := manager.AdminDir(filepath.Join(work, "m1"))
	admin, err := waitAdmin(ctx, &procs, adminDir)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(managerAPI[0], grpc.WithTransportCredentials(admin),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", managerAPI[0], err)
	}
	defer conn.Close()
	ctl := skiffpb.NewControlClient(conn)
	var tokens *skiffpb.JoinTokensResponse
	if err := poll(ctx, time.Minute, func() error {
		if err := procs.check(); err != nil {
			return stopPolling{err}
		}
		info, err := ctl.ClusterInfo(ctx, &skiffpb.ClusterInfoRequest{})
		if err != nil {
			return err
		}
		if info.GetLeader() == "" {
			return errors.New("no leader yet")
		}
		tokens, err = ctl.JoinTokens(ctx, &skiffpb.JoinTokensRequest{})
		return err
	}); err != nil {
		return fmt.Errorf("wait for m1 to lead and give the join tokens: %w", err)
	}
	for i := 1; i < len(managerAddrs); i++ {
		if err := startManager(i, tokens.GetManager()); err != nil {
			return err
		}
	}
	if err := poll(ctx, time.Minute, func() error {
		if err := procs.check(); err != nil {
			return stopPolling{err}
		}
		info, err := ctl.ClusterInfo(ctx, &skiffpb.ClusterInfoRequest{})
		if err != nil {
			return err
		}
		if info.GetLeader() == "" || len(info.GetManagers()) != len(managerAddrs) {
			return fmt.Errorf("leader %q, %d managers", info.GetLeader(), len(info.GetManagers()))
		}
		return nil
	}); err != nil {
		return fmt.Errorf("wait for the managers: %w", err)
	}
	logger.Info("managers are up")

	res := result{agents: o.agents, tasks: o.tasks, busyBefore: busy, raftTimeout: o.raftTimeout}
	simStart := time.Now()
	simArgs := []string{
		"--agents", strconv.Itoa(o.agents), "--managers", strings.Join(managerAPI, ","),
		"--data-dir", filepath.Join(work, "agents"), "--start-rate", strconv.FormatFloat(o.startRate, 'f', -1, 64),
		"--log-level", "info", "--report-interval", "10s", "--metrics-addr", simMetrics,
		"--token", tokens.GetWorker(),
	}
	simProc, err := procs.start("skiff-sim", filepath.Join(bin, "skiff-sim"), simArgs, logDir)
	if err != nil {
		return err
	}
	var readyNodes uint64
	if err := poll(ctx, 10*time.Minute, func() error {
		if err := procs.check(); err != nil {
			return stopPolling{err}
		}
		info, err := ctl.ClusterInfo(ctx, &skiffpb.ClusterInfoRequest{})
		if err != nil {
			return err
		}
		readyNodes = info.GetReadyNodes()
		if readyNodes < uint64(o.agents) {
			return fmt.Errorf("%d of %d nodes ready", readyNodes, o.agents)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("wait for the simulated nodes: %w", err)
	}
	res.registered = time.Since(simStart)
	logger.Info("simulated nodes ready", "nodes", readyNodes, "after", res.registered.Round(time.Millisecond))

	info, err := ctl.ClusterInfo(ctx, &skiffpb.ClusterInfoRequest{})
	if err != nil {
		return fmt.Errorf("find the leader: %w", err)
	}
	res.leaderName = info.GetLeader()
	leader := procs.byName(res.leaderName)
	if leader == nil {
		return fmt.Errorf("the leader %q is not one of the managers started", res.leaderName)
	}
	leaderIdx, _ := strconv.Atoi(strings.TrimPrefix(res.leaderName, "m"))
	leaderPprof := "http://" + net.JoinHostPort(managerAddrs[leaderIdx-1], strconv.Itoa(pprofPort))

	composeFile := filepath.Join(work, "stack.yml")
	if err := os.WriteFile(composeFile, []byte(composeYAML(o.services, o.tasks)), 0o644); err != nil {
		return fmt.Errorf("write the compose file: %w", err)
	}
	deployStart := time.Now()
	var profileDone, simProfileDone <-chan error
	if o.profile > 0 {
		q := "/debug/pprof/profile?seconds=" + strconv.Itoa(int(o.profile.Seconds()))
		res.profile = filepath.Join(outDir, "scale-"+tag+"-leader.cpu.pprof")
		profileDone = fetchAsync(ctx, leaderPprof+q, res.profile)
		simProfileDone = fetchAsync(ctx, "http://"+simMetrics+q, filepath.Join(outDir, "scale-"+tag+"-sim.cpu.pprof"))
	}
	leaderMetrics := "http://" + net.JoinHostPort(managerAddrs[leaderIdx-1], strconv.Itoa(metricsPort)) + "/metrics"
	deploy := exec.CommandContext(ctx, filepath.Join(bin, "skiff"), "--manager", strings.Join(managerAPI, ","),
		"--tls-dir", adminDir, "stack", "deploy", "--detach", "-c", composeFile, "bench")
	if out, err := deploy.CombinedOutput(); err != nil {
		return fmt.Errorf("skiff stack deploy: %w: %s", err, out)
	}
	res.deployDuration = time.Since(deployStart)
	logger.Info("stack deployed", "services", o.services, "replicas", o.tasks, "took", res.deployDuration.Round(time.Millisecond))

	// Count running tasks and sample memory until every task runs or the
	// budget is spent.
	next := 10
	deadline := deployStart.Add(o.budget)
	tick := time.NewTicker(o.pollEvery)
	defer tick.Stop()
	lastLog := time.Now()
	for {
		if err := procs.check(); err != nil {
			return err
		}
		running, err := countRunning(ctx, ctl)
		now := time.Since(deployStart)
		if err != nil {
			logger.Warn("count running tasks", "error", err)
		} else {
			res.running, res.at = running, now
			for next <= 100 && running*100 >= next*o.tasks {
				res.milestones = append(res.milestones, milestone{percent: next, at: now})
				next += 10
			}
		}
		if time.Since(lastLog) >= 5*time.Second || res.running >= o.tasks {
			logger.Info("progress", "t", now.Round(100*time.Millisecond), "running", res.running, "of", o.tasks,
				"leader_rss_mib", rss(leader.pid())>>20, "sim_rss_mib", rss(simProc.pid())>>20,
				"leader_task_states", taskStates(ctx, leaderMetrics))
			lastLog = time.Now()
		}
		if res.running >= o.tasks {
			res.converged = now
			break
		}
		if time.Now().After(deadline) {
			logger.Warn("budget spent before every task ran", "running", res.running, "of", o.tasks)
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}

	if profileDone != nil {
		if err := <-profileDone; err != nil {
			logger.Warn("leader CPU profile", "error", err)
			res.profile = ""
		}
		if err := <-simProfileDone; err != nil {
			logger.Warn("skiff-sim CPU profile", "error", err)
		}
	}
	res.heap = filepath.Join(outDir, "scale-"+tag+"-leader.heap.pprof")
	if err := <-fetchAsync(ctx, leaderPprof+"/debug/pprof/heap?gc=1", res.heap); err != nil {
		logger.Warn("leader heap profile", "error", err)
		res.heap = ""
	}
	res.leaderEndRSS = rss(leader.pid())
	for _, p := range procs.list {
		peak := peakRSS(p.pid())
		switch {
		case p == leader:
			res.leaderPeakRSS = peak
			res.leaderCPU = cpuTime(p.pid())
		case p == simProc:
			res.simPeakRSS = peak
			res.simCPU = cpuTime(p.pid())
		default:
			res.otherPeakRSS = max(res.otherPeakRSS, peak)
			res.otherCPU = max(res.otherCPU, cpuTime(p.pid()))
		}
	}
	// The leader-kill phase comes after every figure above is taken, so
	// that they are the same with it as without it.
	switch {
	case !o.leaderKill:
	case res.converged == 0:
		logger.Warn("not every task runs: skipping the leader kill")
	default:
		res.kill, err = leaderKill(ctx, killSetup{
			procs: &procs, sim: simProc, admin: admin, agents: o.agents, timeout: o.killTimeout,
			profile: o.killProfile, profilePrefix: filepath.Join(outDir, "scale-"+tag+"-reconnect-"), logger: logger,
		})
		if err != nil {
			return fmt.Errorf("leader kill: %w", err)
		}
	}
	if err := appendRow(o.out, res); err != nil {
		return err
	}
	logger.Info("result", "row", row(res), "busy_before_percent", res.busyBefore, "leader", res.leaderName, "leader_end_rss_mib", res.leaderEndRSS>>20, "follower_cpu", res.otherCPU,
		"deploy_call", res.deployDuration.Round(time.Millisecond), "cpu_profile", res.profile, "heap_profile", res.heap)
	return nil
}

// waitAdmin waits for the admin bundle the first manager writes to dir when
// it creates the cluster, and returns the credentials it makes.
func waitAdmin(ctx context.Context, procs *processes, dir string) (credentials.TransportCredentials, error) {
	var creds credentials.TransportCredentials
	err := poll(ctx, time.Minute, func() error {
		if err := procs.check(); err != nil {
			return stopPolling{err}
		}
		// The manager writes the bundle's files one by one: read them all,
		// not merely cert.pem, before taking the bundle.
		b, err := ca.ReadBundle(dir)
		if err != nil {
			return err
		}
		creds, err = b.ClientCredentials(ca.RoleManager)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("wait for the admin credentials in %s: %w", dir, err)
	}
	return creds, nil
}

// waitQuiet waits up to timeout for the machine's CPUs to be at most 20%
// busy, and returns how busy they were when it stopped waiting.
func waitQuiet(ctx context.Context, timeout time.Duration, logger *slog.Logger) int {
	deadline := time.Now().Add(timeout)
	for {
		busy := cpuBusy()
		if busy <= 20 || time.Now().After(deadline) || ctx.Err() != nil {
			if busy > 20 {
				logger.Warn("the machine is busy before the run; other load will skew the figures", "busy_percent", busy)
			}
			return busy
		}
		logger.Info("waiting for the machine to be idle", "busy_percent", busy)
		time.Sleep(4 * time.Second)
	}
}

// cpuBusy measures the machine's busy percentage over one second.
func cpuBusy() int {
	// procfs divides the kernel's clock ticks by USER_HZ (100) into float
	// seconds; rounding them back to whole ticks lets the percentage below
	// truncate exactly, not a hair under a whole number.
	ticks := func(s float64) int64 { return int64(math.Round(s * 100)) }
	read := func() (busy, total int64) {
		fs, err := procfs.NewDefaultFS()
		if err != nil {
			return 0, 0
		}
		st, err := fs.Stat()
		if err != nil {
			return 0, 0
		}
		c := st.CPUTotal
		busy = ticks(c.User) + ticks(c.Nice) + ticks(c.System) + ticks(c.IRQ) + ticks(c.SoftIRQ) +
			ticks(c.Steal) + ticks(c.Guest) + ticks(c.GuestNice)
		return busy, busy + ticks(c.Idle) + ticks(c.Iowait)
	}
	b0, t0 := read()
	time.Sleep(time.Second)
	b1, t1 := read()
	if t1 <= t0 {
		return 0
	}
	return int(100 * (b1 - b0) / (t1 - t0))
}

// portsFree checks that nothing listens where the benchmark's processes
// will: a cluster left over from an earlier run would answer in their place.
func portsFree() error {
	addrs := []string{simMetrics}
	for _, a := range managerAddrs {
		for _, port := range []int{apiPort, raftPort, gossipPort, pprofPort, metricsPort} {
			addrs = append(addrs, net.JoinHostPort(a, strconv.Itoa(port)))
		}
	}
	for _, addr := range addrs {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s is taken (a cluster left over from an earlier run?): %w", addr, err)
		}
		l.Close()
	}
	return nil
}

// composeYAML is a stack of services replicas in total, on one network
// whose subnet has room for all of them and for every node's own address.
func composeYAML(services, tasks int) string {
	var b strings.Builder
	b.WriteString("# Generated by bench/scale.\nservices:\n")
	for i := range services {
		n := tasks / services
		if i < tasks%services {
			n++
		}
		fmt.Fprintf(&b, "  web%d:\n    image: skiff-test/web:latest\n    deploy:\n      replicas: %d\n", i, n)
	}
	// A /10 holds four million addresses: every task and node of the
	// largest run, with room for the allocator's round robin.
	b.WriteString("networks:\n  default:\n    ipam:\n      config:\n        - subnet: 10.64.0.0/10\n")
	return b.String()
}

// countRunning sums the running tasks of every service.
func countRunning(ctx context.Context, ctl skiffpb.ControlClient) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := ctl.ListServices(ctx, &skiffpb.ListServicesRequest{})
	if err != nil {
		return 0, fmt.Errorf("list services: %w", err)
	}
	n := 0
	for _, sv := range resp.GetServices() {
		n += int(sv.GetStatus().GetRunningTasks())
	}
	return n, nil
}

// taskStates summarises the leader's skiff_tasks gauge: how many tasks are
// in each state, for the progress log. It returns "" when the metrics cannot
// be read; they are only a diagnostic.
func taskStates(ctx context.Context, url string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return ""
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return ""
	}
	var parts []string
	for line := range strings.SplitSeq(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, `skiff_tasks{state="TASK_STATE_`)
		if !ok {
			continue
		}
		state, count, ok := strings.Cut(rest, `"} `)
		if ok {
			parts = append(parts, strings.ToLower(state)+"="+count)
		}
	}
	return strings.Join(parts, " ")
}

// stopPolling makes poll give up at once.
type stopPolling struct{ err error }

func (b stopPolling) Error() string { return b.err.Error() }

// poll calls f every 250 ms until it succeeds, ctx ends or timeout passes,
// or f returns a stopPolling.
func poll(ctx context.Context, timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		var stop stopPolling
		if errors.As(err, &stop) {
			return stop.err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// fetchAsync downloads url into path in the background.
func fetchAsync(ctx context.Context, url, path string) <-chan error {
	done := make(chan error, 1)
	go func() {
		done <- fetch(ctx, url, path)
	}()
	return done
}

func fetch(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("save %s: %w", url, err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("save %s: %w", url, err)
	}
	return f.Close()
}

// processes are the child processes of a run.
type processes struct{ list []*process }

type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	// done is closed when the process has exited, with err set.
	done chan struct{}
	err  error
	// expectExit is set when the benchmark kills the process on purpose:
	// its exit is then no failure.
	expectExit bool
}

// check returns an error, with the tail of the log, if the process has
// exited: a benchmark whose manager or agents died must not wait for them.
func (p *process) check() error {
	if p.expectExit {
		return nil
	}
	select {
	case <-p.done:
	default:
		return nil
	}
	tail, _ := os.ReadFile(p.logPath)
	if len(tail) > 2000 {
		tail = tail[len(tail)-2000:]
	}
	return fmt.Errorf("%s exited (%v); the end of its log:\n%s", p.name, p.err, tail)
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// start runs bin with its output in logDir/name.log.
func (ps *processes) start(name, bin string, args []string, logDir string) (*process, error) {
	logFile, err := os.Create(filepath.Join(logDir, name+".log"))
	if err != nil {
		return nil, fmt.Errorf("create the log of %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Should the benchmark itself be killed, its children go with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logFile.Name(), done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	ps.list = append(ps.list, p)
	return p, nil
}

// check returns the first process that exited, as an error.
func (ps *processes) check() error {
	for _, p := range ps.list {
		if err := p.check(); err != nil {
			return err
		}
	}
	return nil
}

func (ps *processes) byName(name string) *process {
	for _, p := range ps.list {
		if p.name == name {
			return p
		}
	}
	return nil
}

// stopAll stops the processes in reverse order of their start: SIGTERM,
// then SIGKILL for any that has not exited after a grace.
func (ps *processes) stopAll(logger *slog.Logger) {
	for i := len(ps.list) - 1; i >= 0; i-- {
		p := ps.list[i]
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			logger.Warn("stop process", "name", p.name, "error", err)
		}
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			logger.Warn("process ignored SIGTERM; killing it", "name", p.name)
			if err := p.cmd.Process.Kill(); err != nil {
				logger.Warn("kill process", "name", p.name, "error", err)
			}
			<-p.done
		}
	}
}

// procStatus reads a process's /proc/PID/status; a process that is gone
// reads as all zeros, which the figures show as 0 rather than failing a
// run that has measured everything else.
func procStatus(pid int) procfs.ProcStatus {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return procfs.ProcStatus{}
	}
	st, err := p.NewStatus()
	if err != nil {
		return procfs.ProcStatus{}
	}
	return st
}

// rss is a process's resident set size now; peakRSS the largest it has
// been (the kernel's high-water mark).
func rss(pid int) int64     { return int64(procStatus(pid).VmRSS) }
func peakRSS(pid int) int64 { return int64(procStatus(pid).VmHWM) }

// cpuTime is the user and system CPU time a process has used.
func cpuTime(pid int) time.Duration {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0
	}
	st, err := p.Stat()
	if err != nil {
		return 0
	}
	// procfs counts in clock ticks of 1/100 s (USER_HZ, the same on every
	// platform Go supports); whole ticks keep the figure exact where
	// CPUTime's float seconds would not.
	return time.Duration(st.UTime+st.STime) * 10 * time.Millisecond
}

// tableHeader is the table's header, after a note on the leader-kill
// columns, which show "–" for a run without --leader-kill.
const tableHeader = `The last five columns are the leader-kill phase (--leader-kill): once every task runs, the leader is SIGKILLed. ` +
	`Times are from the kill until a surviving manager names a new leader (ClusterInfo), and until the new leader holds a session ` +
	`with 90% and with every agent (its skiff_dispatcher_sessions gauge). CPU is what each process used from the kill until every ` +
	`agent had reconnected; in parentheses, what it uses over as long a time once settled (heartbeats, the benchmark's polling of ` +
	`the gauge; measured over 10–20 s and scaled), so the difference is the reconnect's own cost, unless the new leader was still ` +
	`moving tasks then. skiff has no TLS session resumption: every reconnect is a full TLS 1.3 handshake ` +
	`(ECDHE, ECDSA P-256 certificates verified on both sides), and an agent registers with every manager it knows at once, so the ` +
	`other survivor handshakes too, to redirect it. There is no mode without TLS to compare with. Tasks moved: of the tasks running ` +
	`before the kill, those not running on the same node with the same desired state once settled (target 0), and tasks created since.

| agents | tasks | Raft timeouts | nodes Ready after | deploy → all RUNNING | running at end | 50% / 90% RUNNING | leader peak RSS | follower peak RSS | skiff-sim peak RSS (per agent) | leader CPU | skiff-sim CPU | machine busy before | leader kill → new leader | → 90% / all agents on it | new leader CPU meanwhile (settled) | other manager / skiff-sim CPU meanwhile (skiff-sim settled) | tasks moved |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
`

// appendRow adds the result to the markdown table in path, creating the
// file with its header when it does not exist.
func appendRow(path string, r result) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	st, err := f.Stat()
	if err == nil && st.Size() == 0 {
		_, err = f.WriteString(tableHeader)
	}
	if err == nil {
		_, err = f.WriteString(row(r) + "\n")
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func row(r result) string {
	converged := "not within budget"
	if r.converged > 0 {
		converged = secs(r.converged)
	}
	marks := map[int]string{50: "–", 90: "–"}
	for _, m := range r.milestones {
		if _, ok := marks[m.percent]; ok {
			marks[m.percent] = secs(m.at)
		}
	}
	raft := "500ms (default)"
	if r.raftTimeout > 0 {
		raft = r.raftTimeout.String()
	}
	return fmt.Sprintf("| %d | %d | %s | %s | %s | %d (%.1f%%) at %s | %s / %s | %s | %s | %s (%s) | %s | %s | %d%% | %s |",
		r.agents, r.tasks, raft, secs(r.registered), converged, r.running, 100*float64(r.running)/float64(r.tasks), secs(r.at),
		marks[50], marks[90], mib(r.leaderPeakRSS), mib(r.otherPeakRSS),
		mib(r.simPeakRSS), kib(r.simPeakRSS/int64(r.agents)), secs(r.leaderCPU), secs(r.simCPU), r.busyBefore,
		strings.Join(killCells(r.kill), " | "))
}

// killCells are the leader-kill columns of a row.
func killCells(k *killResult) []string {
	if k == nil {
		return []string{"–", "–", "–", "–", "–"}
	}
	if k.elected == 0 {
		return []string{k.failure, "–", "–", "–", "–"}
	}
	// Two decimals: an election takes about a second.
	at := func(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + " s" }
	elected := at(k.elected) + " (" + strings.Join(append([]string{k.oldLeader, k.newLeader}, k.reElected...), " → ") + ")"
	if k.failure != "" {
		// The wait for the agents ran out: what was reached, and the CPU
		// until then, without a settled window to compare with.
		agents := k.failure
		if k.reconnected90 > 0 {
			agents = at(k.reconnected90) + " / " + agents
		}
		return []string{elected, agents, at(k.leaderCPU), at(k.otherCPU) + " / " + at(k.simCPU), movedCell(k)}
	}
	agents := at(k.reconnected90) + " / " + at(k.reconnected)
	if k.minSteadySessions < k.sessions {
		// Sessions lost once every agent had one: agents dropped again.
		agents += fmt.Sprintf(" (then fell to %d)", k.minSteadySessions)
	}
	return []string{
		elected, agents,
		at(k.leaderCPU) + " (" + at(k.steadyLeaderCPU) + ")",
		at(k.otherCPU) + " / " + at(k.simCPU) + " (" + at(k.steadySimCPU) + ")",
		movedCell(k),
	}
}

// movedCell is the tasks-moved column: how many of the tasks compared
// moved, and how many were created since the kill.
func movedCell(k *killResult) string {
	moved := fmt.Sprintf("%d of %d", k.moved, k.compared)
	if k.added > 0 {
		moved += fmt.Sprintf(", %d new", k.added)
	}
	return moved
}

func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + " s" }
func mib(b int64) string          { return strconv.FormatInt(b>>20, 10) + " MiB" }
func kib(b int64) string          { return strconv.FormatInt(b>>10, 10) + " KiB" }
