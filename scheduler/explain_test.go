package scheduler

import (
	"testing"

	skiffpb "github.com/skiffhq/skiff/proto"
)

func TestExplainCounts(t *testing.T) {
	tests := []struct {
		name   string
		counts map[filter]int
		want   string
	}{
		{"no nodes", nil, "no suitable node"},
		{"one reason, one node", map[filter]int{filterMemory: 1},
			"no suitable node (insufficient memory on 1 node)"},
		{"most nodes first", map[filter]int{filterConstraints: 1, filterMemory: 2},
			"no suitable node (insufficient memory on 2 nodes; scheduling constraints not satisfied on 1 node)"},
		{"ties in filter order", map[filter]int{filterMaxReplicas: 3, filterHostPorts: 3, filterAvailable: 3, filterCPU: 5},
			"no suitable node (insufficient cpu on 5 nodes; 3 nodes not available for new tasks; " +
				"host-mode port already in use on 3 nodes; max replicas per node limit exceeded on 3 nodes)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var counts [numFilters]int
			for f, n := range tt.counts {
				counts[f] = n
			}
			if got := explainCounts(counts); got != tt.want {
				t.Errorf("explainCounts = %q\nwant            %q", got, tt.want)
			}
		})
	}
}

// TestExplanation checks explanations end to end: each node is counted
// once, under the first filter it fails.
func TestExplanation(t *testing.T) {
	tests := []struct {
		name  string
		nodes []*skiffpb.Node
		spec  *skiffpb.ServiceSpec
		want  string
	}{
		{
			"no nodes at all", nil, newSpec("svc"), "no suitable node",
		},
		{
			"memory and constraints",
			[]*skiffpb.Node{
				newNode("n1", withLabels("zone", "a")),
				newNode("n2", withLabels("zone", "a")),
				newNode("n3", withLabels("zone", "b"), withResources(64*cpu, 64*gib)),
			},
			newSpec("svc", withConstraints("node.labels.zone==a"), withReservation(0, 16*gib)),
			"no suitable node (insufficient memory on 2 nodes; scheduling constraints not satisfied on 1 node)",
		},
		{
			"every filter",
			[]*skiffpb.Node{
				newNode("drained", withAvailability(skiffpb.NodeAvailability_NODE_AVAILABILITY_DRAIN)),
				newNode("down", withState(skiffpb.NodeState_NODE_STATE_DOWN), asManager()),
				newNode("worker"),
				newNode("small", asManager(), withResources(cpu/2, 8*gib)),
				newNode("tiny", asManager(), withResources(4*cpu, gib/2)),
				newNode("tiny2", asManager(), withResources(4*cpu, gib/2)),
			},
			newSpec("svc", withConstraints("node.role==manager"), withReservation(cpu, gib)),
			"no suitable node (2 nodes not available for new tasks; insufficient memory on 2 nodes; " +
				"scheduling constraints not satisfied on 1 node; insufficient cpu on 1 node)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := Schedule(infos(tt.nodes...), requests("svc", tt.spec, 1))
			if ds[0].Placed() || ds[0].Explanation != tt.want {
				t.Errorf("decision = %+v\nwant explanation %q", ds[0], tt.want)
			}
		})
	}
}

// TestExplanationAfterFilling checks that tasks left over once the nodes
// fill up are explained by the state that stopped them.
func TestExplanationAfterFilling(t *testing.T) {
	nodes := infos(newNode("n1"), newNode("n2"), newNode("n3"))
	ds := Schedule(nodes, requests("web", newSpec("web", withHostPort(443, 443)), 5))
	placed := perNode(ds)
	if len(placed) != 3 {
		t.Fatalf("placed on %v, want one task on each node", placed)
	}
	for _, d := range ds[3:] {
		if want := "no suitable node (host-mode port already in use on 3 nodes)"; d.Explanation != want {
			t.Errorf("explanation = %q, want %q", d.Explanation, want)
		}
	}
}

func TestPreassignedExplanation(t *testing.T) {
	nodes := infos(newNode("n1", withAvailability(skiffpb.NodeAvailability_NODE_AVAILABILITY_PAUSE)))
	reqs := requests("agent", newSpec("agent"), 2)
	reqs[0].Task.NodeId = "n1"
	reqs[1].Task.NodeId = "gone"
	ds := Schedule(nodes, reqs)
	if want := "no suitable node (1 node not available for new tasks)"; ds[0].Explanation != want {
		t.Errorf("explanation = %q, want %q", ds[0].Explanation, want)
	}
	if want := "no suitable node (node gone is not in the cluster)"; ds[1].Explanation != want {
		t.Errorf("explanation = %q, want %q", ds[1].Explanation, want)
	}
}
