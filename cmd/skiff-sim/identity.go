package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/skiffhq/skiff/agent"
	"github.com/skiffhq/skiff/ca"
	"github.com/skiffhq/skiff/identity"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// joiner gets simulated agents their certificates: each reads the one its
// data dir kept from an earlier run, or joins with the worker token the way
// skiff-agent does, straight to the managers' API addresses since
// simulated agents have no gossip.
//
// Certificates are not renewed: a renewer per agent would add its own
// weight to the per-agent memory the benchmark reports, and a certificate
// (90 days unless the cluster says otherwise) outlives any run.
type joiner struct {
	managers []string
	token    string
	// slots bounds the joins in flight. The leader commits a join even
	// when the joiner has given up waiting, and the joiner's retry then
	// finds its name taken: thousands of joins at once, each waiting its
	// turn for the CPU, would outlast identity.Join's per-attempt timeout.
	// A bounded few are answered in milliseconds, as fast in total.
	slots chan struct{}
	cas   caPool
}

// maxJoins is how many joins may be in flight at once: enough for the
// leader to commit them in batches, few enough to answer each at once.
const maxJoins = 64

func newJoiner(managers []string, token string) *joiner {
	return &joiner{managers: managers, token: token, slots: make(chan struct{}, maxJoins)}
}

// creds returns the client credentials of the agent cfg. i, the agent's
// number, picks the manager it asks first, so that the joins' TLS
// handshakes spread over the managers.
func (j *joiner) creds(ctx context.Context, i int, cfg agent.Config) (credentials.TransportCredentials, error) {
	// A bad flag must fail before a join leaves the node in the cluster.
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	name, dataDir := cfg.Name, cfg.DataDir
	id, err := identity.Load(dataDir, time.Now())
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if j.token == "" {
			return nil, fmt.Errorf("%s has no certificate in %s: pass the worker join token with --token (or SKIFF_JOIN_TOKEN); print it with `skiff cluster join-token worker`",
				name, identity.Dir(dataDir))
		}
		if id, err = j.join(ctx, i, cfg); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	pool, err := j.cas.get(id.Bundle)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	kp, err := id.Bundle.Keypair()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return credentials.NewTLS(ca.ClientConfig(pool, kp, ca.RoleManager)), nil
}

// join joins the agent cfg with the worker token, once a slot is free.
func (j *joiner) join(ctx context.Context, i int, cfg agent.Config) (identity.Joined, error) {
	select {
	case j.slots <- struct{}{}:
	case <-ctx.Done():
		return identity.Joined{}, ctx.Err()
	}
	defer func() { <-j.slots }()
	k := i % len(j.managers)
	id, err := identity.Join(ctx, identity.Request{
		Managers: slices.Concat(j.managers[k:], j.managers[:k]),
		Token:    j.token,
		Name:     cfg.Name,
		Role:     skiffpb.NodeRole_NODE_ROLE_WORKER,
		DataDir:  cfg.DataDir,
		Logger:   cfg.Logger,
	})
	if err != nil {
		return identity.Joined{}, fmt.Errorf("join %s to the cluster: %w", cfg.Name, err)
	}
	return id, nil
}

// caPool hands every simulated agent one pool for the cluster's CA: they
// all trust the same CA, and a parsed copy each would count in the
// per-agent memory the benchmark reports.
type caPool struct {
	mu   sync.Mutex
	pem  []byte
	pool *x509.CertPool
}

// get returns the pool of b's CA, shared when it is the CA seen first.
func (c *caPool) get(b ca.Bundle) (*x509.CertPool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pool != nil && bytes.Equal(c.pem, b.CA) {
		return c.pool, nil
	}
	pool, err := b.Pool()
	if err != nil {
		return nil, err
	}
	if c.pool == nil {
		c.pem, c.pool = b.CA, pool
	}
	return pool, nil
}
