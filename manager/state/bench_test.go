package state

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// benchTask is a task of realistic size: placed, running, with a network
// attachment.
func benchTask(i int) *skiffpb.Task {
	return &skiffpb.Task{
		Id:           fmt.Sprintf("%026d", i),
		Meta:         &skiffpb.Meta{CreatedAt: 1700000000000000000, UpdatedAt: 1700000000000000000},
		ServiceId:    fmt.Sprintf("svc%03d", i%100),
		ServiceName:  fmt.Sprintf("stack_service%03d", i%100),
		Stack:        "stack",
		Slot:         uint64(i/100 + 1),
		NodeId:       fmt.Sprintf("node%04d", i%1000),
		SpecVersion:  1,
		DesiredState: skiffpb.TaskState_TASK_STATE_RUNNING,
		Status: &skiffpb.TaskStatus{
			State: skiffpb.TaskState_TASK_STATE_RUNNING, Timestamp: 1700000000000000000,
			Message: "started", ContainerId: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		},
		Networks: []*skiffpb.NetworkAttachment{{NetworkId: "net0", Address: "10.0.1.5/24"}},
	}
}

// BenchmarkApplyTaskBatch applies commands of 1,000 put_task actions (new
// tasks) to a growing store, as the orchestrator commits a scale-up.
func BenchmarkApplyTaskBatch(b *testing.B) {
	const batch = 1000
	s := New()
	next := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		c := &skiffpb.Command{Actions: make([]*skiffpb.StoreAction, 0, batch)}
		for j := 0; j < batch; j++ {
			c.Actions = append(c.Actions, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutTask{PutTask: benchTask(next)}})
			next++
		}
		b.StartTimer()
		if err := s.Apply(uint64(i+1), c); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "tasks/s")
}

// bigStore returns a store of n tasks (and 1,000 nodes).
func bigStore(b *testing.B, n int) *Store {
	b.Helper()
	s := New()
	var nodes []*skiffpb.StoreAction
	for i := 0; i < 1000; i++ {
		nodes = append(nodes, putNode(testNode(fmt.Sprintf("node%04d", i), fmt.Sprintf("h%04d", i))))
	}
	mustApply(b, s, 1, nodes...)
	for start := 0; start < n; start += 2048 {
		var actions []*skiffpb.StoreAction
		for i := start; i < min(start+2048, n); i++ {
			actions = append(actions, putTask(benchTask(i)))
		}
		mustApply(b, s, uint64(start/2048+2), actions...)
	}
	return s
}

// BenchmarkSnapshot100k takes a snapshot of 100,000 tasks and encodes it,
// as the Raft FSM does.
func BenchmarkSnapshot100k(b *testing.B) {
	s := bigStore(b, 100_000)
	var size int64
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n, err := s.Snapshot().WriteTo(io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		size = n
	}
	b.SetBytes(size)
}

// BenchmarkRestore100k restores a snapshot of 100,000 tasks.
func BenchmarkRestore100k(b *testing.B) {
	s := bigStore(b, 100_000)
	var buf bytes.Buffer
	if _, err := s.Snapshot().WriteTo(&buf); err != nil {
		b.Fatal(err)
	}
	data := buf.Bytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := New().Restore(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}
