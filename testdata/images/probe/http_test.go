package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestHTTPPrintsEachBody(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "body") // no newline: probe must add one
	}))
	defer srv.Close()

	var out bytes.Buffer
	if err := runHTTP(testContext(t), []string{srv.URL, "-n", "3"}, &out); err != nil {
		t.Fatalf("http: %v", err)
	}
	if got, want := out.String(), "body\nbody\nbody\n"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
	if n := hits.Load(); n != 3 {
		t.Errorf("server saw %d requests, want 3", n)
	}
}

func TestHTTPFailsOnErrorStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "broken", http.StatusServiceUnavailable)
	}))
	defer srv.Close()

	var out bytes.Buffer
	err := runHTTP(testContext(t), []string{srv.URL}, &out)
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("err = %v, want one naming status 503", err)
	}
	if out.String() != "broken\n" {
		t.Errorf("output %q, want the error body %q", out.String(), "broken\n")
	}
}

func TestServeAnswersHostname(t *testing.T) {
	hostname, err := os.Hostname()
	if err != nil {
		t.Fatalf("hostname: %v", err)
	}
	// runServe listens itself, so hand it a port that was free a moment ago.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	runServer(t, func(ctx context.Context) error { return runServe(ctx, []string{addr}, io.Discard) })

	waitListening(t, addr)

	var out bytes.Buffer
	if err := runHTTP(testContext(t), []string{"http://" + addr + "/any/path"}, &out); err != nil {
		t.Fatalf("http: %v", err)
	}
	if got := out.String(); got != hostname+"\n" {
		t.Errorf("output %q, want %q", got, hostname+"\n")
	}
}

// waitListening polls until something accepts TCP connections on addr.
func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
