package dns_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	skiffdns "github.com/skiffhq/skiff/overlay/dns"
	"github.com/skiffhq/skiff/overlay/endpoints"
)

// upstream is a resolver the servers under test forward to. It knows one
// name, example.com, and counts the queries it gets.
type upstream struct {
	addr    string
	queries atomic.Int64
	stop    func()
}

const upstreamAnswer = "192.0.2.1"

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	up := &upstream{}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		up.queries.Add(1)
		m := new(dns.Msg)
		m.SetReply(req)
		q := req.Question[0]
		switch {
		case q.Name == "example.com." && q.Qtype == dns.TypeA:
			rr, _ := dns.NewRR("example.com. 60 IN A " + upstreamAnswer)
			m.Answer = append(m.Answer, rr)
		case q.Name != "example.com.":
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	pc, l := listenBoth(t, "127.0.0.1")
	up.addr = l.Addr().String()
	servers := []*dns.Server{{PacketConn: pc, Handler: handler}, {Listener: l, Handler: handler}}
	done := make(chan struct{}, len(servers))
	started := make(chan struct{}, len(servers))
	for _, s := range servers {
		s.NotifyStartedFunc = func() { started <- struct{}{} }
		go func() {
			defer func() { done <- struct{}{} }()
			_ = s.ActivateAndServe()
		}()
	}
	for range servers {
		<-started
	}
	stopped := false
	up.stop = func() {
		if stopped {
			return
		}
		stopped = true
		for _, s := range servers {
			_ = s.Shutdown()
		}
		for range servers {
			<-done
		}
	}
	t.Cleanup(up.stop)
	return up
}

// listenBoth binds UDP and TCP on one free port of host.
func listenBoth(t *testing.T, host string) (net.PacketConn, net.Listener) {
	t.Helper()
	for range 10 {
		pc, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err == nil {
			return pc, l
		}
		pc.Close()
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatal(err)
		}
	}
	t.Fatal("no port free for both UDP and TCP")
	return nil, nil
}

// deadUpstream returns an address where nothing listens: UDP queries to it
// are refused by the kernel at once.
func deadUpstream(t *testing.T) string {
	t.Helper()
	pc, l := listenBoth(t, "127.0.0.1")
	addr := l.Addr().String()
	pc.Close()
	l.Close()
	return addr
}

// startServer starts a DNS server for network on 127.0.0.1 and stops it
// when the test ends.
func startServer(t *testing.T, network string, src skiffdns.Source, upstreams ...string) *skiffdns.Server {
	t.Helper()
	s, err := skiffdns.Start(context.Background(), skiffdns.Config{
		Addr:            netip.MustParseAddrPort("127.0.0.1:0"),
		NetworkID:       network,
		Resolver:        skiffdns.NewResolver(src),
		Upstreams:       upstreams,
		UpstreamTimeout: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close dns server: %v", err)
		}
	})
	return s
}

// ask sends one query from the source address from (an endpoint's, to be
// that querier) over transport ("udp" or "tcp").
func ask(t *testing.T, server netip.AddrPort, from, transport, name string, qtype uint16) *dns.Msg {
	t.Helper()
	local := net.ParseIP(from)
	var laddr net.Addr = &net.UDPAddr{IP: local}
	if transport == "tcp" {
		laddr = &net.TCPAddr{IP: local}
	}
	c := &dns.Client{Net: transport, Timeout: 5 * time.Second, Dialer: &net.Dialer{LocalAddr: laddr}}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	resp, _, err := c.Exchange(m, server.String())
	if err != nil {
		t.Fatalf("query %s %s from %s over %s: %v", dns.TypeToString[qtype], name, from, transport, err)
	}
	return resp
}

// addrsOf returns the A and AAAA addresses of an answer, sorted.
func addrsOf(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.AAAA:
			out = append(out, rr.AAAA.String())
		}
	}
	slices.Sort(out)
	return out
}

// newTable returns an endpoint table of node h1.
func newTable(t *testing.T) *endpoints.Table {
	t.Helper()
	tbl, err := endpoints.New(endpoints.Config{Node: "h1"})
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
