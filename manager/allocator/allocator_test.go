package allocator

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func mustPool(t *testing.T, cidr string, bits int) Pool {
	t.Helper()
	p, err := ParsePool(cidr, bits)
	if err != nil {
		t.Fatalf("ParsePool(%q, %d): %v", cidr, bits, err)
	}
	return p
}

func prefixes(t *testing.T, list ...string) []netip.Prefix {
	t.Helper()
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// TestParsePool accepts IPv4 pools with a subnet size between the pool's
// own prefix and /30, and masks the pool's address.
func TestParsePool(t *testing.T) {
	cases := []struct {
		cidr    string
		bits    int
		want    string
		wantErr string
	}{
		{"10.0.0.0/8", 24, "10.0.0.0/8", ""},
		{"10.1.2.3/8", 24, "10.0.0.0/8", ""},                // host bits are masked
		{"198.19.0.0/16", 16, "198.19.0.0/16", ""},          // one subnet: the pool itself
		{"198.19.0.0/16", 30, "198.19.0.0/16", ""},          // smallest subnet
		{"0.0.0.0/0", 8, "0.0.0.0/0", ""},                   // whole space
		{"10.0.0.0/8", 7, "", "must be between /8 and /30"}, // subnet larger than the pool
		{"10.0.0.0/8", 31, "", "must be between /8 and /30"},
		{"10.0.0.0/8", 0, "", "must be between /8 and /30"},
		{"10.0.0.0/8", -1, "", "must be between /8 and /30"},
		{"10.0.0.0", 24, "", "parse address pool"}, // no prefix length
		{"", 24, "", "parse address pool"},
		{"10.0.0.0/33", 24, "", "parse address pool"},
		{"banana/8", 24, "", "parse address pool"},
		{"fd00::/8", 24, "", "only IPv4"},
		{"::ffff:10.0.0.0/104", 120, "", "only IPv4"}, // IPv4-mapped IPv6 is IPv6
	}
	for _, tc := range cases {
		t.Run(tc.cidr, func(t *testing.T) {
			p, err := ParsePool(tc.cidr, tc.bits)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParsePool(%q, %d) = %v, %v; want error containing %q", tc.cidr, tc.bits, p, err, tc.wantErr)
				}
				if p != (Pool{}) {
					t.Errorf("error came with a pool %v", p)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePool(%q, %d): %v", tc.cidr, tc.bits, err)
			}
			if p.Prefix.String() != tc.want || p.Bits != tc.bits {
				t.Errorf("pool = %v /%d, want %s /%d", p.Prefix, p.Bits, tc.want, tc.bits)
			}
		})
	}
}

// TestAllocate picks the lowest free VNI from 4096 and the first subnet of
// the pool that overlaps no used one; the gateway is the subnet's first
// address.
func TestAllocate(t *testing.T) {
	cases := []struct {
		name        string
		pool        string
		bits        int
		usedVNIs    []uint32
		usedSubnets []string
		wantVNI     uint32
		wantSubnet  string
		wantGateway string
	}{
		{"empty", "10.0.0.0/8", 24, nil, nil, 4096, "10.0.0.0/24", "10.0.0.1"},
		{"first taken", "10.0.0.0/8", 24, []uint32{4096}, []string{"10.0.0.0/24"}, 4097, "10.0.1.0/24", "10.0.1.1"},
		{"lowest gap", "10.0.0.0/8", 24, []uint32{4096, 4098, 4097, 4100}, []string{"10.0.0.0/24", "10.0.2.0/24"}, 4099, "10.0.1.0/24", "10.0.1.1"},
		{"VNIs below 4096 are not skiff's", "10.0.0.0/8", 24, []uint32{1, 100, 4095}, nil, 4096, "10.0.0.0/24", "10.0.0.1"},
		{"gap only after a run", "10.0.0.0/8", 24, []uint32{4096, 4097, 4098, 4099, 4100}, nil, 4101, "10.0.0.0/24", "10.0.0.1"},
		{"used subnet outside the pool", "10.0.0.0/8", 24, nil, []string{"192.168.0.0/24", "172.16.0.0/12"}, 4096, "10.0.0.0/24", "10.0.0.1"},
		{"pinned larger subnet covers many", "10.0.0.0/8", 24, nil, []string{"10.0.0.0/16"}, 4096, "10.1.0.0/24", "10.1.0.1"},
		{"pinned smaller subnet blocks its container", "10.0.0.0/8", 24, nil, []string{"10.0.0.128/25"}, 4096, "10.0.1.0/24", "10.0.1.1"},
		{"pinned subnet after the first", "10.0.0.0/8", 24, nil, []string{"10.0.1.0/24"}, 4096, "10.0.0.0/24", "10.0.0.1"},
		{"pinned /23 written with host bits", "10.0.0.0/8", 24, nil, []string{"10.0.1.0/23"}, 4096, "10.0.2.0/24", "10.0.2.1"},
		{"pinned host route", "10.0.0.0/8", 24, nil, []string{"10.0.0.7/32"}, 4096, "10.0.1.0/24", "10.0.1.1"},
		{"pool offset", "198.19.0.0/16", 26, nil, []string{"198.19.0.0/26"}, 4096, "198.19.0.64/26", "198.19.0.65"},
		{"pool not at a byte boundary", "10.0.0.0/20", 22, nil, []string{"10.0.0.0/22", "10.0.4.0/22"}, 4096, "10.0.8.0/22", "10.0.8.1"},
		{"used subnet containing the whole pool", "10.0.0.0/8", 24, nil, []string{"10.0.0.0/9"}, 4096, "10.128.0.0/24", "10.128.0.1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := mustPool(t, tc.pool, tc.bits)
			used := map[uint32]bool{}
			for _, v := range tc.usedVNIs {
				used[v] = true
			}
			got, err := p.Allocate(used, prefixes(t, tc.usedSubnets...))
			if err != nil {
				t.Fatalf("Allocate: %v", err)
			}
			if got.VNI != tc.wantVNI || got.Subnet.String() != tc.wantSubnet || got.Gateway.String() != tc.wantGateway {
				t.Errorf("Allocate = VNI %d %s gw %s, want VNI %d %s gw %s",
					got.VNI, got.Subnet, got.Gateway, tc.wantVNI, tc.wantSubnet, tc.wantGateway)
			}
			if !p.Prefix.Contains(got.Subnet.Addr()) || got.Subnet.Bits() != tc.bits {
				t.Errorf("subnet %s is not a /%d of %s", got.Subnet, tc.bits, p.Prefix)
			}
		})
	}
}

