package cli

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/skiffhq/skiff/ca"
)

// testCreds are a manager's and an admin's credentials under one test CA,
// for the scripted managers that stand in for a cluster.
type testCreds struct {
	server, client credentials.TransportCredentials
}

// testPKI is one test CA's credentials, shared by the package's tests.
func testPKI(t *testing.T) testCreds {
	t.Helper()
	c, err := sharedPKI()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var sharedPKI = sync.OnceValues(func() (testCreds, error) {
	a, err := ca.NewAuthority("test", time.Now())
	if err != nil {
		return testCreds{}, err
	}
	keypair := func(role ca.Role) (*ca.Keypair, error) {
		cert, key, err := a.Issue(ca.Identity{NodeID: string(role), Role: role, ClusterID: "test"}, time.Hour, time.Now())
		if err != nil {
			return nil, err
		}
		return ca.Bundle{CA: a.CertPEM, Cert: cert, Key: key}.Keypair()
	}
	server, err := keypair(ca.RoleManager)
	if err != nil {
		return testCreds{}, err
	}
	client, err := keypair(ca.RoleAdmin)
	if err != nil {
		return testCreds{}, err
	}
	return testCreds{
		server: credentials.NewTLS(ca.ServerConfig(a.Pool(), server)),
		client: credentials.NewTLS(ca.ClientConfig(a.Pool(), client, ca.RoleManager)),
	}, nil
})

// strangerTLSDir is an admin bundle of a CA that no test cluster trusts,
// made once per test binary and removed by TestMain.
var strangerTLSDir = sync.OnceValue(func() string {
	dir, err := os.MkdirTemp("", "skiff-cli-test-tls-")
	if err != nil {
		panic(err)
	}
	strangerDirs = append(strangerDirs, dir)
	a, err := ca.NewAuthority("stranger", time.Now())
	if err != nil {
		panic(err)
	}
	cert, key, err := a.Issue(ca.Identity{NodeID: "admin", Role: ca.RoleAdmin, ClusterID: "stranger"}, time.Hour, time.Now())
	if err != nil {
		panic(err)
	}
	if err := ca.WriteBundle(filepath.Join(dir, "tls"), ca.Bundle{CA: a.CertPEM, Cert: cert, Key: key}); err != nil {
		panic(err)
	}
	return filepath.Join(dir, "tls")
})

var strangerDirs []string

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range strangerDirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
}
