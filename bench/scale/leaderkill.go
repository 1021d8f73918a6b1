package main

// The leader-kill phase (--leader-kill): once every task runs, the leader
// manager is SIGKILLed and the benchmark measures how long the survivors
// take to elect a new leader, how long every agent takes to hold a session
// with it, what the reconnect costs in CPU (each reconnect is a full TLS
// handshake: skiff has no session resumption), and that no task moved.

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	skiffpb "github.com/skiffhq/skiff/proto"
)

const (
	// electionPoll and sessionPoll are how often the phase asks the
	// survivors for a leader and scrapes the new leader's sessions gauge.
	// A scrape gathers every metric, the count of every task by state
	// included: polled every 100 ms with 10,000 tasks (and the replacements
	// of a churning cluster) that was 14% of the new leader's CPU, so the
	// gauge is read at the pace the deploy's progress is. The steady window
	// pays the scrapes too, so they cancel out of the reconnect's cost.
	electionPoll = 50 * time.Millisecond
	sessionPoll  = 250 * time.Millisecond
	// minSteady is the shortest steady window: long enough to measure CPU
	// to a few percent, and for a node the new leader failed to hear from
	// to be judged Down (and its tasks moved) before the tasks are compared.
	// maxSteady bounds it after a long reconnect: its CPU is a rate, scaled
	// to the reconnect's length, and needs no longer.
	minSteady = 10 * time.Second
	maxSteady = 20 * time.Second
	// sessionsMetric is the managers' gauge of agents holding a session.
	sessionsMetric = "skiff_dispatcher_sessions"
)

// killResult is what the leader-kill phase measured. Its times are from
// the kill; a zero one was not reached.
type killResult struct {
	oldLeader, newLeader string
	// reElected lists the leaders after the first new one, when the
	// survivors held another election before every agent was back: the
	// sessions are counted on whoever holds them.
	reElected []string
	// elected is when a surviving manager first named a new leader.
	elected time.Duration
	// reconnected90 and reconnected are when the new leader held a session
	// with 90% and with every agent.
	reconnected90, reconnected time.Duration
	// sessions is the new leader's session count when the wait ended, and
	// minSteadySessions the fewest it held during the steady window.
	sessions, minSteadySessions int
	// leaderCPU, otherCPU and simCPU are the CPU time the new leader, the
	// other survivor and skiff-sim used from the kill until every agent
	// had reconnected.
	leaderCPU, otherCPU, simCPU time.Duration
	// steadyLeaderCPU and steadySimCPU are what the new leader and
	// skiff-sim use over as long a time once the agents have settled, with
	// the same polling: the baseline the reconnect's cost stands out from.
	steadyLeaderCPU, steadySimCPU time.Duration
	// compared tasks ran before the kill; moved of them no longer run on
	// the same node with the same desired state, and added tasks are new.
	compared, moved, added int
	// failure says why the phase stopped short; "" if it did not.
	failure string
}

// killSetup is what the phase needs of the run.
type killSetup struct {
	procs   *processes
	sim     *process
	admin   credentials.TransportCredentials
	agents  int
	timeout time.Duration
	// profile, when positive, is the length of the CPU profiles taken of
	// both survivors from the kill on; they are saved as
	// profilePrefix+"mN.cpu.pprof".
	profile       time.Duration
	profilePrefix string
	logger        *slog.Logger
}

// managerIndex is the index in managerAddrs of the manager named name
// ("m1" is 0), or -1.
func managerIndex(name string) int {
	i, err := strconv.Atoi(strings.TrimPrefix(name, "m"))
	if err != nil || i < 1 || i > len(managerAddrs) {
		return -1
	}
	return i - 1
}

func apiAddr(i int) string { return net.JoinHostPort(managerAddrs[i], strconv.Itoa(apiPort)) }

func metricsURL(i int) string {
	return "http://" + net.JoinHostPort(managerAddrs[i], strconv.Itoa(metricsPort)) + "/metrics"
}

