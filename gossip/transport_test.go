package gossip

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"testing"
	"time"
)

// startTransport starts a bare transport on loopback, without memberlist;
// the test's cleanup shuts it down.
func startTransport(t *testing.T, limits transportLimits) *transport {
	t.Helper()
	tr, err := newTransport("127.0.0.1", 0, limits, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("newTransport: %v", err)
	}
	t.Cleanup(func() { _ = tr.Shutdown() })
	return tr
}

// dial connects to tr's TCP port and writes first, unless it is empty; the
// test's cleanup closes the connection.
func dial(t *testing.T, tr *transport, first []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", tr.tcp.Addr().String())
	if err != nil {
		t.Fatalf("dial the transport: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if len(first) > 0 {
		if _, err := c.Write(first); err != nil {
			t.Fatalf("write to the transport: %v", err)
		}
	}
	return c
}

// receive waits for a connection on ch and reads n bytes from it.
func receive(t *testing.T, ch <-chan net.Conn, n int) []byte {
	t.Helper()
	select {
	case c := <-ch:
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(waitTimeout))
		buf := make([]byte, n)
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("read the routed connection: %v", err)
		}
		return buf
	case <-time.After(waitTimeout):
		t.Fatalf("no connection routed within %v", waitTimeout)
		return nil
	}
}

// acceptAsync runs Accept on l once and delivers the connection.
func acceptAsync(t *testing.T, l net.Listener) <-chan net.Conn {
	t.Helper()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			t.Errorf("Accept: %v", err)
			close(ch)
			return
		}
		ch <- c
	}()
	return ch
}

// TestTransportRoutesByFirstByte checks that a connection opening with a
// TLS handshake byte comes out of the join listener and any other out of
// memberlist's stream channel, each with its first byte still to read, and
// that a client that sends nothing holds up neither.
func TestTransportRoutesByFirstByte(t *testing.T) {
	tr := startTransport(t, transportLimits{peek: time.Minute, handoff: time.Minute})
	dial(t, tr, nil) // silent: routed on its own goroutine, blocks no one

	tlsHello := []byte{tlsHandshake, 0x03, 0x01, 0x00}
	joins := acceptAsync(t, tr.join)
	dial(t, tr, tlsHello)
	if got := receive(t, joins, len(tlsHello)); !bytes.Equal(got, tlsHello) {
		t.Errorf("join listener read %x, want %x", got, tlsHello)
	}

	// Every memberlist stream starts with a message type or its label
	// header: pushPullMsg (6), encryptMsg (10), hasLabelMsg (244).
	for _, first := range []byte{6, 10, 244} {
		msg := []byte{first, 1, 2, 3}
		dial(t, tr, msg)
		if got := receive(t, tr.StreamCh(), len(msg)); !bytes.Equal(got, msg) {
			t.Errorf("memberlist stream read %x, want %x", got, msg)
		}
	}
}

// TestTransportClosesUnclaimed checks that a TLS connection nobody accepts
// is closed after the handoff timeout, as is one that arrives after the
// join listener was closed, whose Accept then fails with net.ErrClosed.
func TestTransportClosesUnclaimed(t *testing.T) {
	tr := startTransport(t, transportLimits{peek: time.Minute, handoff: 50 * time.Millisecond})
	waitClosed := func(c net.Conn) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(waitTimeout))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("read from an unclaimed connection: %v, want EOF", err)
		}
	}
	waitClosed(dial(t, tr, []byte{tlsHandshake}))

	if err := tr.join.Close(); err != nil {
		t.Fatalf("close the join listener: %v", err)
	}
	if _, err := tr.join.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
	waitClosed(dial(t, tr, []byte{tlsHandshake}))

	// Memberlist's streams do not depend on the join listener.
	dial(t, tr, []byte{6})
	if got := receive(t, tr.StreamCh(), 1); got[0] != 6 {
		t.Errorf("memberlist stream read %x after the join listener closed", got)
	}
}

// TestTransportShutdownClosesSilent checks that Shutdown does not wait for
// a silent client's peek timeout (a minute here): it closes the connection,
// returns, and the join listener is closed.
func TestTransportShutdownClosesSilent(t *testing.T) {
	tr := startTransport(t, transportLimits{peek: time.Minute, handoff: time.Minute})
	silent := dial(t, tr, nil)
	// The connection is being routed once the transport tracks it.
	eventually(t, waitTimeout, func() error {
		tr.pendingMu.Lock()
		defer tr.pendingMu.Unlock()
		if len(tr.pending) == 0 {
			return errors.New("the silent connection is not pending yet")
		}
		return nil
	})

	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tr.Shutdown()
	}()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatalf("Shutdown still running after %v", waitTimeout)
	}
	_ = silent.SetReadDeadline(time.Now().Add(waitTimeout))
	if _, err := silent.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("read from the silent connection after Shutdown: %v, want EOF", err)
	}
	if _, err := tr.join.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Shutdown: %v, want net.ErrClosed", err)
	}
}

