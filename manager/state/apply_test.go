package state

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// seed fills a store with one object of every kind at index 1: node n1
// ("h1"), network net1 ("st_net"), stack st1 ("st"), service sv1 ("st_web")
// and task t1 of sv1 on n1. It also stores a cluster object.
func seed(t testing.TB) *Store {
	t.Helper()
	s := New()
	mustApply(t, s, 1,
		putCluster(&skiffpb.Cluster{Id: "c1", DefaultAddrPool: "10.0.0.0/8", SubnetSize: 24}),
		putNode(testNode("n1", "h1")),
		putNetwork(testNetwork("net1", "st_net")),
		putStack(testStack("st1", "st")),
		putService(testService("sv1", "st_web")),
		putTask(testTask("t1", "sv1", "n1")),
	)
	return s
}

// TestApplyEveryActionKind applies each kind of StoreAction to a seeded
// store and checks the stored result and the event it publishes.
func TestApplyEveryActionKind(t *testing.T) {
	n2 := testNode("n2", "h2")
	type want struct {
		// check inspects the store after the action.
		check func(t *testing.T, tx ReadTx)
		// eventID is the ID of the one object the batch must carry ("" for
		// no batch at all), and deleted whether it is a delete event.
		eventID string
		deleted bool
	}
	cases := []struct {
		name   string
		action *skiffpb.StoreAction
		want   want
	}{
		{"put_cluster update", putCluster(withVersion(&skiffpb.Cluster{Id: "c1", Meta: &skiffpb.Meta{}, TaskHistoryLimit: 3}, 1)), want{
			check: func(t *testing.T, tx ReadTx) {
				if c := tx.Cluster(); c.GetTaskHistoryLimit() != 3 || c.GetMeta().GetVersion() != 2 {
					t.Errorf("cluster = %v", c)
				}
			}, eventID: "c1"}},
		{"put_node create", putNode(n2), want{
			check: func(t *testing.T, tx ReadTx) {
				if tx.Node("n2").GetMeta().GetVersion() != 2 || tx.NodeByName("h2").GetId() != "n2" {
					t.Errorf("node n2 = %v", tx.Node("n2"))
				}
				if got := ids(tx.Nodes()); strings.Join(got, ",") != "n1,n2" {
					t.Errorf("Nodes() = %v", got)
				}
			}, eventID: "n2"}},
		{"put_network create", putNetwork(testNetwork("net2", "st_back")), want{
			check: func(t *testing.T, tx ReadTx) {
				if tx.NetworkByName("st_back").GetId() != "net2" || len(tx.Networks()) != 2 {
					t.Errorf("networks = %v", tx.Networks())
				}
			}, eventID: "net2"}},
		{"put_stack create", putStack(testStack("st2", "other")), want{
			check: func(t *testing.T, tx ReadTx) {
				if tx.StackByName("other").GetId() != "st2" || len(tx.Stacks()) != 2 {
					t.Errorf("stacks = %v", tx.Stacks())
				}
			}, eventID: "st2"}},
		{"put_service create", putService(testService("sv2", "other_db")), want{
			check: func(t *testing.T, tx ReadTx) {
				if tx.ServiceByName("other_db").GetId() != "sv2" {
					t.Errorf("service by name = %v", tx.ServiceByName("other_db"))
				}
				if got := ids(tx.ServicesByStack("other")); strings.Join(got, ",") != "sv2" {
					t.Errorf("ServicesByStack(other) = %v", got)
				}
				if got := ids(tx.ServicesByStack("st")); strings.Join(got, ",") != "sv1" {
					t.Errorf("ServicesByStack(st) = %v", got)
				}
			}, eventID: "sv2"}},
		{"put_task create", putTask(testTask("t2", "sv1", "n1")), want{
			check: func(t *testing.T, tx ReadTx) {
				if got := ids(tx.TasksByNode("n1")); strings.Join(got, ",") != "t1,t2" {
					t.Errorf("TasksByNode(n1) = %v", got)
				}
				if got := ids(tx.TasksByService("sv1")); strings.Join(got, ",") != "t1,t2" {
					t.Errorf("TasksByService(sv1) = %v", got)
				}
				if tx.CountTasks() != 3 {
					t.Errorf("CountTasks() = %d", tx.CountTasks())
				}
			}, eventID: "t2"}},
		{"delete_node", delNode("n1"), want{
			check: func(t *testing.T, tx ReadTx) {
				if tx.Node("n1") != nil || tx.NodeByName("h1") != nil {
					t.Error("node n1 still stored")
				}
			}, eventID: "n1", deleted: true}},
		{"delete_network", delNetwork("net1"), want{
			check: func(t *testing.T, tx ReadTx) {
				if tx.Network("net1") != nil || tx.NetworkByName("st_net") != nil {
					t.Error("network still stored")
				}
			}, eventID: "net1", deleted: true}},
		{"delete_stack", delStack("st1"), want{
			check: func(t *testing.T, tx ReadTx) {
				if tx.Stack("st1") != nil || tx.StackByName("st") != nil {
					t.Error("stack still stored")
				}
			}, eventID: "st1", deleted: true}},
		{"delete_service keeps its tasks", delService("sv1"), want{
			check: func(t *testing.T, tx ReadTx) {
				if tx.Service("sv1") != nil || tx.ServiceByName("st_web") != nil {
					t.Error("service still stored")
				}
				if len(tx.TasksByService("sv1")) != 1 {
					t.Error("deleting a service must leave its tasks to the orchestrator")
				}
				if tx.SpecOf(tx.Task("t1")) != nil {
					t.Error("SpecOf a task of a deleted service must be nil")
				}
			}, eventID: "sv1", deleted: true}},
		{"delete_task", delTask("t1"), want{
			check: func(t *testing.T, tx ReadTx) {
				if tx.Task("t1") != nil || len(tx.TasksByNode("n1")) != 0 || len(tx.TasksByService("sv1")) != 0 || tx.CountTasks() != 1 {
					t.Error("task t1 still stored or indexed")
				}
			}, eventID: "t1", deleted: true}},
		{"task_status", taskStatus("t1", skiffpb.TaskState_TASK_STATE_RUNNING, "started"), want{
			check: func(t *testing.T, tx ReadTx) {
				tk := tx.Task("t1")
				if tk.GetStatus().GetState() != skiffpb.TaskState_TASK_STATE_RUNNING || tk.GetMeta().GetVersion() != 2 {
					t.Errorf("task = %v", tk)
				}
				if tx.TasksByNode("n1")[0] != tk || tx.TasksByService("sv1")[0] != tk {
					t.Error("secondary indexes hold a stale task")
				}
			}, eventID: "t1"}},
		{"task_desired", taskDesired("t1", skiffpb.TaskState_TASK_STATE_SHUTDOWN), want{
			check: func(t *testing.T, tx ReadTx) {
				if tk := tx.Task("t1"); tk.GetDesiredState() != skiffpb.TaskState_TASK_STATE_SHUTDOWN || tk.GetMeta().GetVersion() != 2 {
					t.Errorf("task = %v", tk)
				}
			}, eventID: "t1"}},
		{"node_status", nodeStatus("n1", skiffpb.NodeState_NODE_STATE_DOWN, "heartbeat failure"), want{
			check: func(t *testing.T, tx ReadTx) {
				n := tx.Node("n1")
				if n.GetStatus().GetState() != skiffpb.NodeState_NODE_STATE_DOWN || n.GetMeta().GetVersion() != 2 {
					t.Errorf("node = %v", n)
				}
				if tx.NodeByName("h1") != n {
					t.Error("name index holds a stale node")
				}
			}, eventID: "n1"}},
		{"node_attachment", nodeAttachment("n1", "net1", "10.0.0.2/24"), want{
			check: func(t *testing.T, tx ReadTx) {
				n := tx.Node("n1")
				if len(n.GetAttachments()) != 1 || n.GetAttachments()[0].GetAddress() != "10.0.0.2/24" || n.GetMeta().GetVersion() != 2 {
					t.Errorf("node = %v", n)
				}
				if tx.NodeByName("h1") != n {
					t.Error("name index holds a stale node")
				}
			}, eventID: "n1"}},
		{"task_placement of an unplaced task", taskPlacement("t3", "n1",
			&skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_ASSIGNED}, &skiffpb.PortBinding{TargetPort: 80, PublishedPort: 8080}), want{
			check: func(t *testing.T, tx ReadTx) {
				tk := tx.Task("t3")
				if tk.GetNodeId() != "n1" || tk.GetStatus().GetState() != skiffpb.TaskState_TASK_STATE_ASSIGNED ||
					len(tk.GetPorts()) != 1 || tk.GetMeta().GetVersion() != 2 {
					t.Errorf("task = %v", tk)
				}
				if got := ids(tx.TasksByNode("n1")); strings.Join(got, ",") != "t1,t3" {
					t.Errorf("TasksByNode(n1) = %v", got)
				}
			}, eventID: "t3"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := seed(t)
			// An unplaced task of another service, for the placement case.
			mustApply(t, s, 1, putTask(testTask("t3", "sv9", "")))
			before := dump(t, s)
			ch, cancel := s.ViewAndWatch(nil)
			defer cancel()
			mustApply(t, s, 2, tc.action)
			s.View(func(tx ReadTx) {
				if tx.Index() != 2 {
					t.Errorf("Index() = %d, want 2", tx.Index())
				}
				tc.want.check(t, tx)
			})
			if dump(t, s) == before {
				t.Error("store unchanged")
			}
			b := recvBatch(t, ch)
			if b.Index != 2 || len(b.Events) != 1 {
				t.Fatalf("batch = index %d, %d events; want index 2, 1 event", b.Index, len(b.Events))
			}
			ev := b.Events[0]
			if got := ev.Object.(interface{ GetId() string }).GetId(); got != tc.want.eventID || ev.Deleted != tc.want.deleted {
				t.Errorf("event = %s deleted=%v, want %s deleted=%v", got, ev.Deleted, tc.want.eventID, tc.want.deleted)
			}
		})
	}
}

