package cli

import (
	"context"
	"net"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/skiffhq/skiff/internal/testcluster"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// scriptedManager answers ListNodes with the errors it is given, in turn,
// then with success. It stands in for a manager where a real one cannot be
// made to fail a call at a chosen point: cut off with its leader mid-call.
type scriptedManager struct {
	skiffpb.UnimplementedControlServer
	errs  []error
	calls atomic.Int32
}

func (m *scriptedManager) ListNodes(context.Context, *skiffpb.ListNodesRequest) (*skiffpb.ListNodesResponse, error) {
	n := int(m.calls.Add(1)) - 1
	if n < len(m.errs) {
		return nil, m.errs[n]
	}
	return &skiffpb.ListNodesResponse{}, nil
}

// serve runs m on a loopback port until the test ends and returns its
// address.
func serve(t *testing.T, m *scriptedManager) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(testPKI(t).server))
	skiffpb.RegisterControlServer(srv, m)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func listNodes(t *testing.T, creds credentials.TransportCredentials, addrs ...string) error {
	t.Helper()
	conn := newFailoverConn(addrs, creds)
	t.Cleanup(conn.Close)
	_, err := skiffpb.NewControlClient(conn).ListNodes(context.Background(), &skiffpb.ListNodesRequest{})
	return err
}

// TestCallWaitsOutAnElection: a call made through the survivors the moment
// the leader stops reaches managers that have no leader yet; it is sent
// again until one is elected, and succeeds.
func TestCallWaitsOutAnElection(t *testing.T) {
	c := testcluster.New(t, 3)
	leader := c.WaitLeader()
	var survivors []string
	for _, m := range c.Managers {
		if m != leader {
			survivors = append(survivors, m.APIAddr())
		}
	}
	c.Stop(leader)
	if err := listNodes(t, c.AdminCreds(), survivors...); err != nil {
		t.Fatalf("a call made as the leader stopped failed: %v", err)
	}
}

// TestCallThatMayHaveTakenEffectIsNotRepeated: an Unavailable without the
// no-leader reason (the leader was lost while it handled the call) goes to
// the next manager at most once, and is then the user's to check.
func TestCallThatMayHaveTakenEffectIsNotRepeated(t *testing.T) {
	lost := status.Error(codes.Unavailable, "the leader was lost while it handled this call")
	a := &scriptedManager{errs: []error{lost, lost}}
	b := &scriptedManager{errs: []error{lost, lost}}
	err := listNodes(t, testPKI(t).client, serve(t, a), serve(t, b))
	if err == nil {
		t.Fatal("call succeeded; want the lost leader reported")
	}
	if got := a.calls.Load() + b.calls.Load(); got != 2 {
		t.Errorf("%d calls, want one per manager", got)
	}
}

// TestQuorumLostIsNotWaitedOut: a cluster that has lost its quorum will not
// elect a leader by waiting, so the call goes to each manager once, unlike
// one refused for want of a leader, and the user hears what to do.
func TestQuorumLostIsNotWaitedOut(t *testing.T) {
	lost := skiffpb.QuorumLostError("no leader: the cluster may have lost quorum (1 of 3 managers reachable, 2 needed); bring managers back")
	a := &scriptedManager{errs: []error{lost, lost, lost}}
	b := &scriptedManager{errs: []error{lost, lost, lost}}
	err := listNodes(t, testPKI(t).client, serve(t, a), serve(t, b))
	if got := a.calls.Load() + b.calls.Load(); got != 2 {
		t.Errorf("%d calls, want one per manager", got)
	}
	want := "no leader: the cluster may have lost quorum (1 of 3 managers reachable, 2 needed); bring managers back; `skiff cluster info` shows which managers are unreachable"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("code %s, want Unavailable", status.Code(err))
	}
}

// TestIdempotentCallIsRepeatedAfterACutOff: a call that applying twice
// cannot harm (a scale, a deploy) is sent again when it was cut off with the
// leader, until one succeeds.
func TestIdempotentCallIsRepeatedAfterACutOff(t *testing.T) {
	lost := status.Error(codes.Unavailable, "the leader was lost while it handled this call")
	a := &scriptedManager{errs: []error{lost, lost}}
	b := &scriptedManager{errs: []error{lost}}
	conn := newFailoverConn([]string{serve(t, a), serve(t, b)}, testPKI(t).client)
	t.Cleanup(conn.Close)
	_, err := skiffpb.NewControlClient(conn).ListNodes(context.Background(), &skiffpb.ListNodesRequest{}, idempotent())
	if err != nil {
		t.Fatalf("call failed: %v", err)
	}
	if got := a.calls.Load() + b.calls.Load(); got < 3 {
		t.Errorf("%d calls, want the cut-off ones sent again", got)
	}
}
