package manager

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/skiffhq/skiff/manager/allocator"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// addressBook keeps the leader's IPAM in step with the store: it learns
// every address in use when the term starts, then follows the store's events.
// Components that allocate mark the address used at once, so the events
// only confirm what they did; deletes are what return addresses to the pool.
type addressBook struct {
	logger *slog.Logger
	ipam   *allocator.IPAM
	store  *state.Store
	// ch and stop are the watch newAddressBook opened; run takes it over.
	ch   <-chan state.Batch
	stop func()
}

// newAddressBook reads the store and subscribes to it in one step, so no
// change falls between the two. It reads the store at once, not in run, so
// that the IPAM knows every network before the components that allocate
// from it start.
func newAddressBook(store *state.Store, logger *slog.Logger) *addressBook {
	b := &addressBook{ipam: allocator.NewIPAM(), store: store, logger: logger}
	b.ch, b.stop = store.ViewAndWatch(b.view)
	return b
}

// view marks everything the store holds.
func (b *addressBook) view(tx state.ReadTx) {
	for _, n := range tx.Networks() {
		b.network(n, false)
	}
	for _, n := range tx.Nodes() {
		b.attachments(n.GetAttachments(), false)
	}
	tx.EachTask(func(t *skiffpb.Task) bool {
		b.attachments(t.GetNetworks(), false)
		return true
	})
}

// run follows the store until ctx ends. If the watch is cut off it reads
// the store again into the same IPAM: a missed delete only delays reuse of
// an address, but a missed network would make allocation fail.
func (b *addressBook) run(ctx context.Context) {
	b.store.FollowWatch(ctx, b.ch, b.stop, state.Follower{View: b.view, Apply: b.apply})
}

// apply takes one batch of changes into the IPAM.
func (b *addressBook) apply(batch state.Batch) {
	for _, ev := range batch.Events {
		switch o := ev.Object.(type) {
		case *skiffpb.Network:
			b.network(o, ev.Deleted)
		case *skiffpb.Node:
			b.attachments(o.GetAttachments(), ev.Deleted)
		case *skiffpb.Task:
			b.attachments(o.GetNetworks(), ev.Deleted)
		}
	}
}

func (b *addressBook) network(n *skiffpb.Network, deleted bool) {
	if deleted {
		b.ipam.RemoveNetwork(n.GetId())
		return
	}
	p, err := netip.ParsePrefix(n.GetSubnet())
	if err == nil {
		err = b.ipam.AddNetwork(n.GetId(), p)
	}
	if err != nil {
		b.logger.Error("network cannot get addresses", "network", n.GetSpec().GetName(), "error", err)
	}
}

func (b *addressBook) attachments(as []*skiffpb.NetworkAttachment, deleted bool) {
	for _, a := range as {
		p, err := netip.ParsePrefix(a.GetAddress())
		if err != nil {
			continue
		}
		if deleted {
			b.ipam.Release(a.GetNetworkId(), p.Addr())
		} else {
			b.ipam.MarkUsed(a.GetNetworkId(), p.Addr())
		}
	}
}