// leaderKill runs the phase. An error is a failure of the benchmark itself
// (a connection it could not make); what the cluster failed to do within
// the timeout is recorded in the result instead, with what was measured.
func leaderKill(ctx context.Context, s killSetup) (*killResult, error) {
	// One connection to each manager, made before the kill so that the
	// benchmark's own handshakes are not counted. The task lists go
	// straight to the leader, not through a follower that would relay
	// their tens of megabytes.
	ctls := make([]skiffpb.ControlClient, len(managerAddrs))
	for i := range managerAddrs {
		conn, err := grpc.NewClient(apiAddr(i), grpc.WithTransportCredentials(s.admin),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
		if err != nil {
			return nil, fmt.Errorf("connect to %s: %w", apiAddr(i), err)
		}
		defer conn.Close()
		ctls[i] = skiffpb.NewControlClient(conn)
	}
	var info *skiffpb.ClusterInfoResponse
	for i, ctl := range ctls {
		callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		in, err := ctl.ClusterInfo(callCtx, &skiffpb.ClusterInfoRequest{})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("ask m%d for the leader before the kill: %w", i+1, err)
		}
		info = in
	}
	r := &killResult{oldLeader: info.GetLeader()}
	old := managerIndex(r.oldLeader)
	victim := s.procs.byName(r.oldLeader)
	if old < 0 || victim == nil {
		return nil, fmt.Errorf("the leader %q is not one of the managers started", r.oldLeader)
	}
	var survivors []int
	for i := range managerAddrs {
		if i != old {
			survivors = append(survivors, i)
		}
	}

	before, err := listTasks(ctx, ctls[old])
	if err != nil {
		return nil, fmt.Errorf("list the tasks before the kill: %w", err)
	}
	// Let the listing's garbage be collected before the CPU is counted.
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(3 * time.Second):
	}

	cpu0 := map[int]time.Duration{}
	for _, i := range survivors {
		cpu0[i] = cpuTime(s.procs.byName(fmt.Sprintf("m%d", i+1)).pid())
	}
	sim0 := cpuTime(s.sim.pid())
	// The profiles start as their requests arrive, a moment before the
	// kill: they show what share of the reconnect the TLS handshakes are.
	var profiles []<-chan error
	if s.profile > 0 {
		for _, i := range survivors {
			url := "http://" + net.JoinHostPort(managerAddrs[i], strconv.Itoa(pprofPort)) +
				"/debug/pprof/profile?seconds=" + strconv.Itoa(max(1, int(s.profile.Seconds())))
			profiles = append(profiles, fetchAsync(ctx, url, fmt.Sprintf("%sm%d.cpu.pprof", s.profilePrefix, i+1)))
		}
		defer func() {
			for _, done := range profiles {
				if err := <-done; err != nil {
					s.logger.Warn("a survivor's CPU profile", "error", err)
				}
			}
		}()
	}
	s.logger.Info("killing the leader", "leader", r.oldLeader, "tasks", len(before))
	victim.expectExit = true
	killed := time.Now()
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return nil, fmt.Errorf("kill the leader %s: %w", r.oldLeader, err)
	}
	deadline := killed.Add(s.timeout)

	// 1. A new leader, as a survivor names it.
	newIdx := -1
	for newIdx < 0 {
		if err := s.procs.check(); err != nil {
			return nil, err
		}
		for _, i := range survivors {
			callCtx, cancel := context.WithTimeout(ctx, time.Second)
			in, err := ctls[i].ClusterInfo(callCtx, &skiffpb.ClusterInfoRequest{})
			cancel()
			if err == nil && in.GetLeader() != "" && in.GetLeader() != r.oldLeader {
				r.elected = time.Since(killed)
				r.newLeader = in.GetLeader()
				if newIdx = managerIndex(r.newLeader); newIdx < 0 || newIdx == old {
					return nil, fmt.Errorf("m%d names %q the new leader, not a surviving manager", i+1, r.newLeader)
				}
				break
			}
		}
		if newIdx >= 0 {
			break
		}
		if time.Now().After(deadline) {
			r.failure = fmt.Sprintf("no new leader within %s", s.timeout)
			return r, nil
		}
		if err := sleep(ctx, electionPoll); err != nil {
			return nil, err
		}
	}
	other := survivors[0]
	if other == newIdx {
		other = survivors[1]
	}
	newLeader := s.procs.byName(r.newLeader)
	otherProc := s.procs.byName(fmt.Sprintf("m%d", other+1))
	s.logger.Info("new leader", "leader", r.newLeader, "after", r.elected.Round(time.Millisecond))

	// 2. Every agent holding a session with it.
	lastLog := time.Now()
	for {
		if err := s.procs.check(); err != nil {
			return nil, err
		}
		n, err := scrapeGauge(ctx, metricsURL(newIdx), sessionsMetric)
		// A manager that lost its term holds no sessions; the other
		// survivor holding more means it leads now.
		if m, oerr := scrapeGauge(ctx, metricsURL(other), sessionsMetric); oerr == nil && m > n {
			newIdx, other = other, newIdx
			newLeader, otherProc = otherProc, newLeader
			r.reElected = append(r.reElected, fmt.Sprintf("m%d", newIdx+1))
			s.logger.Info("the survivors elected another leader", "leader", fmt.Sprintf("m%d", newIdx+1))
			n, err = m, nil
		}
		now := time.Since(killed)
		if err == nil {
			r.sessions = n
			if r.reconnected90 == 0 && n*10 >= s.agents*9 {
				r.reconnected90 = now
			}
			if n >= s.agents {
				r.reconnected = now
				break
			}
		}
		if time.Since(lastLog) >= time.Second {
			s.logger.Info("reconnecting", "t", now.Round(100*time.Millisecond), "sessions", r.sessions, "of", s.agents, "scrape_error", err)
			lastLog = time.Now()
		}
		if time.Now().After(deadline) {
			r.failure = fmt.Sprintf("%d of %d agents reconnected within %s", r.sessions, s.agents, s.timeout)
			break
		}
		if err := sleep(ctx, sessionPoll); err != nil {
			return nil, err
		}
	}
	// 3. What the reconnect cost.
	r.leaderCPU = cpuTime(newLeader.pid()) - cpu0[newIdx]
	r.otherCPU = cpuTime(otherProc.pid()) - cpu0[other]
	r.simCPU = cpuTime(s.sim.pid()) - sim0
	if r.failure != "" {
		// No steady window to compare with, but the tasks are still worth
		// counting: the timeout gave the new leader time to move them.
		s.logger.Warn("not every agent reconnected", "sessions", r.sessions, "of", s.agents, "within", s.timeout,
			"new_leader_cpu", r.leaderCPU, "other_manager_cpu", r.otherCPU, "sim_cpu", r.simCPU)
		return r, r.countMoved(ctx, ctls[newIdx], before, s.logger)
	}
	s.logger.Info("agents reconnected", "sessions", r.sessions, "after", r.reconnected.Round(time.Millisecond),
		"new_leader_cpu", r.leaderCPU, "other_manager_cpu", r.otherCPU, "sim_cpu", r.simCPU)

	// The steady window: as long as the reconnect took, within minSteady
	// and maxSteady, polled the same way; its CPU is scaled to the
	// reconnect's length.
	window := min(max(r.reconnected, minSteady), maxSteady)
	steadyStart := time.Now()
	leader0, steadySim0 := cpuTime(newLeader.pid()), cpuTime(s.sim.pid())
	r.minSteadySessions = r.sessions
	for time.Since(steadyStart) < window {
		if err := s.procs.check(); err != nil {
			return nil, err
		}
		if n, err := scrapeGauge(ctx, metricsURL(newIdx), sessionsMetric); err == nil {
			r.minSteadySessions = min(r.minSteadySessions, n)
		}
		if err := sleep(ctx, sessionPoll); err != nil {
			return nil, err
		}
	}
	scale := func(d time.Duration) time.Duration {
		return time.Duration(float64(d) * float64(r.reconnected) / float64(time.Since(steadyStart)))
	}
	r.steadyLeaderCPU = scale(cpuTime(newLeader.pid()) - leader0)
	r.steadySimCPU = scale(cpuTime(s.sim.pid()) - steadySim0)

	s.logger.Info("settled", "new_leader_cpu", r.steadyLeaderCPU, "sim_cpu", r.steadySimCPU,
		"fewest_sessions", r.minSteadySessions)

	// 4. No task may have moved.
	return r, r.countMoved(ctx, ctls[newIdx], before, s.logger)
}

