package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
)

// results maps system → metric → the values of its runs, in run order.
type results map[string]map[string][]float64

// readResults reads bench/run's results.tsv: "SYSTEM METRIC RUN VALUE"
// lines, tab-separated; # starts a comment.
func readResults(r io.Reader) (results, error) {
	res := results{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 4 {
			return nil, fmt.Errorf("line %d: want SYSTEM METRIC RUN VALUE, got %q", n, line)
		}
		v, err := strconv.ParseFloat(f[3], 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: value %q: %v", n, f[3], err)
		}
		if res[f[0]] == nil {
			res[f[0]] = map[string][]float64{}
		}
		res[f[0]][f[1]] = append(res[f[0]][f[1]], v)
	}
	return res, sc.Err()
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// figure is one row of the summary: skiff's metric beside a reference.
type figure struct {
	name, metric, unit string
	ref                string  // the system skiff is compared with
	higherBetter       bool    // throughput: more is better
	ratio              float64 // target on skiff/ref (0: none)
	absolute           float64 // target on skiff's own value (0: none)
	zero               bool    // target: skiff's value is 0 (a count of what must not happen)
	digits             int
}

var controlFigures = []figure{
	{name: "deploy: web ×5 + redis, to all running and the port answering", metric: "deploy_s", unit: "s", ref: "swarm", ratio: 0.5, digits: 2},
	{name: "scale web 5 → 50, to 50 running", metric: "scale_s", unit: "s", ref: "swarm", ratio: 0.5, digits: 2},
	{name: "host killed → its tasks running elsewhere (skiff: and the port serving)", metric: "hostfail_s", unit: "s", ref: "swarm", absolute: 3, digits: 2},
	{name: "leader killed → a scale accepted at another manager (tries every 0.2 s)", metric: "leaderfail_s", unit: "s", ref: "swarm", absolute: 2, digits: 2},
	{name: "leader's host killed → its tasks running elsewhere (skiff: and the port serving)", metric: "leaderhost_s", unit: "s", ref: "swarm", digits: 2},
	{name: "leader killed → the one scale issued at that moment returns", metric: "leaderfail_call_s", unit: "s", ref: "swarm", digits: 2},
	{name: "leader's host killed → tasks moved off healthy hosts (counted once its tasks run elsewhere, 5 s after the kill at the earliest)", metric: "moved_healthy", unit: "tasks", ref: "swarm", zero: true, digits: 0},
}

var overlayFigures = []figure{
	{name: "TCP throughput, container to container across hosts", metric: "tput_gbps", unit: "Gbit/s", ref: "vxlan", ratio: 0.95, higherBetter: true, digits: 2},
	{name: "TCP throughput: skiff beside Swarm", metric: "tput_gbps", unit: "Gbit/s", ref: "swarm", ratio: 1, higherBetter: true, digits: 2},
	{name: "TCP round trip (64 B), container to container", metric: "rtt_us", unit: "µs", ref: "vxlan", ratio: 1.05, digits: 1},
}

var agentFigures = []figure{
	{name: "agent RSS, idle (each of the 3 hosts)", metric: "agent_rss_idle_mib", unit: "MiB", absolute: 40, digits: 1},
	{name: "agent RSS with 50 tasks (each of the 3 hosts)", metric: "agent_rss_50_mib", unit: "MiB", digits: 1},
	{name: "assignment → RUNNING, one task, against a bare docker run (create + start) on the same engine", metric: "start_ms", unit: "ms", ref: "bare", ratio: 1.2, digits: 0},
	{name: "task RUNNING (committed) → its name resolves on every host", metric: "dns_ms", unit: "ms", absolute: 1000, digits: 0},
	{name: "published port, h2's host → h2's port → task on h1 (mesh), against h2's host → the task's address", metric: "pubport_gbps", unit: "Gbit/s", ref: "direct", higherBetter: true, digits: 2},
}

func runSummary(args []string, out io.Writer) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: summary RESULTS.tsv")
	}
	f, err := os.Open(args[0])
	if err != nil {
		return err
	}
	defer f.Close()
	res, err := readResults(f)
	if err != nil {
		return err
	}
	writeSummary(out, res)
	return nil
}

