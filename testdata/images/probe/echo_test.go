package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

func TestTCPEcho(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	stop := runServer(t, func(ctx context.Context) error { return serveTCPEcho(ctx, ln) })

	for _, msg := range []string{"hello", strings.Repeat("x", 1<<20)} {
		reply, err := exchangeTCP(testContext(t), ln.Addr().String(), []byte(msg))
		if err != nil {
			t.Fatalf("exchange %d bytes: %v", len(msg), err)
		}
		if string(reply) != msg {
			t.Errorf("echo of %d bytes came back as %d bytes", len(msg), len(reply))
		}
	}
	stop()
}

func TestTCPEchoStopsWithOpenConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	stop := runServer(t, func(ctx context.Context) error { return serveTCPEcho(ctx, ln) })

	// An idle client must not keep the server from stopping.
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("x")); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, 1)
	if _, err := conn.Read(buf); err != nil { // the echo shows the server has the connection
		t.Fatalf("read echo: %v", err)
	}
	stop()
}

func TestUDPEcho(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	stop := runServer(t, func(ctx context.Context) error { return serveUDPEcho(ctx, pc) })

	reply, err := exchangeUDP(testContext(t), pc.LocalAddr().String(), []byte("ping"))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	if string(reply) != "ping" {
		t.Errorf("reply %q, want %q", reply, "ping")
	}
	stop()
}

func TestDialUDPWaitsForLateServer(t *testing.T) {
	// Reserve a port, then let the server appear only after the first
	// datagram has gone unanswered.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := pc.LocalAddr().String()
	first := make([]byte, 16)
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	go func() {
		// Swallow the first datagram, as a network would that is not ready.
		if _, _, err := pc.ReadFrom(first); err == nil {
			pc.SetReadDeadline(time.Time{})
			serveUDPEcho(t.Context(), pc)
		}
	}()
	t.Cleanup(func() { pc.Close() })

	var out bytes.Buffer
	if err := runDial(testContext(t), []string{"udp", addr, "late", "-timeout", "10s"}, &out); err != nil {
		t.Fatalf("dial: %v", err)
	}
	if got := out.String(); got != "late\n" {
		t.Errorf("output %q, want %q", got, "late\n")
	}
}

func TestDialUDPTimesOut(t *testing.T) {
	// A bound socket that never answers.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer pc.Close()
	start := time.Now()
	err = runDial(context.Background(), []string{"udp", pc.LocalAddr().String(), "x", "-timeout", "300ms"}, &bytes.Buffer{})
	if err == nil {
		t.Fatal("dial to a silent server succeeded")
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("dial gave up after %v, want about 300ms", elapsed)
	}
}

func TestDialTCPOutput(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	runServer(t, func(ctx context.Context) error { return serveTCPEcho(ctx, ln) })

	var out bytes.Buffer
	if err := runDial(testContext(t), []string{"tcp", ln.Addr().String(), "hi there"}, &out); err != nil {
		t.Fatalf("dial: %v", err)
	}
	if got := out.String(); got != "hi there\n" {
		t.Errorf("output %q, want %q", got, "hi there\n")
	}
}

// runServer runs serve in the background. The returned stop function, also
// run at cleanup, cancels it and fails the test unless it returns nil soon.
func runServer(t *testing.T, serve func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx) }()
	var stopped bool
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server returned %v, want nil after stop", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("server did not stop within 5s")
		}
	}
	t.Cleanup(stop)
	return stop
}

// testContext bounds a client exchange so that a broken server fails the
// test instead of hanging it.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
