package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// redisServer is a private redis-server started for one test.
type redisServer struct {
	addr   string
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process has been reaped
}

// startRedis runs redis-server on a free loopback port until the test ends.
// A missing binary fails the test rather than skipping it, so that a machine
// without Redis cannot pass by testing nothing.
func startRedis(t *testing.T) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found (%v): run `deploy/install-deps images` first", err)
	}
	// A port found free can be taken by someone else before redis-server
	// binds it, so a lost race is retried on a fresh port.
	var errs []error
	for range 5 {
		srv, err := tryStartRedis(bin, t.TempDir())
		if err == nil {
			t.Cleanup(srv.stop)
			return srv
		}
		errs = append(errs, err)
	}
	t.Fatalf("start redis-server: %v", errors.Join(errs...))
	return nil
}

func tryStartRedis(bin, dir string) (*redisServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	var output bytes.Buffer
	cmd := exec.Command(bin,
		"--bind", "127.0.0.1", "--port", strconv.Itoa(port),
		"--dir", dir, "--save", "", "--appendonly", "no", "--loglevel", "warning")
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", bin, err)
	}
	srv := &redisServer{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(srv.exited)
	}()
	if err := srv.waitReady(10 * time.Second); err != nil {
		srv.stop() // after this the output buffer is no longer written
		return nil, fmt.Errorf("%w; redis-server said: %q", err, output.String())
	}
	return srv, nil
}

// waitReady polls until the server answers PING.
func (s *redisServer) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("redis-server on %s exited early", s.addr)
		default:
		}
		if lastErr = ping(s.addr); lastErr == nil {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("redis-server on %s not ready after %v: %w", s.addr, timeout, lastErr)
}

// stop kills the server and waits until it is gone. It may be called twice.
func (s *redisServer) stop() {
	s.cmd.Process.Kill() // fails harmlessly if the process already exited
	<-s.exited
}

// ping sends an inline PING command and checks for PONG. It does not use
// go-redis, so that readiness checks leave the client under test untouched.
func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return fmt.Errorf("send PING: %w", err)
	}
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read PING reply: %w", err)
	}
	if reply != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", reply)
	}
	return nil
}

// freePort returns a loopback TCP port that nothing listened on a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
