package state

import (
	"sync"

	"google.golang.org/protobuf/proto"
)

// Event is one change Apply made.
type Event struct {
	// Object is the object as stored after the change, or as it was before a
	// delete. It is one of *skiffpb.{Cluster,Node,Network,Stack,Service,Task}.
	Object proto.Message
	// Deleted says the object was removed.
	Deleted bool
}

// Batch is every change of one applied command.
type Batch struct {
	Index  uint64
	Events []Event
}

// watchBuffer is how many batches a watcher may fall behind before it is cut
// off. A cut-off watcher sees its channel closed and must re-read the store:
// a slow reader may lose its stream, but never delays Apply.
const watchBuffer = 4096

// watchers fans applied batches out to subscribers.
type watchers struct {
	mu   sync.Mutex
	next int
	subs map[int]chan Batch
}

func (w *watchers) add() (int, chan Batch) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.subs == nil {
		w.subs = make(map[int]chan Batch)
	}
	w.next++
	ch := make(chan Batch, watchBuffer)
	w.subs[w.next] = ch
	return w.next, ch
}

func (w *watchers) remove(id int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ch, ok := w.subs[id]; ok {
		delete(w.subs, id)
		close(ch)
	}
}

func (w *watchers) publish(index uint64, events []Event) {
	if len(events) == 0 {
		return
	}
	b := Batch{Index: index, Events: events}
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, ch := range w.subs {
		select {
		case ch <- b:
		default:
			delete(w.subs, id)
			close(ch)
		}
	}
}

// closeAll ends every watch; Restore uses it because a snapshot replaces the
// state wholesale and no stream of events can describe that.
func (w *watchers) closeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, ch := range w.subs {
		delete(w.subs, id)
		close(ch)
	}
}

// ViewAndWatch calls fn with a read view and, atomically with it, subscribes
// to every later change: no change falls between what fn saw and the first
// batch on the channel. A change applied just before the subscription may
// show both in the view and as the first batch, so consumers must treat
// events as level, not edge: "this is the object now". The channel closes when cancel is called, or when the
// watcher falls too far behind or the store is restored from a snapshot; the
// caller then starts over with a fresh ViewAndWatch.
func (s *Store) ViewAndWatch(fn func(tx ReadTx)) (<-chan Batch, func()) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if fn != nil {
		fn(readTx{s})
	}
	id, ch := s.watchers.add()
	return ch, func() { s.watchers.remove(id) }
}
