package manager_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/skiffhq/skiff/internal/testcluster"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// TestLeaderChangesMoveNothing: five managers and fifty agents (simulated
// executors, real sessions and gossip); the leader is killed, crash-like,
// twenty times, and brought back each time. Every agent stays alive and can
// reach a quorum throughout, so no node may ever be marked down and no
// task may ever be stopped or moved: each slot holds the one task it
// started with.
func TestLeaderChangesMoveNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("twenty leader changes take a minute")
	}
	managers, agents, replicas, kills := 5, 50, 100, 20
	if raceDetector {
		// Fifty agents' gossip and sessions under the race detector, beside
		// the other packages' tests, starve two cores; the full size runs
		// without it (make test-unit).
		agents, replicas, kills = 10, 20, 5
	}
	c := testcluster.New(t, managers)
	for i := 1; i <= agents; i++ {
		c.AddAgent(fmt.Sprintf("a%02d", i))
	}
	c.Eventually(30*time.Second, func() error {
		resp, err := c.Control().ListNodes(c.Ctx(), &skiffpb.ListNodesRequest{})
		if err != nil {
			return err
		}
		ready := 0
		for _, n := range resp.GetNodes() {
			if n.GetRole() == skiffpb.NodeRole_NODE_ROLE_WORKER && n.GetStatus().GetState() == skiffpb.NodeState_NODE_STATE_READY {
				ready++
			}
		}
		if ready != agents {
			return fmt.Errorf("%d of %d agents ready", ready, agents)
		}
		return nil
	})
	if _, err := c.Control().DeployStack(c.Ctx(), &skiffpb.DeployStackRequest{Spec: testcluster.Stack("steady", uint64(replicas))}); err != nil {
		t.Fatal(err)
	}
	c.WaitRunning("steady_web", replicas)

	for i := range kills {
		leader := c.WaitLeader()
		c.Kill(leader)
		next := c.WaitLeader()
		t.Logf("kill %d: %s → %s", i+1, leader.Config.Name, next.Config.Name)
		assertNothingMoved(t, c, replicas)
		c.Start(leader)
		// The next kill waits until the restarted manager is a voter in
		// touch with the leader again, so that quorum never depends on it.
		c.Eventually(30*time.Second, func() error {
			info, err := c.Control().ClusterInfo(c.Ctx(), &skiffpb.ClusterInfoRequest{})
			if err != nil {
				return err
			}
			for _, m := range info.GetManagers() {
				if m.GetReachability() != skiffpb.Reachability_REACHABILITY_REACHABLE {
					return fmt.Errorf("manager %s is not reachable yet", m.GetName())
				}
			}
			return nil
		})
	}
	// The last restart waited out more than a grace of the last term.
	assertNothingMoved(t, c, replicas)
}

// assertNothingMoved checks that every node is Ready and that the
// service's tasks are exactly the ones it started with: no task was told
// to stop, and none was created in its place.
func assertNothingMoved(t *testing.T, c *testcluster.Cluster, replicas int) {
	t.Helper()
	var nodes *skiffpb.ListNodesResponse
	var tasks *skiffpb.ListTasksResponse
	c.Eventually(10*time.Second, func() error {
		var err error
		if nodes, err = c.Control().ListNodes(c.Ctx(), &skiffpb.ListNodesRequest{}); err != nil {
			return err
		}
		tasks, err = c.Control().ListTasks(c.Ctx(), &skiffpb.ListTasksRequest{Service: "steady_web"})
		return err
	})
	for _, n := range nodes.GetNodes() {
		if n.GetRole() == skiffpb.NodeRole_NODE_ROLE_MANAGER {
			continue // the managers of this cluster run no agent
		}
		if st := n.GetStatus(); st.GetState() != skiffpb.NodeState_NODE_STATE_READY || st.GetMessage() != "" {
			t.Errorf("node %s is %v (%q); every agent was healthy", n.GetName(), st.GetState(), st.GetMessage())
		}
	}
	if got := len(tasks.GetTasks()); got != replicas {
		t.Errorf("the service has %d tasks, want the %d it started with", got, replicas)
	}
	for _, task := range tasks.GetTasks() {
		if task.GetDesiredState() != skiffpb.TaskState_TASK_STATE_RUNNING {
			t.Errorf("task %s (slot %d) is desired %v", task.GetId(), task.GetSlot(), task.GetDesiredState())
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}
