// Command web is the visit counter of the getting-started tutorial that
// skiff's users come from, written in Go so that its image needs nothing but
// one static binary.
//
// GET / increments the Redis key "counter" and answers, in plain text:
//
//	Hello world!
//	Hostname: 5b0d2c8e1f3a
//	Visits: 7
//
// When Redis cannot be reached the page still renders, with the tutorial's
// "cannot connect to Redis, counter disabled" in place of the count.
// GET /healthz answers "ok" whenever the server runs.
//
// Environment:
//
//	NAME        whom to greet (default "world")
//	PORT        port to listen on (default 80)
//	REDIS_ADDR  Redis host:port (default "redis:6379", the compose service name)
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/skiffhq/skiff/testdata/images/internal/graceful"
)

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	redis.SetLogger(redisLogger{logger.With("component", "go-redis")})

	// docker stop sends SIGTERM; SIGINT covers a developer's Ctrl-C.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	if err := run(ctx, configFromEnv(os.Getenv), logger); err != nil {
		logger.Error("web failed", "err", err)
		os.Exit(1)
	}
}

// config is what the environment can change about the app.
type config struct {
	listenAddr string
	redisAddr  string
	name       string
}

// configFromEnv reads the configuration through getenv, applying the
// tutorial's defaults to unset or empty variables.
func configFromEnv(getenv func(string) string) config {
	orDefault := func(key, def string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return def
	}
	return config{
		listenAddr: ":" + orDefault("PORT", "80"),
		redisAddr:  orDefault("REDIS_ADDR", "redis:6379"),
		name:       orDefault("NAME", "world"),
	}
}

// run serves the app until ctx is done.
func run(ctx context.Context, cfg config, logger *slog.Logger) error {
	hostname, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("read hostname: %w", err)
	}
	rdb := newRedisClient(cfg.redisAddr)
	defer rdb.Close()

	ln, err := net.Listen("tcp", cfg.listenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.listenAddr, err)
	}
	logger.Info("listening", "addr", ln.Addr().String(), "redis", cfg.redisAddr, "hostname", hostname)

	a := &app{name: cfg.name, hostname: hostname, redis: rdb, log: logger}
	return graceful.Serve(ctx, ln, a.routes(), logger)
}

// redisLogger sends go-redis's internal messages to slog, so that the
// container's log keeps one format.
type redisLogger struct{ log *slog.Logger }

// Printf implements go-redis's logging interface.
func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, fmt.Sprintf(format, v...))
}
