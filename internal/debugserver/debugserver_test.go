package debugserver

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// waitLimit bounds every wait in these tests; the events they wait for
// take milliseconds.
const waitLimit = 10 * time.Second

// running is a Server serving on a loopback port.
type running struct {
	*Server
	base   string
	cancel context.CancelFunc
	served chan error
	waited bool
}

// start serves cfg on 127.0.0.1:0 until the test ends; adjust, when not
// nil, may change the server before it serves.
func start(t *testing.T, cfg Config, adjust func(*Server)) *running {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	s, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if adjust != nil {
		adjust(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Server: s, base: "http://" + s.Addr().String(), cancel: cancel, served: make(chan error, 1)}
	go func() { r.served <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		r.waitServed(t)
	})
	return r
}

// waitServed waits for Serve to return and fails the test unless it
// returned nil; after the first call it returns at once.
func (r *running) waitServed(t *testing.T) {
	t.Helper()
	if r.waited {
		return
	}
	r.waited = true
	select {
	case err := <-r.served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatalf("Serve did not return within %s of its context ending", waitLimit)
	}
}

func get(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read the body: %v", u, err)
	}
	return resp.StatusCode, string(body)
}

func registry(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "debugserver_test_total", Help: "A counter for the test."})
	c.Add(3)
	reg.MustRegister(c)
	return reg
}

func TestServesMetricsWithoutPprof(t *testing.T) {
	r := start(t, Config{Metrics: registry(t)}, nil)
	code, body := get(t, r.base+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, "debugserver_test_total 3") {
		t.Errorf("/metrics: %d %q", code, body)
	}
	if code, _ := get(t, r.base+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without Pprof: %d, want 404", code)
	}
}

func TestServesPprofWithoutMetrics(t *testing.T) {
	r := start(t, Config{Pprof: true}, nil)
	if code, body := get(t, r.base+"/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/: %d %q", code, body)
	}
	if code, body := get(t, r.base+"/debug/pprof/heap"); code != http.StatusOK || body == "" {
		t.Errorf("/debug/pprof/heap: %d, %d bytes", code, len(body))
	}
	if code, _ := get(t, r.base+"/debug/pprof/cmdline"); code != http.StatusOK {
		t.Errorf("/debug/pprof/cmdline: %d", code)
	}
	if code, _ := get(t, r.base+"/metrics"); code != http.StatusNotFound {
		t.Errorf("/metrics without Metrics: %d, want 404", code)
	}
}

func TestServesBoth(t *testing.T) {
	r := start(t, Config{Metrics: registry(t), Pprof: true}, nil)
	for _, path := range []string{"/metrics", "/debug/pprof/", "/debug/pprof/goroutine?debug=1"} {
		if code, _ := get(t, r.base+path); code != http.StatusOK {
			t.Errorf("%s: %d", path, code)
		}
	}
}

func TestListenErrors(t *testing.T) {
	if _, err := Listen(Config{Metrics: registry(t)}); err == nil {
		t.Error("Listen without an address succeeded")
	}
	if _, err := Listen(Config{Addr: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "nothing to serve") {
		t.Errorf("Listen with nothing to serve: %v", err)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, err = Listen(Config{Addr: taken.Addr().String(), Pprof: true})
	if err == nil || !strings.Contains(err.Error(), "listen for pprof on "+taken.Addr().String()) {
		t.Errorf("Listen on a taken port: %v", err)
	}
}

// TestCloseFreesThePort: a server that is never served gives its port
// back, and Serve after Close returns at once.
func TestCloseFreesThePort(t *testing.T) {
	s, err := Listen(Config{Addr: "127.0.0.1:0", Pprof: true})
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addr().String()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	again, err := Listen(Config{Addr: addr, Pprof: true})
	if err != nil {
		t.Fatalf("listen again on %s after Close: %v", addr, err)
	}
	defer again.Close()
	if err := s.Serve(context.Background()); err != nil {
		t.Errorf("Serve after Close: %v", err)
	}
}

// blockingCollector makes a scrape take as long as the test says: it
// reports when it has started, and returns when released.
type blockingCollector struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

// blockingRegistry is a registry whose scrapes block on the collector it
// returns.
func blockingRegistry(t *testing.T) (*prometheus.Registry, *blockingCollector) {
	c := &blockingCollector{entered: make(chan struct{}, 1), release: make(chan struct{})}
	// A handler cut off by the server still runs until it returns.
	t.Cleanup(c.free)
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	return reg, c
}

// Describe describes nothing, which makes the collector unchecked.
func (c *blockingCollector) Describe(chan<- *prometheus.Desc) {}

func (c *blockingCollector) Collect(chan<- prometheus.Metric) {
	c.entered <- struct{}{}
	<-c.release
}

func (c *blockingCollector) free() { c.once.Do(func() { close(c.release) }) }

// scrape GETs /metrics in the background, once the scrape is in flight;
// the result arrives on the channel.
func scrape(t *testing.T, r *running, g *blockingCollector) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		resp, err := http.Get(r.base + "/metrics")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != http.StatusOK {
				err = errors.New(resp.Status)
			}
		}
		done <- err
	}()
	select {
	case <-g.entered:
	case err := <-done:
		t.Fatalf("the scrape ended before it reached the collector: %v", err)
	case <-time.After(waitLimit):
		t.Fatal("the scrape never reached the collector")
	}
	return done
}

// TestShutdownFinishesRequestsInFlight: a scrape under way when the owner
// stops is answered before Serve returns.
func TestShutdownFinishesRequestsInFlight(t *testing.T) {
	reg, g := blockingRegistry(t)
	r := start(t, Config{Metrics: reg}, nil)
	done := scrape(t, r, g)
	r.cancel()
	g.free()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("the scrape in flight at shutdown failed: %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("the scrape in flight at shutdown never finished")
	}
	r.waitServed(t)
	var ue *url.Error
	if _, err := http.Get(r.base + "/metrics"); !errors.As(err, &ue) {
		t.Errorf("GET after shutdown: %v, want a connection error", err)
	}
}

// TestShutdownCutsStuckRequests: a request that outlasts the grace is cut,
// and Serve returns anyway.
func TestShutdownCutsStuckRequests(t *testing.T) {
	reg, g := blockingRegistry(t)
	r := start(t, Config{Metrics: reg}, func(s *Server) { s.grace = 50 * time.Millisecond })
	done := scrape(t, r, g)
	r.cancel()
	r.waitServed(t)
	select {
	case err := <-done:
		if err == nil {
			t.Error("the stuck scrape was answered")
		}
	case <-time.After(waitLimit):
		t.Fatal("the stuck scrape's connection was never closed")
	}
}

func TestRequestedSeconds(t *testing.T) {
	for query, want := range map[string]time.Duration{
		"":              30 * time.Second,
		"seconds=5":     5 * time.Second,
		"seconds=0.5":   500 * time.Millisecond,
		"seconds=-1":    30 * time.Second,
		"seconds=x":     30 * time.Second,
		"seconds=1e300": 24 * time.Hour,
	} {
		req, err := http.NewRequest(http.MethodGet, "/debug/pprof/profile?"+query, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := requestedSeconds(req); got != want {
			t.Errorf("requestedSeconds(%q) = %s, want %s", query, got, want)
		}
	}
}
