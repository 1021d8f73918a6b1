package compose

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"go.yaml.in/yaml/v4"
)

func TestLocate(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.yml")
	override := filepath.Join(dir, "override.yml")
	write := func(path, content string) {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(base, `x-base: &base
  image: a
  labels:
    team: core
services:
  web:
    <<: *base
    ports:
      - "80:80"
      - target: 443
        host_ip: 1.2.3.4
    networks: [front, back]
  db:
    image: b
`)
	write(override, `services:
  db:
    image: c
`)
	src := newSources([]string{base, override})

	for _, tc := range []struct {
		path     []string
		wantFile string
		wantLine int
		wantOK   bool
	}{
		{[]string{"services", "web", "ports", listItem, "host_ip"}, base, 11, true},
		{[]string{"services", "web", "ports", "0"}, base, 9, true},
		{[]string{"services", "web", "labels", "team"}, base, 4, true},    // through the merge key
		{[]string{"services", "web", "networks", "back"}, base, 12, true}, // a plain list item
		{[]string{"services", "web", "privileged"}, base, 6, true},        // not written: its service
		{[]string{"services", "db", "image"}, override, 3, true},          // the later file wins
		{[]string{"services", "cache", "image"}, "", 0, false},            // only "services" found
		{[]string{"secrets"}, "", 0, false},
	} {
		file, line, ok := src.locate(tc.path)
		if file != tc.wantFile || line != tc.wantLine || ok != tc.wantOK {
			t.Errorf("locate(%v) = %q, %d, %v; want %q, %d, %v", tc.path, file, line, ok, tc.wantFile, tc.wantLine, tc.wantOK)
		}
	}
}

func TestYAMLSyntaxError(t *testing.T) {
	for _, tc := range []struct {
		name     string
		content  string
		wantLine int
		wantMsg  string
	}{{
		name:     "parser: key out of place",
		content:  "services:\n  web:\n    image: x\n   ports:\n      - a\n",
		wantLine: 4,
		wantMsg:  "invalid YAML at column 4: did not find expected key (while parsing a block mapping that starts at line 2, column 3)",
	}, {
		name:     "parser: list item out of place",
		content:  "a: 1\nb:\n  - x\n  y: 2\n",
		wantLine: 4,
		wantMsg:  "invalid YAML at column 3: did not find expected '-' indicator (while parsing a block collection that starts at line 3, column 3)",
	}, {
		name:     "scanner: mapping in a scalar",
		content:  "a: 1\nb: 2\n  c: 3\n",
		wantLine: 3,
		wantMsg:  "invalid YAML at column 4: mapping values are not allowed in this context",
	}, {
		name:     "scanner: tab",
		content:  "a: 1\n\tb: 2\n",
		wantLine: 2,
	}, {
		name:     "composer: unknown anchor",
		content:  "a: 1\nb: *x\n",
		wantLine: 2,
		wantMsg:  "invalid YAML at column 5: unknown anchor 'x' referenced",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var n yaml.Node
			err := yaml.Unmarshal([]byte(tc.content), &n)
			if err == nil {
				t.Fatal("the YAML parsed")
			}
			syn, ok := yamlSyntaxError(err, []byte(tc.content))
			if !ok {
				t.Fatalf("yamlSyntaxError(%v) found no position", err)
			}
			if syn.line != tc.wantLine {
				t.Errorf("line = %d, want %d (yaml said: %v)", syn.line, tc.wantLine, err)
			}
			if tc.wantMsg != "" && syn.msg != tc.wantMsg {
				t.Errorf("message = %q, want %q", syn.msg, tc.wantMsg)
			}
		})
	}

	if _, ok := yamlSyntaxError(errors.New("not from yaml"), nil); ok {
		t.Error("yamlSyntaxError found a position in an error without one")
	}
}
