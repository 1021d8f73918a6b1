package state

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// mirror is a Follower that keeps a copy of the store's tasks (ID →
// version) and a log of the calls Follow made, and fails the test as soon
// as a batch skips an index: every command in these tests changes
// something, so a skipped index is a lost change.
type mirror struct {
	t *testing.T
	// onApply, when set, runs before each batch is taken; it may block,
	// to play a slow follower.
	onApply func(b Batch)
	// onSettle, when set, answers the n-th call of Settle.
	onSettle func(n int) (time.Time, error)

	mu    sync.Mutex
	tasks map[string]uint64
	// index is the store index the mirror has caught up with.
	index uint64
	// fresh says no batch came since the last view, whose own index may
	// then come again as the first batch.
	fresh   bool
	views   int
	settles int
	log     []string
}

func (m *mirror) follower() Follower {
	return Follower{View: m.view, Apply: m.apply, Settle: m.settle}
}

func (m *mirror) view(tx ReadTx) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tasks = map[string]uint64{}
	tx.EachTask(func(t *skiffpb.Task) bool {
		m.tasks[t.GetId()] = t.GetMeta().GetVersion()
		return true
	})
	m.index, m.fresh = tx.Index(), true
	m.views++
	m.log = append(m.log, fmt.Sprintf("view@%d", tx.Index()))
}

