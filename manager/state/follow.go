package state

import (
	"context"
	"time"
)

// Follower is a component that keeps its own picture of the store (the
// scheduler's free room per node, the orchestrator's list of what to
// reconcile, the leader's address pool) and acts on it. Follow keeps the
// picture in step with the store.
type Follower struct {
	// View reads the store to build the picture from scratch: when
	// following starts, and again whenever the watch was cut off and
	// changes may have been missed. It runs under the store's read lock,
	// atomically with the subscription (see ViewAndWatch), so every change
	// after what it saw reaches Apply. Apply waits for it, so it must not
	// wait for anything that may wait for the store. Nil reads nothing.
	View func(tx ReadTx)
	// Apply takes one batch of changes, in index order. Events are level,
	// not edge: the first batch after a View may repeat a change the View
	// already saw.
	Apply func(b Batch)
	// Settle acts on the picture once it has caught up with the store:
	// after each View, and after Apply has taken every batch that was
	// waiting. However many batches came, Settle runs once for them, which
	// is what lets a follower coalesce a burst of changes into one round
	// of work. It returns when it wants to run again even if nothing
	// changes (zero for never), and an error when its picture can no
	// longer be trusted: Follow then reads the store again with View.
	// Follow does not report the error; Settle does. Nil does nothing.
	Settle func(ctx context.Context) (wake time.Time, err error)
}

// minWake is the least time Follow waits for a wake-up Settle asked for,
// so that a follower that keeps asking for one already due cannot spin.
const minWake = time.Millisecond

// Follow keeps f in step with the store until ctx ends: it reads the store
// with f.View and watches it in one step, then hands every later change to
// f.Apply and calls f.Settle whenever it has caught up. When the watch is
// cut off (the follower fell more than the watch's buffer behind, or the
// store was restored from a snapshot), Follow reads the store again with
// f.View and watches anew: a slow follower loses time, never changes.
func (s *Store) Follow(ctx context.Context, f Follower) {
	if ctx.Err() != nil {
		return
	}
	ch, cancel := s.ViewAndWatch(f.View)
	s.FollowWatch(ctx, ch, cancel, f)
}

// FollowWatch is Follow for a caller that has already read the store and
// opened the watch ch with ViewAndWatch, because that first view has to be
// taken before FollowWatch can run: before other components rely on what
// it read, or under the caller's own lock. f.View is called only when the
// watch is cut off. FollowWatch owns the watch and calls cancel when it
// returns.
func (s *Store) FollowWatch(ctx context.Context, ch <-chan Batch, cancel func(), f Follower) {
	w := &following{store: s, f: f, ch: ch, cancel: cancel}
	defer func() { w.cancel() }()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for ctx.Err() == nil {
		wake, err := w.settle(ctx)
		if err != nil {
			w.rewatch(ctx)
			continue
		}
		timer.Stop()
		if !wake.IsZero() {
			timer.Reset(max(time.Until(wake), minWake))
		}
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case b, ok := <-w.ch:
			if !ok || !w.drain(b) {
				w.rewatch(ctx)
			}
		}
	}
}

// following is the state of one FollowWatch.
type following struct {
	store  *Store
	f      Follower
	ch     <-chan Batch
	cancel func()
}

func (w *following) settle(ctx context.Context) (time.Time, error) {
	if w.f.Settle == nil {
		return time.Time{}, nil
	}
	return w.f.Settle(ctx)
}

// drain applies b and every batch already waiting behind it, so that
// Settle runs once for a burst. It reports false if the watch was cut off.
func (w *following) drain(b Batch) bool {
	w.f.Apply(b)
	for {
		select {
		case b, ok := <-w.ch:
			if !ok {
				return false
			}
			w.f.Apply(b)
		default:
			return true
		}
	}
}

// rewatch ends the current watch and starts over from a fresh view; once
// ctx has ended there is nobody left to follow for.
func (w *following) rewatch(ctx context.Context) {
	w.cancel()
	w.cancel = func() {}
	if ctx.Err() != nil {
		return
	}
	w.ch, w.cancel = w.store.ViewAndWatch(w.f.View)
}
