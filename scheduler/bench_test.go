package scheduler

import (
	"fmt"
	"math/rand/v2"
	"testing"

	skiffpb "github.com/skiffhq/skiff/proto"
)

const mib = int64(1) << 20

// benchCluster is a cluster of n nodes as a real one looks: three managers,
// three zones and racks within them, three machine sizes, a third of the
// nodes with SSDs, a few paused, drained or down, and a light existing load.
// It is the same for the same n.
func benchCluster(n int) []*NodeInfo {
	rng := rand.New(rand.NewPCG(uint64(n), 42))
	sizes := []struct{ cpus, mem int64 }{{8, 32}, {16, 64}, {32, 128}}
	nodes := make([]*NodeInfo, n)
	for i := range nodes {
		size := sizes[rng.IntN(len(sizes))]
		zone := string(rune('a' + i%3))
		node := newNode(randomID(rng),
			withResources(size.cpus*cpu, size.mem*gib),
			withLabels("zone", zone),
			withEngineLabels("rack", fmt.Sprintf("%s-%d", zone, rng.IntN(8))),
		)
		node.Description.Hostname = fmt.Sprintf("host-%05d", i)
		if i < 3 {
			node.Role = skiffpb.NodeRole_NODE_ROLE_MANAGER
		}
		if rng.IntN(3) == 0 {
			node.Spec.Labels["disk"] = "ssd"
		}
		switch rng.IntN(100) {
		case 0:
			node.Spec.Availability = skiffpb.NodeAvailability_NODE_AVAILABILITY_PAUSE
		case 1:
			node.Spec.Availability = skiffpb.NodeAvailability_NODE_AVAILABILITY_DRAIN
		case 2:
			node.Status.State = skiffpb.NodeState_NODE_STATE_DOWN
		}
		ni := NewNodeInfo(node, nil, nil)
		for range rng.IntN(6) {
			ni.AddTask(&skiffpb.Task{ServiceId: fmt.Sprintf("legacy-%d", rng.IntN(20))}, nil)
		}
		nodes[i] = ni
	}
	return nodes
}

// randomID is a node ID as the manager makes them: 25 lower-case base-36
// characters.
func randomID(rng *rand.Rand) string {
	const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 25)
	for i := range b {
		b[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return string(b)
}

// benchRequests is a deploy of ten services with total tasks between them,
// using every filter and preference: reservations, constraints on role,
// labels and engine labels, spreading over zones and racks, max replicas
// per node, and a host-mode port.
func benchRequests(total int) []Request {
	services := []struct {
		share int // per mille of the tasks
		spec  *skiffpb.ServiceSpec
	}{
		{200, newSpec("web", withReservation(cpu/10, 256*mib), withSpread("node.labels.zone"))},
		{150, newSpec("api", withReservation(cpu/4, 512*mib), withConstraints("node.role==worker"))},
		{150, newSpec("worker", withReservation(cpu/20, 128*mib))},
		{100, newSpec("cache", withReservation(cpu/10, gib), withMaxPerNode(20))},
		{50, newSpec("db", withReservation(cpu/2, gib), withConstraints("node.labels.disk==ssd"), withSpread("node.labels.zone"))},
		{100, newSpec("queue", withConstraints("engine.labels.rack!=a-0"))},
		{5, newSpec("edge", withReservation(cpu/10, 64*mib), withHostPort(443, 8443))},
		{100, newSpec("batch", withReservation(cpu/20, 64*mib), withConstraints("node.role!=manager", "node.labels.zone!=c"))},
		{50, newSpec("monitor", withSpread("node.labels.zone", "engine.labels.rack"))},
		{95, newSpec("logs", withReservation(cpu/50, 32*mib))},
	}
	var reqs []Request
	for _, s := range services {
		reqs = append(reqs, requests(s.spec.GetName(), s.spec, total*s.share/1000)...)
	}
	return reqs
}

// benchmarkSchedule places a deploy of tasks tasks onto a fresh copy of an
// n-node cluster per iteration, and reports placements per second.
func benchmarkSchedule(b *testing.B, n, tasks int) {
	cluster := benchCluster(n)
	reqs := benchRequests(tasks)
	placed := 0
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		nodes := make([]*NodeInfo, len(cluster))
		for i, ni := range cluster {
			nodes[i] = ni.Clone()
		}
		b.StartTimer()
		for _, d := range Schedule(nodes, reqs) {
			if d.Placed() {
				placed++
			}
		}
	}
	b.ReportMetric(float64(placed)/b.Elapsed().Seconds(), "placements/s")
	b.ReportMetric(float64(placed)/float64(b.N*len(reqs))*100, "%placed")
}

// BenchmarkSchedule1kNodes places 100k tasks of ten services on 1,000
// nodes. Target: at least 100,000 placements/s on one core.
func BenchmarkSchedule1kNodes(b *testing.B) { benchmarkSchedule(b, 1_000, 100_000) }

// BenchmarkSchedule10kNodes places 100k tasks of ten services on 10,000
// nodes. Target: at least 20,000 placements/s on one core.
func BenchmarkSchedule10kNodes(b *testing.B) { benchmarkSchedule(b, 10_000, 100_000) }

// BenchmarkScheduleOneTask10kNodes is the steady state: one replacement
// task per call on a loaded 10,000-node cluster, where the cost of a call is
// dominated by building the group's candidates.
func BenchmarkScheduleOneTask10kNodes(b *testing.B) {
	nodes := benchCluster(10_000)
	Schedule(nodes, benchRequests(100_000))
	spec := newSpec("web", withReservation(cpu/10, 256*mib), withSpread("node.labels.zone"))
	reqs := requests("web", spec, 1)
	for b.Loop() {
		if !Schedule(nodes, reqs)[0].Placed() {
			b.Fatal("replacement task not placed")
		}
	}
}
