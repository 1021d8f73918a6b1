package state

import (
	"errors"
	"sort"
	"strings"
	"testing"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// TestResolveID resolves references the way docker does: an exact ID, a
// name, or a unique ID prefix.
func TestResolveID(t *testing.T) {
	nodes := []*skiffpb.Node{
		testNode("abc123", "alpha"),
		testNode("abd456", "beta"),
		testNode("xyz789", "gamma"),
		// A node whose name looks like another node's ID prefix.
		testNode("qqq000", "abc"),
	}
	name := func(n *skiffpb.Node) string { return n.GetName() }
	cases := []struct {
		ref     string
		wantID  string
		wantErr error
	}{
		{"abc123", "abc123", nil},    // exact ID
		{"beta", "abd456", nil},      // name
		{"xyz", "xyz789", nil},       // unique prefix
		{"x", "xyz789", nil},         // one-character unique prefix
		{"ab", "", ErrAmbiguous},     // prefix of two IDs
		{"abc", "qqq000", nil},       // a name wins over a prefix
		{"abd", "abd456", nil},       // unique prefix
		{"nope", "", ErrNotFound},    // nothing
		{"abc1234", "", ErrNotFound}, // longer than any ID
		{"ABC123", "", ErrNotFound},  // IDs are case-sensitive
		{"", "", ErrNotFound},        // empty reference
		{"gamma", "xyz789", nil},     // name of the last candidate
		{"qqq000", "qqq000", nil},    // exact ID of the oddly named node
		{"alpha ", "", ErrNotFound},  // no trimming
		{"q", "qqq000", nil},         // unique prefix
		{"abd4567", "", ErrNotFound}, // overlong prefix
		{"xyz789", "xyz789", nil},    // exact ID
		{"a", "", ErrAmbiguous},      // prefix of two IDs
		{"be", "", ErrNotFound},      // names are not prefix-matched
		{"abc12", "abc123", nil},     // unique prefix
	}
	for _, tc := range cases {
		t.Run("ref="+tc.ref, func(t *testing.T) {
			got, err := ResolveID(tc.ref, nodes, name)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if got.GetId() != tc.wantID {
				t.Errorf("resolved %q, want %q", got.GetId(), tc.wantID)
			}
			if tc.wantErr != nil && got != nil {
				t.Errorf("got %v alongside an error", got)
			}
		})
	}
	t.Run("no candidates", func(t *testing.T) {
		if _, err := ResolveID("a", []*skiffpb.Node(nil), name); !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("exact ID wins over a longer ID it prefixes", func(t *testing.T) {
		list := []*skiffpb.Node{testNode("ab12", "x"), testNode("ab1", "y")}
		got, err := ResolveID("ab1", list, name)
		if err != nil || got.GetId() != "ab1" {
			t.Fatalf("got %v, %v; want ab1", got.GetId(), err)
		}
	})
}

// TestReadTxListsAreSorted: every list a ReadTx returns is sorted by ID,
// whatever the order of creation.
func TestReadTxListsAreSorted(t *testing.T) {
	s := New()
	order := []string{"m", "c", "x", "a", "q"}
	var actions []*skiffpb.StoreAction
	for _, id := range order {
		actions = append(actions,
			putNode(testNode("n"+id, "h"+id)),
			putNetwork(testNetwork("w"+id, "st_"+id)),
			putStack(testStack("k"+id, "stack"+id)),
			putService(testService("s"+id, "st_"+id)),
			putTask(testTask("t"+id, "sa", "nm")),
		)
	}
	mustApply(t, s, 1, actions...)
	s.View(func(tx ReadTx) {
		lists := map[string][]string{
			"Nodes":                 ids(tx.Nodes()),
			"Networks":              ids(tx.Networks()),
			"Stacks":                ids(tx.Stacks()),
			"Services":              ids(tx.Services()),
			"ServicesByStack":       ids(tx.ServicesByStack("st")),
			"Tasks":                 ids(tx.Tasks()),
			"TasksByNode":           ids(tx.TasksByNode("nm")),
			"TasksByService":        ids(tx.TasksByService("sa")),
			"TasksByNode(missing)":  ids(tx.TasksByNode("none")),
			"ServicesByStack(none)": ids(tx.ServicesByStack("none")),
		}
		for what, got := range lists {
			if !sortedStrings(got) {
				t.Errorf("%s = %v, not sorted", what, got)
			}
			wantLen := len(order)
			if strings.HasSuffix(what, ")") {
				wantLen = 0
			}
			if len(got) != wantLen {
				t.Errorf("%s has %d entries, want %d", what, len(got), wantLen)
			}
		}
		n := 0
		tx.EachTask(func(*skiffpb.Task) bool { n++; return n < 2 })
		if n != 2 {
			t.Errorf("EachTask did not stop when fn returned false: %d calls", n)
		}
		if tx.CountTasks() != len(order) {
			t.Errorf("CountTasks = %d", tx.CountTasks())
		}
	})
}

// TestSlotsAndIterators: a service's tasks are found by slot (replica
// number, or node for a global task), through every change a task goes
// through, and the unordered iterators see what the sorted lists see.
func TestSlotsAndIterators(t *testing.T) {
	s := New()
	replica := func(id string, slot uint64) *skiffpb.Task {
		tk := testTask(id, "sv1", "")
		tk.Slot = slot
		return tk
	}
	global := func(id, node string) *skiffpb.Task {
		tk := testTask(id, "sv2", node)
		tk.Slot = 0
		return tk
	}
	mustApply(t, s, 1,
		putNode(testNode("n1", "h1")), putNode(testNode("n2", "h2")),
		putTask(replica("a", 1)), putTask(replica("b", 1)), putTask(replica("c", 2)),
		putTask(global("g1", "n1")), putTask(global("g2", "n2")),
	)
	// Placement and a status report keep a task in its slot.
	mustApply(t, s, 2, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_TaskPlacement{TaskPlacement: &skiffpb.TaskPlacement{
		TaskId: "a", NodeId: "n2", Status: &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_ASSIGNED},
	}}})
	mustApply(t, s, 3, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_TaskStatus{TaskStatus: &skiffpb.TaskStatusUpdate{
		TaskId: "g1", Status: &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_RUNNING},
	}}})
	mustApply(t, s, 4, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_DeleteTask{DeleteTask: "b"}})
	s.View(func(tx ReadTx) {
		slots := map[string][]string{
			"sv1/1":  ids(sorted(tx.TasksOfSlot("sv1", Slot{Number: 1}))),
			"sv1/2":  ids(sorted(tx.TasksOfSlot("sv1", Slot{Number: 2}))),
			"sv1/3":  ids(sorted(tx.TasksOfSlot("sv1", Slot{Number: 3}))),
			"sv2/n1": ids(sorted(tx.TasksOfSlot("sv2", Slot{Node: "n1"}))),
			"sv2/n2": ids(sorted(tx.TasksOfSlot("sv2", Slot{Node: "n2"}))),
			"none":   ids(sorted(tx.TasksOfSlot("nope", Slot{Number: 1}))),
		}
		want := map[string]string{"sv1/1": "a", "sv1/2": "c", "sv1/3": "", "sv2/n1": "g1", "sv2/n2": "g2", "none": ""}
		for k, w := range want {
			if got := strings.Join(slots[k], ","); got != w {
				t.Errorf("TasksOfSlot %s = %q, want %q", k, got, w)
			}
		}
		if got := tx.TasksOfSlot("sv2", Slot{Node: "n1"})[0]; got != tx.Task("g1") {
			t.Error("TasksOfSlot returned a stale object for g1")
		}
		var each []*skiffpb.Task
		tx.EachTaskOfService("sv1", func(tk *skiffpb.Task) bool { each = append(each, tk); return true })
		if got, want := strings.Join(ids(sorted(each)), ","), strings.Join(ids(tx.TasksByService("sv1")), ","); got != want {
			t.Errorf("EachTaskOfService = %s, TasksByService = %s", got, want)
		}
		withTasks := tx.ServicesWithTasks()
		sort.Strings(withTasks)
		if got := strings.Join(withTasks, ","); got != "sv1,sv2" {
			t.Errorf("ServicesWithTasks = %s, want sv1,sv2", got)
		}
		var nodes []*skiffpb.Node
		tx.EachNode(func(n *skiffpb.Node) bool { nodes = append(nodes, n); return true })
		if got, want := strings.Join(ids(sorted(nodes)), ","), strings.Join(ids(tx.Nodes()), ","); got != want {
			t.Errorf("EachNode = %s, Nodes = %s", got, want)
		}
		n := 0
		tx.EachNode(func(*skiffpb.Node) bool { n++; return false })
		if n != 1 {
			t.Errorf("EachNode did not stop when fn returned false: %d calls", n)
		}
	})
	// A list handed out is a copy: changing it leaves the store alone.
	s.View(func(tx ReadTx) { tx.TasksOfSlot("sv1", Slot{Number: 1})[0] = nil })
	s.View(func(tx ReadTx) {
		if tx.TasksOfSlot("sv1", Slot{Number: 1})[0] == nil {
			t.Error("TasksOfSlot handed out the store's own slice")
		}
	})
	dump(t, s)
}

