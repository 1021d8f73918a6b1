package scheduler

import (
	"strings"
	"testing"

	skiffpb "github.com/skiffhq/skiff/proto"
)

func TestNewNodeInfo(t *testing.T) {
	web := newSpec("web", withReservation(cpu/2, gib), withHostPort(80, 8080), withHostPort(0, 9090))
	specs := map[string]*skiffpb.ServiceSpec{"web": web}
	tasks := []*skiffpb.Task{
		{Id: "w1", ServiceId: "web"},
		{Id: "d1", ServiceId: "db"}, // no spec known: counts, reserves nothing
		{Id: "d2", ServiceId: "db"},
	}
	ni := NewNodeInfo(newNode("n1"), tasks, func(t *skiffpb.Task) *skiffpb.ServiceSpec { return specs[t.GetServiceId()] })
	if ni.Tasks != 3 || ni.ServiceTasks["web"] != 1 || ni.ServiceTasks["db"] != 2 {
		t.Errorf("counts: %d tasks, per service %v", ni.Tasks, ni.ServiceTasks)
	}
	if ni.Reserved != (Resources{NanoCPUs: cpu / 2, MemoryBytes: gib}) {
		t.Errorf("reserved %+v", ni.Reserved)
	}
	if len(ni.HostPorts) != 1 {
		t.Errorf("host ports %v, want only 80/tcp", ni.HostPorts)
	}

	ni.RemoveTask(tasks[0], web)
	ni.RemoveTask(tasks[1], nil)
	if ni.Tasks != 1 || ni.ServiceTasks["db"] != 1 || len(ni.HostPorts) != 0 || ni.Reserved != (Resources{}) {
		t.Errorf("after removing: %+v", ni)
	}
	if _, ok := ni.ServiceTasks["web"]; ok {
		t.Error("a service with no tasks left is still counted")
	}
}

func TestNewNodeInfoWithoutSpecs(t *testing.T) {
	ni := NewNodeInfo(newNode("n1"), []*skiffpb.Task{{ServiceId: "a"}}, nil)
	if ni.Tasks != 1 || ni.ServiceTasks["a"] != 1 {
		t.Errorf("%+v", ni)
	}
}

func TestHandBuiltNodeInfo(t *testing.T) {
	// Nil maps are valid input.
	nodes := []*NodeInfo{{Node: newNode("n1")}}
	ds := Schedule(nodes, requests("web", newSpec("web", withHostPort(80, 80)), 1))
	if !ds[0].Placed() || nodes[0].ServiceTasks["web"] != 1 || len(nodes[0].HostPorts) != 1 {
		t.Errorf("decision %+v, node %+v", ds[0], nodes[0])
	}
}

func TestClone(t *testing.T) {
	ni := NewNodeInfo(newNode("n1"), []*skiffpb.Task{{ServiceId: "a"}}, nil)
	c := ni.Clone()
	Schedule([]*NodeInfo{c}, requests("web", newSpec("web", withReservation(cpu, gib), withHostPort(80, 80)), 1))
	if ni.Tasks != 1 || len(ni.ServiceTasks) != 1 || len(ni.HostPorts) != 0 || ni.Reserved != (Resources{}) {
		t.Errorf("scheduling onto a clone changed the original: %+v", ni)
	}
	if c.Tasks != 2 {
		t.Errorf("clone: %+v", c)
	}
}

func TestValidateSpec(t *testing.T) {
	tests := []struct {
		name string
		spec *skiffpb.ServiceSpec
		want []string // in the error; none for a valid spec
	}{
		{"valid", newSpec("s", withConstraints("node.role==worker"), withSpread("node.labels.zone"),
			withReservation(cpu, gib), withHostPort(80, 80), withHostPort(0, 81), withHostPort(0, 82)), nil},
		{"nil spec", nil, nil},
		{"bad constraint and preference", newSpec("s", withConstraints("node.rol==worker"), withSpread("zone")),
			[]string{`service "s": `, `unknown key "node.rol"`, `cannot spread over "zone"`}},
		{"negative reservations", newSpec("s", withReservation(-1, -2)),
			[]string{"cpu reservation -1 is negative", "memory reservation -2 is negative"}},
		{"port published twice", newSpec("s", withHostPort(80, 80), withHostPort(80, 81)),
			[]string{"host-mode port 80/tcp is published more than once"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateSpec(tt.spec)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("ValidateSpec: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("ValidateSpec: want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestNegativeReservationCreatesNoCapacity(t *testing.T) {
	nodes := infos(newNode("n1", withResources(cpu, gib)))
	Schedule(nodes, requests("neg", newSpec("neg", withReservation(-8*cpu, -8*gib)), 1))
	ds := Schedule(nodes, requests("big", newSpec("big", withReservation(2*cpu, 0)), 1))
	if ds[0].Placed() {
		t.Error("a negative reservation made room for a task that does not fit")
	}
}
