package dispatcher

import (
	"fmt"
	"reflect"
	"sort"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

const (
	stPending  = skiffpb.TaskState_TASK_STATE_PENDING
	stAssigned = skiffpb.TaskState_TASK_STATE_ASSIGNED
	stRunning  = skiffpb.TaskState_TASK_STATE_RUNNING
	stComplete = skiffpb.TaskState_TASK_STATE_COMPLETE
	stShutdown = skiffpb.TaskState_TASK_STATE_SHUTDOWN
	stFailed   = skiffpb.TaskState_TASK_STATE_FAILED
	stRejected = skiffpb.TaskState_TASK_STATE_REJECTED
	stRemove   = skiffpb.TaskState_TASK_STATE_REMOVE
	stOrphaned = skiffpb.TaskState_TASK_STATE_ORPHANED
)

// TestAssigned: a node hears about a task while it should run, or while it
// should stop and has not been seen stopped.
func TestAssigned(t *testing.T) {
	cases := []struct {
		desired, state skiffpb.TaskState
		want           bool
	}{
		{stRunning, stPending, true},
		{stRunning, stAssigned, true},
		{stRunning, stRunning, true},
		{stRunning, stFailed, true}, // the orchestrator has not decided yet
		{stRunning, stComplete, true},
		{skiffpb.TaskState_TASK_STATE_NEW, skiffpb.TaskState_TASK_STATE_NEW, true},
		{stShutdown, stRunning, true}, // must still be told to stop
		{stShutdown, stAssigned, true},
		{stShutdown, stComplete, false},
		{stShutdown, stShutdown, false},
		{stShutdown, stFailed, false},
		{stShutdown, stRejected, false},
		{stRemove, stRunning, true},
		{stRemove, stShutdown, false},
		{stRemove, stOrphaned, false},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%v/%v", tc.desired, tc.state), func(t *testing.T) {
			tk := &skiffpb.Task{DesiredState: tc.desired, Status: &skiffpb.TaskStatus{State: tc.state}}
			if got := assigned(tk); got != tc.want {
				t.Errorf("assigned = %v, want %v", got, tc.want)
			}
		})
	}
	if !assigned(&skiffpb.Task{}) {
		t.Error("a zero task (desired NEW) is assigned")
	}
}

// fixture is a store with service sv1 at spec version 2 (version 1 kept),
// networks net1 and net2, and nodes n1 and n2.
func fixture(t *testing.T) *Dispatcher {
	t.Helper()
	store := state.New()
	spec := func(img string) *skiffpb.ServiceSpec {
		return &skiffpb.ServiceSpec{Name: "st_web", Container: &skiffpb.ContainerSpec{Image: img}}
	}
	actions := []*skiffpb.StoreAction{
		{Action: &skiffpb.StoreAction_PutService{PutService: &skiffpb.Service{
			Id: "sv1", Meta: &skiffpb.Meta{}, Spec: spec("img:2"), SpecVersion: 2,
			PreviousSpecs: []*skiffpb.VersionedSpec{{Version: 1, Spec: spec("img:1")}},
		}}},
		{Action: &skiffpb.StoreAction_PutNetwork{PutNetwork: &skiffpb.Network{Id: "net1", Meta: &skiffpb.Meta{}, Spec: &skiffpb.NetworkSpec{Name: "st_a"}, Vni: 4096}}},
		{Action: &skiffpb.StoreAction_PutNetwork{PutNetwork: &skiffpb.Network{Id: "net2", Meta: &skiffpb.Meta{}, Spec: &skiffpb.NetworkSpec{Name: "st_b"}, Vni: 4097}}},
		{Action: &skiffpb.StoreAction_PutNode{PutNode: &skiffpb.Node{Id: "n1", Meta: &skiffpb.Meta{}, Name: "h1"}}},
		{Action: &skiffpb.StoreAction_PutNode{PutNode: &skiffpb.Node{Id: "n2", Meta: &skiffpb.Meta{}, Name: "h2"}}},
	}
	if err := store.Apply(1, &skiffpb.Command{Actions: actions}); err != nil {
		t.Fatal(err)
	}
	return New(Config{Store: store})
}

// task is a task of sv1 at spec version 2.
func task(id, node string, desired, st skiffpb.TaskState) *skiffpb.Task {
	return &skiffpb.Task{
		Id: id, ServiceId: "sv1", NodeId: node, SpecVersion: 2, DesiredState: desired,
		Status: &skiffpb.TaskStatus{State: st},
	}
}

func put(t *skiffpb.Task) state.Event { return state.Event{Object: t} }
func del(t *skiffpb.Task) state.Event { return state.Event{Object: t, Deleted: true} }

