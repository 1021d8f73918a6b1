package scheduler

import (
	"fmt"

	skiffpb "github.com/skiffhq/skiff/proto"
)

const (
	cpu = int64(1e9)
	gib = int64(1) << 30
)

// nodeOpt adjusts a test node.
type nodeOpt func(*skiffpb.Node)

// newNode is a READY, ACTIVE worker with 4 CPUs and 8 GiB, whose hostname is
// its ID.
func newNode(id string, opts ...nodeOpt) *skiffpb.Node {
	n := &skiffpb.Node{
		Id:     id,
		Name:   id,
		Spec:   &skiffpb.NodeSpec{},
		Status: &skiffpb.NodeStatus{State: skiffpb.NodeState_NODE_STATE_READY},
		Description: &skiffpb.NodeDescription{
			Hostname:  id,
			Resources: &skiffpb.Resources{NanoCpus: 4 * cpu, MemoryBytes: 8 * gib},
		},
	}
	for _, o := range opts {
		o(n)
	}
	return n
}

func asManager() nodeOpt {
	return func(n *skiffpb.Node) { n.Role = skiffpb.NodeRole_NODE_ROLE_MANAGER }
}

func withAvailability(a skiffpb.NodeAvailability) nodeOpt {
	return func(n *skiffpb.Node) { n.Spec.Availability = a }
}

func withState(s skiffpb.NodeState) nodeOpt {
	return func(n *skiffpb.Node) { n.Status.State = s }
}

func withResources(cpus, mem int64) nodeOpt {
	return func(n *skiffpb.Node) {
		n.Description.Resources = &skiffpb.Resources{NanoCpus: cpus, MemoryBytes: mem}
	}
}

// withLabels sets node labels from key, value pairs.
func withLabels(kv ...string) nodeOpt {
	return func(n *skiffpb.Node) { n.Spec.Labels = pairs(kv) }
}

// withEngineLabels sets engine labels from key, value pairs.
func withEngineLabels(kv ...string) nodeOpt {
	return func(n *skiffpb.Node) { n.Description.EngineLabels = pairs(kv) }
}

func pairs(kv []string) map[string]string {
	m := make(map[string]string, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// infos wraps nodes in empty NodeInfos.
func infos(nodes ...*skiffpb.Node) []*NodeInfo {
	out := make([]*NodeInfo, len(nodes))
	for i, n := range nodes {
		out[i] = NewNodeInfo(n, nil, nil)
	}
	return out
}

// specOpt adjusts a test service spec.
type specOpt func(*skiffpb.ServiceSpec)

func newSpec(name string, opts ...specOpt) *skiffpb.ServiceSpec {
	s := &skiffpb.ServiceSpec{Name: name, Placement: &skiffpb.Placement{}, Endpoint: &skiffpb.EndpointSpec{}}
	for _, o := range opts {
		o(s)
	}
	return s
}

func withConstraints(c ...string) specOpt {
	return func(s *skiffpb.ServiceSpec) { s.Placement.Constraints = c }
}

func withSpread(descriptors ...string) specOpt {
	return func(s *skiffpb.ServiceSpec) {
		for _, d := range descriptors {
			s.Placement.Preferences = append(s.Placement.Preferences, &skiffpb.PlacementPreference{Spread: d})
		}
	}
}

func withReservation(cpus, mem int64) specOpt {
	return func(s *skiffpb.ServiceSpec) {
		s.Reservations = &skiffpb.Resources{NanoCpus: cpus, MemoryBytes: mem}
	}
}

func withHostPort(published, target uint32) specOpt {
	return func(s *skiffpb.ServiceSpec) {
		s.Endpoint.Ports = append(s.Endpoint.Ports, &skiffpb.PortConfig{
			Protocol:      skiffpb.Protocol_PROTOCOL_TCP,
			TargetPort:    target,
			PublishedPort: published,
			PublishMode:   skiffpb.PublishMode_PUBLISH_MODE_HOST,
		})
	}
}

func withMaxPerNode(n uint64) specOpt {
	return func(s *skiffpb.ServiceSpec) { s.Placement.MaxReplicasPerNode = n }
}

// requests makes n pending tasks of service svc running spec, with IDs
// "<svc>.<slot>".
func requests(svc string, spec *skiffpb.ServiceSpec, n int) []Request {
	out := make([]Request, n)
	for i := range out {
		out[i] = Request{
			Task: &skiffpb.Task{
				Id:        fmt.Sprintf("%s.%d", svc, i+1),
				ServiceId: svc,
				Slot:      uint64(i + 1),
				Status:    &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_PENDING},
			},
			Spec: spec,
		}
	}
	return out
}

// perNode counts the placed decisions per node ID.
func perNode(ds []Decision) map[string]int {
	m := make(map[string]int)
	for _, d := range ds {
		if d.Placed() {
			m[d.NodeID]++
		}
	}
	return m
}
