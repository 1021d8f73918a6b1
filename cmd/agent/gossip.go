package main

import (
	"context"
	"log/slog"

	"github.com/hashicorp/memberlist"

	"github.com/skiffhq/skiff/agent"
	"github.com/skiffhq/skiff/agent/discovery"
	"github.com/skiffhq/skiff/gossip"
	"github.com/skiffhq/skiff/identity"
)

// gossipOverlay is what the host's overlay takes from the gossip pool: it
// rides on the pool's messages, follows its membership, and sends through
// it once it is up. overlay/host.Host implements it.
type gossipOverlay interface {
	Delegate() memberlist.Delegate
	HandleGossip(gossip.Event)
	SetPool(*gossip.Pool)
}

// gossipConfig says how the agent joins the pool.
type gossipConfig struct {
	// name and addr are the node's name and advertise address.
	name, addr string
	port       int
	// join are the seeds, gossip addresses (host:port) of any members.
	join []string
	// keys is the gossip keyring the node got when it joined.
	keys   [][]byte
	logger *slog.Logger
}

// joinGossip makes the agent a member of the gossip pool, which serves
// twice: it carries the overlay's endpoint records and tells it of members
// that die, and it is the agent's Discovery of the managers and the leader.
// The caller leaves the pool once the agent has stopped.
func joinGossip(ctx context.Context, cfg gossipConfig, ov gossipOverlay) (*gossip.Pool, agent.Discovery, error) {
	d, err := discovery.Start(ctx, gossip.Config{
		Meta:     gossip.Meta{Name: cfg.name, Role: gossip.RoleAgent, Addr: cfg.addr},
		BindAddr: cfg.addr,
		Port:     cfg.port,
		Join:     cfg.join,
		Keys:     cfg.keys,
		Delegate: ov.Delegate(),
		OnEvent:  ov.HandleGossip,
		Logger:   cfg.logger,
	})
	if err != nil {
		return nil, nil, err
	}
	ov.SetPool(d.Pool())
	return d.Pool(), d, nil
}

// poolKeyring is the agent's Keyring: the cluster's gossip keyring goes to
// the pool, and beside the certificate, where the agent's next start finds
// it; a node restarted after a rotation would otherwise start with a key
// the others no longer read.
type poolKeyring struct {
	pool    *gossip.Pool
	dataDir string
}

// SetKeys implements agent.Keyring.
func (k poolKeyring) SetKeys(keys [][]byte) error {
	if err := k.pool.SetKeys(keys); err != nil {
		return err
	}
	return identity.SaveKeys(k.dataDir, keys)
}
