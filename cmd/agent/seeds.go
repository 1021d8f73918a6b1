package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/skiffhq/skiff/agent"
	"github.com/skiffhq/skiff/ca"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// seedDiscovery is the agent's Discovery: the gossip pool's, with a way
// around a gossip key the cluster no longer uses. A node that was down
// through a rotation of the key comes back holding only the old one, and
// its pool finds no one. While the pool names no manager, the seeds are
// asked for the managers on their gossip ports over TLS (Join.Hello, which
// needs no gossip key); the first session then brings the current keyring,
// and the pool finds everyone again.
type seedDiscovery struct {
	agent.Discovery
	// ctx bounds the questions to the seeds: the agent's run.
	ctx   context.Context
	seeds []string
	// digest is the cluster CA's: a seed must prove it belongs to the
	// cluster before its answer is believed.
	digest string
	logger *slog.Logger

	mu    sync.Mutex
	asked time.Time
	found []string
}

// seedAskInterval is the least time between two rounds of questions to the
// seeds; between them the last answer stands.
const seedAskInterval = 5 * time.Second

// seedHelloTimeout bounds one seed's answer.
const seedHelloTimeout = 2 * time.Second

// ManagerAPIAddrs implements agent.Discovery.
func (d *seedDiscovery) ManagerAPIAddrs() []string {
	if addrs := d.Discovery.ManagerAPIAddrs(); len(addrs) > 0 {
		return addrs
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.asked.IsZero() && time.Since(d.asked) < seedAskInterval {
		return d.found
	}
	d.asked = time.Now()
	d.found = nil
	for _, seed := range d.seeds {
		managers, err := hello(d.ctx, seed, d.digest)
		if err == nil && len(managers) > 0 {
			d.found = managers
			break
		}
		d.logger.Debug("ask a seed for the managers", "seed", seed, "managers", managers, "error", err)
	}
	return d.found
}

// hello asks the member at the gossip address addr for the managers' API
// addresses, over TLS pinned to the cluster's CA.
func hello(ctx context.Context, addr, digest string) ([]string, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(ca.PinnedConfig(digest))))
	if err != nil {
		return nil, fmt.Errorf("member %s: %w", addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, seedHelloTimeout)
	defer cancel()
	resp, err := skiffpb.NewJoinClient(conn).Hello(ctx, &skiffpb.HelloRequest{})
	if err != nil {
		return nil, fmt.Errorf("member %s: %w", addr, err)
	}
	return resp.GetManagers(), nil
}