// TestApplyStampsVersion: every whole-object write stores the command's
// index as meta.version and keeps the leader's timestamps.
func TestApplyStampsVersion(t *testing.T) {
	s := New()
	n := testNode("n1", "h1")
	n.Meta = &skiffpb.Meta{CreatedAt: 11, UpdatedAt: 12}
	noMeta := testStack("st1", "st")
	noMeta.Meta = nil
	mustApply(t, s, 7, putNode(n), putStack(noMeta), putCluster(&skiffpb.Cluster{Id: "c"}))
	s.View(func(tx ReadTx) {
		if m := tx.Node("n1").GetMeta(); m.GetVersion() != 7 || m.GetCreatedAt() != 11 || m.GetUpdatedAt() != 12 {
			t.Errorf("node meta = %v", m)
		}
		if v := tx.Stack("st1").GetMeta().GetVersion(); v != 7 {
			t.Errorf("stack without meta stored at version %d, want 7", v)
		}
		if v := tx.Cluster().GetMeta().GetVersion(); v != 7 {
			t.Errorf("cluster version %d, want 7", v)
		}
	})
	if n.GetMeta().GetVersion() != 0 || noMeta.Meta != nil {
		t.Error("Apply stamped the caller's message instead of a copy")
	}
}

// TestApplyVersionChecks covers the optimistic concurrency rule: 0 creates,
// the stored version updates, anything else conflicts.
func TestApplyVersionChecks(t *testing.T) {
	cases := []struct {
		name    string
		action  *skiffpb.StoreAction
		wantErr error
	}{
		{"create new node with version 0", putNode(testNode("n2", "h2")), nil},
		{"create new node with a version", putNode(withVersion(testNode("n2", "h2"), 1)), ErrVersionConflict},
		{"create over an existing node", putNode(testNode("n1", "h1")), ErrVersionConflict},
		{"update node with the stored version", putNode(withVersion(testNode("n1", "h1"), 1)), nil},
		{"update node with a stale version", putNode(withVersion(testNode("n1", "h1"), 0)), ErrVersionConflict},
		{"update node with a future version", putNode(withVersion(testNode("n1", "h1"), 5)), ErrVersionConflict},
		{"update network with the stored version", putNetwork(withVersion(testNetwork("net1", "st_net"), 1)), nil},
		{"update network with a wrong version", putNetwork(withVersion(testNetwork("net1", "st_net"), 2)), ErrVersionConflict},
		{"update stack with the stored version", putStack(withVersion(testStack("st1", "st"), 1)), nil},
		{"create over an existing stack", putStack(testStack("st1", "st")), ErrVersionConflict},
		{"update service with the stored version", putService(withVersion(testService("sv1", "st_web"), 1)), nil},
		{"update service with a wrong version", putService(withVersion(testService("sv1", "st_web"), 3)), ErrVersionConflict},
		{"update task with the stored version", putTask(withVersion(testTask("t1", "sv1", "n1"), 1)), nil},
		{"create over an existing task", putTask(testTask("t1", "sv1", "n1")), ErrVersionConflict},
		{"update cluster with the stored version", putCluster(&skiffpb.Cluster{Id: "c1", Meta: &skiffpb.Meta{Version: 1}}), nil},
		{"create over the existing cluster", putCluster(&skiffpb.Cluster{Id: "c1"}), ErrVersionConflict},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := seed(t)
			before := dump(t, s)
			err := s.Apply(2, cmd(tc.action))
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Apply = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				if got := stripIndex(dump(t, s)); got != stripIndex(before) {
					t.Errorf("a rejected command changed the store:\n%s\nwant\n%s", got, before)
				}
			}
		})
	}
	t.Run("cluster create on an empty store", func(t *testing.T) {
		s := New()
		mustApply(t, s, 3, putCluster(&skiffpb.Cluster{Id: "c"}))
		if err := s.Apply(4, cmd(putCluster(&skiffpb.Cluster{Id: "c", Meta: &skiffpb.Meta{Version: 2}}))); !errors.Is(err, ErrVersionConflict) {
			t.Fatalf("stale cluster write = %v, want ErrVersionConflict", err)
		}
	})
}

