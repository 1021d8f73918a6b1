package scheduler

import (
	"testing"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// TestFilters places one task on one node and checks each filter both ways.
func TestFilters(t *testing.T) {
	// busy has 3 of 4 CPUs, 6 of 8 GiB and port 80/tcp taken, and runs two
	// tasks of service "svc".
	busy := func(n *skiffpb.Node) *NodeInfo {
		ni := NewNodeInfo(n, nil, nil)
		held := newSpec("held", withReservation(3*cpu, 6*gib), withHostPort(80, 8080))
		ni.AddTask(&skiffpb.Task{Id: "t1", ServiceId: "svc"}, held)
		ni.AddTask(&skiffpb.Task{Id: "t2", ServiceId: "svc"}, nil)
		return ni
	}
	tests := []struct {
		name string
		node *skiffpb.Node
		spec *skiffpb.ServiceSpec
		want string // "" when the task must be placed
	}{
		{"ready and active", newNode("n1"), newSpec("svc"), ""},
		{"paused", newNode("n1", withAvailability(skiffpb.NodeAvailability_NODE_AVAILABILITY_PAUSE)), newSpec("svc"),
			"no suitable node (1 node not available for new tasks)"},
		{"drained", newNode("n1", withAvailability(skiffpb.NodeAvailability_NODE_AVAILABILITY_DRAIN)), newSpec("svc"),
			"no suitable node (1 node not available for new tasks)"},
		{"down", newNode("n1", withState(skiffpb.NodeState_NODE_STATE_DOWN)), newSpec("svc"),
			"no suitable node (1 node not available for new tasks)"},
		{"unknown state", newNode("n1", withState(skiffpb.NodeState_NODE_STATE_UNKNOWN)), newSpec("svc"),
			"no suitable node (1 node not available for new tasks)"},

		{"cpu fits exactly", newNode("n1"), newSpec("svc", withReservation(1*cpu, 0)), ""},
		{"cpu short", newNode("n1"), newSpec("svc", withReservation(1*cpu+1, 0)),
			"no suitable node (insufficient cpu on 1 node)"},
		{"memory fits exactly", newNode("n1"), newSpec("svc", withReservation(0, 2*gib)), ""},
		{"memory short", newNode("n1"), newSpec("svc", withReservation(0, 2*gib+1)),
			"no suitable node (insufficient memory on 1 node)"},
		{"cpu before memory", newNode("n1"), newSpec("svc", withReservation(2*cpu, 3*gib)),
			"no suitable node (insufficient cpu on 1 node)"},
		{"no resources reported", newNode("n1", func(n *skiffpb.Node) { n.Description.Resources = nil }),
			newSpec("svc", withReservation(0, 1)), "no suitable node (insufficient memory on 1 node)"},
		{"no reservation on a full node", newNode("n1", withResources(0, 0)), newSpec("svc"), ""},

		{"constraint holds", newNode("n1", withLabels("zone", "a")), newSpec("svc", withConstraints("node.labels.zone==a")), ""},
		{"constraint fails", newNode("n1", withLabels("zone", "b")), newSpec("svc", withConstraints("node.labels.zone==a")),
			"no suitable node (scheduling constraints not satisfied on 1 node)"},
		{"constraints before resources", newNode("n1"), newSpec("svc", withConstraints("node.role==manager"), withReservation(8*cpu, 0)),
			"no suitable node (scheduling constraints not satisfied on 1 node)"},
		{"one of several constraints fails", newNode("n1", asManager()),
			newSpec("svc", withConstraints("node.role==manager", "node.labels.zone==a")),
			"no suitable node (scheduling constraints not satisfied on 1 node)"},

		{"host port free", newNode("n1"), newSpec("svc", withHostPort(81, 80)), ""},
		{"host port taken", newNode("n1"), newSpec("svc", withHostPort(80, 80)),
			"no suitable node (host-mode port already in use on 1 node)"},
		{"same port, other protocol", newNode("n1"), newSpec("svc", func(s *skiffpb.ServiceSpec) {
			s.Endpoint.Ports = []*skiffpb.PortConfig{{Protocol: skiffpb.Protocol_PROTOCOL_UDP, PublishedPort: 80, TargetPort: 80,
				PublishMode: skiffpb.PublishMode_PUBLISH_MODE_HOST}}
		}), ""},
		{"ingress port is not held", newNode("n1"), newSpec("svc", func(s *skiffpb.ServiceSpec) {
			s.Endpoint.Ports = []*skiffpb.PortConfig{{PublishedPort: 80, TargetPort: 80}}
		}), ""},
		{"dynamic host port is not held", newNode("n1"), newSpec("svc", withHostPort(0, 80)), ""},

		{"below max replicas", newNode("n1"), newSpec("svc", withMaxPerNode(3)), ""},
		{"at max replicas", newNode("n1"), newSpec("svc", withMaxPerNode(2)),
			"no suitable node (max replicas per node limit exceeded on 1 node)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes := []*NodeInfo{busy(tt.node)}
			ds := Schedule(nodes, requests("svc", tt.spec, 1))
			if len(ds) != 1 {
				t.Fatalf("got %d decisions, want 1", len(ds))
			}
			d := ds[0]
			if tt.want == "" {
				if d.NodeID != "n1" || d.Explanation != "" {
					t.Errorf("decision = %+v, want placed on n1", d)
				}
				return
			}
			if d.NodeID != "" || d.Explanation != tt.want {
				t.Errorf("decision = %+v, want unplaced with %q", d, tt.want)
			}
		})
	}
}

