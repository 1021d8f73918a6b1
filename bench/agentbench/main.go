// Command agentbench measures the agent and the overlay on a running
// testbed (deploy/testbed up; SKIFF_MANAGER and SKIFF_TLS_DIR set, as
// deploy/testbed env prints them):
//
//	agentbench rss                 agents' RSS, idle and with 50 tasks each
//	agentbench start [-runs N]     assignment → RUNNING, against a bare
//	                               create+start of the same image on the
//	                               same engine
//	agentbench dns [-runs N]       task RUNNING → its name resolves on every
//	                               host
//
// Each prints its figures for people on stderr, and as bench/run's
// results.tsv lines (SYSTEM METRIC RUN VALUE) on stdout.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/miekg/dns"
	"github.com/prometheus/procfs"
	"github.com/vishvananda/netns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/skiffhq/skiff/ca"
	skiffpb "github.com/skiffhq/skiff/proto"
)

const stateDir = "/run/skiff-testbed"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: agentbench rss|start|dns [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	runs := fs.Int("runs", 10, "measurements to take")
	skiffBin := fs.String("skiff", "bin/skiff", "the skiff CLI")
	_ = fs.Parse(os.Args[2:])
	ctx := context.Background()
	b := &bench{skiff: *skiffBin, runs: *runs}
	var err error
	switch os.Args[1] {
	case "rss":
		err = b.rss(ctx)
	case "start":
		err = b.start(ctx)
	case "dns":
		err = b.dns(ctx)
	default:
		err = fmt.Errorf("unknown measurement %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentbench:", err)
		os.Exit(1)
	}
}

type bench struct {
	skiff string
	runs  int
}

