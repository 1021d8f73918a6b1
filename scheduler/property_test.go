package scheduler

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	skiffpb "github.com/skiffhq/skiff/proto"
	"pgregory.net/rapid"
)

// problem is a generated scheduling input.
type problem struct {
	nodes []*NodeInfo
	reqs  []Request
}

// drawNode draws node number i of a cluster.
func drawNode(t *rapid.T, i int) *skiffpb.Node {
	id := fmt.Sprintf("n%02d", i)
	n := newNode(id,
		withResources(rapid.Int64Range(0, 16).Draw(t, id+".halfcpus")*cpu/2,
			rapid.Int64Range(0, 32).Draw(t, id+".halfgib")*gib/2),
		withLabels("zone", rapid.SampledFrom([]string{"", "a", "b", "c"}).Draw(t, id+".zone")),
		withEngineLabels("disk", rapid.SampledFrom([]string{"", "ssd", "hdd"}).Draw(t, id+".disk")),
	)
	if rapid.IntRange(0, 3).Draw(t, id+".manager") == 0 {
		n.Role = skiffpb.NodeRole_NODE_ROLE_MANAGER
	}
	// Mostly schedulable, so that the other filters get exercised.
	if rapid.IntRange(0, 5).Draw(t, id+".unavailable") == 0 {
		n.Spec.Availability = rapid.SampledFrom([]skiffpb.NodeAvailability{
			skiffpb.NodeAvailability_NODE_AVAILABILITY_PAUSE, skiffpb.NodeAvailability_NODE_AVAILABILITY_DRAIN,
		}).Draw(t, id+".availability")
	}
	if rapid.IntRange(0, 7).Draw(t, id+".notready") == 0 {
		n.Status.State = skiffpb.NodeState_NODE_STATE_DOWN
	}
	return n
}

// drawSpec draws the spec of service svc.
func drawSpec(t *rapid.T, svc string) *skiffpb.ServiceSpec {
	// Valid constraints that hold on some drawn nodes and not on others.
	constraints := []string{
		"node.role==worker",
		"node.role!=worker",
		"node.labels.zone==a",
		"node.labels.zone!=b",
		"engine.labels.disk==ssd",
		"engine.labels.disk!=hdd",
		"node.id!=n03",
		"node.hostname==n01",
	}
	s := newSpec(svc,
		withReservation(rapid.Int64Range(0, 8).Draw(t, svc+".quartercpus")*cpu/4,
			rapid.Int64Range(0, 8).Draw(t, svc+".halfgib")*gib/2),
		withMaxPerNode(rapid.Uint64Range(0, 3).Draw(t, svc+".max")),
		withConstraints(rapid.SliceOfNDistinct(rapid.SampledFrom(constraints), 0, 2, rapid.ID[string]).Draw(t, svc+".constraints")...),
		withSpread(rapid.SliceOfNDistinct(rapid.SampledFrom([]string{"node.labels.zone", "engine.labels.disk"}), 0, 2, rapid.ID[string]).Draw(t, svc+".spread")...),
	)
	if port := rapid.SampledFrom([]uint32{0, 0, 80, 443}).Draw(t, svc+".port"); port != 0 {
		withHostPort(port, 8080)(s)
	}
	return s
}

// drawProblem draws nodes with some tasks already on them, and tasks to
// place, of several services, in random order.
func drawProblem(t *rapid.T) problem {
	var p problem
	nodeCount := rapid.IntRange(0, 12).Draw(t, "nodes")
	serviceCount := rapid.IntRange(1, 4).Draw(t, "services")
	specs := make([]*skiffpb.ServiceSpec, serviceCount)
	for s := range specs {
		specs[s] = drawSpec(t, fmt.Sprintf("s%d", s))
	}
	for i := range nodeCount {
		ni := NewNodeInfo(drawNode(t, i), nil, nil)
		// Existing tasks are committed only where they fit, as the
		// scheduler would have, so the starting point is consistent.
		for k := range rapid.IntRange(0, 3).Draw(t, fmt.Sprintf("n%02d.existing", i)) {
			s := rapid.IntRange(0, serviceCount-1).Draw(t, fmt.Sprintf("n%02d.existing%d", i, k))
			r := newRequirements(specs[s].GetName(), specs[s])
			if _, failed := dynamicFailure(ni, &r, ni.ServiceTasks[r.serviceID]); !failed {
				ni.AddTask(&skiffpb.Task{ServiceId: r.serviceID}, specs[s])
			}
		}
		p.nodes = append(p.nodes, ni)
	}
	for s, spec := range specs {
		n := rapid.IntRange(0, 15).Draw(t, fmt.Sprintf("s%d.tasks", s))
		rs := requests(spec.GetName(), spec, n)
		for _, r := range rs {
			// A few tasks name their node, as a global service's do.
			if rapid.IntRange(0, 9).Draw(t, r.Task.GetId()+".global") == 0 {
				r.Task.NodeId = fmt.Sprintf("n%02d", rapid.IntRange(0, nodeCount).Draw(t, r.Task.GetId()+".node"))
			}
		}
		p.reqs = append(p.reqs, rs...)
	}
	p.reqs = rapid.Permutation(p.reqs).Draw(t, "order")
	return p
}

