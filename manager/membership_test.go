package manager

import (
	"slices"
	"testing"
	"time"

	"github.com/skiffhq/skiff/gossip"
)

// TestDeadAgentsAreFreshVerdictsOnly: a new term takes gossip's verdicts of
// death as given only while they are fresh; an old one (an agent declared
// dead during a partition whose revival has not reached this manager yet)
// is left to the dispatcher's own evidence, and a revival clears it.
func TestDeadAgentsAreFreshVerdictsOnly(t *testing.T) {
	now := time.Unix(1000, 0)
	ms := newMembership("m1", nil, nil)
	ms.now = func() time.Time { return now }
	fail := func(name string) {
		ms.observe(gossip.Event{Kind: gossip.MemberFailed, Member: gossip.Member{Meta: gossip.Meta{Name: name, Role: gossip.RoleAgent}}})
	}
	fail("h1")
	now = now.Add(8 * time.Second)
	fail("h3")
	now = now.Add(time.Second)

	if got := ms.DeadAgents(4 * time.Second); !slices.Equal(got, []string{"h3"}) {
		t.Errorf("DeadAgents(4s) = %v, want only the fresh verdict [h3]", got)
	}
	if got := ms.DeadAgents(time.Minute); !slices.Equal(got, []string{"h1", "h3"}) {
		t.Errorf("DeadAgents(1m) = %v, want [h1 h3]", got)
	}
	ms.observe(gossip.Event{Kind: gossip.MemberJoined, Member: gossip.Member{Meta: gossip.Meta{Name: "h3", Role: gossip.RoleAgent}}})
	if got := ms.DeadAgents(time.Minute); !slices.Equal(got, []string{"h1"}) {
		t.Errorf("after h3 came back: DeadAgents(1m) = %v, want [h1]", got)
	}
}
