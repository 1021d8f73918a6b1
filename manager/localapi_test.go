package manager

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/skiffhq/skiff/ca"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// TestLocalAPIAddr: the API is served on the local address too, to an
// admin who checks the manager's certificate as on the advertised one, and
// that address closes with the manager.
func TestLocalAPIAddr(t *testing.T) {
	cfg := singleManagerConfig(t)
	cfg.LocalAPIAddr, _ = listenFree(t)
	stop := runManager(t, cfg)

	info, err := clusterInfo(t, cfg, cfg.LocalAPIAddr)
	if err != nil {
		t.Fatalf("ClusterInfo on the local address %s: %v", cfg.LocalAPIAddr, err)
	}
	if info.GetLeader() != "m1" {
		t.Fatalf("ClusterInfo on the local address: leader %q, want m1", info.GetLeader())
	}
	stop()
	if c, err := net.Dial("tcp", cfg.LocalAPIAddr); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Run returned", cfg.LocalAPIAddr)
	}
}

// TestTakenLocalAPIAddr: a local address in use costs only itself; the
// manager serves on its advertised address.
func TestTakenLocalAPIAddr(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := singleManagerConfig(t)
	cfg.LocalAPIAddr = taken.Addr().String()
	stop := runManager(t, cfg)
	defer stop()
	if _, err := clusterInfo(t, cfg, cfg.APIAddr()); err != nil {
		t.Fatalf("ClusterInfo on the advertised address with the local one taken: %v", err)
	}
}

// runManager starts Run and returns a function that stops it and waits
// for it to return.
func runManager(t *testing.T, cfg Config) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Run did not return after its context ended")
		}
	}
	t.Cleanup(stop)
	return stop
}

// clusterInfo asks the manager at addr for ClusterInfo as the cluster's
// admin, until it answers with a leader or 20 s have passed.
func clusterInfo(t *testing.T, cfg Config, addr string) (*skiffpb.ClusterInfoResponse, error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		info, err := askClusterInfo(AdminDir(cfg.DataDir), addr)
		switch {
		case err != nil:
			last = err
		case info.GetLeader() != "":
			return info, nil
		default:
			last = errors.New("no leader yet")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, fmt.Errorf("no answer with a leader within 20s: %w", last)
}

func askClusterInfo(adminDir, addr string) (*skiffpb.ClusterInfoResponse, error) {
	b, err := ca.ReadBundle(adminDir)
	if err != nil {
		return nil, err
	}
	creds, err := b.ClientCredentials(ca.RoleManager)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return skiffpb.NewControlClient(conn).ClusterInfo(ctx, &skiffpb.ClusterInfoRequest{})
}