// TestChanges: store events become the node's assignment changes - new
// tasks and desired-state changes are sent, finished or deleted tasks the
// agent held are removed, and everything else (other nodes, status echoes,
// other kinds) is left out.
func TestChanges(t *testing.T) {
	cases := []struct {
		name    string
		sent    map[string]skiffpb.TaskState // what the agent was told: id → desired
		batches [][]state.Event
		// wantUpdated maps the tasks sent to the desired state sent; nil
		// wantUpdated and wantRemoved mean no message at all.
		wantUpdated map[string]skiffpb.TaskState
		wantRemoved []string
		wantSent    map[string]skiffpb.TaskState
	}{
		{name: "no events", sent: map[string]skiffpb.TaskState{"a": stRunning},
			wantSent: map[string]skiffpb.TaskState{"a": stRunning}},
		{name: "another node's task", batches: [][]state.Event{{put(task("x", "n2", stRunning, stAssigned))}}},
		{name: "unplaced task", batches: [][]state.Event{{put(task("x", "", stRunning, stPending))}}},
		{name: "new task on the node",
			batches:     [][]state.Event{{put(task("a", "n1", stRunning, stAssigned))}},
			wantUpdated: map[string]skiffpb.TaskState{"a": stRunning},
			wantSent:    map[string]skiffpb.TaskState{"a": stRunning}},
		{name: "status echo of a sent task", sent: map[string]skiffpb.TaskState{"a": stRunning},
			batches:  [][]state.Event{{put(task("a", "n1", stRunning, stRunning))}},
			wantSent: map[string]skiffpb.TaskState{"a": stRunning}},
		{name: "failed but still wanted", sent: map[string]skiffpb.TaskState{"a": stRunning},
			batches:  [][]state.Event{{put(task("a", "n1", stRunning, stFailed))}},
			wantSent: map[string]skiffpb.TaskState{"a": stRunning}},
		{name: "told to stop while running", sent: map[string]skiffpb.TaskState{"a": stRunning},
			batches:     [][]state.Event{{put(task("a", "n1", stShutdown, stRunning))}},
			wantUpdated: map[string]skiffpb.TaskState{"a": stShutdown},
			wantSent:    map[string]skiffpb.TaskState{"a": stShutdown}},
		{name: "told to stop after it failed", sent: map[string]skiffpb.TaskState{"a": stRunning},
			batches:     [][]state.Event{{put(task("a", "n1", stShutdown, stFailed))}},
			wantRemoved: []string{"a"}},
		{name: "stopped as told", sent: map[string]skiffpb.TaskState{"a": stShutdown},
			batches:     [][]state.Event{{put(task("a", "n1", stShutdown, stShutdown))}},
			wantRemoved: []string{"a"}},
		{name: "finished task never sent", batches: [][]state.Event{{put(task("a", "n1", stShutdown, stComplete))}}},
		{name: "sent task deleted", sent: map[string]skiffpb.TaskState{"a": stRunning, "b": stRunning},
			batches:     [][]state.Event{{del(task("a", "n1", stRemove, stRunning))}},
			wantRemoved: []string{"a"},
			wantSent:    map[string]skiffpb.TaskState{"b": stRunning}},
		{name: "unsent task deleted", batches: [][]state.Event{{del(task("a", "n1", stRemove, stShutdown))}}},
		{name: "created then deleted in one coalesced message",
			batches: [][]state.Event{{put(task("a", "n1", stRunning, stAssigned))}, {del(task("a", "n1", stRunning, stAssigned))}}},
		{name: "sent, updated then deleted", sent: map[string]skiffpb.TaskState{"a": stRunning},
			batches:     [][]state.Event{{put(task("a", "n1", stShutdown, stRunning))}, {del(task("a", "n1", stShutdown, stRunning))}},
			wantRemoved: []string{"a"}},
		{name: "deleted then put again", sent: map[string]skiffpb.TaskState{"a": stRunning},
			batches:     [][]state.Event{{del(task("a", "n1", stRunning, stRunning))}, {put(task("a", "n1", stShutdown, stRunning))}},
			wantUpdated: map[string]skiffpb.TaskState{"a": stShutdown},
			wantSent:    map[string]skiffpb.TaskState{"a": stShutdown}},
		{name: "the last event of a task wins", sent: map[string]skiffpb.TaskState{"a": stRunning},
			batches: [][]state.Event{
				{put(task("a", "n1", stShutdown, stRunning))},
				{put(task("a", "n1", stRemove, stRunning)), put(task("a", "n1", stRemove, stRunning))},
			},
			wantUpdated: map[string]skiffpb.TaskState{"a": stRemove},
			wantSent:    map[string]skiffpb.TaskState{"a": stRemove}},
		{name: "other kinds are ignored", sent: map[string]skiffpb.TaskState{"a": stRunning},
			batches: [][]state.Event{{
				{Object: &skiffpb.Node{Id: "n1"}}, {Object: &skiffpb.Service{Id: "sv1"}},
				{Object: &skiffpb.Network{Id: "net1"}, Deleted: true},
			}},
			wantSent: map[string]skiffpb.TaskState{"a": stRunning}},
		{name: "several tasks at once", sent: map[string]skiffpb.TaskState{"a": stRunning, "b": stRunning, "c": stRunning},
			batches: [][]state.Event{
				{put(task("new1", "n1", stRunning, stAssigned)), put(task("a", "n1", stShutdown, stRunning))},
				{put(task("b", "n1", stShutdown, stComplete)), del(task("c", "n1", stRemove, stRunning))},
				{put(task("new2", "n1", stRunning, stAssigned)), put(task("other", "n2", stRunning, stAssigned))},
			},
			wantUpdated: map[string]skiffpb.TaskState{"new1": stRunning, "new2": stRunning, "a": stShutdown},
			wantRemoved: []string{"b", "c"},
			wantSent:    map[string]skiffpb.TaskState{"new1": stRunning, "new2": stRunning, "a": stShutdown}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := fixture(t)
			sent := map[string]sentTask{}
			for id, st := range tc.sent {
				sent[id] = sentTask{desired: st}
			}
			var batches []state.Batch
			for i, evs := range tc.batches {
				batches = append(batches, state.Batch{Index: uint64(i + 2), Events: evs})
			}
			msg := d.changes("n1", sent, batches)
			if tc.wantUpdated == nil && tc.wantRemoved == nil {
				if msg != nil {
					t.Fatalf("changes = %v, want no message", msg)
				}
			} else {
				if msg == nil {
					t.Fatal("changes = nil, want a message")
				}
				if msg.GetFull() {
					t.Error("a change message is marked full")
				}
				gotUpdated := map[string]skiffpb.TaskState{}
				for _, a := range msg.GetUpdated() {
					gotUpdated[a.GetTask().GetId()] = a.GetTask().GetDesiredState()
					if a.GetSpec().GetContainer().GetImage() != "img:2" {
						t.Errorf("assignment of %s carries spec %v", a.GetTask().GetId(), a.GetSpec())
					}
				}
				if len(gotUpdated) == 0 {
					gotUpdated = nil
				}
				if !reflect.DeepEqual(gotUpdated, tc.wantUpdated) {
					t.Errorf("updated %v, want %v", gotUpdated, tc.wantUpdated)
				}
				removed := append([]string(nil), msg.GetRemoved()...)
				sort.Strings(removed)
				if !reflect.DeepEqual(removed, tc.wantRemoved) {
					t.Errorf("removed %v, want %v", removed, tc.wantRemoved)
				}
			}
			gotSent := map[string]skiffpb.TaskState{}
			for id, s := range sent {
				gotSent[id] = s.desired
			}
			if tc.wantSent == nil {
				tc.wantSent = map[string]skiffpb.TaskState{}
			}
			if !reflect.DeepEqual(gotSent, tc.wantSent) {
				t.Errorf("sent afterwards %v, want %v", gotSent, tc.wantSent)
			}
		})
	}
}

