//go:build !race

package manager_test

// raceDetector reports whether the race detector is on.
const raceDetector = false
