package manager

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiffhq/skiff/manager/controlapi"
	"github.com/skiffhq/skiff/manager/raftnode"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// keyStage is one write of the cluster's gossip keyring.
type keyStage struct {
	stage     skiffpb.GossipKeyStage
	keys      [][]byte
	changedAt time.Time
}

// TestGossipKeyRotationStages: a rotation started through the Control API
// goes through its three stages in order, one write each, each standing
// for the settle time; a second rotation is refused while one is under
// way; and a new leader's rotator, started halfway, finishes the rotation
// from the store alone, giving the stage it found a whole settle time from
// its own start.
func TestGossipKeyRotationStages(t *testing.T) {
	const settle = 300 * time.Millisecond
	n, store := newSingleRaft(t)
	oldKey := bytes.Repeat([]byte{1}, 32)
	if _, err := n.Propose(context.Background(), &skiffpb.Command{Actions: []*skiffpb.StoreAction{{Action: &skiffpb.StoreAction_PutCluster{
		PutCluster: &skiffpb.Cluster{Id: "c1", Meta: &skiffpb.Meta{}, GossipKeys: [][]byte{oldKey}},
	}}}}); err != nil {
		t.Fatal(err)
	}

	// Every write of the cluster object, in order.
	var mu sync.Mutex
	var writes []keyStage
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	ch, cancelWatch := store.ViewAndWatch(func(state.ReadTx) {})
	go store.FollowWatch(watchCtx, ch, cancelWatch, state.Follower{Apply: func(b state.Batch) {
		for _, ev := range b.Events {
			if c, ok := ev.Object.(*skiffpb.Cluster); ok {
				mu.Lock()
				writes = append(writes, keyStage{c.GetGossipKeyStage(), c.GetGossipKeys(), time.Unix(0, c.GetGossipKeysChangedAt())})
				mu.Unlock()
			}
		}
	}})
	waitWrites := func(want int) []keyStage {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			got := slices.Clone(writes)
			mu.Unlock()
			if len(got) >= want {
				return got
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d writes of the cluster, want %d", len(got), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	ctl := controlapi.New(controlapi.Config{Store: store, Raft: controlRaft{n}})
	if _, err := ctl.UpdateCluster(context.Background(), &skiffpb.UpdateClusterRequest{RotateGossipKey: true}); err != nil {
		t.Fatal(err)
	}
	_, err := ctl.UpdateCluster(context.Background(), &skiffpb.UpdateClusterRequest{RotateGossipKey: true})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("a second rotation while one is under way: %v, want FailedPrecondition", err)
	}
	installed := waitWrites(1)[0]
	if installed.stage != skiffpb.GossipKeyStage_GOSSIP_KEY_STAGE_INSTALLED || len(installed.keys) != 2 ||
		!bytes.Equal(installed.keys[0], oldKey) || len(installed.keys[1]) != 32 || bytes.Equal(installed.keys[1], oldKey) {
		t.Fatalf("the rotation started with stage %s, keys %x; want INSTALLED, the old key then a new one", installed.stage, installed.keys)
	}
	newKey := installed.keys[1]

	rotator := func() (stop func(), started time.Time) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		r := &gossipKeyRotator{store: store, raft: n, settle: settle, logger: slog.New(slog.DiscardHandler)}
		started = time.Now()
		go func() { defer close(done); r.run(ctx) }()
		return func() { cancel(); <-done }, started
	}
	stop, _ := rotator()
	primary := waitWrites(2)[1]
	// The first leader's term ends after the second stage; the next one
	// starts a moment later, and knows only the store.
	stop()
	time.Sleep(settle / 2)
	stop, secondTerm := rotator()
	defer stop()
	done := waitWrites(3)[2]

	want := []keyStage{
		{skiffpb.GossipKeyStage_GOSSIP_KEY_STAGE_PRIMARY, [][]byte{newKey, oldKey}, time.Time{}},
		{skiffpb.GossipKeyStage_GOSSIP_KEY_STAGE_NONE, [][]byte{newKey}, time.Time{}},
	}
	for i, got := range []keyStage{primary, done} {
		if got.stage != want[i].stage || !slices.EqualFunc(got.keys, want[i].keys, bytes.Equal) {
			t.Errorf("write %d: stage %s keys %x, want stage %s keys %x", i+2, got.stage, got.keys, want[i].stage, want[i].keys)
		}
	}
	if gap := primary.changedAt.Sub(installed.changedAt); gap < settle {
		t.Errorf("the new key became primary %s after it was installed, within the settle time %s", gap, settle)
	}
	if gap := done.changedAt.Sub(secondTerm); gap < settle {
		t.Errorf("the new leader removed the old key %s after it took office, within the settle time %s", gap, settle)
	}
	time.Sleep(2 * settle)
	if got := waitWrites(3); len(got) != 3 {
		t.Errorf("%d writes of the cluster after the rotation finished, want 3", len(got))
	}
	if _, err := ctl.UpdateCluster(context.Background(), &skiffpb.UpdateClusterRequest{RotateGossipKey: true}); err != nil {
		t.Errorf("a rotation after the last one finished: %v", err)
	}
}

// newSingleRaft starts a bootstrapped one-member Raft cluster applying to a
// new store, and waits until it leads.
func newSingleRaft(t *testing.T) (*raftnode.Node, *state.Store) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	store := state.New()
	n, err := raftnode.Open(raftnode.Config{
		ID: "m1", DataDir: t.TempDir(), BindAddr: addr, Bootstrap: true,
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond,
	}, store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	deadline := time.Now().Add(15 * time.Second)
	for !n.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatalf("raft state %s after 15s", n.State())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return n, store
}
