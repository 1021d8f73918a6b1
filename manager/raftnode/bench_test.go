package raftnode

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skiffhq/skiff/ca"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// proposeBatch is how many put_task actions one benchmark command carries:
// the size of the orchestrator's and placement's batches in a scale-up.
const proposeBatch = 1000

// benchTaskCommand is a command creating proposeBatch new tasks numbered
// from first, each of the size the orchestrator writes: pending, with one
// network attachment.
func benchTaskCommand(first int) *skiffpb.Command {
	cmd := &skiffpb.Command{Actions: make([]*skiffpb.StoreAction, 0, proposeBatch)}
	for i := first; i < first+proposeBatch; i++ {
		cmd.Actions = append(cmd.Actions, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutTask{PutTask: &skiffpb.Task{
			Id:           fmt.Sprintf("%025d", i),
			Meta:         &skiffpb.Meta{CreatedAt: 1700000000000000000, UpdatedAt: 1700000000000000000},
			ServiceId:    fmt.Sprintf("svc%022d", i%10),
			ServiceName:  fmt.Sprintf("bench_web%d", i%10),
			Stack:        "bench",
			Slot:         uint64(i/10 + 1),
			SpecVersion:  1,
			DesiredState: skiffpb.TaskState_TASK_STATE_RUNNING,
			Status: &skiffpb.TaskStatus{
				State: skiffpb.TaskState_TASK_STATE_PENDING, Timestamp: 1700000000000000000, Message: "pending task scheduling",
			},
			Networks: []*skiffpb.NetworkAttachment{{NetworkId: "net0000000000000000000000", Address: "10.64.12.34/10"}},
		}}})
	}
	return cmd
}

// benchNode is a bootstrapped single member on disk in a temp dir, leading.
func benchNode(b *testing.B) *Node {
	b.Helper()
	cfg := testConfig("n1", b.TempDir(), freeAddr(b), true)
	// The benchmark measures commits, not snapshots: a snapshot of the
	// growing store every 8,192 entries would land in some runs and not
	// others.
	cfg.SnapshotThreshold = 1 << 40
	n, err := Open(cfg, state.New())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = n.Close() })
	deadline := time.Now().Add(15 * time.Second)
	for !n.IsLeader() {
		if time.Now().After(deadline) {
			b.Fatalf("no leadership within 15s (state %s)", n.State())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return n
}

// BenchmarkProposeTaskBatch commits commands of 1,000 new tasks through a
// real single-member Raft on disk (BoltDB, fsync per append) and waits for
// each to be applied to the store, as the orchestrator does in a scale-up.
// Sequential is one proposer waiting for each commit; Concurrent has
// several in flight, as the orchestrator, placement and the dispatcher's
// status batches are, which Raft turns into one disk write per group.
func BenchmarkProposeTaskBatch(b *testing.B) {
	b.Run("Sequential", func(b *testing.B) { benchPropose(b, benchNode(b), 1) })
	b.Run("Concurrent4", func(b *testing.B) { benchPropose(b, benchNode(b), 4) })
}

// BenchmarkProposeTaskBatchCluster is BenchmarkProposeTaskBatch's
// Sequential case on a leader with two followers on loopback, over plain
// TCP and over mutual TLS: each commit waits for a follower's append, so
// the difference is what TLS costs a replicated commit.
func BenchmarkProposeTaskBatchCluster(b *testing.B) {
	b.Run("TCP", func(b *testing.B) { benchPropose(b, benchCluster(b, nil), 1) })
	b.Run("TLS", func(b *testing.B) { benchPropose(b, benchCluster(b, testCA(b, "bench")), 1) })
}

// benchCluster is the leader of three members over TLS under a, or over
// plain TCP when a is nil.
func benchCluster(b *testing.B, a *ca.Authority) *Node {
	b.Helper()
	nodes, _ := openCluster(b, a, "n1", "n2", "n3")
	return leaderOf(b, nodes)
}

func benchPropose(b *testing.B, n *Node, proposers int) {
	cmds := make([]*skiffpb.Command, b.N)
	for i := range cmds {
		cmds[i] = benchTaskCommand(i * proposeBatch)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, proposers)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range proposers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(cmds) {
					return
				}
				if _, err := n.Propose(ctx, cmds[i]); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
	b.ReportMetric(float64(b.N*proposeBatch)/b.Elapsed().Seconds(), "tasks/s")
	var tasks int
	n.store.View(func(tx state.ReadTx) { tasks = tx.CountTasks() })
	if tasks != b.N*proposeBatch {
		b.Fatalf("store holds %d tasks after %d commits of %d", tasks, b.N, proposeBatch)
	}
}
