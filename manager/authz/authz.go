// Package authz decides which certificate roles may call which gRPC methods
// on a manager's API port. The port serves joiners, which have no
// certificate yet, beside the CLI, agents and other managers, so TLS alone
// cannot refuse a caller: every call is checked here against one table,
// before any service sees it, and a method the table does not name is
// refused.
package authz

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiffhq/skiff/ca"
)

// Anyone marks a method that a caller without a certificate may use.
const Anyone ca.Role = ""

// Policy maps a full method name ("/pkg.Service/Method"), or a service
// prefix ending in "/" ("/pkg.Service/"), to the roles allowed to call it.
// An exact method name wins over its service's prefix.
type Policy map[string][]ca.Role

// Manager is the policy of a manager's API port.
var Manager = Policy{
	"/skiff.v1.Control/":                {ca.RoleAdmin, ca.RoleManager},
	"/skiff.v1.Dispatcher/":             {ca.RoleWorker, ca.RoleManager},
	"/skiff.v1.NodeCA/IssueCertificate": {Anyone},
	"/skiff.v1.NodeCA/RenewCertificate": {ca.RoleWorker, ca.RoleManager},
}

// roles looks up who may call method; nil means nobody.
func (p Policy) roles(method string) []ca.Role {
	if r, ok := p[method]; ok {
		return r
	}
	if i := strings.LastIndexByte(method, '/'); i > 0 {
		return p[method[:i+1]]
	}
	return nil
}

// Check says whether the caller of method in ctx may call it.
func (p Policy) Check(ctx context.Context, method string) error {
	allowed := p.roles(method)
	if slices.Contains(allowed, Anyone) {
		return nil
	}
	id, err := ca.PeerIdentity(ctx)
	if err != nil {
		return status.Errorf(codes.Unauthenticated,
			"%s needs a client certificate of this cluster; the CLI reads one from --tls-dir or SKIFF_TLS_DIR (ca.pem, cert.pem, key.pem)", method)
	}
	if !slices.Contains(allowed, id.Role) {
		return status.Error(codes.PermissionDenied, fmt.Sprintf("a %s certificate may not call %s", id.Role, method))
	}
	return nil
}

// Unary is the policy as a unary interceptor.
func (p Policy) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
		if err := p.Check(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

// Stream is the policy as a stream interceptor.
func (p Policy) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) error {
		if err := p.Check(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return next(srv, ss)
	}
}