// cli runs the skiff CLI.
func (b *bench) cli(args ...string) (string, error) {
	out, err := exec.Command(b.skiff, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("skiff %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// deploy deploys a one-service stack from compose text.
func (b *bench) deploy(stack, compose string) error {
	dir, err := os.MkdirTemp("", "agentbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "docker-compose.yml")
	if err := os.WriteFile(file, []byte(compose), 0o644); err != nil {
		return err
	}
	_, err = b.cli("stack", "deploy", "-c", file, stack)
	return err
}

// control connects to the first manager of SKIFF_MANAGER as the admin
// whose bundle is in SKIFF_TLS_DIR, as the skiff CLI it runs does.
func control() (skiffpb.ControlClient, func(), error) {
	addr := strings.Split(os.Getenv("SKIFF_MANAGER"), ",")[0]
	if addr == "" {
		return nil, nil, errors.New("SKIFF_MANAGER is not set: eval \"$(deploy/testbed env)\"")
	}
	creds, err := adminCreds(os.Getenv("SKIFF_TLS_DIR"))
	if err != nil {
		return nil, nil, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	return skiffpb.NewControlClient(conn), func() { conn.Close() }, nil
}

// adminCreds are the credentials of the admin bundle in dir.
func adminCreds(dir string) (credentials.TransportCredentials, error) {
	if dir == "" {
		return nil, errors.New("SKIFF_TLS_DIR is not set: eval \"$(deploy/testbed env)\"")
	}
	b, err := ca.ReadBundle(dir)
	if err != nil {
		return nil, fmt.Errorf("admin credentials in %s: %w", dir, err)
	}
	creds, err := b.ClientCredentials(ca.RoleManager)
	if err != nil {
		return nil, fmt.Errorf("admin credentials in %s: %w", dir, err)
	}
	return creds, nil
}

// rssOf reads a process's resident set size in MiB.
func rssOf(pid int) (float64, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, fmt.Errorf("agent process %d: %w", pid, err)
	}
	st, err := p.NewStatus()
	if err != nil {
		return 0, fmt.Errorf("read /proc/%d/status: %w", pid, err)
	}
	// procfs leaves a field that is missing at zero, as it is for a process
	// that has exited but not been reaped; a live agent always has pages.
	if st.VmRSS == 0 {
		return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return float64(st.VmRSS) / (1 << 20), nil
}

func agentPid(host string) (int, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, host, "pids", "agent"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// rss reports each agent's RSS idle, then with 50 tasks per host.
func (b *bench) rss(ctx context.Context) error {
	report := func(label, metric string) error {
		var vals []float64
		for _, h := range []string{"h1", "h2", "h3"} {
			pid, err := agentPid(h)
			if err != nil {
				return err
			}
			v, err := rssOf(pid)
			if err != nil {
				return err
			}
			vals = append(vals, v)
		}
		fmt.Fprintf(os.Stderr, "agent RSS %s (MiB, h1 h2 h3): %.1f %.1f %.1f\n", label, vals[0], vals[1], vals[2])
		record("skiff", metric, vals)
		return nil
	}
	if err := report("idle", "agent_rss_idle_mib"); err != nil {
		return err
	}
	err := b.deploy("rss", `
services:
  sleeper:
    image: skiff-test/probe:latest
    command: ["sleep"]
    deploy:
      replicas: 150
      placement:
        max_replicas_per_node: 50
`)
	if err != nil {
		return err
	}
	defer b.cli("stack", "rm", "rss")
	// Give the agents' event streams and the overlay a moment to settle,
	// measured by the service staying converged.
	if _, err := b.cli("service", "ls"); err != nil {
		return err
	}
	return report("with 50 tasks", "agent_rss_50_mib")
}

// start compares assignment → RUNNING through skiff with a bare create and
// start of the same image on the same engine.
func (b *bench) start(ctx context.Context) error {
	docker, err := client.NewClientWithOpts(client.WithHost("unix://"+filepath.Join(stateDir, "h1", "docker.sock")), client.WithAPIVersionNegotiation())
	if err != nil {
		return err
	}
	defer docker.Close()
	// bareRun is what `docker run -d` does: create and start, in the
	// engine's default network mode.
	bareRun := func() (time.Duration, error) {
		t0 := time.Now()
		c, err := docker.ContainerCreate(ctx, &container.Config{Image: "skiff-test/probe:latest", Cmd: []string{"sleep"}},
			&container.HostConfig{}, nil, nil, "")
		if err != nil {
			return 0, fmt.Errorf("docker create: %w", err)
		}
		defer docker.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
		if err := docker.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
			return 0, fmt.Errorf("docker start: %w", err)
		}
		return time.Since(t0), nil
	}
	// The engine's first start after a while is slow; neither side should
	// pay for it.
	if _, err := bareRun(); err != nil {
		return err
	}
	var bare []time.Duration

	err = b.deploy("lat", `
services:
  sleeper:
    image: skiff-test/probe:latest
    command: ["sleep"]
    deploy:
      replicas: 0
      placement:
        constraints: ["node.hostname == h1"]
`)
	if err != nil {
		return err
	}
	defer b.cli("stack", "rm", "lat")
	ctl, closeCtl, err := control()
	if err != nil {
		return err
	}
	defer closeCtl()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := ctl.Watch(wctx, &skiffpb.WatchRequest{Kinds: []skiffpb.WatchKind{skiffpb.WatchKind_WATCH_KIND_TASK}, Service: "lat_sleeper"})
	if err != nil {
		return err
	}
	type seen struct{ assigned, running time.Time }
	var mu sync.Mutex
	times := map[string]*seen{}
	done := make(chan string, 64)
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				return
			}
			t := ev.GetTask()
			if t == nil {
				continue
			}
			now := time.Now()
			mu.Lock()
			s := times[t.GetId()]
			if s == nil {
				s = &seen{}
				times[t.GetId()] = s
			}
			st := t.GetStatus().GetState()
			if st >= skiffpb.TaskState_TASK_STATE_ASSIGNED && s.assigned.IsZero() {
				s.assigned = now
			}
			if st == skiffpb.TaskState_TASK_STATE_RUNNING && s.running.IsZero() {
				s.running = now
				done <- t.GetId()
			}
			mu.Unlock()
		}
	}()
	var viaSkiff []time.Duration
	// The two alternate, so that both see the same engine and machine.
	for i := 1; i <= b.runs; i++ {
		d, err := bareRun()
		if err != nil {
			return err
		}
		bare = append(bare, d)
		n := uint64(i)
		if _, err := ctl.UpdateService(ctx, &skiffpb.UpdateServiceRequest{Service: "lat_sleeper", Replicas: &n}); err != nil {
			return err
		}
		select {
		case id := <-done:
			mu.Lock()
			s := times[id]
			viaSkiff = append(viaSkiff, s.running.Sub(s.assigned))
			mu.Unlock()
		case <-time.After(30 * time.Second):
			return fmt.Errorf("task %d never ran", i)
		}
	}
	mb, ms := median(bare), median(viaSkiff)
	fmt.Fprintf(os.Stderr, "bare docker run (create+start, default network; median of %d): %s  runs %v\n", len(bare), mb.Round(time.Millisecond), rounded(bare))
	fmt.Fprintf(os.Stderr, "skiff assignment→RUNNING (median of %d): %s  runs %v\n", len(viaSkiff), ms.Round(time.Millisecond), rounded(viaSkiff))
	fmt.Fprintf(os.Stderr, "ratio: %.2f×\n", float64(ms)/float64(mb))
	record("bare", "start_ms", millis(bare))
	record("skiff", "start_ms", millis(viaSkiff))
	return nil
}

// dns measures how long after a task is RUNNING its address is in every
// host's embedded DNS answer for tasks.<service>.
func (b *bench) dns(ctx context.Context) error {
	err := b.deploy("dnsb", `
services:
  sleeper:
    image: skiff-test/probe:latest
    command: ["sleep"]
    deploy:
      replicas: 1
`)
	if err != nil {
		return err
	}
	defer b.cli("stack", "rm", "dnsb")
	ctl, closeCtl, err := control()
	if err != nil {
		return err
	}
	defer closeCtl()
	servers, network, err := dnsServers(ctx, ctl, "dnsb_default")
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := ctl.Watch(wctx, &skiffpb.WatchRequest{Kinds: []skiffpb.WatchKind{skiffpb.WatchKind_WATCH_KIND_TASK}, Service: "dnsb_sleeper"})
	if err != nil {
		return err
	}
	running := make(chan *skiffpb.Task, 64)
	go func() {
		reported := map[string]bool{}
		for {
			ev, err := stream.Recv()
			if err != nil {
				return
			}
			t := ev.GetTask()
			if t != nil && t.GetStatus().GetState() == skiffpb.TaskState_TASK_STATE_RUNNING && !reported[t.GetId()] {
				reported[t.GetId()] = true
				running <- t
			}
		}
	}()
	var lags []time.Duration
	for i := 2; i <= b.runs+1; i++ {
		n := uint64(i)
		if _, err := ctl.UpdateService(ctx, &skiffpb.UpdateServiceRequest{Service: "dnsb_sleeper", Replicas: &n}); err != nil {
			return err
		}
		var t *skiffpb.Task
	wait:
		for {
			select {
			case t = <-running:
				if t.GetSlot() == n {
					break wait
				}
			case <-time.After(30 * time.Second):
				return fmt.Errorf("replica %d never ran", i)
			}
		}
		t0 := time.Now()
		var ip netip.Addr
		for _, na := range t.GetNetworks() {
			if na.GetNetworkId() == network {
				p, _ := netip.ParsePrefix(na.GetAddress())
				ip = p.Addr()
			}
		}
		if err := resolvesEverywhere(servers, "tasks.dnsb_sleeper", ip, 10*time.Second); err != nil {
			return err
		}
		lags = append(lags, time.Since(t0))
	}
	fmt.Fprintf(os.Stderr, "task RUNNING → resolvable on every host (median of %d): %s  runs %v\n", len(lags), median(lags).Round(time.Millisecond), rounded(lags))
	record("skiff", "dns_ms", millis(lags))
	return nil
}

// dnsServer is one host's embedded DNS in a network: its address, reached
// from inside the host's network namespace.
type dnsServer struct {
	host string
	addr netip.Addr
}

// dnsServers finds each node's address in the named network.
func dnsServers(ctx context.Context, ctl skiffpb.ControlClient, network string) ([]dnsServer, string, error) {
	var out []dnsServer
	var netID string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		nodes, err := ctl.ListNodes(ctx, &skiffpb.ListNodesRequest{})
		if err != nil {
			return nil, "", err
		}
		out = out[:0]
		for _, n := range nodes.GetNodes() {
			for _, a := range n.GetAttachments() {
				p, err := netip.ParsePrefix(a.GetAddress())
				if err == nil {
					out = append(out, dnsServer{host: n.GetName(), addr: p.Addr()})
					netID = a.GetNetworkId()
				}
			}
		}
		if len(out) > 0 {
			return out, netID, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, "", fmt.Errorf("no node has an address in %s", network)
}

// resolvesEverywhere polls every host's DNS, from inside that host's
// network namespace, until name includes ip.
func resolvesEverywhere(servers []dnsServer, name string, ip netip.Addr, timeout time.Duration) error {
	errc := make(chan error, len(servers))
	for _, s := range servers {
		go func() { errc <- resolvesIn(s, name, ip, timeout) }()
	}
	var errs []error
	for range servers {
		errs = append(errs, <-errc)
	}
	return errors.Join(errs...)
}

func resolvesIn(s dnsServer, name string, ip netip.Addr, timeout time.Duration) error {
	// The overlay addresses are only reachable inside the host's network
	// namespace; the thread enters it for the queries and is then dropped.
	runtime.LockOSThread()
	ns, err := netns.GetFromPath("/run/netns/" + s.host)
	if err != nil {
		return err
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		return err
	}
	c := &dns.Client{Timeout: 500 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		r, _, err := c.Exchange(m, netip.AddrPortFrom(s.addr, 53).String())
		if err == nil {
			for _, rr := range r.Answer {
				if a, ok := rr.(*dns.A); ok && a.A.String() == ip.String() {
					return nil
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("%s: %s never resolved to %s", s.host, name, ip)
}

// record prints one results.tsv line per value, the runs numbered from 1.
func record(system, metric string, vals []float64) {
	for i, v := range vals {
		fmt.Printf("%s\t%s\t%d\t%.2f\n", system, metric, i+1, v)
	}
}

// millis turns durations into milliseconds.
func millis(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(time.Millisecond)
	}
	return out
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func rounded(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}