func writeSummary(out io.Writer, res results) {
	fmt.Fprintln(out, "| figure | skiff (median) | skiff runs | reference (median) | reference runs | skiff / reference | target | met |")
	fmt.Fprintln(out, "| --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, fig := range slices.Concat(controlFigures, overlayFigures, agentFigures) {
		writeRow(out, res, fig)
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, "All paths of the overlay benchmark (median of the runs):")
	fmt.Fprintln(out)
	fmt.Fprintln(out, "| path | throughput Gbit/s | runs | iperf3 inside the containers, Gbit/s | runs | RTT µs (median of each run's median) | runs | RTT p99 µs |")
	fmt.Fprintln(out, "| --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, sys := range []string{"underlay", "vxlan", "skiff", "swarm", "underlay-9000", "vxlan-9000", "skiff-9000"} {
		if len(res[sys]) == 0 && strings.HasSuffix(sys, "-9000") {
			continue
		}
		t, e, r, p := res[sys]["tput_gbps"], res[sys]["tput_exec_gbps"], res[sys]["rtt_us"], res[sys]["rtt_p99_us"]
		fmt.Fprintf(out, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", pathName(sys),
			med(t, 2), runs(t, 2), med(e, 2), runs(e, 2), med(r, 1), runs(r, 1), med(p, 0))
	}
	if len(res["engine"]) == 0 {
		return
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, "The engines' floor: 45 tasks started at once, 15 on each host's engine, straight through its API (no orchestrator):")
	fmt.Fprintln(out)
	fmt.Fprintln(out, "| tasks | seconds (median) | runs | beside skiff's scale 5 → 50 | beside Swarm's |")
	fmt.Fprintln(out, "| --- | --- | --- | --- | --- |")
	for _, m := range []struct{ metric, name string }{
		{"start45_none_s", "network mode none: each joins a network (as Swarm's tasks do)"},
		{"start45_default_s", "default network mode, no bridge: none joined (as skiff's tasks)"},
	} {
		v := res["engine"][m.metric]
		fmt.Fprintf(out, "| %s | %s | %s | %s | %s |\n", m.name, med(v, 2), runs(v, 2),
			ratioOf(res["skiff"]["scale_s"], v), ratioOf(res["swarm"]["scale_s"], v))
	}
}

// ratioOf prints median(a) / median(b) as "N×", or – when either is empty.
func ratioOf(a, b []float64) string {
	if len(a) == 0 || len(b) == 0 || median(b) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", median(a)/median(b))
}

func pathName(sys string) string {
	switch sys {
	case "underlay":
		return "underlay, host to host (no encapsulation)"
	case "vxlan":
		return "hand-built kernel VXLAN (VNI 5000), namespace to namespace"
	case "skiff":
		return "skiff overlay, container to container"
	case "swarm":
		return "Swarm overlay (dnsrr), container to container"
	case "underlay-9000", "vxlan-9000", "skiff-9000":
		return pathName(strings.TrimSuffix(sys, "-9000")) + ", underlay MTU 9000"
	}
	return sys
}

func med(v []float64, digits int) string {
	if len(v) == 0 {
		return "–"
	}
	return strconv.FormatFloat(median(v), 'f', digits, 64)
}

func runs(v []float64, digits int) string {
	if len(v) == 0 {
		return "–"
	}
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x, 'f', digits, 64)
	}
	return strings.Join(s, ", ")
}

func writeRow(out io.Writer, res results, fig figure) {
	sk, ref := res["skiff"][fig.metric], res[fig.ref][fig.metric]
	skRuns, refRuns := runs(sk, fig.digits), runs(ref, fig.digits)
	// The medians: a count's median over an even number of runs can fall
	// halfway, which must not print as a whole number (0.5 is not 0).
	skDigits, refDigits := fig.digits, fig.digits
	if fig.zero {
		skDigits, refDigits = countDigits(sk), countDigits(ref)
	}
	// A run that failed is recorded under METRIC_failed with the seconds
	// after which it gave up.
	if f := res["skiff"][fig.metric+"_failed"]; len(f) > 0 {
		skRuns += "; failed: " + runs(f, fig.digits)
	}
	if f := res[fig.ref][fig.metric+"_failed"]; len(f) > 0 {
		refRuns += "; failed: " + runs(f, fig.digits)
	}
	ratio, target, met := "–", "–", "–"
	if len(sk) > 0 && len(ref) > 0 && median(ref) > 0 {
		ratio = fmt.Sprintf("%.2f", median(sk)/median(ref))
	}
	switch {
	case fig.zero:
		target = "0"
		if len(sk) > 0 {
			met = yesNo(median(sk) == 0)
		}
	case fig.absolute > 0:
		target = fmt.Sprintf("≤ %g %s", fig.absolute, fig.unit)
		if len(sk) > 0 {
			met = yesNo(median(sk) <= fig.absolute)
		}
	case fig.ratio > 0 && fig.higherBetter:
		target = fmt.Sprintf("≥ %g× %s", fig.ratio, fig.ref)
		if len(sk) > 0 && len(ref) > 0 {
			met = yesNo(median(sk) >= fig.ratio*median(ref))
		}
	case fig.ratio > 0:
		target = fmt.Sprintf("≤ %g× %s", fig.ratio, fig.ref)
		if len(sk) > 0 && len(ref) > 0 {
			met = yesNo(median(sk) <= fig.ratio*median(ref))
		}
	}
	refCell := "–"
	if fig.ref != "" {
		refCell = fmt.Sprintf("%s: %s %s", fig.ref, med(ref, refDigits), fig.unit)
	}
	fmt.Fprintf(out, "| %s | %s %s | %s | %s | %s | %s | %s | %s |\n",
		fig.name, med(sk, skDigits), fig.unit, skRuns,
		refCell, refRuns, ratio, target, met)
}

// countDigits is how many decimals a median of counts needs: none, or one
// when it falls between two runs.
func countDigits(v []float64) int {
	if len(v) > 0 && median(v) != math.Trunc(median(v)) {
		return 1
	}
	return 0
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "**no**"
}
