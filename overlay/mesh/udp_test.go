package mesh

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// udpSetup publishes one UDP port for service "s_dns" over servers.
func udpSetup(t *testing.T, cfg Config, servers *udpEchoServers) (*Mesh, *backendSet, netip.AddrPort) {
	t.Helper()
	bs := newBackendSet()
	bs.set("s_dns", servers.addrs...)
	cfg.Backends = bs.get
	m := newTestMesh(t, cfg)
	port := freePort(t, m.cfg.ListenAddr)
	mustSet(t, m, Port{Protocol: "udp", Published: port, Target: servers.port, Service: "s_dns"})
	return m, bs, netip.AddrPortFrom(m.cfg.ListenAddr, port)
}

// clientAddr is a fresh local address for a UDP client: 127.0.1.i, any port.
func clientAddr(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 1, byte(i)}), 0)
}

// answer splits an echo server's reply into the server and the payload.
func answer(t testing.TB, reply string) (server, payload string) {
	t.Helper()
	server, payload, ok := strings.Cut(reply, "|")
	if !ok {
		t.Fatalf("malformed reply %q", reply)
	}
	return server, payload
}

// TestUDPEcho runs several clients at once: each keeps its backend for the
// life of its flow, and flows are spread round-robin.
func TestUDPEcho(t *testing.T) {
	servers := startUDPEcho(t, 3)
	m, _, addr := udpSetup(t, Config{}, servers)

	const clients, msgs = 6, 50
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		perBack = map[string]int{}
	)
	for i := range clients {
		c := dialUDP(t, clientAddr(i+1), addr)
		wg.Go(func() {
			var first string
			for j := range msgs {
				msg := fmt.Sprintf("client %d message %d", i, j)
				reply, err := c.roundTrip(msg, waitFor)
				if err != nil {
					t.Errorf("client %d: %v", i, err)
					return
				}
				server, payload := answer(t, reply)
				if payload != msg {
					t.Errorf("client %d: echo %q, want %q", i, payload, msg)
				}
				if j == 0 {
					first = server
				} else if server != first {
					t.Errorf("client %d moved from %s to %s within its flow", i, first, server)
				}
			}
			mu.Lock()
			perBack[first]++
			mu.Unlock()
		})
	}
	wg.Wait()

	for _, a := range servers.addrs {
		if perBack[a.String()] != clients/3 {
			t.Errorf("flows per backend = %v, want %d each", perBack, clients/3)
			break
		}
	}
	st := portStats(t, m, "udp", addr.Port())
	if got := st.opened.Load(); got != clients {
		t.Errorf("flows opened = %d, want %d", got, clients)
	}
	if got := st.active.Load(); got != clients {
		t.Errorf("flows active = %d, want %d", got, clients)
	}
}

func TestUDPIdleFlowsAreReaped(t *testing.T) {
	servers := startUDPEcho(t, 2)
	m, _, addr := udpSetup(t, Config{UDPIdleTimeout: 100 * time.Millisecond}, servers)
	st := portStats(t, m, "udp", addr.Port())
	c := dialUDP(t, clientAddr(1), addr)

	reply, err := c.roundTrip("one", waitFor)
	if err != nil {
		t.Fatal(err)
	}
	if server, _ := answer(t, reply); server != servers.addrs[0].String() {
		t.Fatalf("first flow went to %s, want %s", server, servers.addrs[0])
	}
	eventually(t, "the idle flow to be reaped", func() bool { return st.active.Load() == 0 })

	// The same client now opens a new flow, which takes the next turn.
	reply, err = c.roundTrip("two", waitFor)
	if err != nil {
		t.Fatal(err)
	}
	if server, _ := answer(t, reply); server != servers.addrs[1].String() {
		t.Errorf("second flow went to %s, want %s", server, servers.addrs[1])
	}
	if got := st.opened.Load(); got != 2 {
		t.Errorf("flows opened = %d, want 2", got)
	}
}

// TestUDPBusyFlowIsKept: traffic keeps a flow alive well past its idle
// timeout. The pacing leaves the flow idle at most a tenth of the timeout.
func TestUDPBusyFlowIsKept(t *testing.T) {
	const idle = 500 * time.Millisecond
	servers := startUDPEcho(t, 2)
	m, _, addr := udpSetup(t, Config{UDPIdleTimeout: idle}, servers)
	c := dialUDP(t, clientAddr(1), addr)

	tick := time.NewTicker(idle / 10)
	defer tick.Stop()
	for end := time.Now().Add(2*idle + idle/2); time.Now().Before(end); <-tick.C {
		if _, err := c.roundTrip("ping", waitFor); err != nil {
			t.Fatal(err)
		}
	}
	if got := portStats(t, m, "udp", addr.Port()).opened.Load(); got != 1 {
		t.Errorf("flows opened = %d, want 1", got)
	}
}

