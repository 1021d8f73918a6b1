package authz

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/skiffhq/skiff/ca"
	"github.com/skiffhq/skiff/identity"
	skiffpb "github.com/skiffhq/skiff/proto"
)

func issue(t *testing.T, a *ca.Authority, role ca.Role) *ca.Keypair {
	t.Helper()
	cert, key, err := a.Issue(ca.Identity{NodeID: "n-" + string(role), Role: role, ClusterID: "c1"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.Bundle{CA: a.CertPEM, Cert: cert, Key: key}.Keypair()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// as is a context whose peer presented kp's certificate, verified.
func as(kp *ca.Keypair) context.Context {
	info := credentials.TLSInfo{}
	if kp != nil {
		info.State = tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{kp.Leaf()}}}
	}
	return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: info})
}

func TestManagerPolicy(t *testing.T) {
	a, err := ca.NewAuthority("c1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	admin, manager, worker := issue(t, a, ca.RoleAdmin), issue(t, a, ca.RoleManager), issue(t, a, ca.RoleWorker)
	cases := []struct {
		method string
		who    *ca.Keypair
		want   codes.Code
	}{
		{"/skiff.v1.Control/DeployStack", admin, codes.OK},
		{"/skiff.v1.Control/DeployStack", manager, codes.OK},
		{"/skiff.v1.Control/DeployStack", worker, codes.PermissionDenied},
		{"/skiff.v1.Control/DeployStack", nil, codes.Unauthenticated},
		{"/skiff.v1.Control/JoinManager", worker, codes.PermissionDenied},
		{"/skiff.v1.Dispatcher/Session", worker, codes.OK},
		{"/skiff.v1.Dispatcher/Session", manager, codes.OK},
		{"/skiff.v1.Dispatcher/Session", admin, codes.PermissionDenied},
		{"/skiff.v1.Dispatcher/Session", nil, codes.Unauthenticated},
		{"/skiff.v1.NodeCA/IssueCertificate", nil, codes.OK},
		{"/skiff.v1.NodeCA/RenewCertificate", nil, codes.Unauthenticated},
		{"/skiff.v1.NodeCA/RenewCertificate", worker, codes.OK},
		{"/skiff.v1.NodeCA/RenewCertificate", admin, codes.PermissionDenied},
		{"/skiff.v1.Join/Hello", admin, codes.PermissionDenied},
		{"/skiff.v1.Unknown/Method", admin, codes.PermissionDenied},
	}
	for _, c := range cases {
		role := "none"
		if c.who != nil {
			role = string(c.who.Identity().Role)
		}
		if got := status.Code(Manager.Check(as(c.who), c.method)); got != c.want {
			t.Errorf("%s as %s: %v, want %v", c.method, role, got, c.want)
		}
	}
}

// TestInterceptorsOverTLS runs the policy in a real gRPC server over TLS:
// the role a call is judged by is the one the handshake verified.
func TestInterceptorsOverTLS(t *testing.T) {
	a, err := ca.NewAuthority("c1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	server, admin, worker := issue(t, a, ca.RoleManager), issue(t, a, ca.RoleAdmin), issue(t, a, ca.RoleWorker)
	policy := Policy{"/skiff.v1.Join/": {ca.RoleAdmin}}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(ca.ServerConfig(a.Pool(), server))),
		grpc.UnaryInterceptor(policy.Unary()), grpc.StreamInterceptor(policy.Stream()))
	skiffpb.RegisterJoinServer(srv, identity.HelloServer{Managers: func() []string { return []string{"m"} }})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	call := func(kp *ca.Keypair) codes.Code {
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientConfig(a.Pool(), kp, ca.RoleManager))))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		_, err = skiffpb.NewJoinClient(conn).Hello(ctx, &skiffpb.HelloRequest{})
		return status.Code(err)
	}
	if got := call(admin); got != codes.OK {
		t.Errorf("admin: %v, want OK", got)
	}
	if got := call(worker); got != codes.PermissionDenied {
		t.Errorf("worker: %v, want PermissionDenied", got)
	}
	if got := call(nil); got != codes.Unauthenticated {
		t.Errorf("no certificate: %v, want Unauthenticated", got)
	}
}
