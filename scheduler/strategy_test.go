package scheduler

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	skiffpb "github.com/skiffhq/skiff/proto"
)

func TestSpreadAcrossNodes(t *testing.T) {
	// n0 runs 2 tasks of "web" already; n1 runs 3 tasks of another service.
	existing := func(nodes []*NodeInfo) {
		for range 2 {
			nodes[0].AddTask(&skiffpb.Task{ServiceId: "web"}, nil)
		}
		for range 3 {
			nodes[1].AddTask(&skiffpb.Task{ServiceId: "db"}, nil)
		}
	}
	tests := []struct {
		name  string
		tasks int
		want  map[string]int // new tasks per node
	}{
		// Fewest of the service first (n1, n2 over n0), then the fewest
		// tasks overall (n2 over n1).
		{"first task", 1, map[string]int{"n2": 1}},
		{"second task", 2, map[string]int{"n1": 1, "n2": 1}},
		// n1 and n2 catch up with n0's two before n0 gets any.
		{"catch up", 4, map[string]int{"n1": 2, "n2": 2}},
		{"then even", 7, map[string]int{"n0": 1, "n1": 3, "n2": 3}},
		{"many", 32, map[string]int{"n0": 10, "n1": 11, "n2": 11}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes := infos(newNode("n0"), newNode("n1"), newNode("n2"))
			existing(nodes)
			ds := Schedule(nodes, requests("web", newSpec("web"), tt.tasks))
			if got := perNode(ds); !maps.Equal(got, tt.want) {
				t.Errorf("placed %v, want %v", got, tt.want)
			}
		})
	}
}

func TestTiesBreakByNodeID(t *testing.T) {
	// Input order must not matter: the smallest ID wins a tie.
	nodes := infos(newNode("c"), newNode("a"), newNode("b"))
	ds := Schedule(nodes, requests("web", newSpec("web"), 4))
	var got []string
	for _, d := range ds {
		got = append(got, d.NodeID)
	}
	if want := []string{"a", "b", "c", "a"}; !slices.Equal(got, want) {
		t.Errorf("placed on %v, want %v", got, want)
	}
}

func TestSpreadSkipsFullNodes(t *testing.T) {
	// n0 has room for one task; the rest go to n1.
	nodes := infos(newNode("n0", withResources(cpu, 8*gib)), newNode("n1", withResources(16*cpu, 8*gib)))
	ds := Schedule(nodes, requests("web", newSpec("web", withReservation(cpu, 0)), 6))
	if got, want := perNode(ds), map[string]int{"n0": 1, "n1": 5}; !maps.Equal(got, want) {
		t.Errorf("placed %v, want %v", got, want)
	}
}

func TestMaxReplicasPerNode(t *testing.T) {
	nodes := infos(newNode("n0"), newNode("n1"), newNode("n2"))
	ds := Schedule(nodes, requests("web", newSpec("web", withMaxPerNode(2)), 7))
	if got, want := perNode(ds), map[string]int{"n0": 2, "n1": 2, "n2": 2}; !maps.Equal(got, want) {
		t.Errorf("placed %v, want %v", got, want)
	}
	if want := "no suitable node (max replicas per node limit exceeded on 3 nodes)"; ds[6].Explanation != want {
		t.Errorf("explanation = %q, want %q", ds[6].Explanation, want)
	}
}