// TestAllocateSequence: allocating repeatedly, feeding each result back as
// used, hands out consecutive distinct VNIs and non-overlapping subnets.
func TestAllocateSequence(t *testing.T) {
	p := mustPool(t, "10.10.0.0/16", 24)
	usedVNI := map[uint32]bool{}
	var usedSubnets []netip.Prefix
	for i := 0; i < 256; i++ {
		got, err := p.Allocate(usedVNI, usedSubnets)
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		if got.VNI != FirstVNI+uint32(i) {
			t.Fatalf("allocation %d: VNI %d", i, got.VNI)
		}
		for _, u := range usedSubnets {
			if u.Overlaps(got.Subnet) {
				t.Fatalf("allocation %d: %s overlaps %s", i, got.Subnet, u)
			}
		}
		usedVNI[got.VNI] = true
		usedSubnets = append(usedSubnets, got.Subnet)
	}
	// The /16 holds exactly 256 /24s.
	if _, err := p.Allocate(usedVNI, usedSubnets); !errors.Is(err, ErrExhausted) {
		t.Fatalf("257th allocation = %v, want ErrExhausted", err)
	}
}

// TestAllocateExhausted: a pool with no free subnet fails with
// ErrExhausted and names the pool.
func TestAllocateExhausted(t *testing.T) {
	cases := []struct {
		name string
		pool string
		bits int
		used []string
	}{
		{"single subnet used", "10.0.0.0/24", 24, []string{"10.0.0.0/24"}},
		{"covered by a larger prefix", "10.0.0.0/24", 26, []string{"10.0.0.0/8"}},
		{"every quarter used", "10.0.0.0/24", 26, []string{"10.0.0.0/26", "10.0.0.64/26", "10.0.0.128/26", "10.0.0.192/26"}},
		{"a host in each quarter", "10.0.0.0/24", 26, []string{"10.0.0.1/32", "10.0.0.65/32", "10.0.0.129/32", "10.0.0.193/32"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := mustPool(t, tc.pool, tc.bits)
			got, err := p.Allocate(nil, prefixes(t, tc.used...))
			if !errors.Is(err, ErrExhausted) {
				t.Fatalf("Allocate = %v, %v; want ErrExhausted", got, err)
			}
			if !strings.Contains(err.Error(), tc.pool) {
				t.Errorf("error %q does not name the pool", err)
			}
			if got != (Network{}) {
				t.Errorf("error came with a network %v", got)
			}
		})
	}
}

// TestAllocateVNISpace: the VNI search stays within 24 bits. (Exhausting
// all 16.7 million VNIs would need a map of every one of them, so only the
// top of the range is checked.)
func TestAllocateVNISpace(t *testing.T) {
	if FirstVNI != 4096 || maxVNI != 1<<24-1 {
		t.Fatalf("FirstVNI %d, maxVNI %d", FirstVNI, maxVNI)
	}
	p := mustPool(t, "10.0.0.0/8", 24)
	used := map[uint32]bool{}
	for v := uint32(FirstVNI); v < 4096+1000; v++ {
		used[v] = true
	}
	got, err := p.Allocate(used, nil)
	if err != nil || got.VNI != 5096 {
		t.Fatalf("Allocate = %d, %v; want 5096", got.VNI, err)
	}
}

// TestPinnedSubnetOverlap: a network that pins its subnet must not overlap
// any allocated subnet (the caller checks with netip.Prefix.Overlaps against
// the same used list the allocator honours), and the allocator never hands
// out a subnet overlapping a pinned one.
func TestPinnedSubnetOverlap(t *testing.T) {
	p := mustPool(t, "10.0.0.0/8", 24)
	first, err := p.Allocate(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		pinned   string
		overlaps bool
	}{
		{"10.0.0.0/24", true},   // the same subnet
		{"10.0.0.128/25", true}, // inside it
		{"10.0.0.0/16", true},   // around it
		{"10.0.1.0/24", false},  // next to it
		{"192.168.1.0/24", false},
	}
	for _, tc := range cases {
		t.Run(tc.pinned, func(t *testing.T) {
			pinned := netip.MustParsePrefix(tc.pinned)
			if got := overlapsAny(pinned, []netip.Prefix{first.Subnet}); got != tc.overlaps {
				t.Errorf("overlapsAny(%s, [%s]) = %v, want %v", pinned, first.Subnet, got, tc.overlaps)
			}
			// Whatever is pinned, the next allocation avoids it and the
			// first network.
			next, err := p.Allocate(map[uint32]bool{first.VNI: true}, []netip.Prefix{first.Subnet, pinned})
			if err != nil {
				t.Fatal(err)
			}
			if next.Subnet.Overlaps(pinned) || next.Subnet.Overlaps(first.Subnet) {
				t.Errorf("next allocation %s overlaps %s or %s", next.Subnet, pinned, first.Subnet)
			}
		})
	}
}
