package mesh

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tcpSetup publishes one TCP port for service "s_web" over servers.
func tcpSetup(t *testing.T, cfg Config, servers *tcpServers) (*Mesh, *backendSet, netip.AddrPort) {
	t.Helper()
	bs := newBackendSet()
	bs.set("s_web", servers.addrs...)
	cfg.Backends = bs.get
	m := newTestMesh(t, cfg)
	port := freePort(t, meshIP)
	mustSet(t, m, Port{Protocol: "tcp", Published: port, Target: servers.port, Service: "s_web"})
	return m, bs, netip.AddrPortFrom(meshIP, port)
}

func TestTCPRoundRobin(t *testing.T) {
	servers := startTCP(t, 3, identity)
	_, _, addr := tcpSetup(t, Config{}, servers)

	for i := range 30 {
		// Round-robin runs over the sorted addresses, so the order is exact.
		if got, want := ask(t, addr), servers.addrs[i%3].String(); got != want {
			t.Fatalf("connection %d answered by %q, want %q", i, got, want)
		}
	}
}

// TestTCPSpreadStartsTheRoundRobinElsewhere: hosts with different Spread
// values send their first connection to different tasks, and keep the
// round robin's order from there.
func TestTCPSpreadStartsTheRoundRobinElsewhere(t *testing.T) {
	servers := startTCP(t, 3, identity)
	for spread := range uint64(3) {
		_, _, addr := tcpSetup(t, Config{Spread: spread}, servers)
		for i := range 3 {
			want := servers.addrs[(int(spread)+i)%3].String()
			if got := ask(t, addr); got != want {
				t.Fatalf("spread %d, connection %d answered by %q, want %q", spread, i, got, want)
			}
		}
	}
}

func TestTCPSkipsRefusingBackend(t *testing.T) {
	for _, tc := range []struct {
		name         string
		holdDown     time.Duration
		dialFailures uint64
	}{
		// Held down after its first refusal, the dead backend is not dialled
		// again while the others answer.
		{"hold-down", time.Hour, 1},
		// Without hold-down it is dialled on each of its turns.
		{"no hold-down", -1, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			servers := startTCP(t, 3, identity)
			servers.stop(1)
			m, _, addr := tcpSetup(t, Config{HoldDown: tc.holdDown}, servers)

			counts := map[string]int{}
			for range 30 {
				counts[ask(t, addr)]++
			}
			// The dead backend's ten turns are split evenly over the others.
			want := map[string]int{servers.addrs[0].String(): 15, servers.addrs[2].String(): 15}
			if fmt.Sprint(counts) != fmt.Sprint(want) {
				t.Errorf("answers = %v, want %v", counts, want)
			}
			if got := portStats(t, m, "tcp", addr.Port()).dialFailures.Load(); got != tc.dialFailures {
				t.Errorf("dial failures = %d, want %d", got, tc.dialFailures)
			}
		})
	}
}

// TestTCPSkipsBackendPastDialTimeout: without hedging, a backend that does
// not answer at all, like a task on a host that died, costs one
// DialTimeout, then is held down.
func TestTCPSkipsBackendPastDialTimeout(t *testing.T) {
	servers := startTCP(t, 2, identity)
	servers.stop(0)
	stuckListener(t, netip.AddrPortFrom(servers.addrs[0], servers.port))
	const dialTimeout = 300 * time.Millisecond
	m, _, addr := tcpSetup(t, Config{DialTimeout: dialTimeout, HedgeDelay: -1, HoldDown: time.Hour}, servers)

	start := time.Now()
	if got, want := ask(t, addr), servers.addrs[1].String(); got != want {
		t.Fatalf("answered by %q, want %q", got, want)
	}
	if d := time.Since(start); d < dialTimeout {
		t.Errorf("answered in %v: the stuck backend was not tried first", d)
	}
	for range 4 {
		if got, want := ask(t, addr), servers.addrs[1].String(); got != want {
			t.Fatalf("answered by %q, want %q", got, want)
		}
	}
	if got := portStats(t, m, "tcp", addr.Port()).dialFailures.Load(); got != 1 {
		t.Errorf("dial failures = %d, want 1", got)
	}
}

