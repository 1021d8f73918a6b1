package manager

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/skiffhq/skiff/ca"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// panickyControl panics on ClusterInfo, as a handler with a bug would, and
// answers ListNodes.
type panickyControl struct {
	skiffpb.UnimplementedControlServer
}

func (panickyControl) ClusterInfo(context.Context, *skiffpb.ClusterInfoRequest) (*skiffpb.ClusterInfoResponse, error) {
	var m map[string]int
	m["boom"]++ // a nil map: the panic a missed check gives
	return nil, nil
}

func (panickyControl) ListNodes(context.Context, *skiffpb.ListNodesRequest) (*skiffpb.ListNodesResponse, error) {
	return &skiffpb.ListNodesResponse{}, nil
}

// TestPanicsBecomeInternalErrors: a handler's panic reaches its caller as
// an Internal error and the server goes on serving.
func TestPanicsBecomeInternalErrors(t *testing.T) {
	a, err := ca.NewAuthority("c1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keypair := func(role ca.Role) *ca.Keypair {
		cert, key, err := a.Issue(ca.Identity{NodeID: "n-" + string(role), Role: role, ClusterID: "c1"}, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		k, err := ca.Bundle{CA: a.CertPEM, Cert: cert, Key: key}.Keypair()
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(ca.ServerConfig(a.Pool(), keypair(ca.RoleManager)))),
		grpc.ChainUnaryInterceptor(recovery.UnaryServerInterceptor(recoverPanics(slog.New(slog.DiscardHandler)))))
	skiffpb.RegisterControlServer(srv, panickyControl{})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientConfig(a.Pool(), keypair(ca.RoleAdmin), ca.RoleManager))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctl := skiffpb.NewControlClient(conn)

	_, err = ctl.ClusterInfo(context.Background(), &skiffpb.ClusterInfoRequest{})
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "assignment to entry in nil map") {
		t.Fatalf("ClusterInfo: %v, want Internal naming the panic", err)
	}
	if _, err := ctl.ListNodes(context.Background(), &skiffpb.ListNodesRequest{}); err != nil {
		t.Fatalf("after the panic the server no longer answers: %v", err)
	}
}
