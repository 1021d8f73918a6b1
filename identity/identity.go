// Package identity gets a node its certificate and keeps it: the first
// join with a token, the folder the credentials live in afterwards, and the
// Join.Hello answer every member gives a joiner on its gossip port.
//
// A first join has two steps, because a joiner knows only a member's gossip
// address and a token. It says hello to that member over TLS, checking the
// CA the member presents against the token's digest, and learns the
// managers' API addresses. It then sends its certificate request, with the
// token, to a manager it now verifies like any other client. Its private
// key never leaves it.
package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/skiffhq/skiff/ca"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// Dir is where a node keeps its credentials, under its data dir.
func Dir(dataDir string) string { return filepath.Join(dataDir, "tls") }

// Request is what a first join needs.
type Request struct {
	// Addrs are gossip addresses (HOST:PORT) of any members.
	Addrs []string
	// Managers are managers' API addresses, asked directly when there
	// are no Addrs: skiff-sim's agents have no gossip. The TLS to them is
	// pinned to the token's CA as a hello's is.
	Managers []string
	// Token is the join token of the role asked for.
	Token string
	// Name is the node's --name.
	Name string
	Role skiffpb.NodeRole
	// DataDir is the node's data dir; the credentials go to Dir(DataDir).
	DataDir string
	Logger  *slog.Logger
}

// Joined is what a first join brings back.
type Joined struct {
	Bundle     ca.Bundle
	NodeID     string
	GossipKeys [][]byte
}

// attemptTimeout bounds one member's or manager's answer.
const attemptTimeout = 5 * time.Second

// Join gets the node its first certificate, writes it to the node's
// credentials folder, and returns it. It tries the members and managers in
// turn, again and again until ctx ends, while they are unreachable; a token
// or a name that the leader refuses ends it at once with the leader's
// reason, and then nothing was added to the cluster.
func Join(ctx context.Context, r Request) (Joined, error) {
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	tok, err := ca.ParseToken(r.Token)
	if err != nil {
		return Joined{}, err
	}
	if len(r.Addrs) == 0 && len(r.Managers) == 0 {
		return Joined{}, errors.New("join: no address to join (--join HOST:PORT)")
	}
	keyPEM, csr, err := ca.NewKey()
	if err != nil {
		return Joined{}, err
	}
	req := &skiffpb.IssueCertificateRequest{Token: r.Token, Name: r.Name, Role: r.Role, Csr: csr}
	wait := 200 * time.Millisecond
	var last error
	for {
		for _, addr := range slices.Concat(r.Addrs, r.Managers) {
			var j Joined
			var err error
			if slices.Contains(r.Addrs, addr) {
				j, err = joinVia(ctx, addr, tok, req)
			} else {
				j, err = ask(ctx, addr, credentials.NewTLS(ca.PinnedConfig(tok.Digest)), req)
			}
			if err == nil {
				j.Bundle.Key = keyPEM
				if err := Save(r.DataDir, j); err != nil {
					return Joined{}, err
				}
				r.Logger.Info("joined the cluster", "node_id", j.NodeID, "via", addr)
				return j, nil
			}
			if refused(err) {
				return Joined{}, err
			}
			r.Logger.Debug("join attempt failed", "member", addr, "error", err)
			last = err
		}
		select {
		case <-ctx.Done():
			return Joined{}, fmt.Errorf("join: no member answered before giving up: %w", last)
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// refusal is an answer that trying again will not change.
type refusal struct{ err error }

func (r refusal) Error() string { return r.err.Error() }
func (r refusal) Unwrap() error { return r.err }

func refused(err error) bool {
	var r refusal
	return errors.As(err, &r)
}

// joinVia says hello to the member at addr and asks the managers it names.
func joinVia(ctx context.Context, addr string, tok ca.Token, req *skiffpb.IssueCertificateRequest) (Joined, error) {
	managers, caCert, err := hello(ctx, addr, tok.Digest)
	if err != nil {
		return Joined{}, err
	}
	if len(managers) == 0 {
		return Joined{}, fmt.Errorf("member %s knows no manager yet", addr)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	creds := credentials.NewTLS(ca.ClientConfig(pool, nil, ca.RoleManager))
	var errs []error
	for _, m := range managers {
		j, err := ask(ctx, m, creds, req)
		if err == nil || refused(err) {
			return j, err
		}
		errs = append(errs, err)
	}
	return Joined{}, errors.Join(errs...)
}

// ask sends the certificate request to the manager at addr.
func ask(ctx context.Context, addr string, creds credentials.TransportCredentials, req *skiffpb.IssueCertificateRequest) (Joined, error) {
	resp, err := issue(ctx, addr, creds, req)
	if err == nil {
		return Joined{
			Bundle:     ca.Bundle{CA: resp.GetCa(), Cert: resp.GetCert()},
			NodeID:     resp.GetNodeId(),
			GossipKeys: resp.GetGossipKeys(),
		}, nil
	}
	switch status.Code(err) {
	case codes.PermissionDenied, codes.InvalidArgument, codes.AlreadyExists:
		return Joined{}, refusal{fmt.Errorf("the cluster refused to join this node: %s", status.Convert(err).Message())}
	}
	return Joined{}, fmt.Errorf("manager %s: %w", addr, err)
}

// hello asks the member at addr for the managers, over TLS pinned to the
// token's CA digest, and returns the CA it presented.
func hello(ctx context.Context, addr, digest string) ([]string, *x509.Certificate, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(ca.PinnedConfig(digest))))
	if err != nil {
		return nil, nil, fmt.Errorf("member %s: %w", addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	var p peer.Peer
	resp, err := skiffpb.NewJoinClient(conn).Hello(ctx, &skiffpb.HelloRequest{}, grpc.Peer(&p), grpc.WaitForReady(false))
	if err != nil {
		return nil, nil, fmt.Errorf("member %s: %w", addr, err)
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil, nil, fmt.Errorf("member %s: no TLS state", addr)
	}
	for _, c := range info.State.PeerCertificates[1:] {
		if c.IsCA && ca.Digest(c) == digest {
			return resp.GetManagers(), c, nil
		}
	}
	return nil, nil, fmt.Errorf("member %s: its CA does not match the join token", addr)
}

// issue sends the certificate request to a manager.
func issue(ctx context.Context, addr string, creds credentials.TransportCredentials, req *skiffpb.IssueCertificateRequest) (*skiffpb.IssueCertificateResponse, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	return skiffpb.NewNodeCAClient(conn).IssueCertificate(ctx, req)
}

// Save writes a node's credentials and gossip keys to its data dir.
func Save(dataDir string, j Joined) error {
	if err := ca.WriteBundle(Dir(dataDir), j.Bundle); err != nil {
		return err
	}
	return saveKeys(Dir(dataDir), j.GossipKeys)
}

// Load reads the credentials a node kept from its join. A node that never
// joined gets an error that wraps fs.ErrNotExist; one whose certificate
// expired while it was down must join again with a token.
func Load(dataDir string, now time.Time) (Joined, error) {
	b, err := ca.ReadBundle(Dir(dataDir))
	if err != nil {
		return Joined{}, err
	}
	id, err := b.Identity(now)
	if err != nil {
		return Joined{}, fmt.Errorf("the certificate in %s: %w; join again with a token (--token)", Dir(dataDir), err)
	}
	keys, err := loadKeys(Dir(dataDir))
	if err != nil {
		return Joined{}, err
	}
	return Joined{Bundle: b, NodeID: id.NodeID, GossipKeys: keys}, nil
}