func TestSpreadByPreference(t *testing.T) {
	zoned := func(id, zone string) *skiffpb.Node {
		if zone == "" {
			return newNode(id)
		}
		return newNode(id, withLabels("zone", zone))
	}
	tests := []struct {
		name  string
		nodes []*skiffpb.Node
		spec  *skiffpb.ServiceSpec
		tasks int
		want  map[string]int // tasks per zone ("" for unlabelled nodes)
	}{
		{
			name: "zones of unequal size get equal shares",
			nodes: []*skiffpb.Node{
				zoned("a1", "a"),
				zoned("b1", "b"), zoned("b2", "b"), zoned("b3", "b"),
				zoned("c1", "c"), zoned("c2", "c"),
			},
			spec:  newSpec("web", withSpread("node.labels.zone")),
			tasks: 9,
			want:  map[string]int{"a": 3, "b": 3, "c": 3},
		},
		{
			name:  "nodes without the label form their own group",
			nodes: []*skiffpb.Node{zoned("a1", "a"), zoned("a2", "a"), zoned("x1", ""), zoned("x2", "")},
			spec:  newSpec("web", withSpread("node.labels.zone")),
			tasks: 4,
			want:  map[string]int{"a": 2, "": 2},
		},
		{
			name:  "a full zone leaves the rest to the others",
			nodes: []*skiffpb.Node{zoned("a1", "a"), zoned("b1", "b"), zoned("c1", "c")},
			spec:  newSpec("web", withSpread("node.labels.zone"), withMaxPerNode(2)),
			tasks: 6,
			want:  map[string]int{"a": 2, "b": 2, "c": 2},
		},
		{
			name: "constraints apply within the zones",
			nodes: []*skiffpb.Node{
				zoned("a1", "a"), newNode("a2", withLabels("zone", "a"), asManager()),
				newNode("b1", withLabels("zone", "b"), asManager()),
			},
			spec:  newSpec("web", withSpread("node.labels.zone"), withConstraints("node.role==worker")),
			tasks: 4,
			want:  map[string]int{"a": 4},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes := infos(tt.nodes...)
			zoneOf := make(map[string]string)
			for _, n := range tt.nodes {
				zoneOf[n.GetId()] = n.GetSpec().GetLabels()["zone"]
			}
			ds := Schedule(nodes, requests("web", tt.spec, tt.tasks))
			got := make(map[string]int)
			for id, n := range perNode(ds) {
				got[zoneOf[id]] += n
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("per zone %v, want %v (decisions %v)", got, tt.want, ds)
			}
		})
	}
}

func TestSpreadByPreferenceCountsExistingTasks(t *testing.T) {
	// Zone a already runs 4 tasks of web, two of them on a paused node:
	// they still count, so zone b gets new tasks until it catches up.
	nodes := infos(
		newNode("a1", withLabels("zone", "a")),
		newNode("a2", withLabels("zone", "a"), withAvailability(skiffpb.NodeAvailability_NODE_AVAILABILITY_PAUSE)),
		newNode("b1", withLabels("zone", "b")),
	)
	for _, ni := range nodes[:2] {
		for range 2 {
			ni.AddTask(&skiffpb.Task{ServiceId: "web"}, nil)
		}
	}
	ds := Schedule(nodes, requests("web", newSpec("web", withSpread("node.labels.zone")), 6))
	if got, want := perNode(ds), map[string]int{"a1": 1, "b1": 5}; !maps.Equal(got, want) {
		t.Errorf("placed %v, want %v", got, want)
	}
}

func TestSpreadByNestedPreferences(t *testing.T) {
	// Two zones; zone a has two racks, zone b one. Each zone gets half of
	// the tasks, and zone a's half is split between its racks.
	var ns []*skiffpb.Node
	for _, z := range []struct{ zone, rack string }{{"a", "r1"}, {"a", "r1"}, {"a", "r2"}, {"b", "r3"}, {"b", "r3"}} {
		ns = append(ns, newNode(fmt.Sprintf("n%d", len(ns)), withLabels("zone", z.zone), withEngineLabels("rack", z.rack)))
	}
	spec := newSpec("web", withSpread("node.labels.zone", "engine.labels.rack"))
	ds := Schedule(infos(ns...), requests("web", spec, 8))
	perRack := make(map[string]int)
	for i, n := range ns {
		perRack[n.GetDescription().GetEngineLabels()["rack"]] += perNode(ds)[fmt.Sprintf("n%d", i)]
	}
	if want := map[string]int{"r1": 2, "r2": 2, "r3": 4}; !maps.Equal(perRack, want) {
		t.Errorf("per rack %v, want %v", perRack, want)
	}
}