// clone copies the problem's NodeInfos, so that it can be scheduled twice.
func (p problem) clone() problem {
	c := problem{reqs: p.reqs, nodes: make([]*NodeInfo, len(p.nodes))}
	for i, ni := range p.nodes {
		c.nodes[i] = ni.Clone()
	}
	return c
}

// TestPropertyInvariants checks, on random clusters and batches, that
// resources are never overcommitted, constraints and the other filters are
// never violated, the books stay consistent, and a task is left unplaced
// only when no node could take it.
func TestPropertyInvariants(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		p := drawProblem(t)
		before := p.clone()
		ds := Schedule(p.nodes, p.reqs)
		if len(ds) != len(p.reqs) {
			t.Fatalf("%d decisions for %d requests", len(ds), len(p.reqs))
		}

		byID := make(map[string]int)
		for i, ni := range p.nodes {
			byID[ni.Node.GetId()] = i
		}
		// What each node should hold now: what it held, plus the placements.
		want := before.clone().nodes
		for i, d := range ds {
			r := p.reqs[i]
			if d.TaskID != r.Task.GetId() {
				t.Fatalf("decision %d is for task %s, want %s", i, d.TaskID, r.Task.GetId())
			}
			req := newRequirements(r.Task.GetServiceId(), r.Spec)
			if !d.Placed() {
				if !strings.HasPrefix(d.Explanation, noSuitableNode) {
					t.Fatalf("task %s unplaced with explanation %q", d.TaskID, d.Explanation)
				}
				continue
			}
			if pre := r.Task.GetNodeId(); pre != "" && pre != d.NodeID {
				t.Fatalf("task %s names node %s but went to %s", d.TaskID, pre, d.NodeID)
			}
			j, ok := byID[d.NodeID]
			if !ok {
				t.Fatalf("task %s placed on unknown node %s", d.TaskID, d.NodeID)
			}
			ni := want[j]
			if !available(ni.Node) {
				t.Fatalf("task %s placed on unavailable node %s", d.TaskID, d.NodeID)
			}
			for _, c := range req.constraints {
				if !c.Match(ni.Node) {
					t.Fatalf("task %s placed on %s, violating %s", d.TaskID, d.NodeID, c)
				}
			}
			for _, hp := range req.ports {
				if _, taken := ni.HostPorts[hp]; taken {
					t.Fatalf("task %s placed on %s, where port %s is taken", d.TaskID, d.NodeID, hp)
				}
			}
			if req.maxPerNode > 0 && ni.ServiceTasks[req.serviceID] >= req.maxPerNode {
				t.Fatalf("task %s placed on %s beyond max replicas %d", d.TaskID, d.NodeID, req.maxPerNode)
			}
			ni.add(req.serviceID, req.usage)
		}
		for i, ni := range p.nodes {
			if !reflect.DeepEqual(ni, want[i]) {
				t.Fatalf("node %s books: got %+v, want %+v", ni.Node.GetId(), ni, want[i])
			}
			// The existing tasks fit when drawn, and only tasks that reserve
			// something add to Reserved, each after checking it fits; so a
			// node's reservations never exceed its capacity.
			if c := ni.capacity(); ni.Reserved.NanoCPUs > c.NanoCPUs || ni.Reserved.MemoryBytes > c.MemoryBytes {
				t.Fatalf("node %s overcommitted: reserved %+v of %+v", ni.Node.GetId(), ni.Reserved, c)
			}
		}
		// Filters only tighten as tasks are placed, so a task left unplaced
		// must still find no node at the end.
		for i, d := range ds {
			if d.Placed() || p.reqs[i].Task.GetNodeId() != "" {
				continue
			}
			req := newRequirements(p.reqs[i].Task.GetServiceId(), p.reqs[i].Spec)
			for _, ni := range p.nodes {
				if _, failed := firstFailure(ni, &req); !failed {
					t.Fatalf("task %s unplaced (%s) but node %s fits it", d.TaskID, d.Explanation, ni.Node.GetId())
				}
			}
		}
	})
}

