package scheduler

import (
	"fmt"
	"reflect"
	"testing"

	skiffpb "github.com/skiffhq/skiff/proto"
	"pgregory.net/rapid"
)

// withTasks commits n tasks of service svc, running spec, to ni.
func withTasks(ni *NodeInfo, svc string, spec *skiffpb.ServiceSpec, n int) *NodeInfo {
	for range n {
		ni.AddTask(&skiffpb.Task{ServiceId: svc}, spec)
	}
	return ni
}

// loaded is a plain node holding n tasks of svc.
func loaded(id string, spec *skiffpb.ServiceSpec, n int, opts ...nodeOpt) *NodeInfo {
	return withTasks(NewNodeInfo(newNode(id, opts...), nil, nil), "web", spec, n)
}

// applyMove moves one task of svc as the orchestrator would, once the new
// task runs and the old one is gone.
func applyMove(t interface {
	Helper()
	Fatalf(format string, args ...any)
}, nodes []*NodeInfo, svc string, spec *skiffpb.ServiceSpec, m Move) {
	t.Helper()
	var from, to *NodeInfo
	for _, ni := range nodes {
		switch ni.Node.GetId() {
		case m.From:
			from = ni
		case m.To:
			to = ni
		}
	}
	if from == nil || to == nil || from == to {
		t.Fatalf("move %+v names unknown or equal nodes", m)
	}
	if from.ServiceTasks[svc] == 0 {
		t.Fatalf("move %+v from a node without tasks of %s", m, svc)
	}
	from.RemoveTask(&skiffpb.Task{ServiceId: svc}, spec)
	to.AddTask(&skiffpb.Task{ServiceId: svc}, spec)
}