// TestApplyNameConflicts: names are unique per kind, on create and rename,
// and a name is free again once its holder is deleted or renamed.
func TestApplyNameConflicts(t *testing.T) {
	cases := []struct {
		name    string
		actions []*skiffpb.StoreAction
		wantErr error
	}{
		{"node create with a used name", []*skiffpb.StoreAction{putNode(testNode("n2", "h1"))}, ErrNameConflict},
		{"network create with a used name", []*skiffpb.StoreAction{putNetwork(testNetwork("net2", "st_net"))}, ErrNameConflict},
		{"stack create with a used name", []*skiffpb.StoreAction{putStack(testStack("st2", "st"))}, ErrNameConflict},
		{"service create with a used name", []*skiffpb.StoreAction{putService(testService("sv2", "st_web"))}, ErrNameConflict},
		{"node renamed to a used name", []*skiffpb.StoreAction{
			putNode(testNode("n2", "h2")), putNode(withVersion(testNode("n2", "h1"), 2)),
		}, ErrNameConflict},
		{"same name in another kind is fine", []*skiffpb.StoreAction{putStack(testStack("st2", "h1"))}, nil},
		{"update keeping its own name", []*skiffpb.StoreAction{putNode(withVersion(testNode("n1", "h1"), 1))}, nil},
		{"rename frees the old name", []*skiffpb.StoreAction{
			putNode(withVersion(testNode("n1", "h1-renamed"), 1)), putNode(testNode("n2", "h1")),
		}, nil},
		{"delete frees the name", []*skiffpb.StoreAction{delService("sv1"), putService(testService("sv2", "st_web"))}, nil},
		{"tasks have no names", []*skiffpb.StoreAction{putTask(testTask("t2", "sv1", "n1"))}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := seed(t)
			err := s.Apply(2, cmd(tc.actions...))
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Apply = %v, want %v", err, tc.wantErr)
			}
			dump(t, s) // checks the name index
		})
	}
	t.Run("rename updates the name index", func(t *testing.T) {
		s := seed(t)
		mustApply(t, s, 2, putNode(withVersion(testNode("n1", "h9"), 1)))
		s.View(func(tx ReadTx) {
			if tx.NodeByName("h1") != nil || tx.NodeByName("h9").GetId() != "n1" {
				t.Errorf("by name: h1=%v h9=%v", tx.NodeByName("h1"), tx.NodeByName("h9"))
			}
		})
	})
}

// TestApplyInvalidActions: malformed actions are rejected with
// ErrInvalidCommand, and change nothing.
func TestApplyInvalidActions(t *testing.T) {
	cases := []struct {
		name   string
		action *skiffpb.StoreAction
	}{
		{"empty action", &skiffpb.StoreAction{}},
		{"nil action", nil},
		{"node without ID", putNode(testNode("", "h9"))},
		{"nil node", putNode(nil)},
		{"nil task", putTask(nil)},
		{"task without ID", putTask(testTask("", "sv1", "n1"))},
		{"service without ID", putService(testService("", "x_y"))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := seed(t)
			before := stripIndex(dump(t, s))
			err := s.Apply(2, cmd(putNode(testNode("n2", "h2")), tc.action))
			if !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("Apply = %v, want ErrInvalidCommand", err)
			}
			if !strings.HasPrefix(err.Error(), "action 1:") {
				t.Errorf("error %q does not name the failing action", err)
			}
			if got := stripIndex(dump(t, s)); got != before {
				t.Errorf("store changed:\n%s", got)
			}
		})
	}
}

