package hostfw

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// inNewNS runs fn on a thread in a new, empty network namespace: the
// iptables processes it starts inherit the thread's namespace, so the test
// touches no table of the machine's.
func inNewNS(t *testing.T, fn func() error) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("no iptables")
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		ns, err := netns.New()
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		errc <- fn()
		// A thread that cannot go back stays locked, and dies with the
		// goroutine.
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread()
		}
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// iptablesS lists a chain as iptables -S prints it, a rule a line.
func iptablesS(chain string) []string {
	out, err := exec.Command("iptables", "-S", chain).CombinedOutput()
	if err != nil {
		return []string{fmt.Sprintf("iptables -S %s: %v: %s", chain, err, out)}
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// TestOpenPutsTheRulesFirstAndCloseRemovesThem: on a host whose FORWARD
// policy is DROP, with Docker's DOCKER-USER chain holding a user's DROP,
// Open puts skiff's three rules at the head of DOCKER-USER, once however
// often it is called, and Close takes them out and leaves the user's rule.
func TestOpenPutsTheRulesFirstAndCloseRemovesThem(t *testing.T) {
	inNewNS(t, func() error {
		for _, args := range [][]string{
			{"-P", "FORWARD", "DROP"},
			{"-N", "DOCKER-USER"},
			{"-A", "DOCKER-USER", "-s", "203.0.113.0/24", "-j", "DROP"},
			{"-A", "FORWARD", "-j", "DOCKER-USER"},
		} {
			if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
				return fmt.Errorf("iptables %v: %v: %s", args, err, out)
			}
		}
		fw, err := New("sk-br-", slog.New(slog.DiscardHandler))
		if err != nil {
			return err
		}
		for range 2 {
			if err := fw.Open(); err != nil {
				return err
			}
		}
		got := iptablesS("DOCKER-USER")
		// -N DOCKER-USER, the three rules, the user's DROP.
		if len(got) != 5 || !strings.Contains(got[1], "-i sk-br-+ -o sk-br-+") ||
			!strings.Contains(got[2], "! -o sk-br-+") || !strings.Contains(got[3], "RELATED,ESTABLISHED") ||
			!strings.Contains(got[4], "203.0.113.0/24") {
			return fmt.Errorf("DOCKER-USER after Open twice:\n%s", strings.Join(got, "\n"))
		}
		if fw2 := iptablesS("FORWARD"); strings.Contains(strings.Join(fw2, "\n"), "sk-br") {
			return fmt.Errorf("rules went into FORWARD although DOCKER-USER exists:\n%s", strings.Join(fw2, "\n"))
		}
		if err := fw.Close(); err != nil {
			return err
		}
		got = iptablesS("DOCKER-USER")
		if len(got) != 2 || !strings.Contains(got[1], "203.0.113.0/24") {
			return fmt.Errorf("DOCKER-USER after Close:\n%s", strings.Join(got, "\n"))
		}
		return nil
	})
}

// TestOpenWithoutDocker: with no DOCKER-USER chain the rules go first in
// FORWARD.
func TestOpenWithoutDocker(t *testing.T) {
	inNewNS(t, func() error {
		fw, err := New("sk-br-", slog.New(slog.DiscardHandler))
		if err != nil {
			return err
		}
		if err := fw.Open(); err != nil {
			return err
		}
		if got := iptablesS("FORWARD"); len(got) != 4 || !strings.Contains(got[1], "sk-br-+") {
			return fmt.Errorf("FORWARD after Open:\n%s", strings.Join(got, "\n"))
		}
		if err := fw.Close(); err != nil {
			return err
		}
		if got := iptablesS("FORWARD"); len(got) != 1 {
			return fmt.Errorf("FORWARD after Close:\n%s", strings.Join(got, "\n"))
		}
		return nil
	})
}
