package version

import (
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	for _, tc := range []struct {
		name string
		info *debug.BuildInfo
		ok   bool
		want string
	}{
		{"go install at a tag", &debug.BuildInfo{Main: debug.Module{Version: "v0.3.0"}}, true, "v0.3.0"},
		{"go build in a clone", &debug.BuildInfo{Main: debug.Module{Version: "v0.3.1-0.20260101120000-8e3f5841a2b3+dirty"}}, true, "v0.3.1-0.20260101120000-8e3f5841a2b3+dirty"},
		{"no version control", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, true, "dev"},
		{"a test binary", &debug.BuildInfo{}, true, "dev"},
		{"no build info", nil, false, "dev"},
	} {
		if got := fromBuildInfo(tc.info, tc.ok); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestVersionIsSet: whatever the build, the version reads as something.
func TestVersionIsSet(t *testing.T) {
	if Version == "" {
		t.Fatal("Version is empty")
	}
}
