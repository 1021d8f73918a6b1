package dns_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/skiffhq/skiff/overlay"
	skiffdns "github.com/skiffhq/skiff/overlay/dns"
	"github.com/skiffhq/skiff/overlay/endpoints"
)

const net1 = "net1"

// Queriers are endpoints, so each test query comes from the loopback
// address of the endpoint it acts as.
const (
	web1     = "127.0.0.11" // app_web, links redis as db
	web2     = "127.0.0.12" // app_web
	redis    = "127.0.0.13" // app_redis
	api      = "127.0.0.14" // app_api, network alias backend
	otherWeb = "127.0.0.21" // other_web: another stack's web
	stranger = "127.0.0.99" // no endpoint
)

// fixture publishes a stack app (web ×2, redis, api) and another stack's
// web in net1, and app's web in net2, into a table.
func fixture(t *testing.T) *endpoints.Table {
	t.Helper()
	tbl := newTable(t)
	task := func(network, ip, stack, short string, mod func(*overlay.Endpoint)) {
		e := overlay.Endpoint{
			NetworkID: network, VNI: 4096, IP: netip.MustParseAddr(ip), VTEP: netip.MustParseAddr("198.18.0.1"),
			TaskID: "t" + ip, Service: stack + "_" + short, Stack: stack, ShortName: short,
		}
		if mod != nil {
			mod(&e)
		}
		if err := tbl.Publish(e); err != nil {
			t.Fatal(err)
		}
	}
	task(net1, web1, "app", "web", func(e *overlay.Endpoint) { e.Links = map[string]string{"db": "redis"} })
	task(net1, web2, "app", "web", nil)
	task(net1, redis, "app", "redis", nil)
	task(net1, api, "app", "api", func(e *overlay.Endpoint) { e.Aliases = []string{"backend"} })
	task(net1, otherWeb, "other", "web", nil)
	task("net2", "127.0.0.31", "app", "web", nil)
	// The host's own address in the network has no names.
	if err := tbl.Publish(overlay.Endpoint{NetworkID: net1, IP: netip.MustParseAddr("127.0.0.1")}); err != nil {
		t.Fatal(err)
	}
	return tbl
}

func TestServiceNames(t *testing.T) {
	up := startUpstream(t)
	s := startServer(t, net1, fixture(t), up.addr)
	for _, tc := range []struct {
		from, name string
		want       []string
	}{
		{web1, "web.", []string{web1, web2}},
		{web1, "app_web.", []string{web1, web2}},
		{web1, "WEB.", []string{web1, web2}},
		{redis, "App_Web.", []string{web1, web2}},
		{redis, "tasks.web.", []string{web1, web2}},
		{redis, "tasks.app_web.", []string{web1, web2}},
		{api, "redis.", []string{redis}},
		// Short names are the querier's stack's.
		{otherWeb, "web.", []string{otherWeb}},
		{otherWeb, "app_web.", []string{web1, web2}},
		{web1, "other_web.", []string{otherWeb}},
		// Network aliases answer for everyone.
		{web1, "backend.", []string{api}},
		{otherWeb, "backend.", []string{api}},
		// A querier the table does not know gets unambiguous short names.
		{stranger, "redis.", []string{redis}},
		{stranger, "app_web.", []string{web1, web2}},
	} {
		resp := ask(t, s.Addr(), tc.from, "udp", tc.name, dns.TypeA)
		if resp.Rcode != dns.RcodeSuccess || !resp.Authoritative {
			t.Errorf("%s from %s: rcode %s, authoritative %v", tc.name, tc.from, dns.RcodeToString[resp.Rcode], resp.Authoritative)
		}
		if got := addrsOf(resp); !slices.Equal(got, tc.want) {
			t.Errorf("%s from %s = %v, want %v", tc.name, tc.from, got, tc.want)
		}
	}
	if n := up.queries.Load(); n != 0 {
		t.Errorf("%d known names were forwarded", n)
	}
}

func TestLinkAliasOnlyForItsQuerier(t *testing.T) {
	up := startUpstream(t)
	s := startServer(t, net1, fixture(t), up.addr)
	if got := addrsOf(ask(t, s.Addr(), web1, "udp", "db.", dns.TypeA)); !slices.Equal(got, []string{redis}) {
		t.Fatalf("db from web1 (which links redis:db) = %v, want redis", got)
	}
	// web2 is the same service but its endpoint has no link (the link is
	// per endpoint); it, and everyone else, gets db from upstream.
	for _, from := range []string{web2, api, stranger} {
		resp := ask(t, s.Addr(), from, "udp", "db.", dns.TypeA)
		if resp.Rcode != dns.RcodeNameError || len(resp.Answer) != 0 {
			t.Errorf("db from %s: %s %v, want upstream's NXDOMAIN", from, dns.RcodeToString[resp.Rcode], addrsOf(resp))
		}
	}
}