// TestPropertyDeterministic checks that the same input gives the same
// decisions and the same books, whatever the order of the nodes.
func TestPropertyDeterministic(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		p := drawProblem(t)
		q := p.clone()
		q.nodes = rapid.Permutation(q.nodes).Draw(t, "node order")
		a := Schedule(p.nodes, p.reqs)
		b := Schedule(q.nodes, q.reqs)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("decisions differ:\n%v\n%v", a, b)
		}
		books := func(nodes []*NodeInfo) map[string]*NodeInfo {
			m := make(map[string]*NodeInfo, len(nodes))
			for _, ni := range nodes {
				m[ni.Node.GetId()] = ni
			}
			return m
		}
		if !reflect.DeepEqual(books(p.nodes), books(q.nodes)) {
			t.Fatal("node books differ")
		}
	})
}

// TestPropertyEqualNodesStayBalanced checks that on equal nodes, all
// eligible and without preferences, every service's tasks differ by at most
// one between any two nodes after a batch.
func TestPropertyEqualNodesStayBalanced(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		nodeCount := rapid.IntRange(1, 16).Draw(t, "nodes")
		var nodes []*NodeInfo
		for i := range nodeCount {
			// Room for any batch drawn below, so that no node fills up.
			n := newNode(fmt.Sprintf("n%02d", i), withResources(1000*cpu, 1000*gib), withLabels("zone", "a"))
			nodes = append(nodes, NewNodeInfo(n, nil, nil))
		}
		var reqs []Request
		serviceCount := rapid.IntRange(1, 5).Draw(t, "services")
		for s := range serviceCount {
			svc := fmt.Sprintf("s%d", s)
			spec := newSpec(svc, withReservation(rapid.Int64Range(0, 4).Draw(t, svc+".cpu")*cpu/4, gib/4))
			reqs = append(reqs, requests(svc, spec, rapid.IntRange(0, 60).Draw(t, svc+".tasks"))...)
		}
		reqs = rapid.Permutation(reqs).Draw(t, "order")
		ds := Schedule(nodes, reqs)
		for _, d := range ds {
			if !d.Placed() {
				t.Fatalf("task %s unplaced: %s", d.TaskID, d.Explanation)
			}
		}
		for s := range serviceCount {
			svc := fmt.Sprintf("s%d", s)
			lo, hi := nodes[0].ServiceTasks[svc], nodes[0].ServiceTasks[svc]
			for _, ni := range nodes {
				lo, hi = min(lo, ni.ServiceTasks[svc]), max(hi, ni.ServiceTasks[svc])
			}
			if hi-lo > 1 {
				t.Fatalf("service %s: %d to %d tasks per node", svc, lo, hi)
			}
		}
	})
}

// TestPropertySpreadOverZones checks that with a spread preference and
// room everywhere, every zone (nodes without the label being one) gets the
// same share of a service, give or take one task, however many nodes it has.
func TestPropertySpreadOverZones(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		zones := []string{"", "a", "b", "c"}[:rapid.IntRange(1, 4).Draw(t, "zones")]
		var nodes []*NodeInfo
		for z, zone := range zones {
			for i := range rapid.IntRange(1, 5).Draw(t, "nodes in "+zone) {
				n := newNode(fmt.Sprintf("n%d-%d", z, i), withResources(1000*cpu, 1000*gib))
				if zone != "" {
					n.Spec.Labels = map[string]string{"zone": zone}
				}
				nodes = append(nodes, NewNodeInfo(n, nil, nil))
			}
		}
		tasks := rapid.IntRange(0, 80).Draw(t, "tasks")
		Schedule(nodes, requests("web", newSpec("web", withSpread("node.labels.zone")), tasks))
		perZone := make(map[string]int)
		for _, ni := range nodes {
			perZone[ni.Node.GetSpec().GetLabels()["zone"]] += ni.ServiceTasks["web"]
		}
		lo, hi := tasks, 0
		for _, z := range zones {
			lo, hi = min(lo, perZone[z]), max(hi, perZone[z])
		}
		if hi-lo > 1 {
			t.Fatalf("per zone %v", perZone)
		}
	})
}
