package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/skiffhq/skiff/testdata/images/internal/graceful"
)

// runHTTP implements "probe http URL [-n N] [-timeout D]".
func runHTTP(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("http", flag.ContinueOnError)
	n := fs.Int("n", 1, "number of requests")
	timeout := fs.Duration("timeout", 5*time.Second, "timeout of each request")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	if *n < 1 {
		return usageError(fmt.Sprintf("-n %d: want at least 1", *n))
	}
	client := &http.Client{
		Timeout: *timeout,
		// A fresh connection per request, so that a load balancer on the
		// path sees N connections and may spread them over its backends.
		// No proxy, whatever the environment says: tests probe the path
		// from this container to the target itself.
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	}
	return getN(ctx, client, pos[0], *n, out)
}

// getN fetches url n times and writes each body to out, each ending in a
// newline so that the bodies of successive requests stay apart.
func getN(ctx context.Context, client *http.Client, url string, n int, out io.Writer) error {
	for i := range n {
		body, err := get(ctx, client, url)
		if len(body) > 0 && body[len(body)-1] != '\n' {
			body = append(body, '\n')
		}
		// The body of a failed request is printed too: it often says why.
		if _, werr := out.Write(body); werr != nil {
			return fmt.Errorf("write body: %w", werr)
		}
		if err != nil {
			return fmt.Errorf("request %d of %d: %w", i+1, n, err)
		}
	}
	return nil
}

// get fetches url and returns its body; a status other than 2xx is an error.
func get(ctx context.Context, client *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("new request: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err // already names the method and URL
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return body, fmt.Errorf("GET %s: read body: %w", url, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return body, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return body, nil
}

// runServe implements "probe serve ADDR".
func runServe(ctx context.Context, args []string, _ io.Writer) error {
	pos, err := parseArgs(flag.NewFlagSet("serve", flag.ContinueOnError), args, 1)
	if err != nil {
		return err
	}
	hostname, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("read hostname: %w", err)
	}
	ln, err := net.Listen("tcp", pos[0])
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	logger.Info("serving hostname over HTTP", "addr", ln.Addr().String(), "hostname", hostname)
	return graceful.Serve(ctx, ln, hostnameHandler(hostname), logger)
}

// hostnameHandler answers every request with the hostname, which tells a
// test which task served it.
func hostnameHandler(hostname string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, hostname)
	})
}
