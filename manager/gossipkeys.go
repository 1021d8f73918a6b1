package manager

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/skiffhq/skiff/gossip"
	"github.com/skiffhq/skiff/identity"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// gossipKeySettle is how long each stage of a rotation of the gossip key
// stands before the leader writes the next. A stage must have reached
// every member first (gossip/keys.go), and it gets to them three ways: the
// managers apply it with the Raft write, within a heartbeat; an agent with
// a session is sent it by the dispatcher as soon as the write is applied,
// within a round trip; and an agent that lost its session (a lost leader,
// a dropped connection) is given it when its next session starts, which a
// live agent has within its three missed heartbeats, its 2 s backoff cap
// and its 5 s registration timeout. 10 s covers all three, with room for
// a packet still in flight under the previous stage's primary.
const gossipKeySettle = 10 * time.Second

// gossipKeyRotator takes a rotation of the gossip key through its stages
// (GossipKeyStage, proto/skiff.proto), one Raft write of the cluster
// object per stage, each once the last has stood for the settle time. The
// store is its only state, so a new leader carries on a rotation where its
// predecessor left it.
type gossipKeyRotator struct {
	store *state.Store
	raft  interface {
		Propose(ctx context.Context, cmd *skiffpb.Command) (uint64, error)
	}
	settle time.Duration
	logger *slog.Logger

	// cluster is the cluster object as of the last change the follower
	// saw; termStart is when this leader's term began.
	cluster   *skiffpb.Cluster
	termStart time.Time
}

// retryStage is how soon a stage whose write failed is tried again.
const retryStage = time.Second

// run drives rotations until ctx ends, the leader's term with it.
func (r *gossipKeyRotator) run(ctx context.Context) {
	r.termStart = time.Now()
	r.store.Follow(ctx, state.Follower{
		View: func(tx state.ReadTx) { r.cluster = tx.Cluster() },
		Apply: func(b state.Batch) {
			for _, ev := range b.Events {
				if c, ok := ev.Object.(*skiffpb.Cluster); ok && !ev.Deleted {
					r.cluster = c
				}
			}
		},
		Settle: r.advance,
	})
}

// advance writes the next stage when the current one has stood long
// enough, and otherwise says when it will have.
func (r *gossipKeyRotator) advance(ctx context.Context) (time.Time, error) {
	c := r.cluster
	stage := c.GetGossipKeyStage()
	if stage == skiffpb.GossipKeyStage_GOSSIP_KEY_STAGE_NONE {
		return time.Time{}, nil
	}
	keys := c.GetGossipKeys()
	if len(keys) != 2 {
		r.logger.Error("the gossip key rotation is stuck: its stage needs two keys", "stage", stage, "keys", len(keys))
		return time.Time{}, nil
	}
	// A new leader gives the stage a whole settle time from its taking
	// office: agents whose sessions ended with the old term are only now
	// coming to it for the keyring.
	changed := time.Unix(0, c.GetGossipKeysChangedAt())
	due := changed.Add(r.settle)
	if termDue := r.termStart.Add(r.settle); termDue.After(due) {
		due = termDue
	}
	now := time.Now()
	if now.Before(due) {
		return due, nil
	}
	next := proto.Clone(c).(*skiffpb.Cluster)
	switch stage {
	case skiffpb.GossipKeyStage_GOSSIP_KEY_STAGE_INSTALLED:
		next.GossipKeys = [][]byte{keys[1], keys[0]}
		next.GossipKeyStage = skiffpb.GossipKeyStage_GOSSIP_KEY_STAGE_PRIMARY
	case skiffpb.GossipKeyStage_GOSSIP_KEY_STAGE_PRIMARY:
		next.GossipKeys = [][]byte{keys[0]}
		next.GossipKeyStage = skiffpb.GossipKeyStage_GOSSIP_KEY_STAGE_NONE
	default:
		r.logger.Error("the gossip key rotation is stuck in a stage this manager does not know", "stage", stage)
		return time.Time{}, nil
	}
	next.GossipKeysChangedAt = now.UnixNano()
	// The version read is the version written: a change made meanwhile (a
	// token rotated) fails the write, and the follower brings it in.
	next.Meta = &skiffpb.Meta{Version: c.GetMeta().GetVersion(), CreatedAt: c.GetMeta().GetCreatedAt(), UpdatedAt: now.UnixNano()}
	_, err := r.raft.Propose(ctx, &skiffpb.Command{Actions: []*skiffpb.StoreAction{
		{Action: &skiffpb.StoreAction_PutCluster{PutCluster: next}},
	}})
	switch {
	case err == nil:
		r.logger.Info("gossip key rotation moved on", "stage", next.GetGossipKeyStage())
		return time.Time{}, nil
	case errors.Is(err, state.ErrVersionConflict):
		return time.Time{}, nil
	case ctx.Err() != nil:
		return time.Time{}, nil
	default:
		r.logger.Warn("write the next stage of the gossip key rotation; trying again", "error", err)
		return now.Add(retryStage), nil
	}
}

// followGossipKeys keeps this manager's gossip pool, and the keyring in its
// data dir, in step with the cluster's keyring, until ctx ends. Every
// manager follows its own store, so a manager applies each stage of a
// rotation with the Raft write, leader or not, and one that was down
// catches up as it replays the log.
func (m *Manager) followGossipKeys(ctx context.Context) {
	// The pool started with the keyring in the data dir.
	latest, applied := [][]byte(nil), m.creds.gossipKeys
	m.store.Follow(ctx, state.Follower{
		View: func(tx state.ReadTx) { latest = tx.Cluster().GetGossipKeys() },
		Apply: func(b state.Batch) {
			for _, ev := range b.Events {
				if c, ok := ev.Object.(*skiffpb.Cluster); ok && !ev.Deleted {
					latest = c.GetGossipKeys()
				}
			}
		},
		Settle: func(context.Context) (time.Time, error) {
			if len(latest) == 0 || slices.EqualFunc(latest, applied, bytes.Equal) {
				return time.Time{}, nil
			}
			if err := m.pool.SetKeys(latest); err != nil {
				if !errors.Is(err, gossip.ErrUnencrypted) {
					m.logger.Error("apply the cluster's gossip keys", "error", err)
				}
				return time.Time{}, nil
			}
			applied = latest
			if err := identity.SaveKeys(m.cfg.DataDir, latest); err != nil {
				m.logger.Warn("save the gossip keys", "error", err)
			}
			return time.Time{}, nil
		},
	})
}
