// Package discovery makes an agent's member of the gossip pool its
// agent.Discovery. Managers advertise their API address, and the leader its
// term, in their gossip metadata, so the pool already names them; what this
// package adds is the wake-up when a manager announces that it leads.
//
// It is a package of its own so that package agent need not know gossip,
// and so that skiff-agent and internal/testcluster share one adapter.
package discovery

import (
	"context"

	"github.com/skiffhq/skiff/gossip"
)

// Discovery is a member of the gossip pool as an agent's Discovery.
type Discovery struct {
	pool *gossip.Pool
	news chan struct{}
}

// Start joins the pool as gossip.Start does, with cfg.Meta normally an
// agent's, and returns the member as a Discovery. cfg.OnEvent, when set,
// still hears every event; a manager's announcement that it leads is also
// LeaderNews. The caller owns the pool: it shuts it down (or kills it) once
// the agent has stopped, since the agent may ask it for a leader until then.
func Start(ctx context.Context, cfg gossip.Config) (*Discovery, error) {
	// The channel must exist before the pool: memberlist delivers events
	// from the moment it starts, before gossip.Start returns.
	news := make(chan struct{}, 1)
	onEvent := cfg.OnEvent
	cfg.OnEvent = func(ev gossip.Event) {
		if onEvent != nil {
			onEvent(ev)
		}
		announceLeader(news, ev)
	}
	pool, err := gossip.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &Discovery{pool: pool, news: news}, nil
}

// Pool returns the member's pool, for its owner to shut down and for
// whatever else rides on it (skiff-agent's overlay).
func (d *Discovery) Pool() *gossip.Pool { return d.pool }

// ManagerAPIAddrs returns the API addresses of the managers the pool
// believes alive.
func (d *Discovery) ManagerAPIAddrs() []string { return d.pool.ManagerAPIAddrs() }

// Leader returns the API address of the manager announced as leader in the
// highest term, and that term; "" and 0 while none is.
func (d *Discovery) Leader() (apiAddr string, term uint64) { return d.pool.Leader() }

// LeaderNews has a value whenever a manager announces that it leads; one
// value waiting stands for any number of announcements.
func (d *Discovery) LeaderNews() <-chan struct{} { return d.news }

// announceLeader signals news when ev is a manager announcing that it
// leads. It runs on memberlist's goroutine, so it never blocks: a signal
// already waiting covers this one.
func announceLeader(news chan<- struct{}, ev gossip.Event) {
	if ev.Member.Role != gossip.RoleManager || ev.Member.Lead == 0 {
		return
	}
	select {
	case news <- struct{}{}:
	default:
	}
}
