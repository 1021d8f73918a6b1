//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/skiffhq/skiff/ca"
	"github.com/skiffhq/skiff/e2e/testbed"
	"github.com/skiffhq/skiff/identity"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// TestSecurity runs a 4-host testbed (3 managers) with real certificates and
// checks that the cluster admits only its own members: strangers and
// workers are refused where they do not belong, bad tokens join nothing,
// nothing readable crosses the underlay, and a removed node stays out.
func TestSecurity(t *testing.T) {
	c := newCluster(t, 4, 3)
	realCA, err := os.ReadFile(filepath.Join(testbed.AdminDir, ca.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(realCA) {
		t.Fatal("the admin bundle's ca.pem holds no certificate")
	}
	stranger := strangerKeypair(t)
	h2Worker := agentKeypair(t, "h2")
	h3Worker := agentKeypair(t, "h3")
	leader := testbed.Addr("h1") + ":4242"

	t.Run("ControlAPIRefusesStrangersAndWorkers", func(t *testing.T) {
		for name, tc := range map[string]struct {
			kp   *ca.Keypair
			want codes.Code
		}{
			"no certificate":        {nil, codes.Unauthenticated},
			"another CA's admin":    {stranger, codes.Unavailable},
			"a worker's (h2 agent)": {h2Worker, codes.PermissionDenied},
		} {
			conn := dialTLS(t, leader, ca.ClientConfig(pool, tc.kp, ca.RoleManager))
			_, err := skiffpb.NewControlClient(conn).ListNodes(ctx(t), &skiffpb.ListNodesRequest{})
			if got := status.Code(err); got != tc.want {
				t.Errorf("%s: ListNodes = %v, want %v", name, err, tc.want)
			}
		}
		if out, err := c.skiff("--tls-dir", t.TempDir(), "node", "ls"); err == nil || !strings.Contains(out, "must hold ca.pem, cert.pem and key.pem") {
			t.Errorf("the CLI with an empty --tls-dir: %v\n%s", err, out)
		}
	})

	t.Run("DispatcherRefusesStrangersAndImpostors", func(t *testing.T) {
		for name, tc := range map[string]struct {
			kp   *ca.Keypair
			as   string
			want codes.Code
		}{
			"no certificate":          {nil, "h3", codes.Unauthenticated},
			"another CA's manager":    {strangerManager(t), "h3", codes.Unavailable},
			"h3's certificate as h2":  {h3Worker, "h2", codes.PermissionDenied},
			"the admin's certificate": {adminKeypair(t), "h3", codes.PermissionDenied},
		} {
			conn := dialTLS(t, leader, ca.ClientConfig(pool, tc.kp, ca.RoleManager))
			stream, err := skiffpb.NewDispatcherClient(conn).Session(ctx(t))
			if err == nil {
				err = stream.Send(&skiffpb.AgentMessage{Msg: &skiffpb.AgentMessage_Register{Register: &skiffpb.Register{Name: tc.as}}})
				// A stream the server already ended answers Send with
				// io.EOF; its status comes with the next Recv.
				if errors.Is(err, io.EOF) {
					err = nil
				}
			}
			if err == nil {
				var m *skiffpb.ManagerMessage
				m, err = stream.Recv()
				if err == nil && m.GetAccepted() != nil {
					t.Errorf("%s: the session was accepted", name)
					continue
				}
			}
			if got := status.Code(err); got != tc.want {
				t.Errorf("%s: session = %v, want %v", name, err, tc.want)
			}
		}
	})

	t.Run("RaftPortTakesManagersOnly", func(t *testing.T) {
		raft := testbed.Addr("h1") + ":4243"
		for name, cfg := range map[string]*tls.Config{
			"no certificate":       ca.ClientConfig(pool, nil, ca.RoleManager),
			"another CA's manager": ca.ClientConfig(pool, strangerManager(t), ca.RoleManager),
			"a worker's":           ca.ClientConfig(pool, h2Worker, ca.RoleManager),
		} {
			cfg.NextProtos = []string{"skiff-raft"}
			if err := talk(raft, cfg); err == nil {
				t.Errorf("%s: the Raft port answered", name)
			}
		}
		if err := talk(raft, nil); err == nil {
			t.Error("plain TCP: the Raft port answered")
		}
	})

	t.Run("BadTokensJoinNothing", func(t *testing.T) {
		digest := ca.Digest(mustParse(t, realCA))
		wrong := ca.Token{Digest: digest, Secret: ca.NewSecret()}.String()
		old, err := os.ReadFile(filepath.Join(testbed.StateDir, "worker.token"))
		if err != nil {
			t.Fatal(err)
		}
		c.mustSkiff("cluster", "join-token", "--rotate", "-q", "worker")
		for name, token := range map[string]string{"wrong": wrong, "rotated": strings.TrimSpace(string(old))} {
			out, err := c.tb.Exec(ctx(t), "h4", filepath.Join(c.tb.Root, "bin", "skiff-agent"),
				"--name", "intruder", "--data-dir", t.TempDir(), "--advertise-addr", testbed.Addr("h4"),
				"--join", testbed.Addr("h1")+":7947", "--gossip-port", "7960", "--token", token)
			if err == nil || !strings.Contains(out+err.Error(), "refused") {
				t.Errorf("an agent with the %s token: %v\n%s", name, err, out)
			}
		}
		if out := c.mustSkiff("node", "ls", "--format", "{{.Hostname}}"); strings.Contains(out, "intruder") {
			t.Errorf("a refused agent is in node ls:\n%s", out)
		}
	})

	t.Run("NothingReadableOnTheUnderlay", func(t *testing.T) {
		const canary = "zebracanary"
		pcap := filepath.Join(t.TempDir(), "underlay.pcap")
		// Every host's link ends in the underlay namespace; "any" sees the
		// frames on all of them, where the bridge itself sees only its own.
		dump := exec.Command("ip", "netns", "exec", "skiff-ul", "tcpdump", "-i", "any", "-U", "-w", pcap, "tcp or udp")
		var dumpErr bytes.Buffer
		dump.Stderr = &dumpErr
		if err := dump.Start(); err != nil {
			t.Fatalf("tcpdump: %v", err)
		}
		// Wait until tcpdump is listening before making traffic.
		c.eventually(10*time.Second, func() error {
			if !strings.Contains(dumpErr.String(), "listening on") {
				return errors.New("tcpdump is not listening yet")
			}
			return nil
		})
		file := writeCompose(t, "services:\n  "+canary+":\n    image: skiff-test/web:latest\n    deploy:\n      replicas: 4\n")
		c.mustSkiff("stack", "deploy", "-c", file, canary)
		c.waitReplicas(canary+"_"+canary, "4/4", time.Minute)
		c.mustSkiff("service", "scale", canary+"_"+canary+"=2")
		c.waitReplicas(canary+"_"+canary, "2/2", time.Minute)
		dump.Process.Signal(syscall.SIGTERM)
		dump.Wait()
		data, err := os.ReadFile(pcap)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) < 10_000 {
			t.Fatalf("captured only %d bytes: tcpdump saw no traffic (%s)", len(data), dumpErr.String())
		}
		t.Logf("captured %d bytes of the underlay's traffic", len(data))
		for _, clear := range []string{canary, "h2/agent", "h3/manager", "skiff-test/web"} {
			if bytes.Contains(data, []byte(clear)) {
				t.Errorf("%q crossed the underlay in clear text", clear)
			}
		}
		c.mustSkiff("stack", "rm", canary)
	})

	t.Run("RemovedNodeStaysOut", func(t *testing.T) {
		if err := c.tb.Stop(t.Context(), "h4", "agent"); err != nil {
			t.Fatal(err)
		}
		c.mustSkiff("node", "rm", "--force", "h4")
		if err := c.tb.Start(t.Context(), "h4", "agent"); err != nil {
			t.Fatal(err)
		}
		log := filepath.Join(testbed.StateDir, "h4", "logs", "agent.log")
		c.eventually(30*time.Second, func() error {
			b, err := os.ReadFile(log)
			if err != nil {
				return err
			}
			if !bytes.Contains(b, []byte("removed from the cluster")) {
				return errors.New("the agent has not been refused yet")
			}
			return nil
		})
		if out := c.mustSkiff("node", "ls", "--format", "{{.Hostname}}"); strings.Contains(out, "h4") {
			t.Errorf("the removed node is back in node ls:\n%s", out)
		}
	})
}

// TestCertificatesRenewWhileServing: with one-minute certificates, every
// node renews its own (twice within the test) while the tutorial's stack
// keeps serving on every host, and no task restarts.
func TestCertificatesRenewWhileServing(t *testing.T) {
	t.Setenv("SKIFF_TESTBED_CERT_EXPIRY", "1m")
	c := newCluster(t, 3, 3)
	file := writeCompose(t, `services:
  web:
    image: skiff-test/web:latest
    ports: ["4000:80"]
    deploy:
      replicas: 3
`)
	c.mustSkiff("stack", "deploy", "-c", file, "renew")
	c.waitReplicas("renew_web", "3/3", time.Minute)
	before := c.mustSkiff("service", "ps", "renew_web", "-q", "--no-trunc")

	serials := func() (map[string]string, error) {
		out := map[string]string{}
		for i := 1; i <= 3; i++ {
			for _, d := range []string{"agent", "manager"} {
				path := filepath.Join(testbed.StateDir, testbed.Host(i), d, "tls", ca.CertFile)
				b, err := os.ReadFile(path)
				if err != nil {
					return nil, err
				}
				cert, err := ca.ParseCert(b)
				if err != nil {
					return nil, err
				}
				out[path] = cert.SerialNumber.String()
			}
		}
		return out, nil
	}
	first, err := serials()
	if err != nil {
		t.Fatal(err)
	}
	renewals := map[string]int{}
	last := first
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		for i := 1; i <= 3; i++ {
			if err := httpAnswers(testbed.Addr(testbed.Host(i)) + ":4000"); err != nil {
				t.Fatalf("while certificates renew: %v", err)
			}
		}
		now, err := serials()
		if err != nil {
			t.Fatal(err)
		}
		done := true
		for path, s := range now {
			if s != last[path] {
				renewals[path]++
			}
			if renewals[path] < 2 {
				done = false
			}
		}
		last = now
		if done {
			break
		}
		time.Sleep(time.Second)
	}
	for path := range first {
		if renewals[path] < 2 {
			t.Errorf("%s renewed %d times in 3 minutes of one-minute certificates, want 2", path, renewals[path])
		}
	}
	if after := c.mustSkiff("service", "ps", "renew_web", "-q", "--no-trunc"); after != before {
		t.Errorf("tasks changed while certificates renewed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// httpAnswers fetches http://addr/ and checks that it answered.
func httpAnswers(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", addr, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
		return err
	}
	b := make([]byte, 12)
	if _, err := conn.Read(b); err != nil {
		return fmt.Errorf("%s answered nothing: %w", addr, err)
	}
	if !bytes.HasPrefix(b, []byte("HTTP/1.")) {
		return fmt.Errorf("%s answered %q", addr, b)
	}
	return nil
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func dialTLS(t *testing.T, addr string, cfg *tls.Config) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// talk opens a connection (TLS when cfg is set), sends a byte and waits for
// an answer; a server that refuses the caller fails the handshake or
// closes the connection.
func talk(addr string, cfg *tls.Config) error {
	d := net.Dialer{Timeout: 3 * time.Second}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer raw.Close()
	conn := raw
	if cfg != nil {
		tc := tls.Client(raw, cfg)
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			return err
		}
		conn = tc
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte{0}); err != nil {
		return err
	}
	_, err = conn.Read(make([]byte, 1))
	return err
}

func mustParse(t *testing.T, pemBytes []byte) *x509.Certificate {
	t.Helper()
	c, err := ca.ParseCert(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// agentKeypair is the worker certificate host's agent joined with.
func agentKeypair(t *testing.T, host string) *ca.Keypair {
	t.Helper()
	b, err := ca.ReadBundle(identity.Dir(filepath.Join(testbed.StateDir, host, "agent")))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := b.Keypair()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func adminKeypair(t *testing.T) *ca.Keypair {
	t.Helper()
	b, err := ca.ReadBundle(testbed.AdminDir)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := b.Keypair()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func strangerIssue(t *testing.T, role ca.Role) *ca.Keypair {
	t.Helper()
	a, err := ca.NewAuthority("stranger", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := a.Issue(ca.Identity{NodeID: "x", Role: role, ClusterID: "stranger"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.Bundle{CA: a.CertPEM, Cert: cert, Key: key}.Keypair()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func strangerKeypair(t *testing.T) *ca.Keypair { return strangerIssue(t, ca.RoleAdmin) }
func strangerManager(t *testing.T) *ca.Keypair { return strangerIssue(t, ca.RoleManager) }
