package manager_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/skiffhq/skiff/internal/testcluster"
	skiffpb "github.com/skiffhq/skiff/proto"
)

func TestDeployScaleAndRestart(t *testing.T) {
	c := testcluster.New(t, 1)
	a1 := c.AddAgent("a1")
	c.AddAgent("a2")
	c.Eventually(10*time.Second, func() error {
		nodes, err := c.Control().ListNodes(c.Ctx(), &skiffpb.ListNodesRequest{})
		if err != nil {
			return err
		}
		ready := 0
		for _, n := range nodes.GetNodes() {
			if n.GetStatus().GetState() == skiffpb.NodeState_NODE_STATE_READY {
				ready++
			}
		}
		if ready != 2 {
			return fmt.Errorf("%d ready nodes, want 2", ready)
		}
		return nil
	})

	resp, err := c.Control().DeployStack(c.Ctx(), &skiffpb.DeployStackRequest{Spec: testcluster.Stack("demo", 3)})
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	if len(resp.GetChanges()) != 1 || resp.GetChanges()[0].GetKind() != skiffpb.ServiceChangeKind_SERVICE_CHANGE_CREATED {
		t.Fatalf("deploy changes = %v, want one created service", resp.GetChanges())
	}
	c.WaitRunning("demo_web", 3)

	// A redeploy of the same file changes nothing.
	resp, err = c.Control().DeployStack(c.Ctx(), &skiffpb.DeployStackRequest{Spec: testcluster.Stack("demo", 3)})
	if err != nil {
		t.Fatalf("redeploy: %v", err)
	}
	if resp.GetChanges()[0].GetKind() != skiffpb.ServiceChangeKind_SERVICE_CHANGE_UNCHANGED {
		t.Fatalf("redeploy reported %v, want unchanged", resp.GetChanges()[0].GetKind())
	}

	replicas := uint64(6)
	if _, err := c.Control().UpdateService(c.Ctx(), &skiffpb.UpdateServiceRequest{Service: "demo_web", Replicas: &replicas}); err != nil {
		t.Fatalf("scale: %v", err)
	}
	c.WaitRunning("demo_web", 6)

	// A task that fails is replaced in its slot (restart_policy any, no delay).
	running := a1.Running()
	if len(running) == 0 {
		t.Fatal("agent a1 runs no task; spread should have given it some")
	}
	if err := a1.Exit(running[0], 1); err != nil {
		t.Fatal(err)
	}
	c.Eventually(10*time.Second, func() error {
		tasks, err := c.Control().ListTasks(c.Ctx(), &skiffpb.ListTasksRequest{Service: "demo_web"})
		if err != nil {
			return err
		}
		var failedSlot uint64
		for _, tk := range tasks.GetTasks() {
			if tk.GetId() == running[0] {
				if tk.GetStatus().GetState() != skiffpb.TaskState_TASK_STATE_FAILED {
					return fmt.Errorf("killed task is %v, want FAILED", tk.GetStatus().GetState())
				}
				failedSlot = tk.GetSlot()
			}
		}
		for _, tk := range tasks.GetTasks() {
			if tk.GetSlot() == failedSlot && tk.GetId() != running[0] && tk.GetStatus().GetState() == skiffpb.TaskState_TASK_STATE_RUNNING {
				return nil
			}
		}
		return fmt.Errorf("slot %d has no running replacement", failedSlot)
	})
	c.WaitRunning("demo_web", 6)

	replicas = 2
	if _, err := c.Control().UpdateService(c.Ctx(), &skiffpb.UpdateServiceRequest{Service: "demo_web", Replicas: &replicas}); err != nil {
		t.Fatalf("scale down: %v", err)
	}
	c.WaitRunning("demo_web", 2)
}

func TestNodeDownMovesTasks(t *testing.T) {
	c := testcluster.New(t, 1)
	c.AddAgent("a1")
	c.AddAgent("a2")
	if _, err := c.Control().DeployStack(c.Ctx(), &skiffpb.DeployStackRequest{Spec: testcluster.Stack("demo", 4)}); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	c.WaitRunning("demo_web", 4)
	c.StopAgent("a2")
	// Every replica runs on a1 once a2 is judged down.
	c.Eventually(15*time.Second, func() error {
		tasks, err := c.Control().ListTasks(c.Ctx(), &skiffpb.ListTasksRequest{Service: "demo_web", DesiredRunning: true})
		if err != nil {
			return err
		}
		node, err := c.Control().GetNode(c.Ctx(), &skiffpb.GetNodeRequest{Node: "a1"})
		if err != nil {
			return err
		}
		on := 0
		for _, tk := range tasks.GetTasks() {
			if tk.GetNodeId() == node.GetId() && tk.GetStatus().GetState() == skiffpb.TaskState_TASK_STATE_RUNNING {
				on++
			}
		}
		if on != 4 {
			return fmt.Errorf("%d of 4 replicas run on a1", on)
		}
		return nil
	})
}