// TestChangesIsIdempotent: feeding the same batches twice sends nothing
// the second time.
func TestChangesIsIdempotent(t *testing.T) {
	d := fixture(t)
	sent := map[string]sentTask{}
	batches := []state.Batch{{Index: 2, Events: []state.Event{
		put(task("a", "n1", stRunning, stAssigned)), put(task("b", "n1", stShutdown, stRunning)),
	}}}
	if msg := d.changes("n1", sent, batches); len(msg.GetUpdated()) != 2 {
		t.Fatalf("first pass %v", msg)
	}
	if msg := d.changes("n1", sent, batches); msg != nil {
		t.Fatalf("second pass %v, want nothing", msg)
	}
}

// TestAssignment: an assignment carries the exact spec version the task
// runs and the networks it joins.
func TestAssignment(t *testing.T) {
	d := fixture(t)
	cases := []struct {
		name      string
		version   uint64
		networks  []string
		wantImage string
		wantNets  []string
	}{
		{"current spec", 2, nil, "img:2", nil},
		{"previous spec", 1, nil, "img:1", nil},
		{"pruned spec", 9, nil, "", nil},
		{"networks in order, unknown ones skipped", 2, []string{"net2", "gone", "net1"}, "img:2", []string{"net2", "net1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tk := task("a", "n1", stRunning, stAssigned)
			tk.SpecVersion = tc.version
			for _, n := range tc.networks {
				tk.Networks = append(tk.Networks, &skiffpb.NetworkAttachment{NetworkId: n, Address: "10.0.0.2/24"})
			}
			var a *skiffpb.Assignment
			d.store.View(func(tx state.ReadTx) { a = assignment(tx, tk) })
			if a.GetTask() != tk || a.GetSpec().GetContainer().GetImage() != tc.wantImage {
				t.Errorf("assignment task %v spec %v", a.GetTask(), a.GetSpec())
			}
			var nets []string
			for _, n := range a.GetNetworks() {
				nets = append(nets, n.GetId())
			}
			if !reflect.DeepEqual(nets, tc.wantNets) {
				t.Errorf("networks %v, want %v", nets, tc.wantNets)
			}
		})
	}
}