// TestApplyEmptyCommand: a command without actions only moves the index.
func TestApplyEmptyCommand(t *testing.T) {
	s := seed(t)
	ch, cancel := s.ViewAndWatch(nil)
	defer cancel()
	before := stripIndex(dump(t, s))
	for i, c := range []*skiffpb.Command{nil, {}} {
		if err := s.Apply(uint64(5+i), c); err != nil {
			t.Fatalf("Apply(empty): %v", err)
		}
	}
	if s.Index() != 6 || stripIndex(dump(t, s)) != before {
		t.Errorf("index %d, store changed = %v", s.Index(), stripIndex(dump(t, s)) != before)
	}
	expectNoBatch(t, ch)
}

// stripIndex drops the index line of a dump: a rejected command still
// advances the store's index (Raft applied the entry), but nothing else.
func stripIndex(d string) string {
	_, rest, _ := strings.Cut(d, "\n")
	return rest
}

// TestApplyAtomicRollback: when the 3rd action of a command fails, the
// changes of the first two are undone - objects, name index and secondary
// task indexes - and no event is published.
func TestApplyAtomicRollback(t *testing.T) {
	t1v1 := withVersion(testTask("t1", "sv1", "n1"), 1)
	moved := proto.Clone(t1v1).(*skiffpb.Task)
	moved.NodeId = "n2"
	moved.ServiceId = "sv2"
	renamed := withVersion(testNode("n1", "h-renamed"), 1)
	cases := []struct {
		name    string
		first   []*skiffpb.StoreAction // the two actions that succeed
		third   *skiffpb.StoreAction   // the one that fails
		wantErr error
	}{
		{"creates then version conflict",
			[]*skiffpb.StoreAction{putNode(testNode("n2", "h2")), putTask(testTask("t2", "sv1", "n2"))},
			putService(withVersion(testService("sv1", "st_web"), 9)), ErrVersionConflict},
		{"task moved between nodes and services then version conflict",
			[]*skiffpb.StoreAction{putNode(testNode("n2", "h2")), putTask(moved)},
			putTask(testTask("t1", "sv1", "n1")), ErrVersionConflict},
		{"deletes then name conflict",
			[]*skiffpb.StoreAction{delTask("t1"), delNode("n1")},
			putStack(testStack("st2", "st")), ErrNameConflict},
		{"rename then name conflict on the old name",
			[]*skiffpb.StoreAction{putNode(renamed), putNode(testNode("n2", "h1"))},
			putNode(testNode("n3", "h-renamed")), ErrNameConflict},
		{"narrow updates then invalid action",
			[]*skiffpb.StoreAction{
				taskStatus("t1", skiffpb.TaskState_TASK_STATE_RUNNING, "up"),
				nodeStatus("n1", skiffpb.NodeState_NODE_STATE_DOWN, "gone"),
			},
			&skiffpb.StoreAction{}, ErrInvalidCommand},
		{"desired and placement then version conflict",
			[]*skiffpb.StoreAction{
				taskDesired("t1", skiffpb.TaskState_TASK_STATE_SHUTDOWN),
				taskPlacement("t3", "n1", &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_ASSIGNED}),
			},
			putCluster(&skiffpb.Cluster{Id: "c1"}), ErrVersionConflict},
		{"delete and recreate then version conflict",
			[]*skiffpb.StoreAction{delTask("t1"), putTask(testTask("t1", "sv2", "n1"))},
			putNetwork(testNetwork("net1", "st_net")), ErrVersionConflict},
		{"same object twice then version conflict",
			[]*skiffpb.StoreAction{putTask(t1v1), putTask(withVersion(moved, 2))},
			putTask(withVersion(moved, 1)), ErrVersionConflict},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := seed(t)
			mustApply(t, s, 1, putTask(testTask("t3", "sv1", "")))
			before := dump(t, s)
			var read *skiffpb.Task
			s.View(func(tx ReadTx) { read = tx.Task("t1") })
			readText := textOf(read)
			ch, cancel := s.ViewAndWatch(nil)
			defer cancel()

			err := s.Apply(2, cmd(append(append([]*skiffpb.StoreAction(nil), tc.first...), tc.third)...))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Apply = %v, want %v", err, tc.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "action 2:") {
				t.Errorf("error %q does not name action 2", err)
			}
			if got := dump(t, s); stripIndex(got) != stripIndex(before) {
				t.Errorf("store after rollback:\n%s\nwant\n%s", got, before)
			}
			if s.Index() != 2 {
				t.Errorf("Index() = %d; a rejected entry is still applied, want 2", s.Index())
			}
			if textOf(read) != readText {
				t.Error("rollback changed an object read before the command")
			}
			expectNoBatch(t, ch)

			// The next command publishes only its own changes.
			mustApply(t, s, 3, putStack(testStack("st9", "z")))
			b := recvBatch(t, ch)
			if b.Index != 3 || len(b.Events) != 1 {
				t.Errorf("next batch: index %d with %d events, want index 3 with 1", b.Index, len(b.Events))
			}
		})
	}
}

// TestDeleteMissingIsNoop: deletes of absent objects succeed, change
// nothing and publish nothing, so retried deletes are harmless.
func TestDeleteMissingIsNoop(t *testing.T) {
	s := seed(t)
	before := stripIndex(dump(t, s))
	ch, cancel := s.ViewAndWatch(nil)
	defer cancel()
	mustApply(t, s, 2, delNode("x"), delNetwork("x"), delStack("x"), delService("x"), delTask("x"))
	if stripIndex(dump(t, s)) != before {
		t.Error("store changed")
	}
	expectNoBatch(t, ch)
}