func TestOtherNetworksAreNotAnswered(t *testing.T) {
	tbl := fixture(t)
	s1 := startServer(t, net1, tbl)
	s2 := startServer(t, "net2", tbl)
	if got := addrsOf(ask(t, s2.Addr(), stranger, "udp", "app_web.", dns.TypeA)); !slices.Equal(got, []string{"127.0.0.31"}) {
		t.Fatalf("app_web in net2 = %v", got)
	}
	if got := addrsOf(ask(t, s1.Addr(), stranger, "udp", "app_web.", dns.TypeA)); slices.Contains(got, "127.0.0.31") {
		t.Fatalf("net1's server answered net2's endpoint: %v", got)
	}
}

func TestAAAAOfKnownNameIsEmptyNoError(t *testing.T) {
	up := startUpstream(t)
	s := startServer(t, net1, fixture(t), up.addr)
	for _, qtype := range []uint16{dns.TypeAAAA, dns.TypeMX, dns.TypeTXT} {
		resp := ask(t, s.Addr(), web1, "udp", "web.", qtype)
		if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 0 {
			t.Errorf("%s web: %s with %d answers, want NOERROR and none", dns.TypeToString[qtype], dns.RcodeToString[resp.Rcode], len(resp.Answer))
		}
	}
	if n := up.queries.Load(); n != 0 {
		t.Errorf("%d queries of a known name were forwarded", n)
	}
	// An unknown name's AAAA is the upstream's business.
	if resp := ask(t, s.Addr(), web1, "udp", "nowhere.example.", dns.TypeAAAA); resp.Rcode != dns.RcodeNameError {
		t.Errorf("AAAA of an unknown name: %s, want upstream's NXDOMAIN", dns.RcodeToString[resp.Rcode])
	}
}

func TestAnswersHaveShortTTL(t *testing.T) {
	s := startServer(t, net1, fixture(t))
	resp := ask(t, s.Addr(), web1, "udp", "web.", dns.TypeA)
	for _, rr := range resp.Answer {
		if rr.Header().Ttl != uint32(skiffdns.DefaultTTL/time.Second) {
			t.Fatalf("TTL %d, want %v", rr.Header().Ttl, skiffdns.DefaultTTL)
		}
	}
	if skiffdns.DefaultTTL > 5*time.Second {
		t.Fatalf("DefaultTTL %v is over 5 s", skiffdns.DefaultTTL)
	}
}

func TestTCP(t *testing.T) {
	up := startUpstream(t)
	s := startServer(t, net1, fixture(t), up.addr)
	if got := addrsOf(ask(t, s.Addr(), web1, "tcp", "db.", dns.TypeA)); !slices.Equal(got, []string{redis}) {
		t.Fatalf("db over TCP from web1 = %v", got)
	}
	if got := addrsOf(ask(t, s.Addr(), web1, "tcp", "example.com.", dns.TypeA)); !slices.Equal(got, []string{upstreamAnswer}) {
		t.Fatalf("forwarded over TCP = %v", got)
	}
}

func TestUnknownNamesForwardedElseRefused(t *testing.T) {
	up := startUpstream(t)
	dead := deadUpstream(t)
	s := startServer(t, net1, fixture(t), dead, up.addr)

	// The dead upstream is skipped for the live one.
	resp := ask(t, s.Addr(), web1, "udp", "example.com.", dns.TypeA)
	if got := addrsOf(resp); resp.Rcode != dns.RcodeSuccess || !slices.Equal(got, []string{upstreamAnswer}) {
		t.Fatalf("example.com: %s %v, want the upstream's answer", dns.RcodeToString[resp.Rcode], got)
	}
	up.stop()
	for _, transport := range []string{"udp", "tcp"} {
		if resp := ask(t, s.Addr(), web1, transport, "example.com.", dns.TypeA); resp.Rcode != dns.RcodeRefused {
			t.Errorf("with every upstream down, over %s: %s, want REFUSED", transport, dns.RcodeToString[resp.Rcode])
		}
	}
	// Known names do not need an upstream.
	if got := addrsOf(ask(t, s.Addr(), web1, "udp", "web.", dns.TypeA)); len(got) != 2 {
		t.Errorf("web with upstreams down = %v", got)
	}

	none := startServer(t, net1, fixture(t))
	if resp := ask(t, none.Addr(), web1, "udp", "example.com.", dns.TypeA); resp.Rcode != dns.RcodeRefused {
		t.Errorf("with no upstreams: %s, want REFUSED", dns.RcodeToString[resp.Rcode])
	}
}