// TestTCPHedgesPastASilentBackend: with hedging, a silent backend costs the
// first connection a HedgeDelay, not a DialTimeout, and is then held down.
func TestTCPHedgesPastASilentBackend(t *testing.T) {
	servers := startTCP(t, 2, identity)
	servers.stop(0)
	stuckListener(t, netip.AddrPortFrom(servers.addrs[0], servers.port))
	const dialTimeout = time.Minute
	m, _, addr := tcpSetup(t, Config{DialTimeout: dialTimeout, HedgeDelay: 50 * time.Millisecond, HoldDown: time.Hour}, servers)

	start := time.Now()
	if got, want := ask(t, addr), servers.addrs[1].String(); got != want {
		t.Fatalf("answered by %q, want %q", got, want)
	}
	// Far below the dial timeout, however slow the machine.
	if d := time.Since(start); d > dialTimeout/2 {
		t.Errorf("answered in %v: the silent backend's dial was waited out", d)
	}
	for range 4 {
		if got, want := ask(t, addr), servers.addrs[1].String(); got != want {
			t.Fatalf("answered by %q, want %q", got, want)
		}
	}
	if got := portStats(t, m, "tcp", addr.Port()).dialFailures.Load(); got != 1 {
		t.Errorf("dial failures = %d, want 1 (the silent backend, then held down)", got)
	}
}

// stuckListener listens on ap with a full accept queue and never accepts,
// so that SYNs to ap go unanswered.
func stuckListener(t *testing.T, ap netip.AddrPort) {
	t.Helper()
	ln, err := net.Listen("tcp4", ap.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	raw, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	// listen(2) again on a listening socket only changes its backlog.
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = syscall.Listen(int(fd), 0) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp4", ap.String(), 200*time.Millisecond)
		if err != nil {
			return // the queue is full: this SYN went unanswered
		}
		t.Cleanup(func() { c.Close() })
		if i == 16 {
			t.Fatal("the accept queue never filled")
		}
	}
}

func TestTCPNoBackendResetsClient(t *testing.T) {
	servers := startTCP(t, 2, identity)
	for _, tc := range []struct {
		name     string
		backends []netip.Addr
	}{
		{"no task", nil},
		{"every task refuses", servers.addrs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.backends != nil {
				for i := range servers.lns {
					servers.stop(i)
				}
			}
			bs := newBackendSet()
			bs.set("s_web", tc.backends...)
			m := newTestMesh(t, Config{Backends: bs.get})
			port := freePort(t, meshIP)
			mustSet(t, m, Port{Protocol: "tcp", Published: port, Target: servers.port, Service: "s_web"})

			// The reset can come before Dial returns, even on loopback.
			c, err := net.Dial("tcp4", netip.AddrPortFrom(meshIP, port).String())
			switch {
			case errors.Is(err, syscall.ECONNRESET):
			case err != nil:
				t.Fatal(err)
			default:
				defer c.Close()
				mustBeClosed(t, c)
			}
			if got := portStats(t, m, "tcp", port).rejected.Load(); got != 1 {
				t.Errorf("rejected = %d, want 1", got)
			}
		})
	}
}

func TestTCPBackendSetChangeTakesEffect(t *testing.T) {
	servers := startTCP(t, 3, identity)
	_, bs, addr := tcpSetup(t, Config{}, servers)

	bs.set("s_web", servers.addrs[1])
	for range 3 {
		if got, want := ask(t, addr), servers.addrs[1].String(); got != want {
			t.Fatalf("answered by %q, want %q", got, want)
		}
	}
	bs.set("s_web", servers.addrs[2])
	if got, want := ask(t, addr), servers.addrs[2].String(); got != want {
		t.Fatalf("after the change, answered by %q, want %q", got, want)
	}
}

// TestTCPLargeTransfer sends 64 MiB each way at once through the mesh and
// checks both streams by hash. The backend answers the digest of what it
// received only after the client's half-close: data still flows back after
// one direction has ended.
func TestTCPLargeTransfer(t *testing.T) {
	const size = 64 << 20
	upSeed, downSeed := [32]byte{1}, [32]byte{2}

	servers := startTCP(t, 1, func(_ netip.Addr, c *net.TCPConn) {
		var wg sync.WaitGroup
		wg.Go(func() { io.CopyN(c, rand.NewChaCha8(downSeed), size) })
		h := sha256.New()
		io.Copy(h, c) // until the client's half-close
		wg.Wait()
		c.Write(h.Sum(nil))
		c.CloseWrite()
	})
	m, _, addr := tcpSetup(t, Config{}, servers)

	c, err := net.Dial("tcp4", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))

	sent := sha256.New()
	var wg sync.WaitGroup
	var sendErr error
	wg.Go(func() {
		_, sendErr = io.CopyN(c, io.TeeReader(rand.NewChaCha8(upSeed), sent), size)
		c.(*net.TCPConn).CloseWrite()
	})
	got := sha256.New()
	if _, err := io.CopyN(got, c, size); err != nil {
		t.Fatalf("receiving: %v", err)
	}
	digest, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the digest: %v", err)
	}
	wg.Wait()
	if sendErr != nil {
		t.Fatalf("sending: %v", sendErr)
	}

	want := sha256.New()
	io.CopyN(want, rand.NewChaCha8(downSeed), size)
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Error("the backend's stream arrived corrupted")
	}
	if !bytes.Equal(digest, sent.Sum(nil)) {
		t.Errorf("the backend received a different stream (digest %x, sent %x)", digest, sent.Sum(nil))
	}

	st := portStats(t, m, "tcp", addr.Port())
	eventually(t, "the connection to end", func() bool { return st.active.Load() == 0 })
	if in, out := st.in.Load(), st.out.Load(); in != size || out != size+sha256.Size {
		t.Errorf("bytes in/out = %d/%d, want %d/%d", in, out, size, size+sha256.Size)
	}
}

