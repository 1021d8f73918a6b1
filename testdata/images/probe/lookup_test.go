package main

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

func TestLookupPrintsEveryAddress(t *testing.T) {
	dns := startFakeDNS(t, map[string][]netip.Addr{
		"tasks.web.test.": {netip.MustParseAddr("10.0.0.7"), netip.MustParseAddr("10.0.0.8")},
	})

	var out bytes.Buffer
	if err := lookup(testContext(t), dns, "tasks.web.test.", &out); err != nil {
		t.Fatalf("lookup: %v", err)
	}
	if got, want := out.String(), "10.0.0.7\n10.0.0.8\n"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
}

func TestLookupFailsForUnknownName(t *testing.T) {
	dns := startFakeDNS(t, nil)
	var out bytes.Buffer
	if err := lookup(testContext(t), dns, "missing.test.", &out); err == nil {
		t.Errorf("lookup of an unknown name succeeded with %q", out.String())
	}
}

func TestLookupIPLiteral(t *testing.T) {
	var out bytes.Buffer
	if err := runLookup(testContext(t), []string{"127.0.0.1"}, &out); err != nil {
		t.Fatalf("lookup: %v", err)
	}
	if out.String() != "127.0.0.1\n" {
		t.Errorf("output %q, want %q", out.String(), "127.0.0.1\n")
	}
}

// startFakeDNS serves A records for names on a loopback UDP port and
// answers NXDOMAIN for anything else. It returns a resolver that sends all
// its queries there, in place of the servers in /etc/resolv.conf.
func startFakeDNS(t *testing.T, names map[string][]netip.Addr) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, peer, err := pc.ReadFrom(buf)
			if err != nil {
				return // closed at cleanup
			}
			reply, err := answer(buf[:n], names)
			if err != nil {
				t.Errorf("fake DNS: %v", err)
				continue
			}
			pc.WriteTo(reply, peer)
		}
	}()
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", pc.LocalAddr().String())
		},
	}
}

// answer builds the reply to one DNS query.
func answer(query []byte, names map[string][]netip.Addr) ([]byte, error) {
	var p dnsmessage.Parser
	hdr, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	addrs, known := names[q.Name.String()]
	rcode := dnsmessage.RCodeSuccess
	if !known {
		rcode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: hdr.ID, Response: true, Authoritative: true, RCode: rcode})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	if q.Type == dnsmessage.TypeA {
		for _, a := range addrs {
			rh := dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60}
			if err := b.AResource(rh, dnsmessage.AResource{A: a.As4()}); err != nil {
				return nil, err
			}
		}
	}
	return b.Finish()
}
