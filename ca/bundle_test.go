package ca

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestBundleOnDisk(t *testing.T) {
	a := newCA(t)
	dir := filepath.Join(t.TempDir(), "tls")
	if Exists(dir) {
		t.Fatal("an empty folder holds a bundle")
	}
	if _, err := ReadBundle(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadBundle of nothing: %v, want fs.ErrNotExist", err)
	}
	id := Identity{NodeID: "admin", Role: RoleAdmin, ClusterID: "cluster-1"}
	certPEM, keyPEM, err := a.Issue(id, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteBundle(dir, Bundle{CA: a.CertPEM, Cert: certPEM, Key: keyPEM}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{CAFile, CertFile, KeyFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	b, err := ReadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.Identity(time.Now()); err != nil || got != id {
		t.Fatalf("Identity = %+v, %v; want %+v", got, err, id)
	}
	if _, err := b.Identity(time.Now().Add(2 * time.Hour)); err == nil {
		t.Fatal("an expired bundle has an identity")
	}
	if _, err := b.Keypair(); err != nil {
		t.Fatal(err)
	}
}
