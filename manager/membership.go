package manager

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/skiffhq/skiff/gossip"
	"github.com/skiffhq/skiff/manager/controlapi"
	"github.com/skiffhq/skiff/manager/raftnode"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// membership is what this manager knows of the cluster's members, from
// Raft's configuration and from gossip: which managers are alive, which
// agents gossip has declared dead, where the leader is, and whether a
// quorum is in reach. The dispatcher and the Control API see it through
// small interfaces of their own.
type membership struct {
	name  string
	raft  *raftnode.Node
	store *state.Store
	// pool is set once gossip has started; gossip's events may arrive
	// before that, and only need the maps.
	pool *gossip.Pool

	mu sync.Mutex
	// managersAlive is gossip's view of which managers are up, by name.
	managersAlive map[string]bool
	// deadAgents holds when gossip declared each agent dead, for the
	// agents it has not seen since.
	deadAgents map[string]time.Time
	// now is the clock of those verdicts; time.Now but in tests.
	now func() time.Time
	// onAgentDead, when set, hears of each agent gossip declares dead.
	onAgentDead func(name string)
}

func newMembership(name string, raft *raftnode.Node, store *state.Store) *membership {
	return &membership{name: name, raft: raft, store: store, managersAlive: map[string]bool{}, deadAgents: map[string]time.Time{}, now: time.Now}
}

// observe follows gossip's membership events: managers' liveness for
// MANAGER STATUS and quorum hints, and agents' deaths to hasten marking
// their nodes down. It runs on memberlist's goroutine and must not block.
func (ms *membership) observe(ev gossip.Event) {
	alive := ev.Kind == gossip.MemberJoined || ev.Kind == gossip.MemberUpdated
	switch ev.Member.Role {
	case gossip.RoleManager:
		ms.mu.Lock()
		ms.managersAlive[ev.Member.Name] = alive
		ms.mu.Unlock()
	case gossip.RoleAgent:
		// Only a death hastens the verdict: an agent that left gracefully
		// is restarting, and its node keeps its heartbeat grace. A death
		// is remembered too, for the dispatcher of a later term.
		ms.mu.Lock()
		if ev.Kind == gossip.MemberFailed {
			ms.deadAgents[ev.Member.Name] = ms.now()
		} else {
			delete(ms.deadAgents, ev.Member.Name)
		}
		onDead := ms.onAgentDead
		ms.mu.Unlock()
		if ev.Kind == gossip.MemberFailed && onDead != nil && ms.raft.IsLeader() {
			onDead(ev.Member.Name)
		}
	}
}

// DeadAgents names the agents gossip declared dead within the last
// within, and has not heard from since. An older verdict may be stale: an
// agent cut off by a partition is declared dead, and after the heal its
// revival can take a push-pull round or more to reach this manager; a
// verdict that old was either acted on by the previous leader already (the
// node is Down) or is wrong (it came back). The dispatcher then judges the
// node by its own evidence, as any other.
func (ms *membership) DeadAgents(within time.Duration) []string {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	now := ms.now()
	var out []string
	for name, at := range ms.deadAgents {
		if now.Sub(at) <= within {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// ProbeAgent asks gossip whether the named node's agent answers now.
func (ms *membership) ProbeAgent(name string) gossip.Opinion {
	return ms.pool.Probe(name, gossip.RoleAgent)
}

// ManagerAPIAddrs are the API addresses of the managers gossip sees alive.
func (ms *membership) ManagerAPIAddrs() []string { return ms.pool.ManagerAPIAddrs() }

// IsManager reports whether name is a member of Raft's configuration.
func (ms *membership) IsManager(name string) bool {
	servers, err := ms.raft.Servers()
	if err != nil {
		return false
	}
	return slices.ContainsFunc(servers, func(s raftnode.Server) bool { return s.ID == name })
}

// Reachable reports whether the manager named name is up, as far as gossip
// can tell; this manager always is.
func (ms *membership) Reachable(name string) bool {
	if name == ms.name {
		return true
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.managersAlive[name]
}

// LeaderAPIAddr is the leader's API address, or "" while there is none.
func (ms *membership) LeaderAPIAddr() string {
	addr, _ := ms.leaderAPIAddr()
	return addr
}

// leaderAPIAddr finds the leader's API address: from gossip, where every
// manager advertises it, or else from the leader's node in the store. With
// no leader, the error says why in the Control API's terms.
func (ms *membership) leaderAPIAddr() (string, error) {
	_, id := ms.raft.Leader()
	if id == "" {
		if err := ms.raft.StorageError(); err != nil {
			return "", controlapi.StorageStatus(fmt.Errorf("no leader: %w", err))
		}
		hint, quorum := ms.quorumHint()
		if !quorum {
			// No election can succeed: retrying would only delay the news.
			return "", skiffpb.QuorumLostError("no leader: " + hint)
		}
		return "", skiffpb.NoLeaderError("no leader: " + hint)
	}
	for _, mem := range ms.pool.Members() {
		if mem.Role == gossip.RoleManager && mem.Name == id && mem.APIAddr != "" {
			return mem.APIAddr, nil
		}
	}
	var addr string
	ms.store.View(func(tx state.ReadTx) { addr = tx.NodeByName(id).GetManagerStatus().GetApiAddr() })
	if addr == "" {
		return "", skiffpb.NoLeaderError(fmt.Sprintf("leader %s has no known API address yet; retry in a moment", id))
	}
	return addr, nil
}

// quorumHint says how many managers this one can see, for error messages,
// and whether they make a quorum (an election can succeed).
func (ms *membership) quorumHint() (hint string, quorum bool) {
	servers, err := ms.raft.Servers()
	if err != nil || len(servers) == 0 {
		return "this manager has not joined a cluster yet; check its log, its --join addresses and its token", false
	}
	up := 0
	for _, s := range servers {
		if ms.Reachable(s.ID) {
			up++
		}
	}
	needed := len(servers)/2 + 1
	if up >= needed {
		return fmt.Sprintf("an election is under way (%d of %d managers reachable, %d needed); retry in a moment", up, len(servers), needed), true
	}
	return fmt.Sprintf("the cluster may have lost quorum (%d of %d managers reachable, %d needed); bring managers back", up, len(servers), needed), false
}