func TestLeaderFailover(t *testing.T) {
	c := testcluster.New(t, 3)
	leader := c.WaitLeader()
	if _, err := c.Control().DeployStack(c.Ctx(), &skiffpb.DeployStackRequest{Spec: testcluster.Stack("before", 1)}); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	c.Stop(leader)
	start := time.Now()
	c.Eventually(10*time.Second, func() error {
		_, err := c.Control().DeployStack(c.Ctx(), &skiffpb.DeployStackRequest{Spec: testcluster.Stack("after", 1)})
		return err
	})
	t.Logf("write accepted %s after the leader stopped", time.Since(start).Round(time.Millisecond))
	stacks, err := c.Control().ListStacks(c.Ctx(), &skiffpb.ListStacksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(stacks.GetStacks()); got != 2 {
		t.Fatalf("%d stacks after failover, want 2 (an acknowledged write was lost)", got)
	}
	// The old leader comes back as a follower with everything.
	c.Start(leader)
	c.Eventually(10*time.Second, func() error {
		st, err := c.ControlOf(leader).ListStacks(c.Ctx(), &skiffpb.ListStacksRequest{})
		if err != nil {
			return err
		}
		if len(st.GetStacks()) != 2 {
			return fmt.Errorf("restarted manager sees %d stacks", len(st.GetStacks()))
		}
		return nil
	})
}

func TestQuorumLossAndRecovery(t *testing.T) {
	c := testcluster.New(t, 3)
	leader := c.WaitLeader()
	var followers []*testcluster.Manager
	for _, m := range c.Managers {
		if m != leader {
			followers = append(followers, m)
		}
	}
	c.Stop(followers[0])
	c.Stop(followers[1])

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := c.ControlOf(leader).DeployStack(ctx, &skiffpb.DeployStackRequest{Spec: testcluster.Stack("lost", 1)})
	if !testcluster.Unavailable(err) {
		t.Fatalf("write without quorum: err = %v, want Unavailable", err)
	}

	c.Start(followers[0])
	c.Eventually(15*time.Second, func() error {
		_, err := c.Control().DeployStack(c.Ctx(), &skiffpb.DeployStackRequest{Spec: testcluster.Stack("back", 1)})
		return err
	})
}

func TestRestartAllResumesFromDisk(t *testing.T) {
	c := testcluster.New(t, 3)
	for i := 0; i < 5; i++ {
		if _, err := c.Control().DeployStack(c.Ctx(), &skiffpb.DeployStackRequest{Spec: testcluster.Stack(fmt.Sprintf("s%d", i), 1)}); err != nil {
			t.Fatalf("deploy %d: %v", i, err)
		}
	}
	for _, m := range c.Managers {
		c.Stop(m)
	}
	for _, m := range c.Managers {
		c.Start(m)
	}
	c.WaitLeader()
	c.Eventually(15*time.Second, func() error {
		st, err := c.Control().ListStacks(c.Ctx(), &skiffpb.ListStacksRequest{})
		if err != nil {
			return err
		}
		if len(st.GetStacks()) != 5 {
			return fmt.Errorf("%d stacks after restart, want 5", len(st.GetStacks()))
		}
		return nil
	})
}

// TestAgentReportsAfterManagersReturn: with every manager down, tasks keep
// running on their agents, and what happened meanwhile (a task that
// failed) reaches the cluster once the managers are back.
func TestAgentReportsAfterManagersReturn(t *testing.T) {
	c := testcluster.New(t, 1)
	a1 := c.AddAgent("a1")
	if _, err := c.Control().DeployStack(c.Ctx(), &skiffpb.DeployStackRequest{Spec: testcluster.Stack("demo", 2)}); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	c.WaitRunning("demo_web", 2)
	running := a1.Running()
	if len(running) != 2 {
		t.Fatalf("a1 runs %d tasks, want 2", len(running))
	}

	m := c.Managers[0]
	c.Stop(m)
	// The agent keeps its tasks while no manager answers...
	if got := len(a1.Running()); got != 2 {
		t.Fatalf("a1 runs %d tasks with the manager down, want 2", got)
	}
	// ...and one of them fails meanwhile.
	if err := a1.Exit(running[0], 3); err != nil {
		t.Fatal(err)
	}
	c.Start(m)
	c.Eventually(20*time.Second, func() error {
		tasks, err := c.Control().ListTasks(c.Ctx(), &skiffpb.ListTasksRequest{Service: "demo_web"})
		if err != nil {
			return err
		}
		for _, tk := range tasks.GetTasks() {
			if tk.GetId() == running[0] {
				if tk.GetStatus().GetState() != skiffpb.TaskState_TASK_STATE_FAILED || tk.GetStatus().GetExitCode() != 3 {
					return fmt.Errorf("task that failed while the manager was down is %v (exit %d)", tk.GetStatus().GetState(), tk.GetStatus().GetExitCode())
				}
				return nil
			}
		}
		return fmt.Errorf("task %s is gone", running[0])
	})
	c.WaitRunning("demo_web", 2)
}