func TestPreassignedTasksGoFirst(t *testing.T) {
	// A global task for n0 must get its CPU even though a replicated task
	// comes first in the request list and would otherwise take n0.
	nodes := infos(newNode("n0", withResources(cpu, 8*gib)))
	reqs := append(requests("web", newSpec("web", withReservation(cpu, 0)), 1),
		requests("agent", newSpec("agent", withReservation(cpu, 0)), 1)...)
	reqs[1].Task.NodeId = "n0"
	ds := Schedule(nodes, reqs)
	if ds[1].NodeID != "n0" || ds[0].Placed() {
		t.Errorf("decisions = %+v, want only the global task placed", ds)
	}
}

func TestScheduleCommitsToNodeInfo(t *testing.T) {
	nodes := infos(newNode("n0"), newNode("n1"))
	spec := newSpec("web", withReservation(cpu, gib), withHostPort(80, 8080))
	ds := Schedule(nodes, requests("web", spec, 2))
	for _, ni := range nodes {
		if ni.Tasks != 1 || ni.ServiceTasks["web"] != 1 || ni.Reserved != (Resources{cpu, gib}) {
			t.Errorf("node %s after scheduling: %+v", ni.Node.GetId(), ni)
		}
		if _, ok := ni.HostPorts[HostPort{Protocol: skiffpb.Protocol_PROTOCOL_TCP, Port: 80}]; !ok {
			t.Errorf("node %s does not hold port 80", ni.Node.GetId())
		}
	}
	for _, d := range ds {
		if len(d.Ports) != 1 || d.Ports[0].GetPublishedPort() != 80 || d.Ports[0].GetTargetPort() != 8080 {
			t.Errorf("decision %s ports = %v", d.TaskID, d.Ports)
		}
	}
	if ds[0].Ports[0] == ds[1].Ports[0] {
		t.Error("decisions share a PortBinding message")
	}
	// A second call sees the first: the port is taken everywhere now.
	ds = Schedule(nodes, requests("web2", spec, 1))
	if ds[0].Placed() {
		t.Errorf("second call placed %+v on a node whose port is taken", ds[0])
	}
}

func TestGroupsOfOneServiceSeeEachOther(t *testing.T) {
	// During a rolling update, tasks of old and new spec are one service:
	// spreading counts both.
	nodes := infos(newNode("n0"), newNode("n1"))
	reqs := append(requests("web", newSpec("web"), 1), requests("web", newSpec("web"), 1)...)
	reqs[1].Task.Id = "web.new"
	if got := perNode(Schedule(nodes, reqs)); got["n0"] != 1 || got["n1"] != 1 {
		t.Errorf("placed %v, want one task per node", got)
	}
}

func TestDecisionsInRequestOrder(t *testing.T) {
	nodes := infos(newNode("n0"), newNode("n1"))
	reqs := append(requests("a", newSpec("a"), 2), requests("b", newSpec("b"), 2)...)
	reqs[0], reqs[2] = reqs[2], reqs[0]
	ds := Schedule(nodes, reqs)
	for i, d := range ds {
		if d.TaskID != reqs[i].Task.GetId() || !d.Placed() {
			t.Errorf("decision %d = %+v, want task %s placed", i, d, reqs[i].Task.GetId())
		}
	}
}

func TestNilNodesAreSkipped(t *testing.T) {
	nodes := []*NodeInfo{nil, NewNodeInfo(newNode("n1"), nil, nil), nil}
	ds := Schedule(nodes, requests("web", newSpec("web", withSpread("node.labels.zone")), 2))
	if got := perNode(ds); got["n1"] != 2 {
		t.Errorf("placed %v, want both on n1", got)
	}
}
