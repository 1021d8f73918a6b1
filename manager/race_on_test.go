//go:build race

package manager_test

// raceDetector reports whether the race detector is on: it slows every
// goroutine several times, and the big in-process clusters are scaled down
// under it (make test-unit runs them full size without it too).
const raceDetector = true
