// Package ca is skiff's certificate authority and the identities it
// issues. Every connection in a cluster is mutual TLS under one CA that the
// first manager creates: the certificate a peer presents says which node it
// is and what it may do, so no name a peer sends is ever trusted on its own.
//
// The shapes follow Docker Swarm's: ECDSA P-256 keys; a node certificate
// whose common name is the node's ID, whose organizational unit is its
// role, and whose organization is the cluster's ID; and a DNS name per role
// ("skiff-manager", "skiff-worker"), so that a client dialling a manager by
// any address checks that it reached a manager of this cluster simply by
// asking for that server name.
package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"
)

// Role is what a certificate allows its holder to do.
type Role string

const (
	// RoleManager may speak Raft, forward Control API calls, and hold a
	// session as an agent of its node.
	RoleManager Role = "manager"
	// RoleWorker may only hold its own node's agent session.
	RoleWorker Role = "worker"
	// RoleAdmin is a user of the Control API: the CLI.
	RoleAdmin Role = "admin"
)

// ServerName is the DNS name every certificate of role r carries. A client
// that must reach a manager asks for ServerName(RoleManager), which a
// worker's certificate cannot satisfy.
func ServerName(r Role) string { return "skiff-" + string(r) }

// Lifetimes.
const (
	// CALifetime is how long a cluster's CA certificate is valid. CA
	// rotation is not built (docs/security.md), so it outlives any cluster
	// that is likely to exist, as Swarm's does.
	CALifetime = 20 * 365 * 24 * time.Hour
	// DefaultCertExpiry is a node certificate's lifetime unless the
	// cluster sets another (--cert-expiry).
	DefaultCertExpiry = 90 * 24 * time.Hour
	// MinCertExpiry keeps renewal, which starts well before expiry, from
	// turning into a storm.
	MinCertExpiry = time.Minute
	// maxBackdate covers clocks a little behind the issuer's.
	maxBackdate = 5 * time.Minute
)

// backdate is how far before now a certificate of lifetime ttl starts: up
// to maxBackdate, and never more than a tenth of its life, so that a short
// certificate is not mostly spent in the past (renewal, at two thirds of
// its life, would then be due at once).
func backdate(ttl time.Duration) time.Duration { return min(maxBackdate, ttl/10) }

// Identity is who a certificate says its holder is.
type Identity struct {
	// NodeID is the node's ID in the cluster; for an admin, the name of
	// the credential.
	NodeID string
	Role   Role
	// ClusterID is the cluster that issued the certificate.
	ClusterID string
}

func (id Identity) String() string { return fmt.Sprintf("%s %s", id.Role, id.NodeID) }

// IdentityOf reads the identity of a certificate that has already been
// verified against the cluster's CA.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	id := Identity{NodeID: cert.Subject.CommonName}
	if len(cert.Subject.OrganizationalUnit) != 1 || len(cert.Subject.Organization) != 1 || id.NodeID == "" {
		return Identity{}, errors.New("certificate carries no skiff identity")
	}
	id.Role, id.ClusterID = Role(cert.Subject.OrganizationalUnit[0]), cert.Subject.Organization[0]
	switch id.Role {
	case RoleManager, RoleWorker, RoleAdmin:
	default:
		return Identity{}, fmt.Errorf("certificate has unknown role %q", id.Role)
	}
	return id, nil
}

// Authority signs certificates for one cluster. Its key lives in the
// cluster's Raft state, so whichever manager leads can sign.
type Authority struct {
	// Cert is the CA certificate and CertPEM its encoding.
	Cert    *x509.Certificate
	CertPEM []byte
	key     *ecdsa.PrivateKey
	keyPEM  []byte
}

// NewAuthority creates the CA of a new cluster.
func NewAuthority(clusterID string, now time.Time) (*Authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "skiff-ca", Organization: []string{clusterID}},
		NotBefore:             now.Add(-maxBackdate),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return nil, err
	}
	return LoadAuthority(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM)
}

// LoadAuthority restores a CA from its certificate and key.
func LoadAuthority(certPEM, keyPEM []byte) (*Authority, error) {
	cert, err := ParseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("the CA key does not match the CA certificate")
	}
	return &Authority{Cert: cert, CertPEM: certPEM, key: key, keyPEM: keyPEM}, nil
}

// KeyPEM is the CA's private key, for the cluster's Raft state.
func (a *Authority) KeyPEM() []byte { return a.keyPEM }

