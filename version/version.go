// Package version reports the build's version, set at link time by make.
package version

// Version is the skiff release, overwritten with -ldflags "-X" by make build.
var Version = "dev"
