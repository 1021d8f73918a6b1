package mesh

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestPickIsAPermutationStartingRoundRobin(t *testing.T) {
	for n := 1; n <= 7; n++ {
		var b balancer
		for c := range 3 * n * n {
			p := b.next(n)
			if p.first != c%n {
				t.Fatalf("n=%d turn %d: first %d, want %d", n, c, p.first, c%n)
			}
			seen := make([]bool, n)
			for i := range n {
				seen[p.at(i)] = true
			}
			if slices.Contains(seen, false) {
				t.Fatalf("n=%d turn %d: order %v misses an index", n, c, p)
			}
		}
	}
}

// TestPickSpreadsADeadBackendsShare: with backend d dead, each turn goes to
// the first live backend of its order; over n·(n-1) turns every live one
// gets the same number.
func TestPickSpreadsADeadBackendsShare(t *testing.T) {
	for n := 2; n <= 6; n++ {
		for dead := range n {
			var b balancer
			got := make([]int, n)
			for range n * (n - 1) {
				p := b.next(n)
				i := p.at(0)
				if i == dead {
					i = p.at(1)
				}
				got[i]++
			}
			for i, c := range got {
				if i != dead && c != n {
					t.Errorf("n=%d dead=%d: shares %v, want %d each", n, dead, got, n)
					break
				}
			}
		}
	}
}

func TestSortedAddrs(t *testing.T) {
	a := []netip.Addr{netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")}
	orig := slices.Clone(a)
	got := sortedAddrs(a)
	if !slices.IsSortedFunc(got, netip.Addr.Compare) || len(got) != 3 {
		t.Errorf("sortedAddrs = %v", got)
	}
	if !slices.Equal(a, orig) {
		t.Errorf("sortedAddrs modified its argument: %v", a)
	}
	if again := sortedAddrs(got); &again[0] != &got[0] {
		t.Error("sortedAddrs copied a sorted slice")
	}
}

func TestHoldDown(t *testing.T) {
	now := time.Unix(1000, 0)
	h := newHoldDown(5 * time.Second)
	h.now = func() time.Time { return now }
	a := netip.MustParseAddrPort("10.0.0.1:80")
	b := netip.MustParseAddrPort("10.0.0.2:80")

	h.fail(a)
	if !h.held(a) || h.held(b) {
		t.Fatal("only a should be held")
	}
	now = now.Add(5 * time.Second)
	if h.held(a) {
		t.Error("a still held after the hold-down")
	}
	h.fail(b)
	h.release(b)
	if h.held(b) {
		t.Error("b still held after a success")
	}

	// Expired entries are swept, so the table stays bounded.
	for i := range 3 * holdDownPrune {
		h.fail(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 80))
		now = now.Add(time.Second)
	}
	if n := len(h.until); n > holdDownPrune {
		t.Errorf("%d entries held", n)
	}

	off := newHoldDown(-1)
	off.fail(a)
	if off.held(a) {
		t.Error("a negative hold-down held a backend")
	}
}

// TestCandidatesTryHeldBackendsLast: a held backend is still tried, after
// the others.
func TestCandidatesTryHeldBackendsLast(t *testing.T) {
	m := New(Config{Backends: func(string) []netip.Addr { return nil }, HoldDown: time.Hour})
	p := newPublished(m, portKey{"tcp", 1}, &route{service: "s", target: 80})
	defer p.cancel()
	backends := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")}
	m.holds.fail(netip.AddrPortFrom(backends[0], 80))

	got := slices.Collect(p.candidates(backends, 80))
	want := []netip.AddrPort{
		netip.AddrPortFrom(backends[1], 80),
		netip.AddrPortFrom(backends[2], 80),
		netip.AddrPortFrom(backends[0], 80),
	}
	if !slices.Equal(got, want) {
		t.Errorf("candidates = %v, want %v", got, want)
	}
}