func (m *mirror) apply(b Batch) {
	if m.onApply != nil {
		m.onApply(b)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if b.Index != m.index+1 && (!m.fresh || b.Index != m.index) {
		m.t.Errorf("batch at index %d after %d (right after a view: %v): changes were lost", b.Index, m.index, m.fresh)
	}
	m.fresh = false
	for _, ev := range b.Events {
		tk, ok := ev.Object.(*skiffpb.Task)
		if !ok {
			continue
		}
		if ev.Deleted {
			delete(m.tasks, tk.GetId())
		} else {
			m.tasks[tk.GetId()] = tk.GetMeta().GetVersion()
		}
	}
	m.index = b.Index
	m.log = append(m.log, fmt.Sprintf("apply@%d", b.Index))
}

func (m *mirror) settle(context.Context) (time.Time, error) {
	m.mu.Lock()
	m.settles++
	n := m.settles
	m.log = append(m.log, "settle")
	m.mu.Unlock()
	if m.onSettle != nil {
		return m.onSettle(n)
	}
	return time.Time{}, nil
}

// snapshot returns what the mirror holds, under its lock.
func (m *mirror) snapshot() (index uint64, views, settles int, log []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.index, m.views, m.settles, append([]string(nil), m.log...)
}

// matches fails the test unless the mirror holds exactly the store's tasks.
func (m *mirror) matches(s *Store) {
	m.t.Helper()
	want := map[string]uint64{}
	s.View(func(tx ReadTx) {
		tx.EachTask(func(t *skiffpb.Task) bool {
			want[t.GetId()] = t.GetMeta().GetVersion()
			return true
		})
	})
	m.mu.Lock()
	defer m.mu.Unlock()
	if !reflect.DeepEqual(m.tasks, want) {
		m.t.Errorf("mirror holds %d tasks, store %d; they differ", len(m.tasks), len(want))
	}
}

// startFollowing runs follow in a goroutine and returns a stop that ends
// its context and waits for it to return; stop also runs at cleanup.
func startFollowing(t *testing.T, follow func(ctx context.Context)) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		follow(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Error("Follow did not return after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond until it holds, and fails the test after a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func watcherCount(s *Store) int {
	s.watchers.mu.Lock()
	defer s.watchers.mu.Unlock()
	return len(s.watchers.subs)
}

// putNewTask stores a new task named after index.
func putNewTask(t *testing.T, s *Store, index uint64) {
	t.Helper()
	mustApply(t, s, index, putTask(testTask(fmt.Sprintf("t%05d", index), "sv", "")))
}

// TestFollowLosesNothingBetweenViewAndWatch: while a writer commits tasks
// and deletes them, a follower that reads the store again after every
// other round (as placement does when a round fails) sees every index
// after each of its views, and ends up holding exactly what the store
// holds. A change committed while a view is being taken is in the view or
// in the first batch after it, never in neither.
func TestFollowLosesNothingBetweenViewAndWatch(t *testing.T) {
	s := New()
	m := &mirror{t: t, onSettle: func(n int) (time.Time, error) {
		if n%2 == 0 {
			return time.Time{}, errors.New("read the store again")
		}
		return time.Time{}, nil
	}}
	stop := startFollowing(t, func(ctx context.Context) { s.Follow(ctx, m.follower()) })
	waitFor(t, "the first settle", func() bool { _, _, settles, _ := m.snapshot(); return settles >= 1 })

	const total, ids = 3000, 50
	written := make(chan struct{})
	go func() {
		defer close(written)
		for i := 1; i <= total; i++ {
			// Each ID is created in one round of ids commands and deleted
			// in the next.
			id := fmt.Sprintf("t%02d", (i-1)%ids)
			action := putTask(testTask(id, "sv", ""))
			if (i-1)/ids%2 == 1 {
				action = delTask(id)
			}
			if err := s.Apply(uint64(i), cmd(action)); err != nil {
				t.Errorf("Apply(%d): %v", i, err)
				return
			}
		}
	}()
	<-written
	waitFor(t, "the mirror to catch up", func() bool { index, _, _, _ := m.snapshot(); return index == total })
	stop()
	if _, views, _, _ := m.snapshot(); views < 2 {
		t.Errorf("the store was read %d times; the test needs re-reads while the writer runs", views)
	}
	m.matches(s)
}

// TestFollowReadsAgainAfterCutOff: a follower too slow for the watch's
// buffer is cut off; Follow takes what was buffered, then reads the store
// again, so a change committed after the cut is in the new view, and
// follows the new watch after it.
func TestFollowReadsAgainAfterCutOff(t *testing.T) {
	s := New()
	entered, release := make(chan struct{}), make(chan struct{})
	m := &mirror{t: t, onApply: func(b Batch) {
		if b.Index == 1 {
			close(entered)
			<-release
		}
	}}
	stop := startFollowing(t, func(ctx context.Context) { s.Follow(ctx, m.follower()) })
	waitFor(t, "the first settle", func() bool { _, _, settles, _ := m.snapshot(); return settles >= 1 })

	putNewTask(t, s, 1)
	<-entered
	// The follower holds batch 1; watchBuffer more fill the channel and
	// the next one cuts the watch off.
	last := uint64(watchBuffer + 2)
	for i := uint64(2); i <= last; i++ {
		putNewTask(t, s, i)
	}
	if n := watcherCount(s); n != 0 {
		t.Fatalf("%d watches left after overflowing the buffer; the test needs a cut-off", n)
	}
	last++
	mustApply(t, s, last, delTask("t00001")) // committed after the cut, before the new view
	close(release)
	waitFor(t, "the second view", func() bool { _, views, _, _ := m.snapshot(); return views == 2 })
	last++
	putNewTask(t, s, last)
	waitFor(t, "the change after the new view", func() bool {
		index, _, settles, _ := m.snapshot()
		return index == last && settles == 3
	})
	stop()

	_, _, _, log := m.snapshot()
	want := []string{"view@0", "settle", "apply@1"}
	for i := uint64(2); i <= watchBuffer+1; i++ {
		want = append(want, fmt.Sprintf("apply@%d", i))
	}
	want = append(want, fmt.Sprintf("view@%d", last-1), "settle", fmt.Sprintf("apply@%d", last), "settle")
	if !reflect.DeepEqual(log, want) {
		t.Errorf("calls: %d, ending %v; want %d, ending %v", len(log), log[max(0, len(log)-5):], len(want), want[len(want)-5:])
	}
	m.matches(s)
}

// TestFollowSettlesOncePerBurst: batches that arrive while the follower
// is busy are all taken before Settle runs, and Settle runs once for them.
func TestFollowSettlesOncePerBurst(t *testing.T) {
	s := New()
	entered, release := make(chan struct{}), make(chan struct{})
	m := &mirror{t: t, onApply: func(b Batch) {
		if b.Index == 1 {
			close(entered)
			<-release
		}
	}}
	startFollowing(t, func(ctx context.Context) { s.Follow(ctx, m.follower()) })
	waitFor(t, "the first settle", func() bool { _, _, settles, _ := m.snapshot(); return settles == 1 })
	putNewTask(t, s, 1)
	<-entered
	for i := uint64(2); i <= 4; i++ {
		putNewTask(t, s, i)
	}
	close(release)
	waitFor(t, "the second settle", func() bool { _, _, settles, _ := m.snapshot(); return settles == 2 })
	_, _, _, log := m.snapshot()
	want := []string{"view@0", "settle", "apply@1", "apply@2", "apply@3", "apply@4", "settle"}
	if !reflect.DeepEqual(log, want) {
		t.Errorf("calls %v, want %v", log, want)
	}
}

// TestFollowWakesWhenSettleAsks: Settle runs again at the time it asked
// for, though the store did not change, and not before.
func TestFollowWakesWhenSettleAsks(t *testing.T) {
	s := New()
	var wake, woken time.Time
	m := &mirror{t: t, onSettle: func(n int) (time.Time, error) {
		switch n {
		case 1:
			wake = time.Now().Add(30 * time.Millisecond)
			return wake, nil
		case 2:
			woken = time.Now()
		}
		return time.Time{}, nil
	}}
	stop := startFollowing(t, func(ctx context.Context) { s.Follow(ctx, m.follower()) })
	waitFor(t, "the second settle", func() bool { _, _, settles, _ := m.snapshot(); return settles == 2 })
	stop()
	if woken.Before(wake) {
		t.Errorf("woken %v before the wake-up it asked for", wake.Sub(woken))
	}
	if _, _, _, log := m.snapshot(); !reflect.DeepEqual(log, []string{"view@0", "settle", "settle"}) {
		t.Errorf("calls %v", log)
	}
}

// TestFollowReadsAgainWhenSettleFails: an error from Settle makes Follow
// drop its watch and read the store again before settling again.
func TestFollowReadsAgainWhenSettleFails(t *testing.T) {
	s := New()
	m := &mirror{t: t, onSettle: func(n int) (time.Time, error) {
		if n == 1 {
			return time.Time{}, errors.New("round failed")
		}
		return time.Time{}, nil
	}}
	startFollowing(t, func(ctx context.Context) { s.Follow(ctx, m.follower()) })
	waitFor(t, "the second settle", func() bool { _, _, settles, _ := m.snapshot(); return settles == 2 })
	if n := watcherCount(s); n != 1 {
		t.Errorf("%d watches open, want the new one only", n)
	}
	putNewTask(t, s, 1)
	waitFor(t, "the change", func() bool { index, _, settles, _ := m.snapshot(); return index == 1 && settles == 3 })
	if _, _, _, log := m.snapshot(); !reflect.DeepEqual(log, []string{"view@0", "settle", "view@0", "settle", "apply@1", "settle"}) {
		t.Errorf("calls %v", log)
	}
}

// TestFollowStopsWithItsContext: Follow returns when its context ends and
// leaves no watch behind; it does not read the store for a context that
// has ended, nor again when Settle fails because the context ended.
func TestFollowStopsWithItsContext(t *testing.T) {
	t.Run("running", func(t *testing.T) {
		s := New()
		m := &mirror{t: t}
		stop := startFollowing(t, func(ctx context.Context) { s.Follow(ctx, m.follower()) })
		waitFor(t, "the first settle", func() bool { _, _, settles, _ := m.snapshot(); return settles == 1 })
		stop()
		if n := watcherCount(s); n != 0 {
			t.Errorf("%d watches left open", n)
		}
	})
	t.Run("already ended", func(t *testing.T) {
		s := New()
		m := &mirror{t: t}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		s.Follow(ctx, m.follower())
		if _, views, settles, _ := m.snapshot(); views != 0 || settles != 0 || watcherCount(s) != 0 {
			t.Errorf("%d views, %d settles, %d watches for an ended context", views, settles, watcherCount(s))
		}
	})
	t.Run("settle fails as it ends", func(t *testing.T) {
		s := New()
		ctx, cancel := context.WithCancel(context.Background())
		m := &mirror{t: t, onSettle: func(int) (time.Time, error) {
			cancel()
			return time.Time{}, ctx.Err()
		}}
		stop := startFollowing(t, func(context.Context) { s.Follow(ctx, m.follower()) })
		stop()
		if _, views, settles, _ := m.snapshot(); views != 1 || settles != 1 || watcherCount(s) != 0 {
			t.Errorf("%d views, %d settles, %d watches; want 1, 1, 0", views, settles, watcherCount(s))
		}
	})
}

// TestFollowWatchTakesOverTheWatch: FollowWatch continues from the
// caller's own view and watch, so a change committed between the two
// calls reaches Apply; it reads the store itself only after a cut-off,
// and ends the caller's watch when it returns.
func TestFollowWatchTakesOverTheWatch(t *testing.T) {
	s := New()
	putNewTask(t, s, 1)
	m := &mirror{t: t}
	ch, cancel := s.ViewAndWatch(m.view)
	putNewTask(t, s, 2)
	stop := startFollowing(t, func(ctx context.Context) { s.FollowWatch(ctx, ch, cancel, m.follower()) })
	waitFor(t, "the change", func() bool { index, _, settles, _ := m.snapshot(); return index == 2 && settles == 2 })
	stop()
	if _, _, _, log := m.snapshot(); !reflect.DeepEqual(log, []string{"view@1", "settle", "apply@2", "settle"}) {
		t.Errorf("calls %v", log)
	}
	expectClosed(t, ch)
	m.matches(s)
}
