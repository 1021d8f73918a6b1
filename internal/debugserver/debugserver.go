// Package debugserver serves a process's operational HTTP endpoints:
// Prometheus metrics at /metrics and, only where asked, Go's profiler at
// /debug/pprof/. The manager, the agent and skiff-sim each run one (the
// manager two, so that its profiler is never exposed by accident along with
// its metrics).
//
// A Server binds its address in Listen, so that a taken port is an error
// its owner reports before it starts anything else, and serves in Serve
// until the owner's context ends.
package debugserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const (
	// readHeaderTimeout bounds a client that opens a connection and sends
	// nothing. There is no whole-request read timeout: every endpoint is a
	// GET without a body, and net/http cancels a request's context when a
	// read deadline passes, which would cut a CPU profile short.
	readHeaderTimeout = 5 * time.Second
	// idleTimeout keeps a scraper's connection between scrapes (15 s apart
	// by Prometheus's default) and no longer.
	idleTimeout = time.Minute
	// metricsWriteTimeout bounds one scrape: gathering walks the state
	// store, which takes well under a second even for a million tasks.
	metricsWriteTimeout = 30 * time.Second
	// pprofWriteTimeout is how long the profiler may take to write a
	// profile, on top of the seconds it was asked to record for. It is per
	// request, not the server's WriteTimeout, because net/http/pprof
	// refuses any profile longer than that.
	pprofWriteTimeout = time.Minute
	// shutdownGrace is how long requests in flight may take to finish
	// once the server is stopping; their contexts are cancelled at once,
	// so a profile being recorded ends early and is still written.
	shutdownGrace = 5 * time.Second
)

// Config says where a Server listens and what it serves.
type Config struct {
	// Addr is the host:port to listen on; port 0 picks a free one.
	Addr string
	// Metrics, when set, is served at /metrics.
	Metrics prometheus.Gatherer
	// Pprof serves Go's profiler at /debug/pprof/.
	Pprof bool
	// Logger receives the HTTP server's own errors, such as a failed TLS
	// handshake or a broken accept; nil discards them.
	Logger *slog.Logger
}

// what names the endpoints, for errors.
func (c *Config) what() string {
	switch {
	case c.Metrics != nil && c.Pprof:
		return "metrics and pprof"
	case c.Pprof:
		return "pprof"
	default:
		return "metrics"
	}
}

// Server is a debug HTTP server that has bound its address. Serve it once,
// or Close it.
type Server struct {
	what  string
	lis   net.Listener
	srv   *http.Server
	grace time.Duration
}

// Listen binds cfg.Addr. Nothing is served until Serve.
func Listen(cfg Config) (*Server, error) {
	switch {
	case cfg.Addr == "":
		return nil, errors.New("debug server: no address to listen on")
	case cfg.Metrics == nil && !cfg.Pprof:
		return nil, fmt.Errorf("debug server on %s: nothing to serve: give it metrics, pprof or both", cfg.Addr)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	if cfg.Metrics != nil {
		mux.Handle("GET /metrics", withWriteDeadline(
			promhttp.HandlerFor(cfg.Metrics, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}),
			func(*http.Request) time.Duration { return metricsWriteTimeout }))
	}
	if cfg.Pprof {
		deadline := func(r *http.Request) time.Duration { return pprofWriteTimeout + requestedSeconds(r) }
		// Index also serves the named profiles (heap, goroutine, ...).
		mux.Handle("/debug/pprof/", withWriteDeadline(http.HandlerFunc(pprof.Index), deadline))
		mux.Handle("/debug/pprof/cmdline", withWriteDeadline(http.HandlerFunc(pprof.Cmdline), deadline))
		mux.Handle("/debug/pprof/profile", withWriteDeadline(http.HandlerFunc(pprof.Profile), deadline))
		mux.Handle("/debug/pprof/symbol", withWriteDeadline(http.HandlerFunc(pprof.Symbol), deadline))
		mux.Handle("/debug/pprof/trace", withWriteDeadline(http.HandlerFunc(pprof.Trace), deadline))
	}
	what := cfg.what()
	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen for %s on %s: %w", what, cfg.Addr, err)
	}
	return &Server{
		what: what,
		lis:  lis,
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: readHeaderTimeout,
			IdleTimeout:       idleTimeout,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		},
		grace: shutdownGrace,
	}, nil
}

// Addr is the address the server listens on, with the port it was given
// when Config.Addr asked for port 0.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// Serve serves until ctx ends, then shuts down: it stops accepting,
// cancels the requests in flight and gives them a few seconds to finish
// before it closes their connections. It returns nil once it has shut down
// or been closed, and an error only if the server failed on its own.
func (s *Server) Serve(ctx context.Context) error {
	// Requests belong to the server's owner: when it stops, so do they.
	s.srv.BaseContext = func(net.Listener) context.Context { return ctx }
	served := make(chan error, 1)
	go func() { served <- s.srv.Serve(s.lis) }()
	select {
	case err := <-served:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serve %s on %s: %w", s.what, s.lis.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.grace)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		// The grace is over: cut whatever is left.
		s.srv.Close()
	}
	<-served // Serve has returned ErrServerClosed since Shutdown began.
	return nil
}

// Close stops the server at once, closing its listener and connections. It
// is for a server whose Serve will never run, such as when its owner fails
// to start; a served one stops with Serve's context.
func (s *Server) Close() error {
	err := s.srv.Close()
	if lerr := s.lis.Close(); lerr != nil && !errors.Is(lerr, net.ErrClosed) {
		err = errors.Join(err, lerr)
	}
	return err
}

// withWriteDeadline gives each request of h its own write deadline, d(r)
// from when it starts, so that a client that stops reading cannot hold a
// connection forever.
func withWriteDeadline(h http.Handler, d func(*http.Request) time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Only a ResponseWriter without a connection (a test recorder)
		// cannot take a deadline, and it needs none.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d(r)))
		h.ServeHTTP(w, r)
	})
}

// requestedSeconds is how long a profile or trace was asked to record for
// (its seconds parameter); 30 s, pprof's default for a CPU profile, when
// not given or not a number, so that the deadline is never shorter than
// the recording.
func requestedSeconds(r *http.Request) time.Duration {
	// From the URL alone: a symbol lookup's POST body is pprof's to read.
	sec, err := strconv.ParseFloat(r.URL.Query().Get("seconds"), 64)
	if err != nil || sec <= 0 {
		return 30 * time.Second
	}
	// Bounded so that an absurd value cannot overflow the duration.
	return time.Duration(min(sec, 24*60*60) * float64(time.Second))
}
