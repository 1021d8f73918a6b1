package controlapi

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiffhq/skiff/manager/raftnode"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// fakeRaft is a Raft member with a fixed configuration and leader; it
// commits nothing.
type fakeRaft struct {
	members []RaftMember
	err     error
	leader  string
}

func (r *fakeRaft) Propose(context.Context, *skiffpb.Command) (uint64, error) {
	return 0, raftnode.ErrNotLeader
}
func (r *fakeRaft) Members() ([]RaftMember, error)                 { return r.members, r.err }
func (r *fakeRaft) Leader() (addr, id string)                      { return "", r.leader }
func (r *fakeRaft) Term() uint64                                   { return 7 }
func (r *fakeRaft) AddVoter(context.Context, string, string) error { return nil }
func (r *fakeRaft) RemoveServer(context.Context, string) error     { return nil }

// reachable is a Membership that answers for the managers it names.
type reachable map[string]bool

func (r reachable) Reachable(name string) bool { return r[name] }

func TestClusterInfoManagers(t *testing.T) {
	raft := &fakeRaft{
		members: []RaftMember{
			{Name: "m1", RaftAddr: "10.0.0.1:4243", Voter: true},
			{Name: "m2", RaftAddr: "10.0.0.2:4243", Voter: true},
			{Name: "m3", RaftAddr: "10.0.0.3:4243"},
		},
		leader: "m1",
	}
	// The leader is reachable whatever gossip says: it answered Raft.
	s := New(Config{Store: state.New(), Raft: raft, Membership: reachable{"m2": true}})
	info, err := s.ClusterInfo(context.Background(), &skiffpb.ClusterInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.GetLeader() != "m1" || info.GetRaftTerm() != 7 {
		t.Errorf("leader %q term %d, want m1 and 7", info.GetLeader(), info.GetRaftTerm())
	}
	want := []string{
		"m1 10.0.0.1:4243 leader voter REACHABILITY_REACHABLE",
		"m2 10.0.0.2:4243 - voter REACHABILITY_REACHABLE",
		"m3 10.0.0.3:4243 - nonvoter REACHABILITY_UNREACHABLE",
	}
	if len(info.GetManagers()) != len(want) {
		t.Fatalf("%d managers, want %d", len(info.GetManagers()), len(want))
	}
	for i, m := range info.GetManagers() {
		lead := "-"
		if m.GetLeader() {
			lead = "leader"
		}
		if got := fmt.Sprintf("%s %s %s %s %s", m.GetName(), m.GetRaftAddr(), lead, m.GetSuffrage(), m.GetReachability()); got != want[i] {
			t.Errorf("manager %d: %s, want %s", i, got, want[i])
		}
	}

	// Without a Membership, every manager is reported reachable.
	s = New(Config{Store: state.New(), Raft: raft})
	info, err = s.ClusterInfo(context.Background(), &skiffpb.ClusterInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range info.GetManagers() {
		if m.GetReachability() != skiffpb.Reachability_REACHABILITY_REACHABLE {
			t.Errorf("manager %s is %s without a Membership", m.GetName(), m.GetReachability())
		}
	}
}

// TestClusterInfoRaftFailure: a configuration Raft cannot read is the
// manager's disk failing, and says so.
func TestClusterInfoRaftFailure(t *testing.T) {
	raft := &fakeRaft{err: fmt.Errorf("read configuration: %w", raftnode.ErrStorage)}
	s := New(Config{Store: state.New(), Raft: raft})
	_, err := s.ClusterInfo(context.Background(), &skiffpb.ClusterInfoRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("err = %v, want Unavailable", err)
	}
}
