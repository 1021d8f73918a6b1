package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/skiffhq/skiff/agent"
	"github.com/skiffhq/skiff/ca"
	"github.com/skiffhq/skiff/gossip"
	"github.com/skiffhq/skiff/identity"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// nodeIdentity is the agent's certificate and what came with it.
type nodeIdentity struct {
	dataDir    string
	pool       *x509.CertPool
	keypair    *ca.Keypair
	gossipKeys [][]byte
	// caDigest is the cluster CA's fingerprint, which a seed asked for the
	// managers must prove (seedDiscovery).
	caDigest string
	logger   *slog.Logger
}

// loadIdentity reads the node's certificate from its data dir, or joins the
// cluster with the token to get one.
func loadIdentity(ctx context.Context, cfg agent.Config, seeds []string, token string, logger *slog.Logger) (*nodeIdentity, error) {
	j, err := identity.Load(cfg.DataDir, time.Now())
	if errors.Is(err, fs.ErrNotExist) {
		if token == "" {
			return nil, errors.New("this node has not joined a cluster yet: pass the worker join token with --token (or SKIFF_JOIN_TOKEN); print it on a manager with `skiff cluster join-token worker`")
		}
		j, err = identity.Join(ctx, identity.Request{
			Addrs: seeds, Token: token, Name: cfg.Name, Role: skiffpb.NodeRole_NODE_ROLE_WORKER,
			DataDir: cfg.DataDir, Logger: logger,
		})
		if err != nil {
			return nil, fmt.Errorf("join the cluster: %w", err)
		}
	}
	if err != nil {
		return nil, err
	}
	kp, err := j.Bundle.Keypair()
	if err != nil {
		return nil, err
	}
	pool, err := j.Bundle.Pool()
	if err != nil {
		return nil, err
	}
	caCert, err := ca.ParseCert(j.Bundle.CA)
	if err != nil {
		return nil, fmt.Errorf("the CA in %s: %w", identity.Dir(cfg.DataDir), err)
	}
	return &nodeIdentity{
		dataDir: cfg.DataDir, pool: pool, keypair: kp, gossipKeys: j.GossipKeys, caDigest: ca.Digest(caCert), logger: logger,
	}, nil
}

// clientCreds are what the agent dials managers with.
func (id *nodeIdentity) clientCreds() credentials.TransportCredentials {
	return credentials.NewTLS(ca.ClientConfig(id.pool, id.keypair, ca.RoleManager))
}

// run runs the agent beside what keeps its identity: the answer to joiners
// on the gossip port, and the certificate's renewal. All stop when the
// agent does.
func (id *nodeIdentity) run(ctx context.Context, cfg agent.Config, pool *gossip.Pool, disc agent.Discovery, runAgent func(context.Context) error) error {
	g, ctx := errgroup.WithContext(ctx)
	managers := func() []string {
		var out []string
		if leader, _ := disc.Leader(); leader != "" {
			out = append(out, leader)
		}
		for _, a := range disc.ManagerAPIAddrs() {
			if !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
		return out
	}
	runCtx, cancel := context.WithCancel(ctx)
	g.Go(func() error {
		defer cancel()
		return runAgent(runCtx)
	})
	g.Go(func() error {
		srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(ca.ServerConfig(id.pool, id.keypair))))
		skiffpb.RegisterJoinServer(srv, identity.HelloServer{Managers: managers})
		stop := context.AfterFunc(runCtx, srv.Stop)
		defer stop()
		if err := srv.Serve(pool.JoinListener()); err != nil && runCtx.Err() == nil && !errors.Is(err, net.ErrClosed) {
			id.logger.Warn("the join port stopped", "error", err)
		}
		return nil
	})
	g.Go(func() error {
		(&identity.Renewer{DataDir: id.dataDir, Pool: id.pool, Keypair: id.keypair, Managers: managers, Logger: id.logger}).Run(runCtx)
		return nil
	})
	return g.Wait()
}
