package allocator

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// allocN allocates n addresses in network id and returns them as strings.
func allocN(t *testing.T, a *IPAM, id string, n int) []string {
	t.Helper()
	var out []string
	for i := 0; i < n; i++ {
		p, err := a.Allocate(id)
		if err != nil {
			t.Fatalf("allocation %d in %s: %v", i, id, err)
		}
		out = append(out, p.String())
	}
	return out
}

// TestIPAMAllocate: addresses come round-robin from the cursor, skip the
// network address, the gateway and the broadcast address, wrap around, and
// carry the subnet's prefix length.
func TestIPAMAllocate(t *testing.T) {
	type op struct {
		kind string // "alloc", "release", "used"
		addr string // for release and used; the wanted result for alloc
	}
	cases := []struct {
		name   string
		subnet string
		ops    []op
	}{
		{"first addresses after the gateway", "10.0.1.0/24", []op{
			{"alloc", "10.0.1.2/24"}, {"alloc", "10.0.1.3/24"}, {"alloc", "10.0.1.4/24"},
		}},
		{"host bits of the subnet are ignored", "10.0.1.77/24", []op{{"alloc", "10.0.1.2/24"}}},
		{"a released address is not reused at once", "10.0.1.0/24", []op{
			{"alloc", "10.0.1.2/24"}, {"alloc", "10.0.1.3/24"}, {"release", "10.0.1.2"}, {"alloc", "10.0.1.4/24"},
		}},
		{"addresses marked used are skipped", "10.0.1.0/24", []op{
			{"used", "10.0.1.2"}, {"used", "10.0.1.3"}, {"alloc", "10.0.1.4/24"},
		}},
		{"addresses outside the subnet are not marked", "10.0.1.0/24", []op{
			{"used", "10.0.2.2"}, {"alloc", "10.0.1.2/24"},
		}},
		{"wraps around to a freed address, skipping broadcast and network", "10.0.1.0/29", []op{
			// .0 network, .1 gateway, .2-.6 usable, .7 broadcast.
			{"alloc", "10.0.1.2/29"}, {"alloc", "10.0.1.3/29"}, {"alloc", "10.0.1.4/29"},
			{"alloc", "10.0.1.5/29"}, {"alloc", "10.0.1.6/29"},
			{"release", "10.0.1.3"}, {"alloc", "10.0.1.3/29"},
			{"release", "10.0.1.2"}, {"alloc", "10.0.1.2/29"},
		}},
		{"the gateway is never released", "10.0.1.0/30", []op{
			{"release", "10.0.1.1"}, {"alloc", "10.0.1.2/30"}, {"alloc", "exhausted"},
		}},
		{"releasing a free address is harmless", "10.0.1.0/29", []op{
			{"release", "10.0.1.4"}, {"alloc", "10.0.1.2/29"},
		}},
		{"a /30 has one task address", "10.0.1.0/30", []op{
			{"alloc", "10.0.1.2/30"}, {"alloc", "exhausted"}, {"release", "10.0.1.2"}, {"alloc", "10.0.1.2/30"},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := NewIPAM()
			a.AddNetwork("net", netip.MustParsePrefix(tc.subnet))
			for i, o := range tc.ops {
				switch o.kind {
				case "alloc":
					p, err := a.Allocate("net")
					if o.addr == "exhausted" {
						if !errors.Is(err, ErrExhausted) {
							t.Fatalf("op %d: Allocate = %v, %v; want ErrExhausted", i, p, err)
						}
						continue
					}
					if err != nil || p.String() != o.addr {
						t.Fatalf("op %d: Allocate = %v, %v; want %s", i, p, err, o.addr)
					}
				case "release":
					a.Release("net", netip.MustParseAddr(o.addr))
				case "used":
					a.MarkUsed("net", netip.MustParseAddr(o.addr))
				}
			}
		})
	}
}

// TestIPAMExhaustion: every usable address of a /24 (253 of them) is handed
// out once, and then allocation fails with ErrExhausted naming the network.
func TestIPAMExhaustion(t *testing.T) {
	a := NewIPAM()
	a.AddNetwork("net", netip.MustParsePrefix("10.9.0.0/24"))
	seen := map[string]bool{}
	for _, s := range allocN(t, a, "net", 253) {
		p := netip.MustParsePrefix(s)
		if seen[s] || p.Addr() == netip.MustParseAddr("10.9.0.0") || p.Addr() == netip.MustParseAddr("10.9.0.1") || p.Addr() == netip.MustParseAddr("10.9.0.255") {
			t.Fatalf("bad or repeated address %s", s)
		}
		seen[s] = true
	}
	_, err := a.Allocate("net")
	if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "10.9.0.0/24") {
		t.Fatalf("Allocate on a full network = %v, want ErrExhausted naming the subnet", err)
	}
}