// TestFiltersOrderIsFixed checks which filter a node that fails several
// counts under.
func TestFiltersOrderIsFixed(t *testing.T) {
	ni := NewNodeInfo(newNode("n1", withAvailability(skiffpb.NodeAvailability_NODE_AVAILABILITY_DRAIN), withResources(0, 0)), nil, nil)
	ni.AddTask(&skiffpb.Task{ServiceId: "svc"}, newSpec("svc", withHostPort(80, 80)))
	r := newRequirements("svc", newSpec("svc",
		withConstraints("node.role==manager"), withReservation(1, 1), withHostPort(80, 80), withMaxPerNode(1)))
	want := []filter{filterAvailable, filterConstraints, filterCPU, filterMemory, filterHostPorts, filterMaxReplicas}
	for _, f := range want {
		got, failed := firstFailure(ni, &r)
		if !failed || got != f {
			t.Fatalf("first failure = %v, %v; want %v", got, failed, f)
		}
		// Fix what failed, and the next filter in order must be reported.
		switch f {
		case filterAvailable:
			ni.Node.Spec.Availability = skiffpb.NodeAvailability_NODE_AVAILABILITY_ACTIVE
		case filterConstraints:
			ni.Node.Role = skiffpb.NodeRole_NODE_ROLE_MANAGER
		case filterCPU:
			ni.Node.Description.Resources.NanoCpus = 1
		case filterMemory:
			ni.Node.Description.Resources.MemoryBytes = 1
		case filterHostPorts:
			ni.HostPorts = nil
		case filterMaxReplicas:
			r.maxPerNode = 2
		}
	}
	if f, failed := firstFailure(ni, &r); failed {
		t.Fatalf("first failure = %v, want none", f)
	}
}

func TestInvalidPlacementIsExplained(t *testing.T) {
	nodes := infos(newNode("n1"))
	spec := newSpec("svc", withConstraints("node.labels.zone=a"))
	ds := Schedule(nodes, requests("svc", spec, 2))
	for _, d := range ds {
		want := `invalid placement constraint "node.labels.zone=a": want KEY==VALUE or KEY!=VALUE`
		if d.Placed() || d.Explanation != want {
			t.Errorf("decision = %+v, want unplaced with %q", d, want)
		}
	}
	ds = Schedule(nodes, requests("svc", newSpec("svc", withSpread("node.id")), 1))
	if ds[0].Placed() || ds[0].Explanation != `invalid placement preference "node.id": cannot spread over "node.id" (want node.labels.<name> or engine.labels.<name>)` {
		t.Errorf("decision = %+v", ds[0])
	}
}