// TestTaskStatusMonotonic: a status update moves the observed state forward
// only; older reports are dropped, equal ones are no-ops, and a report with
// new details at the same state is kept.
func TestTaskStatusMonotonic(t *testing.T) {
	const (
		pending  = skiffpb.TaskState_TASK_STATE_PENDING
		assigned = skiffpb.TaskState_TASK_STATE_ASSIGNED
		running  = skiffpb.TaskState_TASK_STATE_RUNNING
		failed   = skiffpb.TaskState_TASK_STATE_FAILED
		complete = skiffpb.TaskState_TASK_STATE_COMPLETE
	)
	type step struct {
		state skiffpb.TaskState
		msg   string
	}
	cases := []struct {
		name      string
		steps     []step
		wantState skiffpb.TaskState
		wantMsg   string
		// wantVersion is the index of the last update that took effect.
		wantVersion uint64
	}{
		{"forward", []step{{assigned, "a"}, {running, "r"}}, running, "r", 3},
		{"stale report dropped", []step{{running, "r"}, {assigned, "late"}}, running, "r", 2},
		{"never back from failed", []step{{failed, "boom"}, {running, "replayed"}, {pending, "x"}}, failed, "boom", 2},
		{"same state new details kept", []step{{running, "r"}, {running, "healthy"}}, running, "healthy", 3},
		{"identical report is a no-op", []step{{running, "r"}, {running, "r"}}, running, "r", 2},
		{"skips states", []step{{complete, "done"}}, complete, "done", 2},
		{"identical to the stored status is a no-op", []step{{pending, "pending"}}, pending, "pending", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := New()
			mustApply(t, s, 1, putTask(testTask("t1", "sv1", "n1")))
			for i, st := range tc.steps {
				mustApply(t, s, uint64(i+2), taskStatus("t1", st.state, st.msg))
			}
			tk := getTask(s, "t1")
			if tk.GetStatus().GetState() != tc.wantState || tk.GetStatus().GetMessage() != tc.wantMsg {
				t.Errorf("status = %v, want %v %q", tk.GetStatus(), tc.wantState, tc.wantMsg)
			}
			if tk.GetMeta().GetVersion() != tc.wantVersion {
				t.Errorf("version = %d, want %d", tk.GetMeta().GetVersion(), tc.wantVersion)
			}
		})
	}
	t.Run("unknown task and nil status are ignored", func(t *testing.T) {
		s := seed(t)
		before := stripIndex(dump(t, s))
		mustApply(t, s, 2, taskStatus("nope", running, ""),
			&skiffpb.StoreAction{Action: &skiffpb.StoreAction_TaskStatus{TaskStatus: &skiffpb.TaskStatusUpdate{TaskId: "t1"}}})
		if stripIndex(dump(t, s)) != before {
			t.Error("store changed")
		}
	})
}

// TestTaskDesiredNeverLowers: desired state only rises.
func TestTaskDesiredNeverLowers(t *testing.T) {
	const (
		running  = skiffpb.TaskState_TASK_STATE_RUNNING
		shutdown = skiffpb.TaskState_TASK_STATE_SHUTDOWN
		remove   = skiffpb.TaskState_TASK_STATE_REMOVE
	)
	cases := []struct {
		name        string
		steps       []skiffpb.TaskState
		want        skiffpb.TaskState
		wantVersion uint64
	}{
		{"raise", []skiffpb.TaskState{shutdown}, shutdown, 2},
		{"raise twice", []skiffpb.TaskState{shutdown, remove}, remove, 3},
		{"no lowering", []skiffpb.TaskState{remove, shutdown, running}, remove, 2},
		{"equal is a no-op", []skiffpb.TaskState{running}, running, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := New()
			mustApply(t, s, 1, putTask(testTask("t1", "sv1", "n1")))
			for i, st := range tc.steps {
				mustApply(t, s, uint64(i+2), taskDesired("t1", st))
			}
			tk := getTask(s, "t1")
			if tk.GetDesiredState() != tc.want || tk.GetMeta().GetVersion() != tc.wantVersion {
				t.Errorf("desired %v at version %d, want %v at %d", tk.GetDesiredState(), tk.GetMeta().GetVersion(), tc.want, tc.wantVersion)
			}
		})
	}
	t.Run("unknown task is ignored", func(t *testing.T) {
		s := seed(t)
		before := stripIndex(dump(t, s))
		mustApply(t, s, 2, taskDesired("nope", shutdown))
		if stripIndex(dump(t, s)) != before {
			t.Error("store changed")
		}
	})
}