// TestTransportPackets checks that a packet sent with WriteTo arrives
// whole on the other transport's packet channel, from the sender's port
// and stamped with its arrival time.
func TestTransportPackets(t *testing.T) {
	a := startTransport(t, defaultLimits())
	b := startTransport(t, defaultLimits())
	msg := bytes.Repeat([]byte("gossip"), 500) // over a typical 1400-byte packet
	before := time.Now()
	if _, err := a.WriteTo(msg, b.udp.LocalAddr().String()); err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	select {
	case p := <-b.PacketCh():
		if !bytes.Equal(p.Buf, msg) {
			t.Errorf("received %d bytes, want the %d sent", len(p.Buf), len(msg))
		}
		if p.From.String() != a.udp.LocalAddr().String() {
			t.Errorf("packet from %v, want %v", p.From, a.udp.LocalAddr())
		}
		if p.Timestamp.Before(before) {
			t.Errorf("packet stamped %v, before it was sent (%v)", p.Timestamp, before)
		}
	case <-time.After(waitTimeout):
		t.Fatal("no packet received")
	}
}

// selfSigned returns a TLS certificate for 127.0.0.1 and a pool that
// trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "gossip test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, roots
}

// TestJoinListenerSharesGossipPort checks the whole path: a TLS server on
// a pool's JoinListener answers a TLS client dialled at the pool's gossip
// address while another member joins the pool through that same address,
// and the listener is closed when the pool shuts down.
func TestJoinListenerSharesGossipPort(t *testing.T) {
	cert, roots := selfSigned(t)
	mgr := start(t, Meta{Name: "m", Role: RoleManager, APIAddr: "127.0.0.1:4242"})
	lis := tls.NewListener(mgr.JoinListener(), &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	served := make(chan error, 1)
	go func() {
		// An echo server of one line per connection, until the listener
		// closes.
		for {
			c, err := lis.Accept()
			if err != nil {
				served <- err
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(waitTimeout))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err == nil {
					_, _ = io.WriteString(c, "echo "+line)
				}
			}()
		}
	}()

	agent := start(t, Meta{Name: "a", Role: RoleAgent}, mgr.addr)
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: waitTimeout}, "tcp", mgr.addr, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatalf("TLS dial to the gossip address: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := io.WriteString(c, "join\n"); err != nil {
		t.Fatalf("write over TLS: %v", err)
	}
	if got, err := bufio.NewReader(c).ReadString('\n'); err != nil || got != "echo join\n" {
		t.Fatalf("TLS answer %q, %v; want %q", got, err, "echo join\n")
	}
	waitMembers(t, []Member{liveMember(agent.meta), liveMember(mgr.meta)}, mgr, agent)

	if err := mgr.stop(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case err := <-served:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Shutdown: %v, want net.ErrClosed", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("the join listener is still open after Shutdown")
	}
}

// TestFinalAdvertiseAddr checks the advertised address: the configured one
// in its 4-byte form, else the bound one, and an error rather than a guess
// when bound to every interface with none configured.
func TestFinalAdvertiseAddr(t *testing.T) {
	tr := startTransport(t, defaultLimits())
	ip, port, err := tr.FinalAdvertiseAddr("192.0.2.7", 0)
	if err != nil || !ip.Equal(net.IPv4(192, 0, 2, 7)) || len(ip) != net.IPv4len || port != tr.port {
		t.Errorf("FinalAdvertiseAddr(192.0.2.7, 0) = %v (%d bytes), %d, %v; want 192.0.2.7 (4 bytes), %d", ip, len(ip), port, err, tr.port)
	}
	if ip, port, err := tr.FinalAdvertiseAddr("", 7000); err != nil || !ip.Equal(net.IPv4(127, 0, 0, 1)) || port != 7000 {
		t.Errorf("FinalAdvertiseAddr(\"\", 7000) = %v, %d, %v; want the bound 127.0.0.1, 7000", ip, port, err)
	}
	if _, _, err := tr.FinalAdvertiseAddr("not-an-ip", 0); err == nil {
		t.Error("FinalAdvertiseAddr accepted a host name")
	}
	all, err := newTransport("", 0, defaultLimits(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("bind every interface: %v", err)
	}
	defer all.Shutdown()
	if ip, _, err := all.FinalAdvertiseAddr("", 0); err == nil {
		t.Errorf("bound to every interface, FinalAdvertiseAddr guessed %v", ip)
	}
}
