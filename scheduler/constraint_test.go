package scheduler

import (
	"errors"
	"strings"
	"testing"

	skiffpb "github.com/skiffhq/skiff/proto"
)

func TestParseConstraints(t *testing.T) {
	tests := []struct {
		expr string
		want string // canonical form
	}{
		{"node.role==manager", "node.role==manager"},
		{"  node.role  ==  worker ", "node.role==worker"},
		{"node.role != manager", "node.role!=manager"},
		{"node.id==abc123", "node.id==abc123"},
		{"NODE.HOSTNAME==h1", "NODE.HOSTNAME==h1"},
		{"node.labels.zone==eu-west-1", "node.labels.zone==eu-west-1"},
		{"node.labels.com.example.disk != ssd", "node.labels.com.example.disk!=ssd"},
		{"engine.labels.gpu==true", "engine.labels.gpu==true"},
		{"node.platform.os==linux", "node.platform.os==linux"},
		{"node.platform.arch==x86_64", "node.platform.arch==x86_64"},
		{"node.ip==198.18.0.1", "node.ip==198.18.0.1"},
		{"node.ip!=10.0.0.0/8", "node.ip!=10.0.0.0/8"},
		{"node.labels.rack==a b", "node.labels.rack==a b"},
		{"node.labels.path==/srv/data:1", "node.labels.path==/srv/data:1"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			cs, err := ParseConstraints([]string{tt.expr})
			if err != nil {
				t.Fatalf("ParseConstraints(%q): %v", tt.expr, err)
			}
			if len(cs) != 1 || cs[0].String() != tt.want {
				t.Fatalf("ParseConstraints(%q) = %v, want [%s]", tt.expr, cs, tt.want)
			}
		})
	}
}

func TestParseConstraintsErrors(t *testing.T) {
	tests := []struct {
		expr string
		want string // in the error message
	}{
		{"node.role", "want KEY==VALUE or KEY!=VALUE"},
		{"node.role=manager", "want KEY==VALUE or KEY!=VALUE"},
		{"node.role<>manager", "want KEY==VALUE or KEY!=VALUE"},
		{"==manager", "missing key"},
		{"1node==x", `invalid key "1node"`},
		{"node role==x", `invalid key "node role"`},
		{"node.name==x", `unknown key "node.name" (want node.id, node.hostname`},
		{"labels.zone==a", `unknown key "labels.zone"`},
		{"node.labels.==a", `key "node.labels.": missing label name`},
		{"engine.labels.==a", `key "engine.labels.": missing label name`},
		{"node.labels.zone==", "missing value"},
		{"node.labels.zone==  ", "missing value"},
		{"node.labels.zone==a==b", `invalid value "a==b"`},
		{"node.labels.zone==a>b", `invalid value "a>b"`},
		{"node.labels.zone==é", `invalid value "é"`},
		{"node.role==boss", `node.role is "boss", want manager or worker`},
		{"node.ip==10.0.0", `node.ip is "10.0.0", want an IP address or a CIDR prefix`},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			cs, err := ParseConstraints([]string{"node.role==worker", tt.expr})
			if err == nil {
				t.Fatalf("ParseConstraints(%q) = %v, want an error", tt.expr, cs)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			var ce *ConstraintError
			if !errors.As(err, &ce) || ce.Expr != tt.expr {
				t.Errorf("error %v is not a *ConstraintError for %q", err, tt.expr)
			}
			if !strings.HasPrefix(err.Error(), "invalid placement constraint "+`"`) {
				t.Errorf("error %q does not name the constraint first", err)
			}
		})
	}
}

