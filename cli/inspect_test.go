package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	skiffpb "github.com/skiffhq/skiff/proto"
)

func TestGoName(t *testing.T) {
	for in, want := range map[string]string{
		"id": "ID", "service_id": "ServiceID", "nano_cpus": "NanoCPUs", "api_addr": "APIAddr",
		"vips": "VIPs", "desired_state": "DesiredState", "oom_killed": "OOMKilled", "task_ids": "TaskIDs",
	} {
		if got := goName(in); got != want {
			t.Errorf("goName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestEnumWord(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{enumWord(skiffpb.NodeAvailability(2)), "drain"},
		{enumWord(skiffpb.RestartCondition(1)), "on-failure"},
		{enumWord(skiffpb.UpdateOrder(1)), "start-first"},
		{enumWord(skiffpb.TaskState(512)), "running"},
		{enumWord(skiffpb.TaskState(7)), "7"},
		// Inspect's reflection gives a descriptor and a number apart.
		{enumWord(fieldEnum{desc: skiffpb.TaskState(0).Descriptor(), num: 640}), "shutdown"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func testNode() *skiffpb.Node {
	return &skiffpb.Node{
		Id: "n1", Name: "h1",
		Meta:        &skiffpb.Meta{Version: 7, CreatedAt: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC).UnixNano()},
		Spec:        &skiffpb.NodeSpec{Labels: map[string]string{"zone": "a"}},
		Description: &skiffpb.NodeDescription{Hostname: "h1", Resources: &skiffpb.Resources{NanoCpus: 4e9}},
		Status:      &skiffpb.NodeStatus{State: skiffpb.NodeState_NODE_STATE_READY},
	}
}

func TestInspectJSON(t *testing.T) {
	var b bytes.Buffer
	if err := printInspect(&b, "", []*skiffpb.Node{testNode()}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"[\n    {\n        \"ID\": \"n1\",\n        \"Meta\": {", // fields in proto order, docker's indentation
		`"CreatedAt": "2024-05-01T12:00:00Z"`,
		`"Availability": "active"`, // zero values are shown
		`"Labels": {` + "\n" + `                "zone": "a"`,
		`"NanoCPUs": 4000000000`,
		`"State": "ready"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	// Unset messages are left out rather than shown as null.
	if strings.Contains(out, "ManagerStatus") || strings.Contains(out, "null") {
		t.Errorf("inspect output shows unset fields:\n%s", out)
	}
}

func TestInspectTemplate(t *testing.T) {
	var b bytes.Buffer
	format := "{{.Spec.Availability}} {{.Status.State}} {{.Spec.Labels.zone}} {{.Description.Resources.NanoCPUs}} {{json .Spec}}"
	if err := printInspect(&b, format, []*skiffpb.Node{testNode(), testNode()}); err != nil {
		t.Fatal(err)
	}
	line := `active ready a 4000000000 {"Availability":"active","Labels":{"zone":"a"}}` + "\n"
	if got := b.String(); got != line+line {
		t.Fatalf("got %q, want %q twice", got, line)
	}
	if err := printInspect(&b, "{{.Spec.Availability", []*skiffpb.Node{testNode()}); err == nil {
		t.Fatal("a broken template was accepted")
	}
}