func TestAnswerOrderVaries(t *testing.T) {
	tbl := newTable(t)
	for i := range 8 {
		ip := netip.AddrFrom4([4]byte{10, 0, 1, byte(i + 1)})
		if err := tbl.Publish(overlay.Endpoint{NetworkID: net1, IP: ip, Service: "app_web", Stack: "app", ShortName: "web"}); err != nil {
			t.Fatal(err)
		}
	}
	s := startServer(t, net1, tbl)
	firsts := map[string]bool{}
	for range 50 {
		resp := ask(t, s.Addr(), stranger, "udp", "app_web.", dns.TypeA)
		if len(resp.Answer) != 8 {
			t.Fatalf("%d answers, want 8", len(resp.Answer))
		}
		firsts[resp.Answer[0].(*dns.A).A.String()] = true
	}
	// 50 shuffles of 8 leave every task first once with near certainty;
	// 2 is a bound that a working shuffle cannot miss.
	if len(firsts) < 2 {
		t.Fatalf("the first answer was always %v", firsts)
	}
}

func TestLargeAnswersTruncatedOverUDP(t *testing.T) {
	tbl := newTable(t)
	for i := range 100 {
		ip := netip.AddrFrom4([4]byte{10, 0, 2, byte(i + 1)})
		if err := tbl.Publish(overlay.Endpoint{NetworkID: net1, IP: ip, Service: "app_big", Stack: "app", ShortName: "big"}); err != nil {
			t.Fatal(err)
		}
	}
	s := startServer(t, net1, tbl)
	resp := ask(t, s.Addr(), stranger, "udp", "app_big.", dns.TypeA)
	resp.Compress = true // as it was sent, to measure it
	if !resp.Truncated || len(resp.Answer) >= 100 || resp.Len() > dns.MinMsgSize {
		t.Fatalf("over UDP: truncated %v, %d answers, %d bytes; want TC within 512 bytes", resp.Truncated, len(resp.Answer), resp.Len())
	}
	if resp := ask(t, s.Addr(), stranger, "tcp", "app_big.", dns.TypeA); resp.Truncated || len(resp.Answer) != 100 {
		t.Fatalf("over TCP: truncated %v, %d answers; want all 100", resp.Truncated, len(resp.Answer))
	}
}

func TestCloseReleasesTheAddress(t *testing.T) {
	tbl := fixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	cfg := skiffdns.Config{Addr: netip.MustParseAddrPort("127.0.0.1:0"), NetworkID: net1, Resolver: skiffdns.NewResolver(tbl)}
	s, err := skiffdns.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr().Addr() != cfg.Addr.Addr() || s.Addr().Port() == 0 {
		t.Fatalf("Addr() = %s, want 127.0.0.1 and the port picked", s.Addr())
	}
	cfg.Addr = s.Addr()
	// Ending the context stops the server; Close then only waits.
	cancel()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The same address is free again, for a server started anew.
	s2, err := skiffdns.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("restart on %s: %v", cfg.Addr, err)
	}
	if got := addrsOf(ask(t, s2.Addr(), web1, "udp", "web.", dns.TypeA)); len(got) != 2 {
		t.Fatalf("restarted server answered %v", got)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s2.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestStartRejectsBadConfig(t *testing.T) {
	tbl := fixture(t)
	busy := startServer(t, net1, tbl)
	for name, cfg := range map[string]skiffdns.Config{
		"no address":  {NetworkID: net1, Resolver: skiffdns.NewResolver(tbl)},
		"no network":  {Addr: netip.MustParseAddrPort("127.0.0.1:0"), Resolver: skiffdns.NewResolver(tbl)},
		"no resolver": {Addr: netip.MustParseAddrPort("127.0.0.1:0"), NetworkID: net1},
		"in use":      {Addr: busy.Addr(), NetworkID: net1, Resolver: skiffdns.NewResolver(tbl)},
		"bad upstream": {Addr: netip.MustParseAddrPort("127.0.0.1:0"), NetworkID: net1, Resolver: skiffdns.NewResolver(tbl),
			Upstreams: []string{"not an address"}},
	} {
		if s, err := skiffdns.Start(context.Background(), cfg); err == nil {
			s.Close()
			t.Errorf("%s: Start succeeded", name)
		}
	}
}

func TestOwnAddressIsNeverAnUpstream(t *testing.T) {
	pc, l := listenBoth(t, "127.0.0.1")
	addr := netip.MustParseAddrPort(l.Addr().String())
	pc.Close()
	l.Close()
	s, err := skiffdns.Start(context.Background(), skiffdns.Config{
		Addr: addr, NetworkID: net1, Resolver: skiffdns.NewResolver(fixture(t)),
		Upstreams: []string{addr.String()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Were it forwarded to itself, the query would loop until timeouts.
	if resp := ask(t, s.Addr(), web1, "udp", "example.com.", dns.TypeA); resp.Rcode != dns.RcodeRefused {
		t.Fatalf("a name with only the server itself upstream: %s, want REFUSED", dns.RcodeToString[resp.Rcode])
	}
}
