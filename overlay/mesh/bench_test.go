package mesh

import (
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"
)

// benchMesh publishes port target of backends under a mesh that does not
// log, and returns the address to reach them directly and through the mesh.
func benchMesh(b *testing.B, proto string, backend netip.Addr, target uint16) map[string]netip.AddrPort {
	b.Helper()
	m := newTestMesh(b, Config{
		Backends: func(string) []netip.Addr { return []netip.Addr{backend} },
		Logger:   slog.New(slog.DiscardHandler),
	})
	port := freePort(b, meshIP)
	mustSet(b, m, Port{Protocol: proto, Published: port, Target: target, Service: "s_bench"})
	return map[string]netip.AddrPort{
		"direct": netip.AddrPortFrom(backend, target),
		"mesh":   netip.AddrPortFrom(meshIP, port),
	}
}

// BenchmarkTCPThroughput streams bytes one way into a sink, directly and
// through the mesh, over loopback. The sink acknowledges the total, so the
// time covers delivery and not just the client's writes.
func BenchmarkTCPThroughput(b *testing.B) {
	const chunk = 1 << 20
	sink := startTCP(b, 1, func(_ netip.Addr, c *net.TCPConn) {
		buf := make([]byte, chunk)
		var n int64
		for {
			k, err := c.Read(buf)
			n += int64(k)
			if err != nil {
				break
			}
		}
		binary.Write(c, binary.BigEndian, n)
	})
	addrs := benchMesh(b, "tcp", sink.addrs[0], sink.port)

	for _, via := range []string{"direct", "mesh"} {
		b.Run(via, func(b *testing.B) {
			c, err := net.Dial("tcp4", addrs[via].String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, chunk)
			b.SetBytes(chunk)
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			c.(*net.TCPConn).CloseWrite()
			var got int64
			if err := binary.Read(c, binary.BigEndian, &got); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if want := int64(b.N) * chunk; got != want {
				b.Fatalf("sink got %d bytes, want %d", got, want)
			}
		})
	}
}

// BenchmarkTCPConnect opens a connection, reads a short answer and closes,
// directly and through the mesh: the per-connection cost of the proxy.
func BenchmarkTCPConnect(b *testing.B) {
	servers := startTCP(b, 1, identity)
	addrs := benchMesh(b, "tcp", servers.addrs[0], servers.port)
	for _, via := range []string{"direct", "mesh"} {
		b.Run(via, func(b *testing.B) {
			for range b.N {
				if _, err := tryAsk(addrs[via]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkUDPRoundTrip sends a datagram and waits for the echo, directly
// and through the mesh, on one flow.
func BenchmarkUDPRoundTrip(b *testing.B) {
	servers := startUDPEcho(b, 1)
	addrs := benchMesh(b, "udp", servers.addrs[0], servers.port)
	for _, via := range []string{"direct", "mesh"} {
		b.Run(via, func(b *testing.B) {
			c := dialUDP(b, clientAddr(1), addrs[via])
			b.ResetTimer()
			for range b.N {
				if _, err := c.roundTrip("ping", time.Second); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
