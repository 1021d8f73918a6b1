package scheduler

// candidate is one entry of a min-heap: a node, in a leaf of the preference
// tree, or a subtree, in an inner branch.
type candidate struct {
	// tasks counts the service's tasks on the node, or in the subtree:
	// spreading the service comes first.
	tasks int
	// load counts all the tasks on the node. It is 0 for subtrees, which,
	// as in swarmkit, are spread by the service's tasks alone.
	load int
	// name breaks the remaining ties: the node ID, or the subtree's label
	// value.
	name string
	// ref is the node's index in Schedule's nodes, or the subtree's index in
	// tree.branches. As the last tie-breaker it keeps even duplicate node IDs
	// deterministic.
	ref int
}

// less is the strategy's order: fewest tasks of the service, then fewest
// tasks overall, then by name.
func (a *candidate) less(b *candidate) bool {
	if a.tasks != b.tasks {
		return a.tasks < b.tasks
	}
	if a.load != b.load {
		return a.load < b.load
	}
	if a.name != b.name {
		return a.name < b.name
	}
	return a.ref < b.ref
}

// candidates is a binary min-heap. The strategy only ever touches its top
// (it places a task on the best candidate, then sifts that down or drops it),
// so, unlike container/heap, it needs no interface calls and no index of
// positions.
type candidates []candidate

// heapify establishes the heap order in O(n).
func (h candidates) heapify() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

// down restores the heap order after the entry at i grew.
func (h candidates) down(i int) {
	for {
		m := 2*i + 1
		if m >= len(h) {
			return
		}
		if r := m + 1; r < len(h) && h[r].less(&h[m]) {
			m = r
		}
		if !h[m].less(&h[i]) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

// dropTop removes the best entry.
func (h *candidates) dropTop() {
	last := len(*h) - 1
	(*h)[0] = (*h)[last]
	*h = (*h)[:last]
	h.down(0)
}

// branch is one node of the preference tree.
type branch struct {
	// leaf branches hold nodes, inner ones hold subtrees.
	leaf bool
	heap candidates
}

// tree holds the candidates of one group: a tree with one level per
// placement preference, whose leaves hold the nodes that passed the static
// filters. Without preferences it is a single leaf. Only subtrees that still
// hold a candidate are linked into their parent's heap.
type tree struct {
	// branches[0] is the root; a subtree always comes after its parent.
	branches []branch
	// path is the branches walked to the last candidate, root first.
	path []int
}

// newTree builds the candidates for placing tasks of r on nodes.
func newTree(nodes []*NodeInfo, r *requirements) *tree {
	t := &tree{branches: []branch{{leaf: len(r.preferences) == 0}}}
	if len(r.preferences) == 0 {
		h := make(candidates, 0, len(nodes))
		for i, ni := range nodes {
			if ni == nil {
				continue
			}
			if _, failed := staticFailure(ni, r); !failed {
				h = append(h, nodeCandidate(ni, i, r.serviceID))
			}
		}
		h.heapify()
		t.branches[0].heap = h
		return t
	}

	// Per branch, while building: the service's tasks in the subtree, the
	// label value that leads to it, and its parent.
	type subtree struct {
		tasks  int
		value  string
		parent int
	}
	type childKey struct {
		parent int
		value  string
	}
	subtrees := []subtree{{parent: -1}}
	children := make(map[childKey]int)
	for i, ni := range nodes {
		if ni == nil {
			continue
		}
		svc := ni.ServiceTasks[r.serviceID]
		_, failed := staticFailure(ni, r)
		if failed && svc == 0 {
			// Neither a candidate nor a count that could shift the spread.
			continue
		}
		// Every node's tasks of the service count towards its groups, even
		// on a node that takes no new ones: they still run there.
		b := 0
		subtrees[0].tasks += svc
		for level, p := range r.preferences {
			k := childKey{parent: b, value: p.value(ni.Node)}
			c, ok := children[k]
			if !ok {
				c = len(t.branches)
				children[k] = c
				t.branches = append(t.branches, branch{leaf: level == len(r.preferences)-1})
				subtrees = append(subtrees, subtree{value: k.value, parent: b})
			}
			subtrees[c].tasks += svc
			b = c
		}
		if !failed {
			t.branches[b].heap = append(t.branches[b].heap, nodeCandidate(ni, i, r.serviceID))
		}
	}
	// Walking backwards finishes every subtree before its parent sees it.
	for c := len(t.branches) - 1; c > 0; c-- {
		h := t.branches[c].heap
		if len(h) == 0 {
			continue
		}
		h.heapify()
		s := subtrees[c]
		t.branches[s.parent].heap = append(t.branches[s.parent].heap, candidate{tasks: s.tasks, name: s.value, ref: c})
	}
	t.branches[0].heap.heapify()
	return t
}

// nodeCandidate is node nodes[i] as a candidate for a task of service svc.
func nodeCandidate(ni *NodeInfo, i int, svc string) candidate {
	return candidate{tasks: ni.ServiceTasks[svc], load: ni.Tasks, name: ni.Node.GetId(), ref: i}
}

// next returns the index of the best node that fits one more task, or false
// when none does. fits applies the dynamic filters to a node, given its
// count of the service's tasks. A node that does not fit is dropped for
// good, and so is a subtree left without nodes: within one group a node's
// room for another task only ever shrinks.
func (t *tree) next(fits func(node, serviceTasks int) bool) (int, bool) {
	for {
		if len(t.branches[0].heap) == 0 {
			return 0, false
		}
		t.path = t.path[:0]
		b := 0
		for !t.branches[b].leaf {
			t.path = append(t.path, b)
			b = t.branches[b].heap[0].ref
		}
		t.path = append(t.path, b)
		if top := &t.branches[b].heap[0]; fits(top.ref, top.tasks) {
			return top.ref, true
		}
		for k := len(t.path) - 1; k >= 0; k-- {
			h := &t.branches[t.path[k]].heap
			h.dropTop()
			if len(*h) > 0 {
				break
			}
		}
	}
}

// took records that the node next returned got a task. Every heap on the
// path still has that node, or the subtree holding it, on top.
func (t *tree) took() {
	for _, b := range t.path {
		br := &t.branches[b]
		br.heap[0].tasks++
		if br.leaf {
			br.heap[0].load++
		}
		br.heap.down(0)
	}
}