// TestTaskPlacement: a placement binds only a task that is still pending,
// unbound and wanted, and only to a node that exists; with no node it
// records why the task could not be placed.
func TestTaskPlacement(t *testing.T) {
	assignedSt := &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_ASSIGNED, Message: "assigned"}
	cases := []struct {
		name string
		// prep turns the stored pending task t3 into the case's task.
		prep      []*skiffpb.StoreAction
		placement *skiffpb.StoreAction
		wantNode  string
		wantState skiffpb.TaskState
		wantErr   string
		wantPorts int
	}{
		{"binds a pending task", nil, taskPlacement("t3", "n1", assignedSt, &skiffpb.PortBinding{PublishedPort: 80}),
			"n1", skiffpb.TaskState_TASK_STATE_ASSIGNED, "", 1},
		{"binds a NEW task", []*skiffpb.StoreAction{putTask(func() *skiffpb.Task {
			tk := testTask("t3", "sv1", "")
			tk.Status.State = skiffpb.TaskState_TASK_STATE_NEW
			return withVersion(tk, 1)
		}())}, taskPlacement("t3", "n1", assignedSt), "n1", skiffpb.TaskState_TASK_STATE_ASSIGNED, "", 0},
		{"records why it could not place", nil, taskPlacement("t3", "", &skiffpb.TaskStatus{
			State: skiffpb.TaskState_TASK_STATE_PENDING, Err: "no suitable node"}),
			"", skiffpb.TaskState_TASK_STATE_PENDING, "no suitable node", 0},
		{"keeps the status when the placement has none", nil, taskPlacement("t3", "n1", nil),
			"n1", skiffpb.TaskState_TASK_STATE_PENDING, "", 0},
		{"dropped for an already bound task", []*skiffpb.StoreAction{taskPlacement("t3", "n2", assignedSt)},
			taskPlacement("t3", "n1", assignedSt), "n2", skiffpb.TaskState_TASK_STATE_ASSIGNED, "", 0},
		{"dropped for a task past pending", []*skiffpb.StoreAction{taskStatus("t3", skiffpb.TaskState_TASK_STATE_ASSIGNED, "")},
			taskPlacement("t3", "n1", assignedSt), "", skiffpb.TaskState_TASK_STATE_ASSIGNED, "", 0},
		{"dropped for a task no longer wanted", []*skiffpb.StoreAction{taskDesired("t3", skiffpb.TaskState_TASK_STATE_SHUTDOWN)},
			taskPlacement("t3", "n1", assignedSt), "", skiffpb.TaskState_TASK_STATE_PENDING, "", 0},
		{"dropped for a task to remove", []*skiffpb.StoreAction{taskDesired("t3", skiffpb.TaskState_TASK_STATE_REMOVE)},
			taskPlacement("t3", "n1", assignedSt), "", skiffpb.TaskState_TASK_STATE_PENDING, "", 0},
		{"dropped for an unknown node", nil, taskPlacement("t3", "ghost", assignedSt),
			"", skiffpb.TaskState_TASK_STATE_PENDING, "", 0},
		{"dropped for a deleted node", []*skiffpb.StoreAction{delNode("n2")}, taskPlacement("t3", "n2", assignedSt),
			"", skiffpb.TaskState_TASK_STATE_PENDING, "", 0},
		{"dropped for an unknown task", nil, taskPlacement("ghost", "n1", assignedSt),
			"", skiffpb.TaskState_TASK_STATE_PENDING, "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := seed(t)
			mustApply(t, s, 1, putNode(testNode("n2", "h2")), putTask(testTask("t3", "sv1", "")))
			if len(tc.prep) > 0 {
				mustApply(t, s, 2, tc.prep...)
			}
			mustApply(t, s, 3, tc.placement)
			tk := getTask(s, "t3")
			if tk.GetNodeId() != tc.wantNode || tk.GetStatus().GetState() != tc.wantState ||
				tk.GetStatus().GetErr() != tc.wantErr || len(tk.GetPorts()) != tc.wantPorts {
				t.Errorf("task = %v, want node %q state %v err %q ports %d", tk, tc.wantNode, tc.wantState, tc.wantErr, tc.wantPorts)
			}
			dump(t, s) // secondary index invariants
			s.View(func(tx ReadTx) {
				on := ids(tx.TasksByNode(tc.wantNode))
				if tc.wantNode != "" && !strings.Contains(strings.Join(on, ","), "t3") {
					t.Errorf("TasksByNode(%s) = %v, want t3 in it", tc.wantNode, on)
				}
			})
		})
	}
}

// TestNodeStatus: a node status update is stored when the state or message
// changes, and ignored otherwise (a new timestamp alone is not a change).
func TestNodeStatus(t *testing.T) {
	cases := []struct {
		name        string
		action      *skiffpb.StoreAction
		wantState   skiffpb.NodeState
		wantMsg     string
		wantVersion uint64
	}{
		{"state change", nodeStatus("n1", skiffpb.NodeState_NODE_STATE_DOWN, "heartbeat failure"), skiffpb.NodeState_NODE_STATE_DOWN, "heartbeat failure", 2},
		{"message change", nodeStatus("n1", skiffpb.NodeState_NODE_STATE_READY, "back"), skiffpb.NodeState_NODE_STATE_READY, "back", 2},
		{"same state and message", &skiffpb.StoreAction{Action: &skiffpb.StoreAction_NodeStatus{NodeStatus: &skiffpb.NodeStatusUpdate{
			NodeId: "n1", Status: &skiffpb.NodeStatus{State: skiffpb.NodeState_NODE_STATE_READY, Message: "ready", Timestamp: 99}}}},
			skiffpb.NodeState_NODE_STATE_READY, "ready", 1},
		{"nil status", &skiffpb.StoreAction{Action: &skiffpb.StoreAction_NodeStatus{NodeStatus: &skiffpb.NodeStatusUpdate{NodeId: "n1"}}},
			skiffpb.NodeState_NODE_STATE_READY, "ready", 1},
		{"unknown node", nodeStatus("ghost", skiffpb.NodeState_NODE_STATE_DOWN, ""), skiffpb.NodeState_NODE_STATE_READY, "ready", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := seed(t)
			mustApply(t, s, 2, tc.action)
			n := getNode(s, "n1")
			if n.GetStatus().GetState() != tc.wantState || n.GetStatus().GetMessage() != tc.wantMsg || n.GetMeta().GetVersion() != tc.wantVersion {
				t.Errorf("node = %v, want %v %q at version %d", n.GetStatus(), tc.wantState, tc.wantMsg, tc.wantVersion)
			}
			if getNode(s, "ghost") != nil {
				t.Error("a status update created a node")
			}
		})
	}
}

