package dataplane

import (
	"strings"
	"testing"
)

func TestNamesFitAndParse(t *testing.T) {
	for _, prefix := range []string{"", "sk", "a", "x9z"} {
		n, err := newNames(prefix)
		if err != nil {
			t.Fatalf("prefix %q: %v", prefix, err)
		}
		for _, vni := range []uint32{1, 4096, maxVNI} {
			for kind, name := range map[string]string{bridgeKind: n.bridge(vni), vxlanKind: n.vxlan(vni)} {
				if len(name) > maxIfName {
					t.Errorf("%q is %d bytes", name, len(name))
				}
				if got, ok := n.parseVNI(name, kind); !ok || got != vni {
					t.Errorf("parseVNI(%q) = %d, %v; want %d", name, got, ok, vni)
				}
				if !n.ours(name) || n.isVeth(name) {
					t.Errorf("%q: ours %v, isVeth %v; want true, false", name, n.ours(name), n.isVeth(name))
				}
			}
			for _, task := range []string{"t", "q3x7pb2kd9aamr5wvlyz6e4tno", strings.Repeat("long task id with spaces/", 20)} {
				name := n.veth(task, vni)
				if len(name) > maxIfName || !n.isVeth(name) || !n.ours(name) {
					t.Errorf("veth(%q, %d) = %q: %d bytes, isVeth %v", task, vni, name, len(name), n.isVeth(name))
				}
				if name != n.veth(task, vni) {
					t.Errorf("veth(%q, %d) is not deterministic", task, vni)
				}
				if _, ok := n.parseVNI(name, bridgeKind); ok {
					t.Errorf("veth name %q parses as a bridge", name)
				}
				gotTask, gotVNI, ok := parseVethAlias(vethAlias(task, vni))
				if !ok || gotTask != task || gotVNI != vni {
					t.Errorf("alias of %q/%d parsed as %q/%d/%v", task, vni, gotTask, gotVNI, ok)
				}
			}
		}
	}
}

func TestNamesDistinguish(t *testing.T) {
	n, _ := newNames("")
	if n.veth("a", 1) == n.veth("a", 2) || n.veth("a", 1) == n.veth("b", 1) {
		t.Error("veth names collide across tasks or networks")
	}
	for _, bad := range []string{"sk-br-", "sk-br-0", "sk-br-01", "sk-br-16777216", "sk-br-x", "sk-vx-4096", "xx-br-1"} {
		if _, ok := n.parseVNI(bad, bridgeKind); ok {
			t.Errorf("parseVNI(%q, bridge) accepted it", bad)
		}
	}
	for _, bad := range []string{"", "skiff", "skiff vni=0 task=a", "skiff vni=1 task=", "skiff vni=x task=a", "other vni=1 task=a"} {
		if _, _, ok := parseVethAlias(bad); ok {
			t.Errorf("parseVethAlias(%q) accepted it", bad)
		}
	}
}

func TestNamesRejectBadPrefix(t *testing.T) {
	for _, bad := range []string{"skif", "Sk", "s-", "1s", "s k", "é"} {
		if _, err := newNames(bad); err == nil {
			t.Errorf("prefix %q accepted", bad)
		}
	}
}
