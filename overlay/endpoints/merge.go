package endpoints

// merge applies records received from the pool. Each is kept only if it
// outranks the stored record of its key, which makes merging idempotent,
// commutative and associative: hosts that have received the same records,
// in any order and any number of times, hold the same table. With relay set
// (a broadcast, not a push/pull state) a record that was news here is
// broadcast on.
func (t *Table) merge(recs []record, relay bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range recs {
		// The Lamport rule: whatever this node writes next must outrank
		// everything it has seen.
		t.clock = max(t.clock, r.clock)
		if cur := t.lookup(r.key); cur != nil && !newer(r, cur.rec) {
			continue
		}
		t.put(r)
		if relay {
			if msg, err := encode(r); err == nil {
				t.queueBroadcast(r.key, msg)
			}
		}
		t.defend(r)
	}
}

// defend enforces this node's authority over its own endpoints after r,
// just received, became the newest record of its key.
func (t *Table) defend(r record) {
	held, ok := t.local[r.key]
	own := r.origin == t.node
	switch {
	case ok && r.deleted, ok && own && !sameEndpoint(r.ep, held):
		// A removal of an address this node holds (another node
		// withdrawing it after the managers moved it here), or a version
		// from an earlier life of this node: the endpoint is live here, so
		// say so again, with a clock that outranks the intruder.
		t.logger.Debug("re-asserting a held endpoint over a newer record", "network", r.network, "ip", r.ip, "origin", r.origin, "clock", r.clock, "deleted", r.deleted)
		t.assert(held)
	case !ok && own && !r.deleted && t.reconciled:
		// This node's name on an endpoint it does not hold: a leftover of
		// a previous run.
		t.logger.Info("withdrawing an endpoint left from a previous run", "network", r.network, "ip", r.ip, "clock", r.clock)
		t.retract(r.key)
	}
	// A live record from another node is let win even over a held
	// endpoint: the managers gave it the address later. Contesting it
	// would make two nodes outbid each other forever.
}
