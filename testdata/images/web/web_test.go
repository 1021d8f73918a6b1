package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestConfigFromEnv(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want config
	}{
		{
			name: "defaults",
			env:  map[string]string{"NAME": ""},
			want: config{listenAddr: ":80", redisAddr: "redis:6379", name: "world"},
		},
		{
			name: "overrides",
			env:  map[string]string{"NAME": "skiff", "PORT": "4000", "REDIS_ADDR": "127.0.0.1:7000"},
			want: config{listenAddr: ":4000", redisAddr: "127.0.0.1:7000", name: "skiff"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := configFromEnv(func(k string) string { return tt.env[k] })
			if got != tt.want {
				t.Errorf("configFromEnv() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestHelloCountsVisits(t *testing.T) {
	redis := startRedis(t)
	url := startApp(t, redis.addr, "world")
	hostname, err := os.Hostname()
	if err != nil {
		t.Fatalf("hostname: %v", err)
	}

	for want := 1; want <= 3; want++ {
		body := get(t, url+"/")
		for _, line := range []string{"Hello world!", "Hostname: " + hostname, "Visits: " + strconv.Itoa(want)} {
			if !hasLine(body, line) {
				t.Errorf("visit %d: body %q lacks line %q", want, body, line)
			}
		}
	}
}

func TestHelloGreetsName(t *testing.T) {
	redis := startRedis(t)
	body := get(t, startApp(t, redis.addr, "skiff")+"/")
	if !hasLine(body, "Hello skiff!") {
		t.Errorf("body %q lacks line %q", body, "Hello skiff!")
	}
}

func TestHelloWithoutRedis(t *testing.T) {
	// A port that was just free: nothing answers there.
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	url := startApp(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), "world")

	body := get(t, url+"/")
	for _, line := range []string{"Hello world!", "Visits: " + redisDownMessage} {
		if !hasLine(body, line) {
			t.Errorf("body %q lacks line %q", body, line)
		}
	}
}

func TestHelloAfterRedisStops(t *testing.T) {
	redis := startRedis(t)
	url := startApp(t, redis.addr, "world")
	if body := get(t, url+"/"); !hasLine(body, "Visits: 1") {
		t.Fatalf("first visit: body %q lacks line %q", body, "Visits: 1")
	}

	// The client now holds a pooled connection to a dead server.
	redis.stop()
	if body := get(t, url+"/"); !hasLine(body, "Visits: "+redisDownMessage) {
		t.Errorf("after Redis stopped: body %q lacks line %q", body, "Visits: "+redisDownMessage)
	}
}

func TestHealthzIgnoresRedis(t *testing.T) {
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	url := startApp(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), "world")
	if body := get(t, url+"/healthz"); body != "ok\n" {
		t.Errorf("GET /healthz = %q, want %q", body, "ok\n")
	}
}

func TestUnknownPathIsNotFound(t *testing.T) {
	url := startApp(t, "127.0.0.1:1", "world")
	resp, err := http.Get(url + "/nope")
	if err != nil {
		t.Fatalf("GET /nope: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nope: status %d, want %d", resp.StatusCode, http.StatusNotFound)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cfg := config{listenAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), redisAddr: "127.0.0.1:1", name: "world"}
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, slog.New(slog.DiscardHandler)) }()

	url := "http://" + cfg.listenAddr + "/healthz"
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("run never served %s: %v", url, err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

// startApp serves the app against the Redis at redisAddr and returns its URL.
func startApp(t *testing.T, redisAddr, name string) string {
	t.Helper()
	hostname, err := os.Hostname()
	if err != nil {
		t.Fatalf("hostname: %v", err)
	}
	rdb := newRedisClient(redisAddr)
	a := &app{name: name, hostname: hostname, redis: rdb, log: slog.New(slog.DiscardHandler)}
	srv := httptest.NewServer(a.routes())
	t.Cleanup(func() {
		srv.Close()
		rdb.Close()
	})
	return srv.URL
}

// get fetches url, requires a 200 and returns the body.
func get(t *testing.T, url string) string {
	t.Helper()
	// Twice the Redis timeout: a page must come back even when Redis hangs.
	ctx, cancel := context.WithTimeout(context.Background(), 2*redisTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d, body %q", url, resp.StatusCode, body)
	}
	return string(body)
}

func hasLine(body, line string) bool {
	for l := range strings.Lines(body) {
		if strings.TrimSuffix(l, "\n") == line {
			return true
		}
	}
	return false
}
