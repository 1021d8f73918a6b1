package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func testNodes() []nodeRow {
	return []nodeRow{
		{ID: "aaaaaaaaaaaa", Hostname: "h1", Status: "Ready", Availability: "Active", ManagerStatus: "Leader", Self: true},
		{ID: "bbbbbbbbbbbb", Hostname: "h2", Status: "Down", Availability: "Drain"},
	}
}

func printNodes(t *testing.T, flags listFlags) (string, error) {
	t.Helper()
	var b bytes.Buffer
	err := nodeListing().print(&b, flags, testNodes())
	return b.String(), err
}

func TestListDefaultTable(t *testing.T) {
	got, err := printNodes(t, listFlags{})
	if err != nil {
		t.Fatal(err)
	}
	// Docker's layout: columns at least 10 wide, 3 spaces apart, and the
	// node the CLI talks to marked after its ID.
	want := "" +
		"ID               HOSTNAME   STATUS    AVAILABILITY   MANAGER STATUS\n" +
		"aaaaaaaaaaaa *   h1         Ready     Active         Leader\n" +
		"bbbbbbbbbbbb     h2         Down      Drain          \n"
	if got != want {
		t.Fatalf("table:\n%s\nwant:\n%s", got, want)
	}
}

func TestListFormats(t *testing.T) {
	for _, tc := range []struct {
		name   string
		flags  listFlags
		want   string
		errHas string
	}{
		{name: "quiet", flags: listFlags{quiet: true}, want: "aaaaaaaaaaaa\nbbbbbbbbbbbb\n"},
		{name: "quiet wins over format", flags: listFlags{quiet: true, format: "json"}, want: "aaaaaaaaaaaa\nbbbbbbbbbbbb\n"},
		// The testbed script depends on this exact output.
		{name: "template", flags: listFlags{format: "{{.Hostname}} {{.Status}}"}, want: "h1 Ready\nh2 Down\n"},
		{name: "table template", flags: listFlags{format: `table {{.Hostname}}\t{{.Availability}}`},
			want: "HOSTNAME   AVAILABILITY\nh1         Active\nh2         Drain\n"},
		{name: "bare table is the default", flags: listFlags{format: "table"},
			want: "ID               HOSTNAME   STATUS    AVAILABILITY   MANAGER STATUS\n"},
		{name: "functions", flags: listFlags{format: `{{upper .Hostname}} {{json .Status}} {{truncate .ID 4}}`}, want: "H1 \"Ready\" aaaa\nH2 \"Down\" bbbb\n"},
		{name: "unknown field", flags: listFlags{format: "{{.Nope}}"}, errHas: "the fields are .ID .Hostname .Status"},
		{name: "bad template", flags: listFlags{format: "{{.ID"}, errHas: "invalid --format template"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := printNodes(t, tc.flags)
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.name == "bare table is the default" {
				got = strings.SplitAfter(got, "\n")[0]
			}
			if got != tc.want {
				t.Fatalf("got:\n%q\nwant:\n%q", got, tc.want)
			}
		})
	}
}

func TestListJSONLines(t *testing.T) {
	got, err := printNodes(t, listFlags{format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want one per node:\n%s", len(lines), got)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ID", "Hostname", "Status", "Availability", "ManagerStatus"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %s: %s", k, lines[0])
		}
	}
	if m["Hostname"] != "h1" || m["Self"] != true {
		t.Fatalf("JSON = %s", lines[0])
	}
}

func TestEmptyListPrintsHeaderOnly(t *testing.T) {
	var b bytes.Buffer
	if err := stackListing().print(&b, listFlags{}, nil); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != "NAME      SERVICES\n" {
		t.Fatalf("got %q", got)
	}
	b.Reset()
	if err := stackListing().print(&b, listFlags{format: "json"}, nil); err != nil || b.Len() != 0 {
		t.Fatalf("json of nothing = %q, %v", b.String(), err)
	}
}
