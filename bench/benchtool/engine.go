package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// runEngine starts N containers on one Docker engine straight through its
// API, -parallel at a time, and prints the seconds until all of them run.
// It is the floor under any orchestrator's scale-up on that engine: no CLI
// process per container, no scheduler, no network plumbing. -network-mode
// picks the engine network mode: "none" joins the engine's null network, as
// any container that joins a network does; "default" on an engine without a
// default bridge joins none, as skiff's task containers there.
func runEngine(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("engine-run", flag.ContinueOnError)
	sock := fs.String("sock", "/var/run/docker.sock", "the engine's API socket")
	n := fs.Int("n", 15, "containers to start")
	parallel := fs.Int("parallel", 16, "API calls in flight")
	image := fs.String("image", "skiff-test/web:latest", "the app's image")
	mode := fs.String("network-mode", "none", "the containers' network mode")
	prefix := fs.String("name", "bench-engine", "container name prefix")
	cpus := fs.Float64("cpus", 0.1, "CPU limit of the app (as the tutorial's compose file)")
	mem := fs.Int64("memory", 50<<20, "memory limit of the app in bytes")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	e := newEngine(*sock)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	start := time.Now()
	sem := make(chan struct{}, *parallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := 1; i <= *n; i++ {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			app := map[string]any{"NanoCpus": int64(*cpus * 1e9), "Memory": *mem, "NetworkMode": *mode}
			if _, err := e.run(ctx, fmt.Sprintf("%s-%d", *prefix, i), *image, app); err != nil {
				mu.Lock()
				firstErr = cmp(firstErr, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	fmt.Fprintf(out, "%.3f\n", time.Since(start).Seconds())
	return nil
}

func cmp(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// engine is a minimal client of the Docker API over its unix socket (API
// 1.41, what the testbed's engines speak).
type engine struct{ c *http.Client }

func newEngine(sock string) *engine {
	return &engine{c: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		MaxIdleConnsPerHost: 64,
	}}}
}

func (e *engine) post(ctx context.Context, path string, body any, want int) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://docker/v1.41"+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != want {
		return nil, fmt.Errorf("POST %s: %s: %s", path, resp.Status, bytes.TrimSpace(b))
	}
	return b, nil
}

// run creates and starts one container and returns its ID.
func (e *engine) run(ctx context.Context, name, image string, hostConfig map[string]any) (string, error) {
	b, err := e.post(ctx, "/containers/create?name="+url.QueryEscape(name),
		map[string]any{"Image": image, "HostConfig": hostConfig}, http.StatusCreated)
	if err != nil {
		return "", err
	}
	var created struct{ Id string }
	if err := json.Unmarshal(b, &created); err != nil {
		return "", err
	}
	if created.Id == "" {
		return "", errors.New("create returned no ID")
	}
	if _, err := e.post(ctx, "/containers/"+created.Id+"/start", nil, http.StatusNoContent); err != nil {
		return "", err
	}
	return created.Id, nil
}