// TestIPAMNetworks: networks are independent; unknown and removed networks
// fail; adding a known network again keeps its allocations.
func TestIPAMNetworks(t *testing.T) {
	a := NewIPAM()
	a.AddNetwork("a", netip.MustParsePrefix("10.0.1.0/24"))
	a.AddNetwork("b", netip.MustParsePrefix("10.0.2.0/24"))
	if got := allocN(t, a, "a", 2); strings.Join(got, ",") != "10.0.1.2/24,10.0.1.3/24" {
		t.Errorf("network a: %v", got)
	}
	if got := allocN(t, a, "b", 1); got[0] != "10.0.2.2/24" {
		t.Errorf("network b: %v", got)
	}
	a.AddNetwork("a", netip.MustParsePrefix("10.0.1.0/24"))
	if got := allocN(t, a, "a", 1); got[0] != "10.0.1.4/24" {
		t.Errorf("re-adding network a reset it: %v", got)
	}
	a.MarkUsed("ghost", netip.MustParseAddr("10.0.1.9"))
	a.Release("ghost", netip.MustParseAddr("10.0.1.9"))
	if _, err := a.Allocate("ghost"); err == nil || !strings.Contains(err.Error(), "not known") {
		t.Errorf("Allocate(unknown) = %v", err)
	}
	a.RemoveNetwork("a")
	if _, err := a.Allocate("a"); err == nil {
		t.Error("Allocate after RemoveNetwork succeeded")
	}
	a.AddNetwork("a", netip.MustParsePrefix("10.0.1.0/24"))
	if got := allocN(t, a, "a", 1); got[0] != "10.0.1.2/24" {
		t.Errorf("a network added again after removal starts afresh: %v", got)
	}
}

// TestIPAMConcurrent: concurrent allocations never hand out an address
// twice (run with -race).
func TestIPAMConcurrent(t *testing.T) {
	a := NewIPAM()
	a.AddNetwork("net", netip.MustParsePrefix("10.0.0.0/22"))
	const workers, each = 4, 200
	results := make(chan string, workers*each)
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		go func() {
			for i := 0; i < each; i++ {
				p, err := a.Allocate("net")
				if err != nil {
					errs <- err
					return
				}
				results <- p.String()
			}
			errs <- nil
		}()
	}
	for w := 0; w < workers; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(results)
	seen := map[string]bool{}
	for r := range results {
		if seen[r] {
			t.Fatalf("%s handed out twice", r)
		}
		seen[r] = true
	}
	if len(seen) != workers*each {
		t.Fatalf("%d addresses, want %d", len(seen), workers*each)
	}
}

// TestIPAMTinySubnets: a /31 or /32 subnet (which a compose file may pin)
// has no address for a task; the IPAM refuses the network rather than hand
// out an address outside the subnet.
func TestIPAMTinySubnets(t *testing.T) {
	for _, subnet := range []string{"10.0.1.0/31", "10.0.1.0/32"} {
		t.Run(subnet, func(t *testing.T) {
			a := NewIPAM()
			pfx := netip.MustParsePrefix(subnet)
			if err := a.AddNetwork("net", pfx); err == nil {
				t.Fatalf("AddNetwork(%s) accepted a subnet with no room for a task", pfx)
			}
			if p, err := a.Allocate("net"); err == nil {
				t.Fatalf("Allocate = %s in a refused network", p)
			}
		})
	}
}

// TestIPAMIPv6Subnet: a pinned IPv6 subnet (compose only checks that a
// subnet is a CIDR) must fail allocation with an error, not panic the
// leader.
func TestIPAMIPv6Subnet(t *testing.T) {
	a := NewIPAM()
	if err := a.AddNetwork("net", netip.MustParsePrefix("fd00::/120")); err == nil {
		t.Error("AddNetwork accepted an IPv6 subnet; skiff's overlay is IPv4 only")
	}
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("Allocate panicked: %v", r)
			}
		}()
		if p, err := a.Allocate("net"); err == nil {
			t.Errorf("Allocate in an IPv6 subnet = %s, want an error (skiff's overlay is IPv4 only)", p)
		}
	}()
}
