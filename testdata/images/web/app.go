package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

const (
	// counterKey is the Redis key that the tutorial's app increments.
	counterKey = "counter"
	// redisDownMessage replaces the count when Redis cannot be reached,
	// word for word as in the tutorial, since users and tests look for it.
	redisDownMessage = "cannot connect to Redis, counter disabled"
	// redisTimeout is the tutorial's socket timeout, for connecting and for
	// each command.
	redisTimeout = 2 * time.Second
)

// newRedisClient returns a client for the Redis server at addr. It connects
// lazily, so the app starts even while Redis is not up yet.
func newRedisClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:         addr,
		DialTimeout:  redisTimeout,
		ReadTimeout:  redisTimeout,
		WriteTimeout: redisTimeout,
		// One dial and no command retries: a page must fail within the
		// timeout rather than a multiple of it, and a retried INCR whose
		// reply was lost would count a visit twice.
		DialerRetries: 1,
		MaxRetries:    -1,
		// The counter needs nothing newer than RESP2, which any Redis
		// speaks; the handshake extras only add noise to the log of a
		// server that does not know them.
		Protocol:                 2,
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
}

// app is the HTTP side of the visit counter.
type app struct {
	name     string
	hostname string
	redis    *redis.Client
	log      *slog.Logger
}

// routes returns the app's handler.
func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.hello)
	mux.HandleFunc("GET /healthz", a.healthz)
	return mux
}

// hello counts the visit and greets the visitor.
func (a *app) hello(w http.ResponseWriter, r *http.Request) {
	visits := a.countVisit(r.Context())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "Hello %s!\nHostname: %s\nVisits: %s\n", a.name, a.hostname, visits)
}

// countVisit increments the counter and returns the new count as text, or
// redisDownMessage when Redis fails: the page must render without Redis.
func (a *app) countVisit(ctx context.Context) string {
	n, err := a.redis.Incr(ctx, counterKey).Result()
	if err != nil {
		a.log.WarnContext(ctx, "counter disabled", "err", fmt.Errorf("increment %q: %w", counterKey, err))
		return redisDownMessage
	}
	return strconv.FormatInt(n, 10)
}

// healthz reports that the server is up. It deliberately ignores Redis: the
// app degrades without it, so restarting the app would not help.
func (a *app) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}
