package ca

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc/credentials"
)

// Bundle is a credential as it is kept on disk: a folder holding ca.pem,
// cert.pem and key.pem. The admin bundle the first manager writes and the
// TLS folder of every node have this shape, and so does the folder the CLI
// reads (--tls-dir).
type Bundle struct {
	CA, Cert, Key []byte
}

// Bundle file names.
const (
	CAFile   = "ca.pem"
	CertFile = "cert.pem"
	KeyFile  = "key.pem"
)

// ReadBundle reads the bundle in dir. A folder without one gives an error
// that wraps fs.ErrNotExist.
func ReadBundle(dir string) (Bundle, error) {
	var b Bundle
	for _, f := range []struct {
		name string
		to   *[]byte
	}{{CAFile, &b.CA}, {CertFile, &b.Cert}, {KeyFile, &b.Key}} {
		data, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			return Bundle{}, fmt.Errorf("read credentials: %w", err)
		}
		*f.to = data
	}
	return b, nil
}

// WriteBundle writes b to dir, readable by its owner only. Each file is
// replaced whole, so a crash leaves the old or the new file, never half of
// one.
func WriteBundle(dir string, b Bundle) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	for name, data := range map[string][]byte{CAFile: b.CA, CertFile: b.Cert, KeyFile: b.Key} {
		if err := writeFile(filepath.Join(dir, name), data); err != nil {
			return err
		}
	}
	return nil
}

// Exists says whether dir holds a bundle.
func Exists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, CertFile))
	return !errors.Is(err, fs.ErrNotExist)
}

func writeFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Pool is a certificate pool holding the bundle's CA.
func (b Bundle) Pool() (*x509.CertPool, error) {
	cert, err := ParseCert(b.CA)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	p := x509.NewCertPool()
	p.AddCert(cert)
	return p, nil
}

// Keypair loads the bundle's certificate and key. The CA goes out after the
// certificate in every handshake, so that a joiner can pin it.
func (b Bundle) Keypair() (*Keypair, error) {
	return NewKeypair(WithCA(b.Cert, b.CA), b.Key)
}

// Identity is who the bundle's certificate says its holder is, checked
// against the bundle's own CA as of now: an expired certificate is an
// error, and its holder must join again with a token.
func (b Bundle) Identity(now time.Time) (Identity, error) {
	pool, err := b.Pool()
	if err != nil {
		return Identity{}, err
	}
	cert, err := ParseCert(b.Cert)
	if err != nil {
		return Identity{}, err
	}
	return verify(pool, cert, now)
}

// ClientCredentials are the bundle's certificate as a gRPC client's, which
// trusts only servers of role server under the bundle's CA: the CLI's and
// every node's way to dial a manager.
func (b Bundle) ClientCredentials(server Role) (credentials.TransportCredentials, error) {
	pool, err := b.Pool()
	if err != nil {
		return nil, err
	}
	kp, err := b.Keypair()
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(ClientConfig(pool, kp, server)), nil
}
