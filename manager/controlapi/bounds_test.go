package controlapi

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiffhq/skiff/manager/raftnode"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// stackOf is a stack of one service, web, on its default network.
func stackOf(stack, service string, replicas uint64) *skiffpb.StackSpec {
	net := stack + "_default"
	return &skiffpb.StackSpec{
		Name:     stack,
		Networks: []*skiffpb.NetworkSpec{{Name: net, Stack: stack, Driver: "overlay"}},
		Services: []*skiffpb.ServiceSpec{{
			Name: stack + "_" + service, Stack: stack, Replicas: replicas,
			Container: &skiffpb.ContainerSpec{Image: "web:1"},
			Networks:  []*skiffpb.ServiceNetwork{{Target: net}},
		}},
	}
}

// passedChecks reports whether a deploy got past every check: the fake
// Raft refuses the proposal itself.
func passedChecks(err error) bool {
	return errors.Is(err, raftnode.ErrNotLeader) || status.Code(err) == codes.Unavailable
}

func seed(t *testing.T, store *state.Store, actions ...*skiffpb.StoreAction) {
	t.Helper()
	if err := store.Apply(store.Index()+1, &skiffpb.Command{Actions: actions}); err != nil {
		t.Fatal(err)
	}
}

// TestReplicasAreBounded: a service with more replicas than the cluster
// allows is refused, at deploy and at scale, with what to do; the bound is
// the cluster's when it sets one.
func TestReplicasAreBounded(t *testing.T) {
	store := state.New()
	s := New(Config{Store: store, Raft: &fakeRaft{leader: "m1"}})
	ctx := context.Background()

	_, err := s.DeployStack(ctx, &skiffpb.DeployStackRequest{Spec: stackOf("p", "web", 1_000_000_000)})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "--max-replicas") {
		t.Fatalf("a billion replicas: %v, want InvalidArgument naming --max-replicas", err)
	}
	if _, err := s.DeployStack(ctx, &skiffpb.DeployStackRequest{Spec: stackOf("p", "web", DefaultMaxReplicas)}); !passedChecks(err) {
		t.Fatalf("the default bound itself: %v, want it past the checks", err)
	}

	seed(t, store, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutCluster{PutCluster: &skiffpb.Cluster{Id: "c", MaxReplicas: 10}}})
	if _, err := s.DeployStack(ctx, &skiffpb.DeployStackRequest{Spec: stackOf("p", "web", 11)}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("11 replicas under a bound of 10: %v, want InvalidArgument", err)
	}
	spec := stackOf("p", "web", 2).GetServices()[0]
	seed(t, store, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutService{PutService: &skiffpb.Service{Id: "s1", Spec: spec}}})
	n := uint64(11)
	if _, err := s.UpdateService(ctx, &skiffpb.UpdateServiceRequest{Service: "p_web", Replicas: &n}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("scale to 11 under a bound of 10: %v, want InvalidArgument", err)
	}
	n = 10
	if _, err := s.UpdateService(ctx, &skiffpb.UpdateServiceRequest{Service: "p_web", Replicas: &n}); !passedChecks(err) {
		t.Fatalf("scale to the bound: %v, want it past the checks", err)
	}
}

// TestNamesThroughUnderscoresCollide: stack a_b's service c is named like
// stack a's service b_c; the second stack is refused rather than taking the
// first one's service, and likewise for networks.
func TestNamesThroughUnderscoresCollide(t *testing.T) {
	store := state.New()
	s := New(Config{Store: store, Raft: &fakeRaft{leader: "m1"}})
	ctx := context.Background()
	a := stackOf("a", "b_c", 1)
	seed(t, store,
		&skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutNetwork{PutNetwork: &skiffpb.Network{Id: "n1", Spec: a.GetNetworks()[0], Vni: 4096, Subnet: "10.0.0.0/24"}}},
		&skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutService{PutService: &skiffpb.Service{Id: "s1", Spec: a.GetServices()[0]}}},
	)

	_, err := s.DeployStack(ctx, &skiffpb.DeployStackRequest{Spec: stackOf("a_b", "c", 1)})
	if status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), "a_b_c") || !strings.Contains(err.Error(), "stack a's") {
		t.Fatalf("stack a_b's service c: %v, want AlreadyExists naming a_b_c and stack a", err)
	}
	// A network: stack a's network b_default against stack a_b's default.
	aNet := &skiffpb.NetworkSpec{Name: "a_b_default", Stack: "a", Driver: "overlay"}
	seed(t, store, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutNetwork{PutNetwork: &skiffpb.Network{Id: "n2", Spec: aNet, Vni: 4097, Subnet: "10.0.1.0/24"}}})
	_, err = s.DeployStack(ctx, &skiffpb.DeployStackRequest{Spec: stackOf("a_b", "x", 1)})
	if status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), "network name a_b_default") {
		t.Fatalf("stack a_b's default network: %v, want AlreadyExists naming a_b_default", err)
	}
	// Redeploying a stack over its own names is no collision.
	if _, err := s.DeployStack(ctx, &skiffpb.DeployStackRequest{Spec: a}); !passedChecks(err) {
		t.Fatalf("redeploying stack a: %v, want it past the checks", err)
	}
}
