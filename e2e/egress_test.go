//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/skiffhq/skiff/e2e/testbed"
)

// egressStack puts a probe on every host in an ordinary network, and one in
// a network declared internal.
const egressStack = `
services:
  out:
    image: skiff-test/probe:latest
    command: ["sleep"]
    deploy:
      mode: global
  sealed:
    image: skiff-test/probe:latest
    command: ["sleep"]
    networks: [back]
networks:
  back:
    internal: true
`

// outsideServer listens on the testbed's root address, which no task can
// reach but through its host, and answers each connection with the address
// it came from.
func outsideServer(t *testing.T) (addr string, stop func()) {
	t.Helper()
	l, err := net.Listen("tcp4", testbed.RootAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				io.Copy(io.Discard, c) // the probe half-closes after its message
				fmt.Fprint(c, c.RemoteAddr().(*net.TCPAddr).IP.String())
			}()
		}
	}()
	var once bool
	stop = func() {
		if !once {
			once = true
			l.Close()
		}
	}
	t.Cleanup(stop)
	return l.Addr().String(), stop
}

// TestEgress: a task on every host reaches a server outside the cluster,
// seen from its own host's address (masqueraded, as Swarm's gateway
// bridge does); once the server stops, the same call fails, so the answer
// came from it; a task of an internal network cannot reach it at all.
func TestEgress(t *testing.T) {
	c := newCluster(t, 3, 3)
	server, stop := outsideServer(t)
	c.mustSkiff("stack", "deploy", "--detach", "-c", writeCompose(t, egressStack), "eg")
	c.waitReplicas("eg_out", "3/3", time.Minute)
	c.waitReplicas("eg_sealed", "1/1", time.Minute)

	dial := func(host, service string) (string, error) {
		out, err := c.docker(host, "exec", c.containerOf(host, service), "/probe", "dial", "tcp", server, "hello", "-timeout", "3s")
		return strings.TrimSpace(out), err
	}
	for i := 1; i <= 3; i++ {
		host := testbed.Host(i)
		c.eventually(20*time.Second, func() error {
			got, err := dial(host, "eg_out")
			if err != nil {
				return fmt.Errorf("from %s's task: %v", host, err)
			}
			if want := testbed.Addr(host); got != want {
				return fmt.Errorf("from %s's task the server saw %q, want the host's address %s", host, got, want)
			}
			return nil
		})
	}

	sealedHost := c.taskNode("eg_sealed")
	if out, err := dial(sealedHost, "eg_sealed"); err == nil {
		t.Errorf("a task of an internal network reached the outside server: %s", out)
	}

	stop()
	if out, err := dial("h1", "eg_out"); err == nil {
		t.Errorf("after the server stopped, h1's task still got an answer: %s", out)
	}
}
