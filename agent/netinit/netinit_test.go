package netinit

import (
	"errors"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestStopSignalEndsTheWait: a task stopped before its network is up ends
// at once with the signal's exit status, instead of ignoring it as PID 1
// and waiting for the engine to kill it.
func TestStopSignalEndsTheWait(t *testing.T) {
	stop := make(chan os.Signal, 1)
	stop <- syscall.SIGTERM
	start := time.Now()
	// eth0..eth63: no test host has them all up.
	err := waitForInterfaces(64, time.Minute, stop)
	var stopped stoppedError
	if !errors.As(err, &stopped) || stopped.sig != syscall.SIGTERM {
		t.Fatalf("wait ended with %v, want stopped by SIGTERM", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("the stop took %v", d)
	}
}

// TestWaitGivesUp: without the network or a signal, the wait ends at its
// limit with an error naming the interface.
func TestWaitGivesUp(t *testing.T) {
	err := waitForInterfaces(64, 20*time.Millisecond, nil)
	if err == nil || errors.As(err, new(stoppedError)) {
		t.Fatalf("wait ended with %v, want a time-out", err)
	}
}