func TestRebalanceWithoutPreferences(t *testing.T) {
	spec := newSpec("web")
	for _, tc := range []struct {
		counts [3]int
		want   Move
		ok     bool
	}{
		{counts: [3]int{0, 3, 3}, want: Move{From: "n2", To: "n1"}, ok: true},
		{counts: [3]int{3, 0, 3}, want: Move{From: "n1", To: "n2"}, ok: true},
		{counts: [3]int{1, 2, 2}},
		{counts: [3]int{2, 2, 2}},
		{counts: [3]int{0, 0, 1}},
		{counts: [3]int{1, 1, 4}, want: Move{From: "n3", To: "n1"}, ok: true},
	} {
		t.Run(fmt.Sprint(tc.counts), func(t *testing.T) {
			nodes := []*NodeInfo{loaded("n1", spec, tc.counts[0]), loaded("n2", spec, tc.counts[1]), loaded("n3", spec, tc.counts[2])}
			before := cloneAll(nodes)
			got, ok := Rebalance(nodes, "web", spec)
			if ok != tc.ok || got != tc.want {
				t.Fatalf("Rebalance = %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
			if !reflect.DeepEqual(nodes, before) {
				t.Fatal("Rebalance changed its input")
			}
		})
	}
}

// TestRebalanceHeaviestByLoad: between nodes holding as many of the
// service's tasks, the task leaves the busier one.
func TestRebalanceHeaviestByLoad(t *testing.T) {
	spec := newSpec("web")
	busy := withTasks(loaded("n3", spec, 3), "other", nil, 2)
	nodes := []*NodeInfo{loaded("n1", spec, 0), loaded("n2", spec, 3), busy}
	got, ok := Rebalance(nodes, "web", spec)
	if want := (Move{From: "n3", To: "n1"}); !ok || got != want {
		t.Fatalf("Rebalance = %+v, %v; want %+v", got, ok, want)
	}
}

func cloneAll(nodes []*NodeInfo) []*NodeInfo {
	if nodes == nil {
		return nil
	}
	out := make([]*NodeInfo, len(nodes))
	for i, ni := range nodes {
		out[i] = ni.Clone()
	}
	return out
}

func TestRebalanceWithZones(t *testing.T) {
	spec := newSpec("web", withSpread("node.labels.zone"))
	zone := func(z string) nodeOpt { return withLabels("zone", z) }
	for _, tc := range []struct {
		name  string
		nodes []*NodeInfo
		want  Move
		ok    bool
	}{
		{
			// Zone a lost its node's share to b and c: the task goes back
			// to the emptier node of a, from the heaviest node of the
			// heaviest zone.
			name: "zone short",
			nodes: []*NodeInfo{
				loaded("a1", spec, 0, zone("a")), loaded("a2", spec, 1, zone("a")),
				loaded("b1", spec, 3, zone("b")), loaded("c1", spec, 2, zone("c")),
			},
			want: Move{From: "b1", To: "a1"}, ok: true,
		},
		{
			// Zones are even (2, 3, 3: no zone 2 ahead of another), and
			// nodes within the zone the next task goes to are even too.
			name: "zones within one",
			nodes: []*NodeInfo{
				loaded("a1", spec, 1, zone("a")), loaded("a2", spec, 1, zone("a")),
				loaded("b1", spec, 3, zone("b")), loaded("c1", spec, 3, zone("c")),
			},
		},
		{
			// Zones are even, but inside zone a one node holds all of it:
			// the move stays inside the zone.
			name: "inside a zone",
			nodes: []*NodeInfo{
				loaded("a1", spec, 0, zone("a")), loaded("a2", spec, 2, zone("a")),
				loaded("b1", spec, 2, zone("b")), loaded("c1", spec, 2, zone("c")),
			},
			want: Move{From: "a2", To: "a1"}, ok: true,
		},
		{
			// The next task goes to zone a, one short of b and c, so no
			// move between zones helps. The 3/0 split inside b stays:
			// Rebalance only weighs moves towards where the next task
			// would go.
			name: "preference first",
			nodes: []*NodeInfo{
				loaded("a1", spec, 2, zone("a")),
				loaded("b1", spec, 3, zone("b")), loaded("b2", spec, 0, zone("b")),
				loaded("c1", spec, 3, zone("c")),
			},
		},
		{
			// Nodes without the label are a zone of their own.
			name: "unlabelled zone",
			nodes: []*NodeInfo{
				loaded("a1", spec, 4, zone("a")), loaded("x1", spec, 0),
			},
			want: Move{From: "a1", To: "x1"}, ok: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := Rebalance(tc.nodes, "web", spec)
			if ok != tc.ok || got != tc.want {
				t.Fatalf("Rebalance = %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestRebalanceConstraints: a node the constraints exclude gets nothing,
// however empty, while tasks on it still count (and may leave).
func TestRebalanceConstraints(t *testing.T) {
	spec := newSpec("web", withConstraints("node.labels.tier==web"))
	web := withLabels("tier", "web")
	nodes := []*NodeInfo{loaded("n1", spec, 0), loaded("n2", spec, 3, web), loaded("n3", spec, 3, web)}
	if got, ok := Rebalance(nodes, "web", spec); ok {
		t.Fatalf("moved %+v onto a node the constraints exclude", got)
	}
	// A node that no longer meets them is drained of its surplus.
	nodes = []*NodeInfo{loaded("n1", spec, 4), loaded("n2", spec, 1, web), loaded("n3", spec, 1, web)}
	got, ok := Rebalance(nodes, "web", spec)
	if want := (Move{From: "n1", To: "n2"}); !ok || got != want {
		t.Fatalf("Rebalance = %+v, %v; want %+v", got, ok, want)
	}
}

// TestRebalanceResources: an empty node without room for the task gets
// nothing; the next best node that fits is weighed instead.
func TestRebalanceResources(t *testing.T) {
	spec := newSpec("web", withReservation(cpu, gib))
	full := withTasks(loaded("n1", spec, 0), "db", newSpec("db", withReservation(4*cpu, gib)), 1)
	nodes := []*NodeInfo{full, loaded("n2", spec, 3), loaded("n3", spec, 3)}
	if got, ok := Rebalance(nodes, "web", spec); ok {
		t.Fatalf("moved %+v onto a full node", got)
	}
	// Unavailable nodes are skipped as Schedule skips them.
	for _, opt := range []nodeOpt{
		withState(skiffpb.NodeState_NODE_STATE_DOWN),
		withAvailability(skiffpb.NodeAvailability_NODE_AVAILABILITY_PAUSE),
		withAvailability(skiffpb.NodeAvailability_NODE_AVAILABILITY_DRAIN),
	} {
		nodes := []*NodeInfo{loaded("n1", spec, 0, opt), loaded("n2", spec, 3), loaded("n3", spec, 3)}
		if got, ok := Rebalance(nodes, "web", spec); ok {
			t.Fatalf("moved %+v onto an unavailable node", got)
		}
	}
}

// TestRebalanceMaxReplicas: a node at placement.max_replicas_per_node is
// not a destination.
func TestRebalanceMaxReplicas(t *testing.T) {
	spec := newSpec("web", withMaxPerNode(3))
	nodes := []*NodeInfo{loaded("n1", spec, 3), loaded("n2", spec, 3), loaded("n3", spec, 1)}
	got, ok := Rebalance(nodes, "web", spec)
	if want := (Move{From: "n1", To: "n3"}); !ok || got != want {
		t.Fatalf("Rebalance = %+v, %v; want %+v", got, ok, want)
	}
	nodes = []*NodeInfo{loaded("n1", spec, 3), loaded("n2", spec, 1)}
	spec = newSpec("web", withMaxPerNode(1))
	if got, ok := Rebalance(nodes, "web", spec); ok {
		t.Fatalf("moved %+v onto a node at its maximum", got)
	}
}

// TestRebalanceNothingToPlace: no nodes, nil entries, an invalid spec.
func TestRebalanceNothingToPlace(t *testing.T) {
	if _, ok := Rebalance(nil, "web", newSpec("web")); ok {
		t.Fatal("a move without nodes")
	}
	spec := newSpec("web")
	nodes := []*NodeInfo{nil, loaded("n1", spec, 0), nil, loaded("n2", spec, 4)}
	if got, ok := Rebalance(nodes, "web", spec); !ok || got != (Move{From: "n2", To: "n1"}) {
		t.Fatalf("with nil entries: %+v, %v", got, ok)
	}
	bad := newSpec("web", withConstraints("node.nonsense==1"))
	if got, ok := Rebalance(nodes, "web", bad); ok {
		t.Fatalf("moved %+v for a spec that cannot be placed", got)
	}
}

// TestPropertyRebalanceEvensOut checks, without preferences, that applying
// Rebalance's moves one after the other ends within as many moves as the
// service has tasks, each from a node holding a task to one that may take
// it, and ends with the service's tasks on the nodes that may take more
// within one of each other, and no node holding two more than any of them.
func TestPropertyRebalanceEvensOut(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		constraint := rapid.SampledFrom([]string{"", "node.labels.zone!=b", "node.role==worker"}).Draw(t, "constraint")
		spec := newSpec("web")
		if constraint != "" {
			spec = newSpec("web", withConstraints(constraint))
		}
		r := newRequirements("web", spec)
		nodeCount := rapid.IntRange(1, 10).Draw(t, "nodes")
		var nodes []*NodeInfo
		replicas := 0
		for i := range nodeCount {
			ni := NewNodeInfo(drawNode(t, i), nil, nil)
			// Room for anything: resources are tested on their own.
			ni.Node.Description.Resources = &skiffpb.Resources{NanoCpus: 1000 * cpu, MemoryBytes: 1000 * gib}
			n := rapid.IntRange(0, 8).Draw(t, fmt.Sprintf("n%02d.tasks", i))
			withTasks(ni, "web", spec, n)
			withTasks(ni, "other", nil, rapid.IntRange(0, 3).Draw(t, fmt.Sprintf("n%02d.other", i)))
			replicas += n
			nodes = append(nodes, ni)
		}
		moves := 0
		for {
			m, ok := Rebalance(nodes, "web", spec)
			if !ok {
				break
			}
			if moves++; moves > replicas {
				t.Fatalf("more than %d moves", replicas)
			}
			for _, ni := range nodes {
				if ni.Node.GetId() == m.To {
					if f, failed := firstFailure(ni, &r); failed {
						t.Fatalf("move %+v onto a node failing filter %d", m, f)
					}
				}
			}
			applyMove(t, nodes, "web", spec, m)
		}
		lo, hi := -1, 0
		for _, ni := range nodes {
			if _, failed := firstFailure(ni, &r); failed {
				continue
			}
			c := ni.ServiceTasks["web"]
			if lo < 0 || c < lo {
				lo = c
			}
			hi = max(hi, c)
		}
		if lo < 0 {
			return
		}
		if hi-lo > 1 {
			t.Fatalf("eligible nodes hold %d to %d tasks after %d moves", lo, hi, moves)
		}
		for _, ni := range nodes {
			if c := ni.ServiceTasks["web"]; c > lo+1 {
				t.Fatalf("node %s holds %d tasks, eligible ones as few as %d", ni.Node.GetId(), c, lo)
			}
		}
	})
}

// TestPropertyRebalanceTerminates checks, with preferences, constraints and
// resources, that every move leaves its input alone, goes from a node
// holding the service's tasks to another that passes every filter, and that
// moves come to an end.
func TestPropertyRebalanceTerminates(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		p := drawProblem(t)
		spec := drawSpec(t, "web")
		r := newRequirements("web", spec)
		replicas := 0
		for i, ni := range p.nodes {
			n := rapid.IntRange(0, 5).Draw(t, fmt.Sprintf("n%02d.web", i))
			withTasks(ni, "web", spec, n)
			replicas += n
		}
		// Each move lowers the spread at the highest level it changes and
		// leaves the levels above alone, so the moves end. The bound is a
		// guard against a loop, not a proven one: in every case tried the
		// moves were no more than the tasks.
		bound := replicas * (len(r.preferences) + 1)
		for moves := 0; ; moves++ {
			before := cloneAll(p.nodes)
			m, ok := Rebalance(p.nodes, "web", spec)
			if !reflect.DeepEqual(before, p.nodes) {
				t.Fatal("Rebalance changed its input")
			}
			if !ok {
				return
			}
			if moves > bound {
				t.Fatalf("still moving after %d moves", moves)
			}
			for _, ni := range p.nodes {
				if ni.Node.GetId() == m.To {
					if f, failed := firstFailure(ni, &r); failed {
						t.Fatalf("move %+v onto a node failing filter %d", m, f)
					}
				}
			}
			applyMove(t, p.nodes, "web", spec, m)
		}
	})
}

// BenchmarkRebalance1kNodes decides one move for a service of 3,000 tasks
// spread over a zone preference on a loaded 1,000-node cluster, where one
// node came back empty.
func BenchmarkRebalance1kNodes(b *testing.B) {
	nodes := benchCluster(1_000)
	spec := newSpec("web", withReservation(cpu/10, 256*mib), withSpread("node.labels.zone"))
	Schedule(nodes, requests("web", spec, 3_000))
	var emptied *NodeInfo
	for _, ni := range nodes {
		if available(ni.Node) && ni.ServiceTasks["web"] > 0 {
			emptied = ni
			break
		}
	}
	for range emptied.ServiceTasks["web"] {
		emptied.RemoveTask(&skiffpb.Task{ServiceId: "web"}, spec)
	}
	for b.Loop() {
		if _, ok := Rebalance(nodes, "web", spec); !ok {
			b.Fatal("no move towards the emptied node")
		}
	}
}
