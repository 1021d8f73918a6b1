package endpoints

import "github.com/skiffhq/skiff/overlay"

// ChangeKind says how a live endpoint changed.
type ChangeKind int

// The kinds of changes.
const (
	// Added: an endpoint became live (published, or its node came back).
	Added ChangeKind = iota + 1
	// Updated: a live endpoint's fields changed (it may have moved to
	// another host: compare VTEPs).
	Updated
	// Removed: an endpoint is no longer live (withdrawn, or its node left).
	Removed
)

// String returns the kind's name, for logs.
func (k ChangeKind) String() string {
	switch k {
	case Added:
		return "added"
	case Updated:
		return "updated"
	case Removed:
		return "removed"
	default:
		return "unknown"
	}
}

// Change is one effective change of the live endpoints: what an observer
// of Endpoints would see, never a clock bump or a tombstone's arrival that
// changes nothing.
type Change struct {
	Kind ChangeKind
	// Endpoint is the endpoint after the change; for Removed, the endpoint
	// that went.
	Endpoint overlay.Endpoint
	// Previous is the endpoint before an Updated change; zero otherwise.
	Previous overlay.Endpoint
}

// emit queues the change between two views of one key for Run to deliver.
// It is called with t.mu held, so changes are queued in the order they
// happen; delivery happens later without the lock, so OnChange may call
// back into the table.
func (t *Table) emit(before overlay.Endpoint, wasLive bool, after overlay.Endpoint, isLive bool) {
	if t.onChange == nil {
		return
	}
	var c Change
	switch {
	case !wasLive && isLive:
		c = Change{Kind: Added, Endpoint: cloneEndpoint(after)}
	case wasLive && !isLive:
		c = Change{Kind: Removed, Endpoint: cloneEndpoint(before)}
	case wasLive && isLive && !sameEndpoint(before, after):
		c = Change{Kind: Updated, Endpoint: cloneEndpoint(after), Previous: cloneEndpoint(before)}
	default:
		return
	}
	t.pending = append(t.pending, c)
	select {
	case t.wake <- struct{}{}:
	default: // Run has a wake-up pending already and will take this change too.
	}
}

// deliver hands the queued changes to OnChange, outside the lock.
func (t *Table) deliver() {
	t.mu.Lock()
	batch := t.pending
	t.pending = nil
	t.mu.Unlock()
	for _, c := range batch {
		t.onChange(c)
	}
}
