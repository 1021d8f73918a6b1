package state

import (
	"bytes"
	"fmt"
	"sort"
	"testing"

	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// The random commands draw from small pools of IDs and names, so that they
// collide often: creates over existing objects, renames onto taken names,
// updates of deleted objects, placements on deleted nodes.
var (
	poolNodes    = []string{"n0", "n1", "n2", "n3"}
	poolNames    = []string{"a", "b", "c"}
	poolServices = []string{"s0", "s1", "s2"}
	poolTasks    = []string{"t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7"}
	poolStacks   = []string{"k0", "k1"}
	poolNetworks = []string{"w0", "w1"}
	poolStates   = []skiffpb.TaskState{
		skiffpb.TaskState_TASK_STATE_NEW, skiffpb.TaskState_TASK_STATE_PENDING, skiffpb.TaskState_TASK_STATE_ASSIGNED,
		skiffpb.TaskState_TASK_STATE_RUNNING, skiffpb.TaskState_TASK_STATE_COMPLETE, skiffpb.TaskState_TASK_STATE_SHUTDOWN,
		skiffpb.TaskState_TASK_STATE_FAILED, skiffpb.TaskState_TASK_STATE_REMOVE,
	}
)

// drawVersion picks the version a generated put names: usually the one
// stored in ref (a valid update or create), sometimes 0 or a random one.
func drawVersion(rt *rapid.T, stored uint64) uint64 {
	switch rapid.IntRange(0, 5).Draw(rt, "versionMode") {
	case 0:
		return 0
	case 1:
		return rapid.Uint64Range(0, 30).Draw(rt, "version")
	default:
		return stored
	}
}

// drawAction draws one action against ref, the store whose versions the
// generated puts name.
func drawAction(rt *rapid.T, ref *Store) *skiffpb.StoreAction {
	var (
		nodeV, svV, taskV, stackV, netV, clusterV uint64
	)
	nodeID := rapid.SampledFrom(poolNodes).Draw(rt, "node")
	svID := rapid.SampledFrom(poolServices).Draw(rt, "service")
	taskID := rapid.SampledFrom(poolTasks).Draw(rt, "task")
	stackID := rapid.SampledFrom(poolStacks).Draw(rt, "stack")
	netID := rapid.SampledFrom(poolNetworks).Draw(rt, "network")
	ref.View(func(tx ReadTx) {
		nodeV = tx.Node(nodeID).GetMeta().GetVersion()
		svV = tx.Service(svID).GetMeta().GetVersion()
		taskV = tx.Task(taskID).GetMeta().GetVersion()
		stackV = tx.Stack(stackID).GetMeta().GetVersion()
		netV = tx.Network(netID).GetMeta().GetVersion()
		clusterV = tx.Cluster().GetMeta().GetVersion()
	})
	name := rapid.SampledFrom(poolNames).Draw(rt, "name")
	state := rapid.SampledFrom(poolStates).Draw(rt, "state")
	switch rapid.IntRange(0, 15).Draw(rt, "kind") {
	case 15:
		return nodeAttachment(nodeID, netID, rapid.SampledFrom([]string{"10.0.0.2/24", "10.0.0.3/24"}).Draw(rt, "addr"))
	case 0:
		n := testNode(nodeID, name)
		n.Meta.Version = drawVersion(rt, nodeV)
		return putNode(n)
	case 1:
		sv := testService(svID, "st_"+name)
		sv.Meta.Version = drawVersion(rt, svV)
		sv.Spec.Replicas = rapid.Uint64Range(0, 5).Draw(rt, "replicas")
		return putService(sv)
	case 2, 3:
		tk := testTask(taskID, svID, rapid.SampledFrom(append([]string{""}, poolNodes...)).Draw(rt, "taskNode"))
		tk.Meta.Version = drawVersion(rt, taskV)
		tk.Status.State = state
		return putTask(tk)
	case 4:
		st := testStack(stackID, name)
		st.Meta.Version = drawVersion(rt, stackV)
		return putStack(st)
	case 5:
		nw := testNetwork(netID, "st_"+name)
		nw.Meta.Version = drawVersion(rt, netV)
		return putNetwork(nw)
	case 6:
		return putCluster(&skiffpb.Cluster{Id: "c", Meta: &skiffpb.Meta{Version: drawVersion(rt, clusterV)},
			TaskHistoryLimit: rapid.Uint64Range(0, 9).Draw(rt, "history")})
	case 7:
		return taskStatus(taskID, state, rapid.SampledFrom([]string{"", "x", "y"}).Draw(rt, "msg"))
	case 8:
		return taskDesired(taskID, state)
	case 9:
		return nodeStatus(nodeID, rapid.SampledFrom([]skiffpb.NodeState{
			skiffpb.NodeState_NODE_STATE_READY, skiffpb.NodeState_NODE_STATE_DOWN,
		}).Draw(rt, "nodeState"), rapid.SampledFrom([]string{"", "x"}).Draw(rt, "nodeMsg"))
	case 10:
		target := rapid.SampledFrom(append([]string{""}, poolNodes...)).Draw(rt, "placeOn")
		return taskPlacement(taskID, target, &skiffpb.TaskStatus{State: state})
	case 11:
		return delTask(taskID)
	case 12:
		return delNode(nodeID)
	case 13:
		return delService(svID)
	default:
		if rapid.Bool().Draw(rt, "delStack") {
			return delStack(stackID)
		}
		return delNetwork(netID)
	}
}

// canonicalSnapshot decodes a snapshot into its index and the sorted,
// deterministically marshalled bytes of every object it holds: two stores
// with the same contents give the same result whatever their map order.
func canonicalSnapshot(t tb, data []byte) []string {
	t.Helper()
	var restoredObjs []string
	s := restored(t, data)
	snap := s.Snapshot()
	for _, a := range snap.objects {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(a)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		restoredObjs = append(restoredObjs, string(b))
	}
	sort.Strings(restoredObjs)
	return append([]string{fmt.Sprintf("index %d", snap.Index)}, restoredObjs...)
}

// TestApplyIsDeterministic applies the same random commands to two stores
// and checks that they end identical (object by object, and in their
// sorted snapshot bytes); that a rejected command leaves the store as it
// was; and that a store restored from a snapshot taken midway, then fed the
// rest of the log, ends identical too - the way a Raft follower catches up.
func TestApplyIsDeterministic(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		a, b := New(), New()
		var log []*skiffpb.Command
		steps := rapid.IntRange(1, 40).Draw(rt, "steps")
		snapAt := rapid.IntRange(0, steps).Draw(rt, "snapAt")
		var snapData []byte
		for i := 1; i <= steps; i++ {
			n := rapid.IntRange(1, 4).Draw(rt, "actions")
			c := &skiffpb.Command{}
			for j := 0; j < n; j++ {
				c.Actions = append(c.Actions, drawAction(rt, a))
			}
			log = append(log, c)
			before := stripIndex(dump(rt, a))
			errA := a.Apply(uint64(i), c)
			errB := b.Apply(uint64(i), proto.Clone(c).(*skiffpb.Command))
			if fmt.Sprint(errA) != fmt.Sprint(errB) {
				rt.Fatalf("step %d: stores disagree: %v vs %v", i, errA, errB)
			}
			if errA != nil && stripIndex(dump(rt, a)) != before {
				rt.Fatalf("step %d: rejected command (%v) changed the store", i, errA)
			}
			if i == snapAt {
				snapData = snapshotBytes(rt, a)
			}
		}
		da, db := dump(rt, a), dump(rt, b)
		if da != db {
			rt.Fatalf("stores differ:\n%s\nvs\n%s", da, db)
		}
		ca, cb := canonicalSnapshot(rt, snapshotBytes(rt, a)), canonicalSnapshot(rt, snapshotBytes(rt, b))
		if fmt.Sprint(ca) != fmt.Sprint(cb) {
			rt.Fatal("sorted snapshots differ")
		}

		// A follower restored from the snapshot at snapAt replays the rest.
		c := New()
		if snapData != nil {
			if err := c.Restore(bytes.NewReader(snapData)); err != nil {
				rt.Fatal(err)
			}
		}
		for i := snapAt + 1; i <= steps; i++ {
			_ = c.Apply(uint64(i), proto.Clone(log[i-1]).(*skiffpb.Command))
		}
		if dc := dump(rt, c); dc != da {
			rt.Fatalf("snapshot at %d + replay differs:\n%s\nvs\n%s", snapAt, dc, da)
		}
	})
}
