package manager

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/skiffhq/skiff/manager/allocator"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// TestAddressBookFollowsTheStore: the address book knows the store's
// networks and addresses as soon as it is made, before it runs, because the
// orchestrator and placement allocate from it at once; running, it frees
// the addresses of deleted tasks and learns new networks.
func TestAddressBookFollowsTheStore(t *testing.T) {
	store := state.New()
	put := func(index uint64, a *skiffpb.StoreAction) {
		t.Helper()
		if err := store.Apply(index, &skiffpb.Command{Actions: []*skiffpb.StoreAction{a}}); err != nil {
			t.Fatal(err)
		}
	}
	// A /30 has one address to hand out: 10.9.0.2.
	put(1, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutNetwork{PutNetwork: &skiffpb.Network{
		Id: "net1", Meta: &skiffpb.Meta{}, Spec: &skiffpb.NetworkSpec{Name: "st_a"}, Subnet: "10.9.0.0/30",
	}}})
	put(2, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutTask{PutTask: &skiffpb.Task{
		Id: "t1", Meta: &skiffpb.Meta{}, Networks: []*skiffpb.NetworkAttachment{{NetworkId: "net1", Address: "10.9.0.2/30"}},
	}}})

	b := newAddressBook(store, slog.New(slog.DiscardHandler))
	if _, err := b.ipam.Allocate("net1"); !errors.Is(err, allocator.ErrExhausted) {
		t.Fatalf("Allocate(net1) before run: %v, want the network known and its one address taken", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.run(ctx) }()
	defer func() { cancel(); <-done }()

	put(3, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_DeleteTask{DeleteTask: "t1"}})
	put(4, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutNetwork{PutNetwork: &skiffpb.Network{
		Id: "net2", Meta: &skiffpb.Meta{}, Spec: &skiffpb.NetworkSpec{Name: "st_b"}, Subnet: "10.9.1.0/30",
	}}})
	deadline := time.Now().Add(10 * time.Second)
	for _, want := range []struct{ network, addr string }{{"net1", "10.9.0.2/30"}, {"net2", "10.9.1.2/30"}} {
		for {
			got, err := b.ipam.Allocate(want.network)
			if err == nil {
				if got.String() != want.addr {
					t.Errorf("Allocate(%s) = %s, want %s", want.network, got, want.addr)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Allocate(%s): %v", want.network, err)
			}
			time.Sleep(time.Millisecond)
		}
	}
}
