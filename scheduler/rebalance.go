package scheduler

import (
	skiffpb "github.com/skiffhq/skiff/proto"
)

// Move is one task of a service moved between nodes: a new task starts on
// To, then the one on From is shut down. Both are node IDs.
type Move struct {
	From, To string
}

// Rebalance returns one move of a task of service serviceID, which runs
// spec, that makes the service's spread strictly better, or false when no
// move does.
//
// To is the node Schedule would give one more task of the service, found by
// scheduling onto clones of nodes, so that every filter applies exactly as
// for a real placement and nodes is left as it was. From is the heaviest
// node holding the service's tasks, in the strategy's order turned round:
// at each level of the preference tree the subtree with the most of the
// service's tasks, then the node with the most, then the most tasks
// overall, then the smallest node ID. Ties go to the subtree, or node, on
// To's path first: a level at which To's side is among the heaviest offers
// no better move than one inside that side.
//
// The move is made only if, at the highest level of the tree at which the
// paths to From and To part (the preferences in order, then the nodes
// themselves), From's side holds at least two more of the service's tasks
// than To's side. One task moved across that level then brings the two
// sides closer without swapping which is heavier, so the spread at that
// level strictly improves and the levels above it do not change: repeated
// moves always end.
//
// Like Schedule, it is pure and deterministic; nil entries in nodes are
// skipped and node IDs should be unique.
func Rebalance(nodes []*NodeInfo, serviceID string, spec *skiffpb.ServiceSpec) (Move, bool) {
	to, ok := nextNode(nodes, serviceID, spec)
	if !ok {
		return Move{}, false
	}
	// Schedule placed the task, so the spec's placement parses.
	r := newRequirements(serviceID, spec)
	t := newSpreadTree(nodes, serviceID, r.preferences, to)
	from, ok := t.from(nodes, serviceID, to)
	if !ok {
		return Move{}, false
	}
	return Move{From: nodes[from].Node.GetId(), To: nodes[to].Node.GetId()}, true
}

// nextNode returns the index in nodes of the node Schedule would place one
// more task of the service on, or false when no node can take it.
func nextNode(nodes []*NodeInfo, serviceID string, spec *skiffpb.ServiceSpec) (int, bool) {
	clones := make([]*NodeInfo, len(nodes))
	for i, ni := range nodes {
		if ni != nil {
			clones[i] = ni.Clone()
		}
	}
	req := Request{Task: &skiffpb.Task{ServiceId: serviceID}, Spec: spec}
	if !Schedule(clones, []Request{req})[0].Placed() {
		return 0, false
	}
	// The clone that gained a task is the one chosen; comparing counts,
	// rather than looking the ID up, stays exact even with duplicate IDs.
	for i, c := range clones {
		if c != nil && c.Tasks != nodes[i].Tasks {
			return i, true
		}
	}
	return 0, false
}

// spreadBranch is one subtree of a service's preference tree: a value of a
// preference's label under its parent, and, at the leaves, the nodes.
type spreadBranch struct {
	value string
	// tasks counts the service's tasks on every node of the subtree.
	tasks    int
	children []int
	// nodes are indexes into the nodes, in leaves only.
	nodes []int
}

// spreadTree counts a service's tasks per subtree of its preference tree,
// as the strategy's tree does, but over every node: a node that takes no
// more tasks still holds the ones it runs.
type spreadTree struct {
	// branches[0] is the root; with no preferences it is the only leaf.
	branches []spreadBranch
	// depth is the number of preferences.
	depth int
	// toPath is the branches from the root to To's leaf.
	toPath []int
}