func TestTCPHalfClose(t *testing.T) {
	servers := startTCP(t, 1, func(_ netip.Addr, c *net.TCPConn) {
		b, _ := io.ReadAll(c)
		fmt.Fprintf(c, "got %q", b)
	})
	_, _, addr := tcpSetup(t, Config{}, servers)

	c, err := net.Dial("tcp4", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitFor))
	io.WriteString(c, "hello")
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `got "hello"`; got != want {
		t.Errorf("answer = %q, want %q", got, want)
	}
}

// TestTCPBackendResetReachesClient: a backend that aborts must not look to
// the client like one that finished.
func TestTCPBackendResetReachesClient(t *testing.T) {
	servers := startTCP(t, 1, func(_ netip.Addr, c *net.TCPConn) {
		c.Read(make([]byte, 1))
		abort(c)
	})
	_, _, addr := tcpSetup(t, Config{}, servers)

	c, err := net.Dial("tcp4", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitFor))
	c.Write([]byte{0})
	if _, err := io.ReadAll(c); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("read: %v, want a connection reset", err)
	}
}

func TestTCPConcurrentConnections(t *testing.T) {
	servers := startTCP(t, 3, echo)
	m, _, addr := tcpSetup(t, Config{}, servers)

	const conns, size = 64, 256 << 10
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		wg.Go(func() {
			msg := bytes.Repeat([]byte{byte(i)}, size)
			c, err := net.Dial("tcp4", addr.String())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(waitFor))
			go func() {
				c.Write(msg)
				c.(*net.TCPConn).CloseWrite()
			}()
			b, err := io.ReadAll(c)
			if err == nil && !bytes.Equal(b, msg) {
				err = fmt.Errorf("connection %d: echo differs (%d bytes)", i, len(b))
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := portStats(t, m, "tcp", addr.Port()).opened.Load(); got != conns {
		t.Errorf("connections = %d, want %d", got, conns)
	}
}

func TestTCPRemovedPortClosesListenerAndConnections(t *testing.T) {
	servers := startTCP(t, 1, echo)
	m, _, addr := tcpSetup(t, Config{}, servers)

	c, err := net.Dial("tcp4", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitFor))
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Fatalf("echo before removal: %v", err)
	}

	mustSet(t, m)
	if _, err := net.Dial("tcp4", addr.String()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial after removal: %v, want connection refused", err)
	}
	mustBeClosed(t, c)
}

// TestTCPRetarget: a port whose target changes keeps its listener and its
// connections, and sends new connections to the new target.
func TestTCPRetarget(t *testing.T) {
	a := startTCP(t, 1, echo)
	b := startTCP(t, 1, identity)
	bs := newBackendSet()
	bs.set("s_a", a.addrs...)
	bs.set("s_b", b.addrs...)
	m := newTestMesh(t, Config{Backends: bs.get})
	port := freePort(t, meshIP)
	addr := netip.AddrPortFrom(meshIP, port)
	mustSet(t, m, Port{Protocol: "tcp", Published: port, Target: a.port, Service: "s_a"})

	c, err := net.Dial("tcp4", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitFor))
	echoes := func(msg string) bool {
		io.WriteString(c, msg)
		b, err := io.ReadAll(io.LimitReader(c, int64(len(msg))))
		return err == nil && string(b) == msg
	}
	if !echoes("before") { // also waits until c is proxied: Dial returns before that
		t.Fatal("no echo before retargeting")
	}

	mustSet(t, m, Port{Protocol: "tcp", Published: port, Target: b.port, Service: "s_b"})
	if got, want := ask(t, addr), b.addrs[0].String(); got != want {
		t.Errorf("new connection answered by %q, want %q", got, want)
	}
	if !echoes("after") {
		t.Error("the connection made before retargeting broke")
	}
}

func TestTCPCloseResetsConnections(t *testing.T) {
	servers := startTCP(t, 1, echo)
	m, _, addr := tcpSetup(t, Config{}, servers)
	c, err := net.Dial("tcp4", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st := portStats(t, m, "tcp", addr.Port())
	eventually(t, "the connection to be proxied", func() bool { return st.active.Load() == 1 })

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	mustBeClosed(t, c)
	if err := m.Set(nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Set after Close: %v, want ErrClosed", err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