// TestNodeAttachments: the node's own addresses as of the last event about
// it; nil when no event concerns it, empty when it has none any more.
func TestNodeAttachments(t *testing.T) {
	att := func(net, addr string) *skiffpb.NetworkAttachment {
		return &skiffpb.NetworkAttachment{NetworkId: net, Address: addr}
	}
	node := func(id string, as ...*skiffpb.NetworkAttachment) state.Event {
		return state.Event{Object: &skiffpb.Node{Id: id, Attachments: as}}
	}
	cases := []struct {
		name    string
		batches [][]state.Event
		want    []*skiffpb.NetworkAttachment
	}{
		{"nothing", nil, nil},
		{"other node", [][]state.Event{{node("n2", att("net1", "10.0.0.2/24"))}}, nil},
		{"a task of the node", [][]state.Event{{put(task("a", "n1", stRunning, stRunning))}}, nil},
		{"one event", [][]state.Event{{node("n1", att("net1", "10.0.0.2/24"))}}, []*skiffpb.NetworkAttachment{att("net1", "10.0.0.2/24")}},
		{"the last event wins", [][]state.Event{
			{node("n1", att("net1", "10.0.0.2/24"))},
			{node("n1", att("net1", "10.0.0.2/24"), att("net2", "10.0.1.2/24"))},
		}, []*skiffpb.NetworkAttachment{att("net1", "10.0.0.2/24"), att("net2", "10.0.1.2/24")}},
		{"detached from everything", [][]state.Event{{node("n1")}}, []*skiffpb.NetworkAttachment{}},
		{"a delete of the node is not an update", [][]state.Event{{{Object: &skiffpb.Node{Id: "n1"}, Deleted: true}}}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var batches []state.Batch
			for i, evs := range tc.batches {
				batches = append(batches, state.Batch{Index: uint64(i + 1), Events: evs})
			}
			got := nodeAttachments("n1", batches)
			if (got == nil) != (tc.want == nil) || len(got) != len(tc.want) {
				t.Fatalf("nodeAttachments = %v, want %v", got, tc.want)
			}
			for i := range got {
				if !proto.Equal(got[i], tc.want[i]) {
					t.Errorf("attachment %d = %v, want %v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// TestSameAttachments compares network and address, in order.
func TestSameAttachments(t *testing.T) {
	a := func(net, addr string, aliases ...string) *skiffpb.NetworkAttachment {
		return &skiffpb.NetworkAttachment{NetworkId: net, Address: addr, Aliases: aliases}
	}
	cases := []struct {
		name string
		x, y []*skiffpb.NetworkAttachment
		want bool
	}{
		{"both empty", nil, []*skiffpb.NetworkAttachment{}, true},
		{"equal", []*skiffpb.NetworkAttachment{a("n", "1")}, []*skiffpb.NetworkAttachment{a("n", "1")}, true},
		{"aliases do not matter", []*skiffpb.NetworkAttachment{a("n", "1", "x")}, []*skiffpb.NetworkAttachment{a("n", "1")}, true},
		{"address differs", []*skiffpb.NetworkAttachment{a("n", "1")}, []*skiffpb.NetworkAttachment{a("n", "2")}, false},
		{"network differs", []*skiffpb.NetworkAttachment{a("n", "1")}, []*skiffpb.NetworkAttachment{a("m", "1")}, false},
		{"length differs", []*skiffpb.NetworkAttachment{a("n", "1")}, nil, false},
		{"order matters", []*skiffpb.NetworkAttachment{a("n", "1"), a("m", "2")}, []*skiffpb.NetworkAttachment{a("m", "2"), a("n", "1")}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := sameAttachments(tc.x, tc.y); got != tc.want {
				t.Errorf("sameAttachments = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestNetworksOf resolves attachments to stored networks, skipping unknown
// ones.
func TestNetworksOf(t *testing.T) {
	d := fixture(t)
	var got []string
	d.store.View(func(tx state.ReadTx) {
		for _, n := range networksOf(tx, []*skiffpb.NetworkAttachment{{NetworkId: "net2"}, {NetworkId: "x"}, {NetworkId: "net1"}}) {
			got = append(got, n.GetId())
		}
	})
	if !reflect.DeepEqual(got, []string{"net2", "net1"}) {
		t.Fatalf("networksOf = %v", got)
	}
}