// countMoved compares the tasks the new leader holds with those that ran
// before the kill.
func (r *killResult) countMoved(ctx context.Context, ctl skiffpb.ControlClient, before map[string]placedTask, logger *slog.Logger) error {
	after, err := listTasks(ctx, ctl)
	if err != nil {
		return fmt.Errorf("list the tasks after the kill: %w", err)
	}
	r.compared, r.moved, r.added = compareTasks(before, after)
	logger.Info("tasks after the kill", "compared", r.compared, "moved", r.moved, "new", r.added)
	return nil
}

// placedTask is what a running task must keep through a leader change.
type placedTask struct {
	node    string
	desired skiffpb.TaskState
	state   skiffpb.TaskState
}

// listTasks returns every task by ID.
func listTasks(ctx context.Context, ctl skiffpb.ControlClient) (map[string]placedTask, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	resp, err := ctl.ListTasks(ctx, &skiffpb.ListTasksRequest{})
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	tasks := make(map[string]placedTask, len(resp.GetTasks()))
	for _, t := range resp.GetTasks() {
		tasks[t.GetId()] = placedTask{node: t.GetNodeId(), desired: t.GetDesiredState(), state: t.GetStatus().GetState()}
	}
	return tasks, nil
}

// compareTasks compares the tasks that ran before the kill with the tasks
// after it: moved counts those no longer running on the same node with the
// same desired state (gone, stopped, rescheduled), added the tasks that did
// not exist before (replacements).
func compareTasks(before, after map[string]placedTask) (compared, moved, added int) {
	for id, b := range before {
		if b.state != skiffpb.TaskState_TASK_STATE_RUNNING {
			continue
		}
		compared++
		a, ok := after[id]
		if !ok || a.node != b.node || a.desired != b.desired || a.state != skiffpb.TaskState_TASK_STATE_RUNNING {
			moved++
		}
	}
	for id := range after {
		if _, ok := before[id]; !ok {
			added++
		}
	}
	return compared, moved, added
}

// scrapeGauge reads one unlabelled gauge from a Prometheus endpoint. It asks
// for that metric alone (name[]), which saves the encoding of the others.
func scrapeGauge(ctx context.Context, url, name string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"?name[]="+name, nil)
	if err != nil {
		return 0, fmt.Errorf("scrape %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		value, ok := strings.CutPrefix(sc.Text(), name+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return 0, fmt.Errorf("scrape %s: %s: %w", url, name, err)
		}
		return int(v), nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("scrape %s: %w", url, err)
	}
	return 0, fmt.Errorf("scrape %s: no %s (a manager built before the gauge?)", url, name)
}

// sleep waits d, or less if ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
