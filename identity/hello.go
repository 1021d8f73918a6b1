package identity

import (
	"context"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// HelloServer answers a joiner's first contact on a member's gossip port.
// It tells nothing a member of another cluster could use: the managers'
// addresses, which gossip announces to every member anyway, and, through
// the TLS handshake, the CA certificate, which is public.
type HelloServer struct {
	skiffpb.UnimplementedJoinServer
	// Managers lists the managers' API addresses, the leader first.
	Managers func() []string
}

// Hello lists the managers.
func (h HelloServer) Hello(context.Context, *skiffpb.HelloRequest) (*skiffpb.HelloResponse, error) {
	return &skiffpb.HelloResponse{Managers: h.Managers()}, nil
}
