package manager

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listenFree returns a loopback address with a port that was free a
// moment ago.
func listenFree(t *testing.T) (addr string, port int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String(), l.Addr().(*net.TCPAddr).Port
}

func singleManagerConfig(t *testing.T) Config {
	t.Helper()
	_, api := listenFree(t)
	_, raft := listenFree(t)
	_, gossip := listenFree(t)
	return Config{
		Name: "m1", DataDir: t.TempDir(), AdvertiseAddr: "127.0.0.1",
		APIPort: api, RaftPort: raft, GossipPort: gossip,
	}
}

func httpGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// TestDebugEndpoints: the metrics and the profiler are served on their own
// addresses, each only where it was asked for, and stop with the manager.
func TestDebugEndpoints(t *testing.T) {
	cfg := singleManagerConfig(t)
	cfg.MetricsAddr, _ = listenFree(t)
	cfg.PprofAddr, _ = listenFree(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()

	metrics := "http://" + cfg.MetricsAddr
	pprof := "http://" + cfg.PprofAddr
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body, err := httpGet(metrics + "/metrics")
		if err == nil && code == http.StatusOK && strings.Contains(body, `skiff_raft_state{state="Leader"} 1`) &&
			strings.Contains(body, "skiff_raft_applied_index") && strings.Contains(body, "skiff_scheduling_latency_seconds") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the single manager's metrics never showed it leading: %d %v\n%s", code, err, body)
		}
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	for _, c := range []struct {
		url  string
		want int
	}{
		{pprof + "/debug/pprof/", http.StatusOK},
		{pprof + "/metrics", http.StatusNotFound},
		{metrics + "/debug/pprof/", http.StatusNotFound},
	} {
		if code, _, err := httpGet(c.url); err != nil || code != c.want {
			t.Errorf("GET %s: %d %v, want %d", c.url, code, err, c.want)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	for _, addr := range []string{cfg.MetricsAddr, cfg.PprofAddr} {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after Run returned", addr)
		}
	}
}

// TestTakenDebugAddr: a debug address in use is an error from Run, which
// leaves the API port free again.
func TestTakenDebugAddr(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := singleManagerConfig(t)
	cfg.PprofAddr = taken.Addr().String()
	runErr := Run(context.Background(), cfg)
	var opErr *net.OpError
	if runErr == nil || !strings.Contains(runErr.Error(), "listen for pprof on "+cfg.PprofAddr) || !errors.As(runErr, &opErr) {
		t.Fatalf("Run with the pprof address taken: %v", runErr)
	}
	api := net.JoinHostPort(cfg.AdvertiseAddr, strconv.Itoa(cfg.APIPort))
	l, err := net.Listen("tcp", api)
	if err != nil {
		t.Fatalf("the API address %s is still held after Run failed: %v", api, err)
	}
	l.Close()
}