func TestUDPFlowLimit(t *testing.T) {
	servers := startUDPEcho(t, 1)
	m, _, addr := udpSetup(t, Config{MaxUDPFlows: 2, UDPIdleTimeout: 200 * time.Millisecond}, servers)
	st := portStats(t, m, "udp", addr.Port())

	for i := range 2 {
		if _, err := dialUDP(t, clientAddr(i+1), addr).roundTrip("hi", waitFor); err != nil {
			t.Fatal(err)
		}
	}
	third := dialUDP(t, clientAddr(3), addr)
	if _, err := third.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the third flow's datagram to be dropped", func() bool { return st.rejected.Load() == 1 })

	// Once the first two flows are reaped, the third client gets through.
	eventually(t, "the flows to be reaped", func() bool { return st.active.Load() == 0 })
	if _, err := third.roundTrip("hi again", waitFor); err != nil {
		t.Error(err)
	}
}

// TestUDPSkipsRefusingBackend: a backend with nothing listening answers with
// ICMP port-unreachable; that ends the flow and holds the backend down, so
// the client's next datagram reaches a live one.
func TestUDPSkipsRefusingBackend(t *testing.T) {
	servers := startUDPEcho(t, 2)
	servers.conns[0].Close()
	_, _, addr := udpSetup(t, Config{HoldDown: time.Hour}, servers)
	c := dialUDP(t, clientAddr(1), addr)

	// The first datagram is lost to the dead backend; the client retries,
	// as UDP clients do.
	var reply string
	eventually(t, "an answer", func() bool {
		r, err := c.roundTrip("hello", 100*time.Millisecond)
		reply = r
		return err == nil
	})
	for range 5 {
		if server, _ := answer(t, reply); server != servers.addrs[1].String() {
			t.Fatalf("answered by %s, want %s", server, servers.addrs[1])
		}
		var err error
		if reply, err = c.roundTrip("hello", waitFor); err != nil {
			t.Fatal(err)
		}
	}
}

// TestUDPFlowFollowsBackendSet: a flow whose backend left the service moves
// to another one at its next datagram.
func TestUDPFlowFollowsBackendSet(t *testing.T) {
	servers := startUDPEcho(t, 2)
	bs := newBackendSet()
	bs.set("s_dns", servers.addrs...)
	m := newTestMesh(t, Config{Backends: bs.get})
	m.revalidate = 0 // check at every datagram
	addr := netip.AddrPortFrom(meshIP, freePort(t, meshIP))
	mustSet(t, m, Port{Protocol: "udp", Published: addr.Port(), Target: servers.port, Service: "s_dns"})
	c := dialUDP(t, clientAddr(1), addr)

	reply, err := c.roundTrip("one", waitFor)
	if err != nil {
		t.Fatal(err)
	}
	if server, _ := answer(t, reply); server != servers.addrs[0].String() {
		t.Fatalf("answered by %s, want %s", server, servers.addrs[0])
	}
	bs.set("s_dns", servers.addrs[1])
	if reply, err = c.roundTrip("two", waitFor); err != nil {
		t.Fatal(err)
	}
	if server, _ := answer(t, reply); server != servers.addrs[1].String() {
		t.Errorf("after the change, answered by %s, want %s", server, servers.addrs[1])
	}
}

// TestUDPWildcardAnswersFromAddressUsed: on 0.0.0.0 a reply must leave from
// the address the client wrote to, or a connected client drops it. The
// kernel alone would pick 127.0.0.1 for every reply here.
func TestUDPWildcardAnswersFromAddressUsed(t *testing.T) {
	servers := startUDPEcho(t, 1)
	bs := newBackendSet()
	bs.set("s_dns", servers.addrs...)
	m := newTestMesh(t, Config{ListenAddr: netip.IPv4Unspecified(), Backends: bs.get})
	port := freePort(t, netip.IPv4Unspecified())
	mustSet(t, m, Port{Protocol: "udp", Published: port, Target: servers.port, Service: "s_dns"})

	for _, dst := range []string{"127.0.0.1", "127.0.0.9"} {
		c := dialUDP(t, clientAddr(1), netip.AddrPortFrom(netip.MustParseAddr(dst), port))
		if _, err := c.roundTrip("hi", waitFor); err != nil {
			t.Errorf("to %s: %v", dst, err)
		}
	}
}

func TestUDPRemovedPortStopsFlows(t *testing.T) {
	servers := startUDPEcho(t, 1)
	m, _, addr := udpSetup(t, Config{}, servers)
	c := dialUDP(t, clientAddr(1), addr)
	if _, err := c.roundTrip("hi", waitFor); err != nil {
		t.Fatal(err)
	}
	mustSet(t, m)
	// The port is free again at once: Set waited for the flows to end.
	dialUDP(t, netip.AddrPortFrom(meshIP, addr.Port()), netip.AddrPortFrom(meshIP, 9))
}