// newSpreadTree builds the tree of the service's tasks on nodes under
// prefs, and records the path to nodes[to].
func newSpreadTree(nodes []*NodeInfo, serviceID string, prefs []Preference, to int) *spreadTree {
	t := &spreadTree{branches: []spreadBranch{{}}, depth: len(prefs)}
	type childKey struct {
		parent int
		value  string
	}
	index := make(map[childKey]int)
	for i, ni := range nodes {
		if ni == nil {
			continue
		}
		svc := ni.ServiceTasks[serviceID]
		b := 0
		t.branches[0].tasks += svc
		onPath := i == to
		if onPath {
			t.toPath = append(t.toPath, 0)
		}
		for _, p := range prefs {
			k := childKey{parent: b, value: p.value(ni.Node)}
			c, ok := index[k]
			if !ok {
				c = len(t.branches)
				index[k] = c
				t.branches = append(t.branches, spreadBranch{value: k.value})
				t.branches[b].children = append(t.branches[b].children, c)
			}
			t.branches[c].tasks += svc
			b = c
			if onPath {
				t.toPath = append(t.toPath, c)
			}
		}
		t.branches[b].nodes = append(t.branches[b].nodes, i)
	}
	return t
}

// from descends from the root to the heaviest node, keeping to To's path
// on ties, and returns it if the move from it to nodes[to] is worth making:
// its side holds at least two more of the service's tasks than To's side at
// the level where their paths part.
func (t *spreadTree) from(nodes []*NodeInfo, serviceID string, to int) (int, bool) {
	b := 0
	for level := 1; level <= t.depth; level++ {
		toSide := t.toPath[level]
		c := t.heaviestChild(b, toSide)
		if c != toSide {
			if t.branches[c].tasks < t.branches[toSide].tasks+2 {
				return 0, false
			}
			return t.heaviestNode(nodes, serviceID, t.heaviestLeaf(c), -1), true
		}
		b = c
	}
	from := t.heaviestNode(nodes, serviceID, b, to)
	if from == to || nodes[from].ServiceTasks[serviceID] < nodes[to].ServiceTasks[serviceID]+2 {
		return 0, false
	}
	return from, true
}

// heaviestChild returns the child of branch b with the most of the
// service's tasks: prefer if it is among them, else the one with the
// smallest label value.
func (t *spreadTree) heaviestChild(b, prefer int) int {
	best := -1
	for _, c := range t.branches[b].children {
		if best < 0 || t.heavierBranch(c, best, prefer) {
			best = c
		}
	}
	return best
}

// heavierBranch reports whether branch a comes before branch b in the order
// heaviestChild uses.
func (t *spreadTree) heavierBranch(a, b, prefer int) bool {
	x, y := &t.branches[a], &t.branches[b]
	if x.tasks != y.tasks {
		return x.tasks > y.tasks
	}
	if a == prefer || b == prefer {
		return a == prefer
	}
	return x.value < y.value
}

// heaviestLeaf descends from branch b to its heaviest leaf.
func (t *spreadTree) heaviestLeaf(b int) int {
	for len(t.branches[b].children) > 0 {
		b = t.heaviestChild(b, -1)
	}
	return b
}

// heaviestNode returns the node of leaf b with the most of the service's
// tasks: prefer if it is among them, else the one with the most tasks
// overall, then the smallest ID.
func (t *spreadTree) heaviestNode(nodes []*NodeInfo, serviceID string, b, prefer int) int {
	best := -1
	for _, i := range t.branches[b].nodes {
		if best < 0 || heavierNode(nodes, serviceID, i, best, prefer) {
			best = i
		}
	}
	return best
}

// heavierNode reports whether nodes[i] comes before nodes[j] in the order
// heaviestNode uses; the index breaks the last tie, between duplicate IDs.
func heavierNode(nodes []*NodeInfo, serviceID string, i, j, prefer int) bool {
	a, b := nodes[i], nodes[j]
	if x, y := a.ServiceTasks[serviceID], b.ServiceTasks[serviceID]; x != y {
		return x > y
	}
	if i == prefer || j == prefer {
		return i == prefer
	}
	if a.Tasks != b.Tasks {
		return a.Tasks > b.Tasks
	}
	if x, y := a.Node.GetId(), b.Node.GetId(); x != y {
		return x < y
	}
	return i < j
}