func TestParseConstraintsReportsEveryError(t *testing.T) {
	_, err := ParseConstraints([]string{"node.foo==a", "node.role==worker", "zone"})
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{`"node.foo==a"`, `"zone"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestConstraintMatch(t *testing.T) {
	worker := newNode("n1",
		withLabels("zone", "eu-1", "Disk", "ssd"),
		withEngineLabels("gpu", "true"),
		func(n *skiffpb.Node) {
			n.Description.Hostname = "host-1"
			n.Description.Addr = "198.18.0.1"
			n.Description.Os = "linux"
			n.Description.Arch = "x86_64"
		})
	manager := newNode("n2", asManager(), func(n *skiffpb.Node) {
		n.Name = "mgr"
		n.Description = nil // not reported yet
	})
	tests := []struct {
		expr string
		node *skiffpb.Node
		want bool
	}{
		{"node.id==n1", worker, true},
		{"node.id!=n1", worker, false},
		{"node.hostname==host-1", worker, true},
		{"node.hostname==HOST-1", worker, true}, // values compare case-insensitively
		{"node.hostname==n1", worker, false},
		{"node.hostname==mgr", manager, true}, // falls back to the node's name
		{"node.role==worker", worker, true},
		{"node.role==manager", worker, false},
		{"node.role==Manager", manager, true},
		{"node.role!=manager", manager, false},
		{"node.labels.zone==eu-1", worker, true},
		{"node.labels.zone!=eu-1", worker, false},
		{"node.labels.zone==eu-2", worker, false},
		{"node.labels.zone!=eu-2", worker, true},
		{"node.labels.disk==ssd", worker, false}, // label names are case-sensitive
		{"node.labels.Disk==ssd", worker, true},
		{"NODE.LABELS.Disk==ssd", worker, true}, // the prefix is not
		{"node.labels.zone==eu-1", manager, false},
		{"node.labels.zone!=eu-1", manager, true}, // a missing label reads as ""
		{"engine.labels.gpu==true", worker, true},
		{"engine.labels.gpu==true", manager, false},
		{"engine.labels.gpu!=true", manager, true},
		{"node.platform.os==linux", worker, true},
		{"node.platform.arch==x86_64", worker, true},
		{"node.platform.arch==arm64", worker, false},
		{"node.ip==198.18.0.1", worker, true},
		{"node.ip!=198.18.0.1", worker, false},
		{"node.ip==198.18.0.0/24", worker, true},
		{"node.ip==198.18.1.0/24", worker, false},
		{"node.ip!=198.18.1.0/24", worker, true},
		{"node.ip==198.18.0.0/24", manager, false}, // no address: in no prefix
		{"node.ip!=198.18.0.0/24", manager, true},
	}
	for _, tt := range tests {
		t.Run(tt.expr+"/"+tt.node.GetId(), func(t *testing.T) {
			cs, err := ParseConstraints([]string{tt.expr})
			if err != nil {
				t.Fatal(err)
			}
			if got := cs[0].Match(tt.node); got != tt.want {
				t.Errorf("%s on %s = %v, want %v", tt.expr, tt.node.GetId(), got, tt.want)
			}
		})
	}
}

func TestConstraintMatchAddrWithPort(t *testing.T) {
	n := newNode("n1", func(n *skiffpb.Node) { n.Description.Addr = "198.18.0.7:7946" })
	cs, err := ParseConstraints([]string{"node.ip==198.18.0.7"})
	if err != nil {
		t.Fatal(err)
	}
	if !cs[0].Match(n) {
		t.Error("node.ip should ignore the port of the node's address")
	}
}

func TestZeroConstraintMatchesNothing(t *testing.T) {
	var c Constraint
	if c.Match(newNode("n1")) {
		t.Error("a zero Constraint matched a node")
	}
}

func TestMatchConstraints(t *testing.T) {
	cs, err := ParseConstraints([]string{"node.role==worker", "node.labels.zone==a"})
	if err != nil {
		t.Fatal(err)
	}
	if !MatchConstraints(cs, newNode("n1", withLabels("zone", "a"))) {
		t.Error("a worker in zone a should match")
	}
	if MatchConstraints(cs, newNode("n2", withLabels("zone", "a"), asManager())) {
		t.Error("a manager should not match")
	}
	if !MatchConstraints(nil, newNode("n3")) {
		t.Error("no constraints should match every node")
	}
}

func TestParsePreferences(t *testing.T) {
	good := []struct{ spread, want string }{
		{"node.labels.zone", "node.labels.zone"},
		{" engine.labels.rack ", "engine.labels.rack"},
		{"NODE.LABELS.zone", "NODE.LABELS.zone"},
	}
	for _, tt := range good {
		ps, err := ParsePreferences([]*skiffpb.PlacementPreference{{Spread: tt.spread}})
		if err != nil {
			t.Errorf("ParsePreferences(%q): %v", tt.spread, err)
			continue
		}
		if len(ps) != 1 || ps[0].String() != tt.want {
			t.Errorf("ParsePreferences(%q) = %v, want [%s]", tt.spread, ps, tt.want)
		}
	}
	bad := []struct{ spread, want string }{
		{"", "missing spread descriptor"},
		{"node.hostname", `cannot spread over "node.hostname"`},
		{"zone", `cannot spread over "zone"`},
		{"node.labels.", "missing label name"},
	}
	for _, tt := range bad {
		_, err := ParsePreferences([]*skiffpb.PlacementPreference{{Spread: tt.spread}})
		var pe *PreferenceError
		if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.As(err, &pe) {
			t.Errorf("ParsePreferences(%q) error = %v, want a *PreferenceError containing %q", tt.spread, err, tt.want)
		}
	}
}

func TestPreferenceValue(t *testing.T) {
	ps, err := ParsePreferences([]*skiffpb.PlacementPreference{{Spread: "node.labels.zone"}, {Spread: "engine.labels.rack"}})
	if err != nil {
		t.Fatal(err)
	}
	n := newNode("n1", withLabels("zone", "a"), withEngineLabels("rack", "r7"))
	if got := ps[0].value(n); got != "a" {
		t.Errorf("zone = %q, want a", got)
	}
	if got := ps[1].value(n); got != "r7" {
		t.Errorf("rack = %q, want r7", got)
	}
	if got := ps[0].value(newNode("n2")); got != "" {
		t.Errorf("zone of an unlabelled node = %q, want empty", got)
	}
}
