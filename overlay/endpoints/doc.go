// Package endpoints keeps the overlay's endpoint table: which address lives
// on which host, in every network. Each host publishes the endpoints it
// holds (its running tasks' addresses and its own address in each network)
// and learns everyone else's through the memberlist gossip pool. The agent
// programs neighbour and FDB entries from the table, and the embedded DNS
// answers from it.
//
// # Records
//
// The table is a set of last-writer-wins registers, one per (network, IP).
// A record carries a Lamport clock and the name of the node that wrote it
// (its origin); of two records for one key the one with the higher clock
// wins, a tie goes to the greater origin name and then to the delete, so
// every host picks the same winner whatever order the records arrive in.
// Lamport clocks are used instead of wall clocks because hosts' clocks
// disagree: a node advances its clock past every clock it receives, so its
// next write outranks everything it has seen, whoever wrote it.
//
// A removal is a record too, a tombstone, kept for Config.TombstoneTTL.
// Without it an older "add" still travelling through the pool (a
// retransmission, or a host that missed the removal) would bring the
// endpoint back; once every host has seen the removal, which gossip
// achieves in seconds, the tombstone can go.
//
// # Spreading
//
// Changes are broadcast through memberlist's TransmitLimitedQueue, one
// record per message, piggybacked on the pool's UDP gossip; a host that
// receives a record newer than its own copy broadcasts it on, so a change
// spreads epidemically instead of depending on the writer's few
// retransmissions. Broadcasts can be lost, and a host that joins late missed
// them all, so memberlist's periodic push/pull exchange carries the whole
// table (tombstones included) over TCP as anti-entropy: the merge keeps the
// newest record per key, so any two hosts that exchange state agree
// afterwards and the pool converges.
//
// # Ownership
//
// A node is the authority for the keys it holds. When it receives a record
// that would override its own endpoint (a tombstone, or a record from an
// earlier life of itself) it re-asserts the endpoint with a clock past the
// intruder's and broadcasts that; a live record from another node is let
// win, since the managers moved the address there. After Reconciled, a
// record that claims to come from this node but names an endpoint it does
// not hold (a leftover of a previous run) is withdrawn the same way. These
// refutations are what make restarts safe: a restarted node's clock starts
// from its wall clock (in microseconds), which is normally past anything its
// previous life wrote, and when it is not (a clock stepped back), the node
// hears of its old records through the join's push/pull and outranks them.
//
// # Membership
//
// Only the records of live members (and the node's own) are live
// endpoints; the agent feeds memberlist's events in (HandleEvent). When a
// node dies or leaves, its records are hidden at once rather than deleted:
// they keep outranking older copies still travelling, they go on being
// sent in push/pull so that the node, when it comes back, learns what its
// previous life published and can correct it, and after a false alarm they
// are live again the moment memberlist reports the node alive, without
// waiting for an anti-entropy round. Records of a node that has not been a
// member for the tombstone TTL are dropped. Hiding by membership also
// covers a host that joins after a node died: memberlist never reports the
// dead node to it, so the records it learns of that node stay hidden.
//
// # Wiring
//
// An agent creates the table before its gossip pool, whose delegate it is,
// and reports memberlist's events to it:
//
//	tbl, err := endpoints.New(endpoints.Config{Node: name, OnChange: program})
//	pool, err := gossip.Start(ctx, gossip.Config{
//		Meta: meta, Delegate: tbl.Delegate(), OnEvent: tbl.HandleEvent, …})
//	tbl.SetNumNodes(pool.Memberlist().NumMembers)
//	go tbl.Run(ctx)
//	// Publish each running task's endpoint and the host's own address in
//	// each network, then:
//	tbl.Reconciled()
//
// and from then on Publish when a task's endpoint becomes RUNNING (or
// changes) and Withdraw when it stops running. Node names must be unique
// among the tables of a pool: two tables with one name would withdraw each
// other's endpoints as leftovers.
//
// # Locks and goroutines
//
// The table has one mutex, and never waits for memberlist while holding
// it, so its methods are safe to call from memberlist's callbacks. Changes
// are queued under the mutex, in order, and delivered to Config.OnChange by
// Run's goroutine without it. Run also collects expired records.
package endpoints
