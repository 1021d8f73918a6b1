package compose

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// testStack is the stack name the tests deploy as.
const testStack = "getstartedlab"

// loadFiles loads compose files with an empty environment.
func loadFiles(t *testing.T, files ...string) (*skiffpb.StackSpec, []Warning, error) {
	t.Helper()
	return Load(context.Background(), Options{Files: files, StackName: testStack})
}

// writeCompose writes a compose file into a fresh directory and returns its
// path, for the cases short enough to read inline.
func writeCompose(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "docker-compose.yml")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// mustLoad loads files that must be valid.
func mustLoad(t *testing.T, files ...string) (*skiffpb.StackSpec, []Warning) {
	t.Helper()
	spec, warnings, err := loadFiles(t, files...)
	if err != nil {
		t.Fatalf("Load(%v): %v", files, err)
	}
	return spec, warnings
}

// assertProto fails the test when got and want differ, showing both.
func assertProto(t *testing.T, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		opts := prototext.MarshalOptions{Multiline: true}
		t.Errorf("got:\n%s\nwant:\n%s", opts.Format(got), opts.Format(want))
	}
}

// assertNoWarnings fails the test if there are warnings.
func assertNoWarnings(t *testing.T, warnings []Warning) {
	t.Helper()
	for _, w := range warnings {
		t.Errorf("unexpected warning: %s", w)
	}
}

// service finds a service of the spec by its short name.
func service(t *testing.T, spec *skiffpb.StackSpec, name string) *skiffpb.ServiceSpec {
	t.Helper()
	for _, s := range spec.GetServices() {
		if s.GetName() == testStack+"_"+name {
			return s
		}
	}
	t.Fatalf("no service %s in the spec", name)
	return nil
}
