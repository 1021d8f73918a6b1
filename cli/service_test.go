package cli

import (
	"testing"

	skiffpb "github.com/skiffhq/skiff/proto"
)

func TestParseScale(t *testing.T) {
	for _, tc := range []struct {
		arg     string
		want    scaleArg
		wantErr string
	}{
		{arg: "web=10", want: scaleArg{"web", 10}},
		{arg: "demo_web=0", want: scaleArg{"demo_web", 0}},
		{arg: "web", wantErr: `invalid scale specifier "web": expected format is SERVICE=REPLICAS`},
		{arg: "=3", wantErr: `invalid scale specifier "=3": expected format is SERVICE=REPLICAS`},
		{arg: "web=-1", wantErr: `invalid replicas value "-1" for web: expected a whole number of 0 or more`},
		{arg: "web=x", wantErr: `invalid replicas value "x" for web: expected a whole number of 0 or more`},
		{arg: "web=", wantErr: `invalid replicas value "" for web: expected a whole number of 0 or more`},
	} {
		got, err := parseScale(tc.arg)
		switch {
		case tc.wantErr != "":
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("parseScale(%q) err = %v, want %q", tc.arg, err, tc.wantErr)
			}
		case err != nil || got != tc.want:
			t.Errorf("parseScale(%q) = %+v, %v; want %+v", tc.arg, got, err, tc.want)
		}
	}
}

func TestServiceRows(t *testing.T) {
	services := []*skiffpb.Service{
		{Id: "zzzzzzzzzzzzzzzz", Spec: &skiffpb.ServiceSpec{
			Name: "demo_web", Replicas: 5, Container: &skiffpb.ContainerSpec{Image: "web:1"},
			Placement: &skiffpb.Placement{MaxReplicasPerNode: 2},
			Endpoint: &skiffpb.EndpointSpec{Ports: []*skiffpb.PortConfig{
				{PublishedPort: 4000, TargetPort: 80},
				{PublishedPort: 53, TargetPort: 53, Protocol: skiffpb.Protocol_PROTOCOL_UDP},
				{PublishedPort: 8080, TargetPort: 80, PublishMode: skiffpb.PublishMode_PUBLISH_MODE_HOST},
			}},
		}, Status: &skiffpb.ServiceStatus{RunningTasks: 3, DesiredTasks: 5}},
		{Id: "aaaaaaaaaaaaaaaa", Spec: &skiffpb.ServiceSpec{Name: "demo_agent", Mode: skiffpb.ServiceMode_SERVICE_MODE_GLOBAL, Container: &skiffpb.ContainerSpec{Image: "agent"}},
			Status: &skiffpb.ServiceStatus{RunningTasks: 2, DesiredTasks: 3}},
	}
	rows := serviceRows(services, false)
	want := []serviceRow{
		{ID: "aaaaaaaaaaaa", Name: "demo_agent", Mode: "global", Replicas: "2/3", Image: "agent"},
		{ID: "zzzzzzzzzzzz", Name: "demo_web", Mode: "replicated", Replicas: "3/5 (max 2 per node)", Image: "web:1", Ports: "*:4000->80/tcp, *:53->53/udp"},
	}
	for i := range want {
		if rows[i] != want[i] {
			t.Errorf("row %d = %+v, want %+v", i, rows[i], want[i])
		}
	}
}
