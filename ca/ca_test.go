package ca

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"
)

func newCA(t *testing.T) *Authority {
	t.Helper()
	a, err := NewAuthority("cluster-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// issue makes a key and a certificate for id the way a joiner gets one:
// its own key, a request, the CA's signature.
func issue(t *testing.T, a *Authority, id Identity) (certPEM, keyPEM []byte) {
	t.Helper()
	keyPEM, csr, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err = a.Sign(csr, id, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

func node(t *testing.T, a *Authority, id Identity) *Keypair {
	t.Helper()
	certPEM, keyPEM := issue(t, a, id)
	kp, err := Bundle{CA: a.CertPEM, Cert: certPEM, Key: keyPEM}.Keypair()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func TestSignedCertificateCarriesIdentity(t *testing.T) {
	a := newCA(t)
	want := Identity{NodeID: "n1", Role: RoleWorker, ClusterID: "cluster-1"}
	kp := node(t, a, want)
	if got := kp.Identity(); got != want {
		t.Fatalf("identity %+v, want %+v", got, want)
	}
	if got, err := a.Verify(kp.Leaf(), time.Now()); err != nil || got != want {
		t.Fatalf("Verify = %+v, %v", got, err)
	}
	if _, err := a.Verify(kp.Leaf(), time.Now().Add(2*time.Hour)); err == nil {
		t.Fatal("an expired certificate verified")
	}
	if _, err := newCA(t).Verify(kp.Leaf(), time.Now()); err == nil {
		t.Fatal("another CA's certificate verified")
	}
}

func TestSignRefusesWhatItShouldNot(t *testing.T) {
	a := newCA(t)
	_, csr, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		id  Identity
		ttl time.Duration
	}{
		"no node ID":    {Identity{Role: RoleWorker, ClusterID: "cluster-1"}, time.Hour},
		"other cluster": {Identity{NodeID: "n", Role: RoleWorker, ClusterID: "cluster-2"}, time.Hour},
		"too short":     {Identity{NodeID: "n", Role: RoleWorker, ClusterID: "cluster-1"}, time.Second},
	} {
		if _, err := a.Sign(csr, c.id, c.ttl, time.Now()); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
	if _, err := a.Sign([]byte("not a request"), Identity{NodeID: "n", Role: RoleWorker, ClusterID: "cluster-1"}, time.Hour, time.Now()); err == nil {
		t.Error("signed garbage")
	}
}

func TestAuthorityRoundTrip(t *testing.T) {
	a := newCA(t)
	b, err := LoadAuthority(a.CertPEM, a.KeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	if b.Digest() != a.Digest() || b.ClusterID() != "cluster-1" {
		t.Fatal("a loaded CA differs from the one saved")
	}
	if _, err := LoadAuthority(a.CertPEM, newCA(t).KeyPEM()); err == nil {
		t.Fatal("a CA loaded with another CA's key")
	}
}

func TestToken(t *testing.T) {
	a := newCA(t)
	tok := Token{Digest: a.Digest(), Secret: NewSecret()}
	got, err := ParseToken(" " + tok.String() + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if got != tok || !got.SecretMatches(tok.Secret) || got.SecretMatches(NewSecret()) || got.SecretMatches("") {
		t.Fatalf("parsed %+v from %+v", got, tok)
	}
	s := tok.String()
	for _, bad := range []string{"", "SWMTKN-1-abc-def", strings.Replace(s, "-1-", "-2-", 1), s[:len(s)-1], strings.ToUpper(s)} {
		if _, err := ParseToken(bad); err == nil {
			t.Errorf("ParseToken(%q) accepted it", bad)
		}
	}
}

// handshake runs a TLS handshake between the two configs over loopback
// and returns the client's and the server's errors.
func handshake(t *testing.T, server, client *tls.Config) (clientErr, serverErr error) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	done := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		s := tls.Server(c, server)
		err = s.Handshake()
		if err == nil {
			// TLS 1.3 reports a rejected client certificate on the first
			// read, so read what the client sends.
			_, err = s.Read(make([]byte, 1))
		}
		done <- err
	}()
	c, err := tls.Dial("tcp", lis.Addr().String(), client)
	if err == nil {
		_, err = c.Write([]byte{1})
		if err == nil {
			_, err = c.Read(make([]byte, 1))
			if err != nil && strings.Contains(err.Error(), "EOF") {
				err = nil
			}
		}
		c.Close()
	}
	return err, <-done
}

func TestManagersOnlyServerRefusesOthers(t *testing.T) {
	a, other := newCA(t), newCA(t)
	mgr := node(t, a, Identity{NodeID: "m1", Role: RoleManager, ClusterID: "cluster-1"})
	srv := ServerConfig(a.Pool(), mgr, RoleManager)
	for name, c := range map[string]struct {
		client *tls.Config
		ok     bool
	}{
		"manager":        {ClientConfig(a.Pool(), node(t, a, Identity{NodeID: "m2", Role: RoleManager, ClusterID: "cluster-1"}), RoleManager), true},
		"worker":         {ClientConfig(a.Pool(), node(t, a, Identity{NodeID: "w1", Role: RoleWorker, ClusterID: "cluster-1"}), RoleManager), false},
		"no certificate": {ClientConfig(a.Pool(), nil, RoleManager), false},
		"another CA":     {ClientConfig(a.Pool(), node(t, other, Identity{NodeID: "m9", Role: RoleManager, ClusterID: "cluster-1"}), RoleManager), false},
	} {
		_, serr := handshake(t, srv, c.client)
		if (serr == nil) != c.ok {
			t.Errorf("%s: server error %v, want ok=%v", name, serr, c.ok)
		}
	}
}

func TestClientChecksTheServersRole(t *testing.T) {
	a := newCA(t)
	worker := node(t, a, Identity{NodeID: "w1", Role: RoleWorker, ClusterID: "cluster-1"})
	cerr, _ := handshake(t, ServerConfig(a.Pool(), worker), ClientConfig(a.Pool(), nil, RoleManager))
	if cerr == nil {
		t.Fatal("a client looking for a manager accepted a worker's certificate")
	}
}

func TestPinnedConfigChecksTheDigest(t *testing.T) {
	a, other := newCA(t), newCA(t)
	mgr := node(t, a, Identity{NodeID: "m1", Role: RoleManager, ClusterID: "cluster-1"})
	if cerr, _ := handshake(t, ServerConfig(a.Pool(), mgr), PinnedConfig(a.Digest())); cerr != nil {
		t.Fatalf("pinned to the right CA: %v", cerr)
	}
	if cerr, _ := handshake(t, ServerConfig(a.Pool(), mgr), PinnedConfig(other.Digest())); cerr == nil {
		t.Fatal("pinned to another CA, the handshake succeeded")
	}
	// An impostor that sends the pinned CA along with a certificate of its
	// own CA fails: the leaf must chain to the pinned CA.
	certPEM, keyPEM := issue(t, other, Identity{NodeID: "m1", Role: RoleManager, ClusterID: "cluster-1"})
	fake, err := NewKeypair(WithCA(certPEM, a.CertPEM), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if cerr, _ := handshake(t, ServerConfig(a.Pool(), fake), PinnedConfig(a.Digest())); cerr == nil {
		t.Fatal("an impostor that sent the pinned CA along was accepted")
	}
}
