package scheduler

import (
	"fmt"
	"slices"
	"strings"
)

// noSuitableNode starts every explanation, as in swarm, so that tools and
// people who know swarm's "no suitable node (...)" recognise it.
const noSuitableNode = "no suitable node"

// explain says why no node can take a task of r: each node counts under the
// first filter it fails, and the reasons are listed from the most nodes to
// the fewest (ties in filter order), as swarm lists them.
func explain(nodes []*NodeInfo, r *requirements) string {
	var counts [numFilters]int
	for _, ni := range nodes {
		if ni == nil {
			continue
		}
		if f, failed := firstFailure(ni, r); failed {
			counts[f]++
		}
	}
	return explainCounts(counts)
}

// explainCounts formats per-filter node counts.
func explainCounts(counts [numFilters]int) string {
	order := make([]filter, 0, numFilters)
	for f := range numFilters {
		if counts[f] > 0 {
			order = append(order, f)
		}
	}
	if len(order) == 0 {
		return noSuitableNode
	}
	// Stable, so that equal counts keep the filter order.
	slices.SortStableFunc(order, func(a, b filter) int { return counts[b] - counts[a] })
	reasons := make([]string, len(order))
	for i, f := range order {
		reasons[i] = f.reason(counts[f])
	}
	return noSuitableNode + " (" + strings.Join(reasons, "; ") + ")"
}

// reason is the filter's failure on n nodes, in swarm's words where swarm
// has them.
func (f filter) reason(n int) string {
	nodes := "1 node"
	if n != 1 {
		nodes = fmt.Sprintf("%d nodes", n)
	}
	switch f {
	case filterAvailable:
		return nodes + " not available for new tasks"
	case filterConstraints:
		return "scheduling constraints not satisfied on " + nodes
	case filterCPU:
		return "insufficient cpu on " + nodes
	case filterMemory:
		return "insufficient memory on " + nodes
	case filterHostPorts:
		return "host-mode port already in use on " + nodes
	case filterMaxReplicas:
		return "max replicas per node limit exceeded on " + nodes
	}
	return fmt.Sprintf("filter %d failed on %s", int(f), nodes)
}
