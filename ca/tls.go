package ca

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Keypair is a node's certificate and key. Renewal swaps them in place:
// every TLS config built on a Keypair presents the new certificate on its
// next handshake, and connections already open are left alone, so renewing
// never interrupts a session or a task.
type Keypair struct {
	mu   sync.RWMutex
	cert *tls.Certificate
	id   Identity
}

// NewKeypair loads a certificate and its key.
func NewKeypair(certPEM, keyPEM []byte) (*Keypair, error) {
	k := &Keypair{}
	if err := k.Set(certPEM, keyPEM); err != nil {
		return nil, err
	}
	return k, nil
}

// Set replaces the certificate and key.
func (k *Keypair) Set(certPEM, keyPEM []byte) error {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("load key pair: %w", err)
	}
	id, err := IdentityOf(cert.Leaf)
	if err != nil {
		return err
	}
	k.mu.Lock()
	k.cert, k.id = &cert, id
	k.mu.Unlock()
	return nil
}

// Identity is who the certificate says this node is.
func (k *Keypair) Identity() Identity {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.id
}

// Leaf is the current certificate.
func (k *Keypair) Leaf() *x509.Certificate {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.cert.Leaf
}

func (k *Keypair) current() *tls.Certificate {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.cert
}

// ServerConfig is the TLS config of a server whose clients must present a
// certificate of this CA with one of roles. Without roles, a client may
// come without a certificate: the manager's API port takes joiners, who
// have none yet, and every service on it checks the role it needs itself
// (see PeerIdentity).
func ServerConfig(pool *x509.CertPool, kp *Keypair, roles ...Role) *tls.Config {
	c := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		ClientCAs:      pool,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return kp.current(), nil },
	}
	if len(roles) > 0 {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.VerifyConnection = requireRole(roles)
	}
	return c
}

// ClientConfig is the TLS config of a client that presents kp (nil for a
// joiner, which has no certificate yet) and must reach a server of role
// server under this CA.
func ClientConfig(pool *x509.CertPool, kp *Keypair, server Role) *tls.Config {
	c := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    pool,
		ServerName: ServerName(server),
	}
	if kp != nil {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return kp.current(), nil }
	}
	return c
}

// PinnedConfig is the TLS config of a joiner's first contact, before it has
// the CA. It accepts a server only if the server's chain includes a CA
// whose fingerprint is the join token's digest, and the server's own
// certificate was issued by that CA: the token pins the CA the way an SSH
// host key pins a host. Go's own verification is replaced, not skipped.
func PinnedConfig(digest string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The server is verified by VerifyConnection against the pinned CA
		// instead of against a pool the joiner does not have yet.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) < 2 {
				return errors.New("the server sent no CA certificate to check against the join token")
			}
			for _, c := range cs.PeerCertificates[1:] {
				if c.IsCA && Digest(c) == digest {
					pool := x509.NewCertPool()
					pool.AddCert(c)
					_, err := verify(pool, cs.PeerCertificates[0], time.Now())
					return err
				}
			}
			return errors.New("the server's CA does not match the join token's digest: the token belongs to another cluster, or something is impersonating the manager")
		},
	}
}

// WithCA returns a certificate chain that carries the CA after the node's
// certificate, so that a joiner can check the CA against its token.
func WithCA(certPEM, caPEM []byte) []byte {
	return append(append([]byte{}, certPEM...), caPEM...)
}

func requireRole(roles []Role) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.VerifiedChains) == 0 {
			return errors.New("no verified client certificate")
		}
		id, err := IdentityOf(cs.VerifiedChains[0][0])
		if err != nil {
			return err
		}
		if !slices.Contains(roles, id.Role) {
			return fmt.Errorf("a %s certificate may not connect here", id.Role)
		}
		return nil
	}
}

// ErrNoCertificate is PeerIdentity's answer for a client that presented no
// certificate.
var ErrNoCertificate = errors.New("no client certificate")

// PeerIdentity is the verified identity of a gRPC call's client.
func PeerIdentity(ctx context.Context) (Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, ErrNoCertificate
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return Identity{}, ErrNoCertificate
	}
	return IdentityOf(info.State.VerifiedChains[0][0])
}