func sortedStrings(list []string) bool {
	for i := 1; i < len(list); i++ {
		if list[i-1] >= list[i] {
			return false
		}
	}
	return true
}

// TestSpecOf finds the spec a task runs: the current one, a kept previous
// one, or nil.
func TestSpecOf(t *testing.T) {
	sv := testService("sv1", "st_web")
	sv.SpecVersion = 3
	sv.Spec.Container.Image = "img:3"
	sv.PreviousSpecs = []*skiffpb.VersionedSpec{
		{Version: 1, Spec: &skiffpb.ServiceSpec{Name: "st_web", Container: &skiffpb.ContainerSpec{Image: "img:1"}}},
		{Version: 2, Spec: &skiffpb.ServiceSpec{Name: "st_web", Container: &skiffpb.ContainerSpec{Image: "img:2"}}},
	}
	s := New()
	mustApply(t, s, 1, putService(sv))
	cases := []struct {
		name      string
		task      *skiffpb.Task
		wantImage string
	}{
		{"current version", &skiffpb.Task{ServiceId: "sv1", SpecVersion: 3}, "img:3"},
		{"previous version", &skiffpb.Task{ServiceId: "sv1", SpecVersion: 1}, "img:1"},
		{"other previous version", &skiffpb.Task{ServiceId: "sv1", SpecVersion: 2}, "img:2"},
		{"pruned version", &skiffpb.Task{ServiceId: "sv1", SpecVersion: 7}, ""},
		{"unknown service", &skiffpb.Task{ServiceId: "nope", SpecVersion: 3}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s.View(func(tx ReadTx) {
				spec := tx.SpecOf(tc.task)
				if tc.wantImage == "" {
					if spec != nil {
						t.Errorf("SpecOf = %v, want nil", spec)
					}
					return
				}
				if spec.GetContainer().GetImage() != tc.wantImage {
					t.Errorf("SpecOf image = %q, want %q", spec.GetContainer().GetImage(), tc.wantImage)
				}
			})
		})
	}
}

// TestNewID: IDs are 26 characters of lowercase base 32, and distinct.
func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := NewID()
		if len(id) != 26 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz234567") != "" {
			t.Fatalf("NewID() = %q", id)
		}
		if seen[id] {
			t.Fatalf("NewID repeated %q", id)
		}
		seen[id] = true
	}
}
