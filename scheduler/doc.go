// Package scheduler decides which node each pending task runs on.
//
// It is pure: Schedule takes a snapshot of the nodes (NodeInfo: the node
// object plus what is already committed to it) and the tasks to place, and
// returns one Decision per task. It starts no goroutines, reads no clock,
// draws no random numbers and does no IO, so the same input always gives the
// same output, which is what lets the Raft leader's decisions be tested and
// replayed.
//
// # Filters
//
// A node can take a task only if it passes every filter, applied in this
// fixed order:
//
//  1. the node is READY and its availability is ACTIVE;
//  2. the service's placement constraints hold on it (see ParseConstraints);
//  3. the spec's CPU reservation fits into what the node has left;
//  4. so does its memory reservation;
//  5. none of the spec's host-mode published ports is taken on it;
//  6. it holds fewer than placement.max_replicas_per_node of the service's
//     tasks.
//
// When no node passes, the decision's Explanation counts each node under the
// first filter it fails and lists the reasons from the most nodes to the
// fewest, in swarm's words, e.g. "no suitable node (insufficient memory on 2
// nodes; scheduling constraints not satisfied on 1 node)". Constraints come before resources on purpose: a node the
// constraints exclude could never take the task, so calling it short of
// memory would send the operator after the wrong fix.
//
// # Strategy
//
// The strategy is swarmkit's: among the nodes that pass, prefer the one with
// the fewest tasks of the task's service, then the one with the fewest tasks
// overall, then the smallest node ID so that ties break the same way every
// time. Placement preferences (`spread: node.labels.zone`) put a tree above
// that: the tasks are first spread evenly over the values of the first
// preference's label, then within each value over the second's, and so on;
// nodes without the label form a group of their own, as in swarmkit. A group
// (a subtree) counts the service's tasks on all its nodes, eligible or not, so
// that tasks already running on a paused node still count towards their
// zone's share.
//
// # Why it is fast
//
// Tasks of one service and one spec are identical for every filter, so
// Schedule places them as a group. For each group it parses the spec once,
// runs the static filters (availability, constraints) once per node, and puts
// the nodes that pass into min-heaps: one per leaf of the preference tree
// (only one heap when there are no preferences), and one per inner tree node
// ordering its subtrees. Placing a task then walks down the heap tops, checks
// the dynamic filters (resources, ports, max replicas) on the one candidate
// found, and sifts the changed entries down again: O(depth · log n) per task
// instead of a sort of all the nodes per task.
//
// This works because, within one call, a node's ability to take another task
// of a group only ever shrinks: resources are only reserved, ports only taken,
// service counts only grow. A candidate that fails a dynamic filter can
// therefore be dropped from the group's heaps for good, and a candidate that
// passes is the best node overall, since the heap order is exact. The cost of
// a group is O(n) to build its heaps plus O(log n) per task; the
// explanation of an unplaceable group is computed once, with one pass over
// the nodes, when the group first runs out of candidates.
//
// Tasks that already name a node (a global service's tasks) are checked
// against that node's filters only, before any group is placed, so that the
// replicated tasks cannot take the resources they were created for.
//
// # Rebalancing
//
// Rebalance answers the orchestrator's question after a node came back:
// which one task of a service should move so that its spread gets strictly
// better? The destination is where Schedule would put one more task (so
// every filter applies), the source the heaviest node by the strategy's
// order turned round, and the move is made only when, at the highest level
// of the preference tree where the two part, the source's side holds at
// least two more of the service's tasks than the destination's. Each move
// then lowers the spread at that level and leaves the levels above alone,
// so repeated moves end.
package scheduler