// TestNodeAttachment: a node gets one address per existing network, the
// first allocation wins, and deleting a network detaches every node.
func TestNodeAttachment(t *testing.T) {
	cases := []struct {
		name string
		// prep runs at index 2, the case's action at 3.
		prep        []*skiffpb.StoreAction
		action      *skiffpb.StoreAction
		want        []string // the node's attachments, "network=address"
		wantVersion uint64
	}{
		{"first address in a network", nil, nodeAttachment("n1", "net1", "10.0.0.2/24"), []string{"net1=10.0.0.2/24"}, 3},
		{"second network appends",
			[]*skiffpb.StoreAction{putNetwork(testNetwork("net2", "st_b")), nodeAttachment("n1", "net1", "10.0.0.2/24")},
			nodeAttachment("n1", "net2", "10.0.1.2/24"), []string{"net1=10.0.0.2/24", "net2=10.0.1.2/24"}, 3},
		{"first allocation wins",
			[]*skiffpb.StoreAction{nodeAttachment("n1", "net1", "10.0.0.2/24")},
			nodeAttachment("n1", "net1", "10.0.0.9/24"), []string{"net1=10.0.0.2/24"}, 2},
		{"unknown network", nil, nodeAttachment("n1", "ghost", "10.0.0.2/24"), nil, 1},
		{"unknown node", nil, nodeAttachment("ghost", "net1", "10.0.0.2/24"), nil, 1},
		{"no attachment", nil, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_NodeAttachment{
			NodeAttachment: &skiffpb.NodeAttachmentUpdate{NodeId: "n1"}}}, nil, 1},
		{"deleting the network detaches the node",
			[]*skiffpb.StoreAction{putNetwork(testNetwork("net2", "st_b")), nodeAttachment("n1", "net1", "10.0.0.2/24"), nodeAttachment("n1", "net2", "10.0.1.2/24")},
			delNetwork("net1"), []string{"net2=10.0.1.2/24"}, 3},
		{"deleting a missing network leaves nodes alone",
			[]*skiffpb.StoreAction{nodeAttachment("n1", "net1", "10.0.0.2/24")},
			delNetwork("ghost"), []string{"net1=10.0.0.2/24"}, 2},
		{"deleting an unrelated network leaves nodes alone",
			[]*skiffpb.StoreAction{putNetwork(testNetwork("net2", "st_b")), nodeAttachment("n1", "net1", "10.0.0.2/24")},
			delNetwork("net2"), []string{"net1=10.0.0.2/24"}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := seed(t)
			if len(tc.prep) > 0 {
				mustApply(t, s, 2, tc.prep...)
			}
			mustApply(t, s, 3, tc.action)
			n := getNode(s, "n1")
			var got []string
			for _, a := range n.GetAttachments() {
				got = append(got, a.GetNetworkId()+"="+a.GetAddress())
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") || n.GetMeta().GetVersion() != tc.wantVersion {
				t.Errorf("attachments %v at version %d, want %v at %d", got, n.GetMeta().GetVersion(), tc.want, tc.wantVersion)
			}
			if getNode(s, "ghost") != nil {
				t.Error("an attachment created a node")
			}
			dump(t, s)
		})
	}
	t.Run("network delete detaches every node atomically", func(t *testing.T) {
		s := seed(t)
		mustApply(t, s, 2, putNode(testNode("n2", "h2")), putNode(testNode("n3", "h3")))
		mustApply(t, s, 3, nodeAttachment("n1", "net1", "10.0.0.2/24"), nodeAttachment("n2", "net1", "10.0.0.3/24"))
		before := dump(t, s)
		// Rolled back: the detach of both nodes is undone with the delete.
		if err := s.Apply(4, cmd(delNetwork("net1"), putNode(testNode("n9", "h1")))); !errors.Is(err, ErrNameConflict) {
			t.Fatalf("Apply = %v", err)
		}
		if stripIndex(dump(t, s)) != stripIndex(before) {
			t.Fatal("rolled-back network delete left nodes detached")
		}
		ch, cancel := s.ViewAndWatch(nil)
		defer cancel()
		mustApply(t, s, 5, delNetwork("net1"))
		s.View(func(tx ReadTx) {
			for _, n := range tx.Nodes() {
				if len(n.GetAttachments()) != 0 {
					t.Errorf("node %s still attached: %v", n.GetId(), n.GetAttachments())
				}
			}
			if tx.Node("n3").GetMeta().GetVersion() != 2 {
				t.Error("an unattached node was rewritten")
			}
		})
		b := recvBatch(t, ch)
		got := map[string]bool{}
		for _, ev := range b.Events {
			got[ev.Object.(interface{ GetId() string }).GetId()] = ev.Deleted
		}
		if len(b.Events) != 3 || got["net1"] != true || got["n1"] || got["n2"] {
			t.Errorf("events = %v, want net1 deleted, n1 and n2 updated", got)
		}
	})
}

// TestSecondaryIndexesFollowPuts: a whole-object task write that changes
// the node or the service moves the task between index sets, and empty sets
// are dropped.
func TestSecondaryIndexesFollowPuts(t *testing.T) {
	s := seed(t)
	mustApply(t, s, 2, putNode(testNode("n2", "h2")), putTask(testTask("t2", "sv1", "n1")))
	tk := withVersion(testTask("t1", "sv2", "n2"), 1)
	mustApply(t, s, 3, putTask(tk))
	unplaced := withVersion(testTask("t2", "", ""), 2)
	mustApply(t, s, 4, putTask(unplaced))
	s.View(func(tx ReadTx) {
		check := func(what string, got []*skiffpb.Task, want string) {
			t.Helper()
			if g := strings.Join(ids(got), ","); g != want {
				t.Errorf("%s = %q, want %q", what, g, want)
			}
		}
		check("TasksByNode(n1)", tx.TasksByNode("n1"), "")
		check("TasksByNode(n2)", tx.TasksByNode("n2"), "t1")
		check("TasksByNode(\"\")", tx.TasksByNode(""), "")
		check("TasksByService(sv1)", tx.TasksByService("sv1"), "")
		check("TasksByService(sv2)", tx.TasksByService("sv2"), "t1")
		check("Tasks()", tx.Tasks(), "t1,t2")
		var each []string
		tx.EachTaskOfNode("n2", func(t *skiffpb.Task) bool { each = append(each, t.GetId()); return true })
		if strings.Join(each, ",") != "t1" {
			t.Errorf("EachTaskOfNode(n2) = %v", each)
		}
	})
	dump(t, s)
}

