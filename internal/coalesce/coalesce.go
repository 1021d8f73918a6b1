// Package coalesce holds the latest value per key until a consumer takes
// it. Producers never wait and a burst of updates costs one entry per key,
// not one per update, so the memory a slow consumer costs is bounded by the
// keys. The agent queues its task reports for the leader in one, and the
// leader queues the agents' reports for Raft in another.
package coalesce

import "sync"

// Entry is one key's pending value.
type Entry[K comparable, V any] struct {
	Key   K
	Value V
}

// Queue is the latest pending value of each key. It is safe for concurrent
// use.
type Queue[K comparable, V any] struct {
	replace func(old, new V) bool

	mu      sync.Mutex
	pending map[K]V
	notify  chan struct{}
}

// New returns an empty queue. replace, when not nil, decides whether a value
// put for a key takes the place of the one already pending (a late report
// of an earlier state, say, must not); nil means it always does.
func New[K comparable, V any](replace func(old, new V) bool) *Queue[K, V] {
	return &Queue[K, V]{replace: replace, pending: map[K]V{}, notify: make(chan struct{}, 1)}
}

// Notify has a value whenever something was put since it was last read: it
// has room for one signal, "there is something to take".
func (q *Queue[K, V]) Notify() <-chan struct{} { return q.notify }

// Put makes v the pending value of k, unless replace refuses it.
func (q *Queue[K, V]) Put(k K, v V) {
	q.mu.Lock()
	q.putLocked(k, v)
	q.mu.Unlock()
	q.signal()
}

// PutAll is Put for many at once: a consumer woken by it finds them all.
func (q *Queue[K, V]) PutAll(es []Entry[K, V]) {
	if len(es) == 0 {
		return
	}
	q.mu.Lock()
	for _, e := range es {
		q.putLocked(e.Key, e.Value)
	}
	q.mu.Unlock()
	q.signal()
}

// Return puts back entries that were taken but could not be delivered,
// except where a newer value was put meanwhile.
func (q *Queue[K, V]) Return(es []Entry[K, V]) {
	q.mu.Lock()
	for _, e := range es {
		if _, newer := q.pending[e.Key]; !newer {
			q.pending[e.Key] = e.Value
		}
	}
	q.mu.Unlock()
	q.signal()
}

// Take removes and returns up to max pending entries, in no particular
// order.
func (q *Queue[K, V]) Take(max int) []Entry[K, V] {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]Entry[K, V], 0, min(max, len(q.pending)))
	for k, v := range q.pending {
		if len(out) == max {
			break
		}
		out = append(out, Entry[K, V]{k, v})
		delete(q.pending, k)
	}
	return out
}

func (q *Queue[K, V]) putLocked(k K, v V) {
	if old, ok := q.pending[k]; ok && q.replace != nil && !q.replace(old, v) {
		return
	}
	q.pending[k] = v
}

func (q *Queue[K, V]) signal() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}
