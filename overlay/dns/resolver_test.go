package dns_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/skiffhq/skiff/overlay"
	skiffdns "github.com/skiffhq/skiff/overlay/dns"
)

func lookup(r skiffdns.Resolver, from, name string) []string {
	var out []string
	for _, a := range r.Lookup(net1, netip.MustParseAddr(from), name) {
		out = append(out, a.String())
	}
	return out
}

func TestResolverPrecedence(t *testing.T) {
	tbl := fixture(t)
	// A service of app named db: the link alias db must still win for the
	// querier that has it.
	if err := tbl.Publish(overlay.Endpoint{NetworkID: net1, IP: netip.MustParseAddr("127.0.0.15"), Service: "app_db", Stack: "app", ShortName: "db"}); err != nil {
		t.Fatal(err)
	}
	r := skiffdns.NewResolver(tbl)
	if got := lookup(r, web1, "db"); !slices.Equal(got, []string{redis}) {
		t.Errorf("db from the linking querier = %v, want the link's redis", got)
	}
	if got := lookup(r, web2, "db"); !slices.Equal(got, []string{"127.0.0.15"}) {
		t.Errorf("db from another querier = %v, want the service db", got)
	}
	// A stranger cannot tell app's web from other's.
	if got := lookup(r, stranger, "web"); got != nil {
		t.Errorf("an ambiguous short name from an unknown querier = %v, want nothing", got)
	}
	// Links do not apply under tasks., and unknown names give nothing.
	if got := lookup(r, web1, "tasks.db"); !slices.Equal(got, []string{"127.0.0.15"}) {
		t.Errorf("tasks.db from web1 = %v, want the service db", got)
	}
	for _, name := range []string{"", ".", "nothing", "tasks.", "tasks.nothing"} {
		if got := lookup(r, web1, name); got != nil {
			t.Errorf("%q = %v, want nothing", name, got)
		}
	}
}

func TestHostUpstreams(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	conf := "# written by a test\nsearch example.org\nnameserver 127.0.0.53\nnameserver 2001:db8::1\noptions edns0\n"
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := skiffdns.HostUpstreams(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"127.0.0.53:53", "[2001:db8::1]:53"}; !slices.Equal(got, want) {
		t.Fatalf("HostUpstreams = %v, want %v", got, want)
	}
	if _, err := skiffdns.HostUpstreams(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("a missing resolv.conf gave no error")
	}
}
