// Package redisconn opens the one go-redis client each process shares
// between asynq (client, server, inspector), the event bus and readiness
// checks, as DESIGN.md asks: one pool per process, not one per library.
package redisconn

import (
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Open parses a redis:// URL and returns a client. It does not wait for
// Redis to answer: processes start, and report not-ready, while it is down.
func Open(url string) (redis.UniversalClient, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redisconn: parse REDIS_URL: %w", err)
	}
	opts.DialTimeout = 3 * time.Second
	opts.ReadTimeout = 5 * time.Second
	opts.WriteTimeout = 5 * time.Second
	// A few quick retries ride out a failover; a Redis that stays down
	// must surface quickly as an error the API can turn into a 503.
	opts.MaxRetries = 2
	opts.MinRetryBackoff = 50 * time.Millisecond
	opts.MaxRetryBackoff = 250 * time.Millisecond
	return redis.NewClient(opts), nil
}