// ClusterID is the cluster the CA belongs to.
func (a *Authority) ClusterID() string { return a.Cert.Subject.Organization[0] }

// Digest is the CA certificate's fingerprint, as join tokens carry it.
func (a *Authority) Digest() string { return Digest(a.Cert) }

// Pool is a certificate pool holding only this CA.
func (a *Authority) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(a.Cert)
	return p
}

// Sign issues a certificate for id to the holder of the key that signed
// csrDER, valid for ttl from now. It returns the certificate in PEM.
func (a *Authority) Sign(csrDER []byte, id Identity, ttl time.Duration, now time.Time) ([]byte, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("parse certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	return a.signKey(csr.PublicKey, id, ttl, now)
}

func (a *Authority) signKey(pub any, id Identity, ttl time.Duration, now time.Time) ([]byte, error) {
	if k, ok := pub.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		return nil, errors.New("certificate request: want an ECDSA P-256 key")
	}
	if id.NodeID == "" {
		return nil, errors.New("sign: the identity has no node ID")
	}
	if id.ClusterID != a.ClusterID() {
		return nil, fmt.Errorf("sign: identity of cluster %q, this CA is %q's", id.ClusterID, a.ClusterID())
	}
	if ttl < MinCertExpiry {
		return nil, fmt.Errorf("sign: certificate lifetime %s is below the minimum %s", ttl, MinCertExpiry)
	}
	notAfter := now.Add(ttl)
	if notAfter.After(a.Cert.NotAfter) {
		notAfter = a.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject: pkix.Name{
			CommonName:         id.NodeID,
			OrganizationalUnit: []string{string(id.Role)},
			Organization:       []string{id.ClusterID},
		},
		DNSNames:    []string{ServerName(id.Role), id.NodeID},
		NotBefore:   now.Add(-backdate(ttl)),
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Cert, pub, a.key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", id, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// Issue makes a new key and a certificate for id: the manager's own, when it
// creates a cluster, and the admin bundle.
func (a *Authority) Issue(id Identity, ttl time.Duration, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	if certPEM, err = a.signKey(&key.PublicKey, id, ttl, now); err != nil {
		return nil, nil, err
	}
	if keyPEM, err = EncodeKey(key); err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

// Verify checks that cert was issued by this CA, for a TLS client or
// server, and is valid at now; it returns the identity it carries.
func (a *Authority) Verify(cert *x509.Certificate, now time.Time) (Identity, error) {
	return verify(a.Pool(), cert, now)
}

func verify(pool *x509.CertPool, cert *x509.Certificate, now time.Time) (Identity, error) {
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return Identity{}, fmt.Errorf("verify certificate: %w", err)
	}
	return IdentityOf(cert)
}

// RequestKey is the SHA-256 fingerprint of the public key of a certificate
// request, after checking the request's signature: it proves the requester
// holds that key.
func RequestKey(csrDER []byte) ([]byte, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("parse certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(csr.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	sum := sha256.Sum256(der)
	return sum[:], nil
}

// Digest is the fingerprint of a CA certificate: its SHA-256, in base 36.
func Digest(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return base36(sum[:], digestLen)
}

// NewKey makes a node's private key and a certificate request for it.
func NewKey() (keyPEM, csrDER []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	csrDER, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate request: %w", err)
	}
	keyPEM, err = EncodeKey(key)
	return keyPEM, csrDER, err
}

// CSRFor makes a certificate request for an existing key, to renew.
func CSRFor(keyPEM []byte) ([]byte, error) {
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate request: %w", err)
	}
	return der, nil
}

// EncodeKey encodes a private key as PEM.
func EncodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// ParseKey decodes a PEM private key.
func ParseKey(keyPEM []byte) (*ecdsa.PrivateKey, error) {
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return nil, errors.New("no PEM block in key")
	}
	key, err := x509.ParseECPrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	return key, nil
}

// ParseCert decodes the first certificate of a PEM bundle.
func ParseCert(certPEM []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return cert, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		// crypto/rand does not fail on supported platforms.
		panic(err)
	}
	return n
}

// base36 writes b as a base-36 number, zero-padded to width.
func base36(b []byte, width int) string {
	s := new(big.Int).SetBytes(b).Text(36)
	if len(s) < width {
		s = string(slices.Repeat([]byte{'0'}, width-len(s))) + s
	}
	return s
}
