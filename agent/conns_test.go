package agent

import (
	"context"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// countingListener counts the connections it accepts: each is a TLS
// handshake.
type countingListener struct {
	net.Listener
	accepted atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// TestSessionsReuseTheirConnection: a new session with a manager the agent
// already spoke to costs no new connection, hence no handshake; that is
// what lets a thousand agents move to a new leader without a thousand
// handshakes.
func TestSessionsReuseTheirConnection(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis := &countingListener{Listener: inner}
	client := serveDispatcher(t, lis, acceptingDispatcher{})

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cfg := Config{Name: "h1", DataDir: t.TempDir(), Managers: []string{lis.Addr().String()}, Executor: describeOnly{}, Creds: client}
	a := newAgent(ctx, cfg, slog.New(slog.DiscardHandler))
	t.Cleanup(a.conns.close)
	for i := range 3 {
		est, err := a.connect(ctx, lostLeader{})
		if err != nil {
			t.Fatalf("session %d: %v", i+1, err)
		}
		est.close()
	}
	if n := lis.accepted.Load(); n != 1 {
		t.Errorf("3 sessions took %d connections, want 1", n)
	}
}

// TestFailedRegistrationDropsTheConnection: a registration that fails
// leaves no connection behind, so the next attempt dials afresh rather
// than waiting on one that may be dead.
func TestFailedRegistrationDropsTheConnection(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens: the call fails at once
	_, client := testCreds(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cfg := Config{Name: "h1", DataDir: t.TempDir(), Managers: []string{addr}, Executor: describeOnly{}, Creds: client}
	a := newAgent(ctx, cfg, slog.New(slog.DiscardHandler))
	t.Cleanup(a.conns.close)
	if r := a.register(ctx, addr, &skiffpb.Register{Name: "h1"}); r.err == nil {
		t.Fatal("registering with nothing listening succeeded")
	}
	a.conns.mu.Lock()
	defer a.conns.mu.Unlock()
	if _, ok := a.conns.conns[addr]; ok {
		t.Error("the failed attempt's connection is still kept")
	}
}
