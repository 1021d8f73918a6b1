package mesh

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"
)

// The tests run real sockets on loopback. The mesh listens on 127.0.0.1 and
// backends on 127.0.0.2, 127.0.0.3, …, all on one port, as a service's tasks
// listen on one target port at different IPs.
var meshIP = netip.MustParseAddr("127.0.0.1")

// waitFor is how long a test waits for something that should happen at once.
const waitFor = 10 * time.Second

func backendIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i)}) }

// backendSet is a Backends the test changes under the mesh's feet.
type backendSet struct {
	mu sync.Mutex
	m  map[string][]netip.Addr
}

func newBackendSet() *backendSet { return &backendSet{m: make(map[string][]netip.Addr)} }

func (b *backendSet) set(service string, addrs ...netip.Addr) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.m[service] = addrs
}

func (b *backendSet) get(service string) []netip.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.m[service]
}

// newTestMesh returns a mesh on 127.0.0.1 (unless cfg says otherwise) that
// logs to the test and is closed when the test ends.
func newTestMesh(t testing.TB, cfg Config) *Mesh {
	t.Helper()
	if !cfg.ListenAddr.IsValid() {
		cfg.ListenAddr = meshIP
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	m := New(cfg)
	t.Cleanup(func() { m.Close() })
	return m
}

func mustSet(t testing.TB, m *Mesh, ports ...Port) {
	t.Helper()
	if err := m.Set(ports); err != nil {
		t.Fatalf("Set: %v", err)
	}
}

// portStats returns the live counters of a published port.
func portStats(t testing.TB, m *Mesh, proto string, port uint16) *stats {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.servers[portKey{proto, port}]
	if !ok {
		t.Fatalf("%d/%s is not published", port, proto)
	}
	return &s.base().stats
}

// eventually polls cond until it holds, failing the test after waitFor.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// freePort returns a port that is free for both TCP and UDP on addr.
func freePort(t testing.TB, addr netip.Addr) uint16 {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp4", netip.AddrPortFrom(addr, 0).String())
		if err != nil {
			t.Fatal(err)
		}
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
		pc, err := net.ListenPacket("udp4", netip.AddrPortFrom(addr, port).String())
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no port free for both TCP and UDP")
	return 0
}

// tcpServers are n TCP servers on backendIP(0…n-1), sharing one port.
type tcpServers struct {
	port  uint16
	addrs []netip.Addr
	lns   []net.Listener

	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// startTCP starts n servers that call handle for each connection they
// accept, with their own address. They stop when the test ends.
func startTCP(t testing.TB, n int, handle func(self netip.Addr, c *net.TCPConn)) *tcpServers {
	t.Helper()
	for range 20 { // another process may hold the port on one of the addresses
		s := &tcpServers{conns: make(map[net.Conn]struct{})}
		if err := s.listen(n); err != nil {
			s.close()
			continue
		}
		for i, ln := range s.lns {
			s.wg.Go(func() { s.serve(s.addrs[i], ln, handle) })
		}
		t.Cleanup(s.close)
		return s
	}
	t.Fatal("cannot find a port free on every backend address")
	return nil
}

func (s *tcpServers) listen(n int) error {
	for i := range n {
		ln, err := net.Listen("tcp4", netip.AddrPortFrom(backendIP(i), s.port).String())
		if err != nil {
			return err
		}
		s.port = uint16(ln.Addr().(*net.TCPAddr).Port)
		s.addrs = append(s.addrs, backendIP(i))
		s.lns = append(s.lns, ln)
	}
	return nil
}

func (s *tcpServers) serve(self netip.Addr, ln net.Listener, handle func(netip.Addr, *net.TCPConn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Go(func() {
			defer func() {
				c.Close()
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
			handle(self, c.(*net.TCPConn))
		})
	}
}

// stop closes server i's listener: its address then refuses connections.
func (s *tcpServers) stop(i int) { s.lns[i].Close() }

func (s *tcpServers) close() {
	for _, ln := range s.lns {
		ln.Close()
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// identity answers a connection with the server's own address.
func identity(self netip.Addr, c *net.TCPConn) { fmt.Fprint(c, self) }

// echo copies a connection back to itself, half-closing at the client's
// half-close.
func echo(_ netip.Addr, c *net.TCPConn) {
	io.Copy(c, c)
	c.CloseWrite()
}

// ask connects to addr and returns everything it says until it closes.
func ask(t testing.TB, addr netip.AddrPort) string {
	t.Helper()
	s, err := tryAsk(addr)
	if err != nil {
		t.Fatalf("ask %s: %v", addr, err)
	}
	return s
}

func tryAsk(addr netip.AddrPort) (string, error) {
	c, err := net.DialTimeout("tcp4", addr.String(), waitFor)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitFor))
	b, err := io.ReadAll(c)
	return string(b), err
}

// mustBeClosed fails unless c is closed by its peer (a FIN or a reset)
// before waitFor.
func mustBeClosed(t testing.TB, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitFor))
	_, err := io.Copy(io.Discard, c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("connection still open")
	}
}

// udpEchoServers are n UDP servers on backendIP(0…n-1), sharing one port,
// that answer each datagram with "<own address>|<datagram>".
type udpEchoServers struct {
	port  uint16
	addrs []netip.Addr
	conns []*net.UDPConn
	wg    sync.WaitGroup
}

func startUDPEcho(t testing.TB, n int) *udpEchoServers {
	t.Helper()
	for range 20 {
		s := &udpEchoServers{}
		if err := s.listen(n); err != nil {
			s.close()
			continue
		}
		for i, c := range s.conns {
			s.wg.Go(func() { udpEcho(s.addrs[i], c) })
		}
		t.Cleanup(s.close)
		return s
	}
	t.Fatal("cannot find a port free on every backend address")
	return nil
}

func (s *udpEchoServers) listen(n int) error {
	for i := range n {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(backendIP(i), s.port)))
		if err != nil {
			return err
		}
		s.port = uint16(c.LocalAddr().(*net.UDPAddr).Port)
		s.addrs = append(s.addrs, backendIP(i))
		s.conns = append(s.conns, c)
	}
	return nil
}

func (s *udpEchoServers) close() {
	for _, c := range s.conns {
		c.Close()
	}
	s.wg.Wait()
}

func udpEcho(self netip.Addr, c *net.UDPConn) {
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		c.WriteToUDPAddrPort(append([]byte(self.String()+"|"), buf[:n]...), from)
	}
}

// udpClient is a connected UDP socket: it accepts replies only from the
// address it sent to, as most UDP clients do.
type udpClient struct {
	*net.UDPConn
	buf []byte
}

func dialUDP(t testing.TB, local, remote netip.AddrPort) *udpClient {
	t.Helper()
	c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(local), net.UDPAddrFromAddrPort(remote))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &udpClient{UDPConn: c, buf: make([]byte, maxDatagram)}
}

// roundTrip sends msg and returns the answer, or an error if none comes
// within wait.
func (c *udpClient) roundTrip(msg string, wait time.Duration) (string, error) {
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	c.SetReadDeadline(time.Now().Add(wait))
	n, err := c.Read(c.buf)
	return string(c.buf[:n]), err
}
