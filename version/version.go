// Package version reports the build's version.
package version

import "runtime/debug"

// Version is the skiff release. make build stamps it with -ldflags "-X"
// from `git describe` (v0.3.0, or v0.3.0-4-gabc1234-dirty between tags);
// a build without it, such as `go install` or `go build` in a clone, takes
// the version Go recorded for the main module, and only a build that has
// neither reads "dev".
var Version string

func init() {
	if Version == "" {
		info, ok := debug.ReadBuildInfo()
		Version = fromBuildInfo(info, ok)
	}
}

// fromBuildInfo is the main module's version as the go command recorded
// it: the module version for `go install …@v0.3.0`, a pseudo-version from
// the commit (with "+dirty" for uncommitted changes) for a build in a
// clone, and nothing useful for a test binary or a build with
// -buildvcs=false.
func fromBuildInfo(info *debug.BuildInfo, ok bool) string {
	if !ok || info == nil || info.Main.Version == "" || info.Main.Version == "(devel)" {
		return "dev"
	}
	return info.Main.Version
}
