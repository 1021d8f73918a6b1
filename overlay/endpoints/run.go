package endpoints

import (
	"context"
	"time"
)

// numNodesInterval is how often Run refreshes the member count that sets
// broadcast retransmissions; being a little stale only changes how many
// times a record is resent.
const numNodesInterval = time.Second

// Run does the table's background work until ctx ends: it delivers changes
// to Config.OnChange, refreshes the member count, drops expired tombstones
// and the records of nodes gone for the tombstone TTL, and calls Reconciled
// after Config.ReconcileTimeout. Run it once, from the table's owner.
func (t *Table) Run(ctx context.Context) {
	gc := time.NewTicker(max(t.ttl/4, 10*time.Millisecond))
	defer gc.Stop()
	members := time.NewTicker(numNodesInterval)
	defer members.Stop()
	reconcile := time.NewTimer(t.reconcileTimeout)
	defer reconcile.Stop()

	for {
		select {
		case <-ctx.Done():
			return
		case <-t.wake:
			t.deliver()
		case <-gc.C:
			t.collect()
		case <-members.C:
			t.refreshNumNodes()
		case <-reconcile.C:
			if !t.isReconciled() {
				t.logger.Warn("agent did not report reconciliation in time; withdrawing leftovers of a previous run now", "timeout", t.reconcileTimeout)
				t.Reconciled()
			}
		}
	}
}

func (t *Table) isReconciled() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.reconciled
}

// collect drops tombstones older than the TTL, and the hidden records of
// nodes that have not been members for that long (since they left, or,
// for a node this host never saw alive, since the record arrived). Neither
// is visible, so nothing is reported.
func (t *Table) collect() {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	dropped := 0
	for network, byIP := range t.nets {
		for ip, e := range byIP {
			if t.expired(e, now) {
				delete(byIP, ip)
				dropped++
			}
		}
		if len(byIP) == 0 {
			delete(t.nets, network)
		}
	}
	for node, since := range t.left {
		if now.Sub(since) > t.ttl {
			delete(t.left, node)
		}
	}
	if dropped > 0 {
		t.logger.Debug("dropped expired endpoint records", "records", dropped)
	}
}

func (t *Table) expired(e *entry, now time.Time) bool {
	if e.rec.deleted {
		return now.Sub(e.stored) > t.ttl
	}
	if e.rec.origin == t.node {
		return false
	}
	if _, ok := t.members[e.rec.origin]; ok {
		return false
	}
	absent := e.stored
	if since, ok := t.left[e.rec.origin]; ok && since.After(absent) {
		absent = since
	}
	return now.Sub(absent) > t.ttl
}
