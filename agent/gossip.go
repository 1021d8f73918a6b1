package agent

import (
	"cmp"
	"context"
	"log/slog"

	"github.com/skiffhq/skiff/gossip"
)

// joinGossip joins the gossip pool for a caller that set Config.Join rather
// than Config.Discovery, and returns the pool, for Run to leave, and the
// Discovery it makes. It wires no Overlay's gossip: only skiff-agent has an
// overlay, and it wires its own pool.
//
// It is transitional: skiff-agent wires its own pool (see cmd/agent), and
// this stays only until internal/testcluster does the same; then it goes,
// with Config's gossip fields, and package agent no longer knows gossip.
func joinGossip(ctx context.Context, cfg Config, logger *slog.Logger) (*gossip.Pool, Discovery, error) {
	news := make(chan struct{}, 1)
	pool, err := gossip.Start(ctx, gossip.Config{
		Meta:     gossip.Meta{Name: cfg.Name, Role: gossip.RoleAgent, Addr: cfg.AdvertiseAddr},
		BindAddr: cfg.AdvertiseAddr,
		Port:     cmp.Or(cfg.GossipPort, 7946),
		Join:     cfg.Join,
		Logger:   logger,
		OnEvent: func(ev gossip.Event) {
			if ev.Member.Role == gossip.RoleManager && ev.Member.Lead != 0 {
				select {
				case news <- struct{}{}:
				default:
				}
			}
		},
	})
	if err != nil {
		return nil, nil, err
	}
	return pool, poolDiscovery{Pool: pool, news: news}, nil
}

// poolDiscovery is the gossip pool as the agent's Discovery.
type poolDiscovery struct {
	*gossip.Pool
	news chan struct{}
}

func (d poolDiscovery) LeaderNews() <-chan struct{} { return d.news }