// TestStoredObjectsAreImmutable: the store keeps its own copy of what it is
// given, and replaces objects instead of changing them, so an object read
// before a write keeps its old values.
func TestStoredObjectsAreImmutable(t *testing.T) {
	t.Run("mutating a whole-object put after Apply", func(t *testing.T) {
		s := New()
		n := testNode("n1", "h1")
		tk := testTask("t1", "sv1", "n1")
		sv := testService("sv1", "st_web")
		c := cmd(putNode(n), putTask(tk), putService(sv))
		if err := s.Apply(1, c); err != nil {
			t.Fatal(err)
		}
		before := dump(t, s)
		n.Name = "mutated"
		n.Spec.Labels["zone"] = "mutated"
		tk.Status.State = skiffpb.TaskState_TASK_STATE_FAILED
		tk.NodeId = "elsewhere"
		sv.Spec.Container.Image = "mutated"
		c.Actions[0] = putNode(testNode("other", "other"))
		if got := dump(t, s); got != before {
			t.Errorf("store changed with the caller's messages:\n%s", got)
		}
	})
	t.Run("objects read before an update keep their values", func(t *testing.T) {
		s := seed(t)
		var node *skiffpb.Node
		var task *skiffpb.Task
		var sv *skiffpb.Service
		var byNode, byService []*skiffpb.Task
		s.View(func(tx ReadTx) {
			node, task, sv = tx.Node("n1"), tx.Task("t1"), tx.Service("sv1")
			byNode, byService = tx.TasksByNode("n1"), tx.TasksByService("sv1")
		})
		texts := []string{textOf(node), textOf(task), textOf(sv)}
		updSv := withVersion(testService("sv1", "st_web"), 1)
		updSv.Spec.Replicas = 9
		mustApply(t, s, 2,
			taskStatus("t1", skiffpb.TaskState_TASK_STATE_RUNNING, "r"),
			taskDesired("t1", skiffpb.TaskState_TASK_STATE_SHUTDOWN),
			nodeStatus("n1", skiffpb.NodeState_NODE_STATE_DOWN, "down"),
			putService(updSv))
		mustApply(t, s, 3, delTask("t1"), delNode("n1"))
		if got := []string{textOf(node), textOf(task), textOf(sv)}; strings.Join(got, "|") != strings.Join(texts, "|") {
			t.Errorf("objects changed under a reader:\n%v\nwant\n%v", got, texts)
		}
		if len(byNode) != 1 || byNode[0] != task || len(byService) != 1 {
			t.Error("lists read before the update changed")
		}
	})
	t.Run("events carry the object as stored at that index", func(t *testing.T) {
		s := seed(t)
		ch, cancel := s.ViewAndWatch(nil)
		defer cancel()
		mustApply(t, s, 2, taskStatus("t1", skiffpb.TaskState_TASK_STATE_RUNNING, "r"))
		mustApply(t, s, 3, taskStatus("t1", skiffpb.TaskState_TASK_STATE_FAILED, "f"))
		b := recvBatch(t, ch)
		if tk := b.Events[0].Object.(*skiffpb.Task); tk.GetStatus().GetState() != skiffpb.TaskState_TASK_STATE_RUNNING || tk.GetMeta().GetVersion() != 2 {
			t.Errorf("first event's task = %v", tk)
		}
	})
}

// TestNarrowUpdatesDoNotAliasCommand: the narrow updates must not store
// sub-messages of the caller's command either, or a caller that reuses or
// mutates its command changes a stored object in place behind the store's
// lock (and under readers that rely on immutability).
func TestNarrowUpdatesDoNotAliasCommand(t *testing.T) {
	cases := []struct {
		name   string
		action *skiffpb.StoreAction
		mutate func(a *skiffpb.StoreAction)
		read   func(s *Store) string
	}{
		{"task_status", taskStatus("t1", skiffpb.TaskState_TASK_STATE_RUNNING, "r"),
			func(a *skiffpb.StoreAction) { a.GetTaskStatus().Status.Message = "mutated" },
			func(s *Store) string { return getTask(s, "t1").GetStatus().GetMessage() }},
		{"node_status", nodeStatus("n1", skiffpb.NodeState_NODE_STATE_DOWN, "down"),
			func(a *skiffpb.StoreAction) { a.GetNodeStatus().Status.Message = "mutated" },
			func(s *Store) string { return getNode(s, "n1").GetStatus().GetMessage() }},
		{"task_placement status", taskPlacement("t3", "n1", &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_ASSIGNED, Message: "a"}),
			func(a *skiffpb.StoreAction) { a.GetTaskPlacement().Status.Message = "mutated" },
			func(s *Store) string { return getTask(s, "t3").GetStatus().GetMessage() }},
		{"node_attachment", nodeAttachment("n1", "net1", "10.0.0.2/24"),
			func(a *skiffpb.StoreAction) { a.GetNodeAttachment().Attachment.Address = "mutated" },
			func(s *Store) string { return getNode(s, "n1").GetAttachments()[0].GetAddress() }},
		{"task_placement ports", taskPlacement("t3", "n1", nil, &skiffpb.PortBinding{PublishedPort: 80}),
			func(a *skiffpb.StoreAction) { a.GetTaskPlacement().Ports[0].PublishedPort = 1 },
			func(s *Store) string { return textOf(getTask(s, "t3").GetPorts()[0]) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := seed(t)
			mustApply(t, s, 1, putTask(testTask("t3", "sv1", "")))
			mustApply(t, s, 2, tc.action)
			want := tc.read(s)
			tc.mutate(tc.action)
			if got := tc.read(s); got != want {
				t.Errorf("stored value changed from %q to %q by mutating the applied command", want, got)
			}
		})
	}
}

// TestApplyNilClusterIsInvalid: a put_cluster action without a cluster must
// be rejected like the other puts of a nil object, not crash the FSM.
func TestApplyNilClusterIsInvalid(t *testing.T) {
	s := New()
	var err error
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("Apply(put_cluster nil) panicked: %v", r)
			}
		}()
		err = s.Apply(1, cmd(putCluster(nil)))
	}()
	if !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("Apply(put_cluster nil) = %v, want ErrInvalidCommand", err)
	}
	if s.Index() != 1 {
		t.Fatalf("Index() = %d", s.Index())
	}
}
