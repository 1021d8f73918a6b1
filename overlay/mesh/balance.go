package mesh

import (
	"iter"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// balancer is one published port's round-robin counter.
type balancer struct {
	n atomic.Uint64
}

// pick is the order in which one connection tries n backends.
type pick struct {
	n     int
	first int // the round-robin choice
	off   int // where the fallbacks start among the other n-1
}

// next takes the next turn of the counter for n backends.
//
// The first choice is plain round-robin. The fallbacks matter when the first
// is down: trying its successor every time would give that one a double
// share, so the fallbacks start at an offset that advances once per full
// round. Over n·(n-1) consecutive connections a dead backend's share lands
// evenly on each of the others.
func (b *balancer) next(n int) pick {
	if n <= 0 {
		return pick{}
	}
	c := b.n.Add(1) - 1
	p := pick{n: n, first: int(c % uint64(n))}
	if n > 1 {
		p.off = int(c / uint64(n) % uint64(n-1))
	}
	return p
}

// at returns the index to try i-th, for i in [0, n): a permutation of
// [0, n) that starts with first.
func (p pick) at(i int) int {
	if i == 0 {
		return p.first
	}
	return (p.first + 1 + (p.off+i-1)%(p.n-1)) % p.n
}

// candidates yields the addresses one new connection or flow should try, in
// order: the backends in the pick's order, those in hold-down after all the
// others (rather than never, so that a service whose every task failed
// recently is still tried).
func (p *published) candidates(backends []netip.Addr, target uint16) iter.Seq[netip.AddrPort] {
	backends = sortedAddrs(backends)
	pk := p.rr.next(len(backends))
	holds := p.m.holds
	return func(yield func(netip.AddrPort) bool) {
		var held []netip.AddrPort // rare; allocated only when a backend is held
		for i := range pk.n {
			ap := netip.AddrPortFrom(backends[pk.at(i)], target)
			if holds.held(ap) {
				held = append(held, ap)
				continue
			}
			if !yield(ap) {
				return
			}
		}
		for _, ap := range held {
			if !yield(ap) {
				return
			}
		}
	}
}

// sortedAddrs returns a in address order, copying only if it is not sorted
// already. Round-robin indexes the slice, so it needs an order that does not
// change between calls, and Backends is likely built from a map.
func sortedAddrs(a []netip.Addr) []netip.Addr {
	if slices.IsSortedFunc(a, netip.Addr.Compare) {
		return a
	}
	return slices.SortedFunc(slices.Values(a), netip.Addr.Compare)
}

// holdDown remembers backends that failed recently, for every port of the
// mesh: a task that refused one connection will likely refuse the next.
type holdDown struct {
	d   time.Duration
	now func() time.Time

	// n is len(until), so the common case, nothing held, takes no lock.
	n     atomic.Int64
	mu    sync.Mutex
	until map[netip.AddrPort]time.Time
}

// holdDownPrune is the size at which fail sweeps out expired entries, which
// bounds the map by the backends that failed within one hold-down.
const holdDownPrune = 256

func newHoldDown(d time.Duration) *holdDown {
	return &holdDown{d: d, now: time.Now, until: make(map[netip.AddrPort]time.Time)}
}

// fail puts ap in hold-down.
func (h *holdDown) fail(ap netip.AddrPort) {
	if h.d <= 0 {
		return
	}
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.until) >= holdDownPrune {
		for k, t := range h.until {
			if !now.Before(t) {
				delete(h.until, k)
			}
		}
	}
	h.until[ap] = now.Add(h.d)
	h.n.Store(int64(len(h.until)))
}

// release takes ap out of hold-down: it just worked.
func (h *holdDown) release(ap netip.AddrPort) {
	if h.n.Load() == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.until, ap)
	h.n.Store(int64(len(h.until)))
}

// held reports whether ap failed within the hold-down.
func (h *holdDown) held(ap netip.AddrPort) bool {
	if h.n.Load() == 0 {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.until[ap]
	if ok && !h.now().Before(t) {
		delete(h.until, ap)
		h.n.Store(int64(len(h.until)))
		return false
	}
	return ok
}
