package manager_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/skiffhq/skiff/internal/testcluster"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// BenchmarkLeaderFailover measures, with three managers in-process (real
// Raft on disk, gRPC and gossip on loopback), the time from the leader's
// death until a write succeeds at a surviving manager. Each iteration is one
// failover of a fresh cluster; the reported figure is the median, since one
// unlucky election (a split vote) says little about the typical case:
//
//	go test -run '^$' -bench LeaderFailover -benchtime 7x ./manager/
func BenchmarkLeaderFailover(b *testing.B) {
	var took []time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		c := testcluster.New(b, 3)
		leader := c.WaitLeader()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := c.ControlOf(leader).DeployStack(ctx, &skiffpb.DeployStackRequest{Spec: testcluster.Stack("before", 1)}); err != nil {
			b.Fatalf("deploy before the failover: %v", err)
		}
		cancel()
		var survivors []skiffpb.ControlClient
		for _, m := range c.Managers {
			if m != leader {
				survivors = append(survivors, c.ControlOf(m))
			}
		}

		b.StartTimer()
		start := time.Now()
		// The leader dies while the survivors are already being asked.
		stopped := make(chan struct{})
		go func() { defer close(stopped); c.Stop(leader) }()
		d, err := firstWrite(start, survivors, 15*time.Second)
		b.StopTimer()
		<-stopped
		if err != nil {
			b.Fatal(err)
		}
		took = append(took, d)
		c.Close()
	}
	slices.Sort(took)
	b.ReportMetric(took[len(took)/2].Seconds(), "s/failover(median)")
	b.ReportMetric(took[len(took)-1].Seconds(), "s/failover(max)")
	b.Logf("%d failovers: %v", len(took), took)
}

// firstWrite asks every survivor for a write every 20 ms, each try in
// parallel with a short timeout, so that a call stuck on the dead leader
// does not hide a later one that succeeds, and returns how long after start
// the first one succeeded.
func firstWrite(start time.Time, survivors []skiffpb.ControlClient, limit time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	done := make(chan time.Duration, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, ctl := range survivors {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tctx, tcancel := context.WithTimeout(ctx, 2*time.Second)
				defer tcancel()
				if _, err := ctl.DeployStack(tctx, &skiffpb.DeployStackRequest{Spec: testcluster.Stack("after", 1)}); err == nil {
					select {
					case done <- time.Since(start):
					default:
					}
				}
			}()
		}
		select {
		case d := <-done:
			cancel()
			return d, nil
		case <-ctx.Done():
			return 0, fmt.Errorf("no write succeeded within %s of the leader's death", limit)
		case <-tick.C:
		}
	}
}
