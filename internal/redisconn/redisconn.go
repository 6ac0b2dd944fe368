// Package redisconn opens the one go-redis client each process shares
// between asynq (client, server, inspector), the event bus and readiness
// checks: one pool per process, not one per library, so a process's Redis
// connections stay few and bounded.
//
// REDIS_URL carries the credentials and the transport:
//
//	redis://host:6379/0                  no password (loopback only)
//	redis://:password@host:6379/0        requirepass
//	redis://user:password@host:6379/0    an ACL user
//	rediss://user:password@host:6380/0   the same over TLS
//
// rediss:// verifies the server's certificate against the system's roots,
// or against the CA in REDIS_TLS_CA_FILE for a private CA. asynqmon, which
// opens its own connections, gets the same options through AsynqConnOpt
// (asynq's own URL parser would drop the ACL user name and the CA).
package redisconn

import (
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Options parses a redis:// or rediss:// URL into client options, with
// caFile (a PEM file, may be empty) as the only trusted root for rediss://.
func Options(url, caFile string) (*redis.Options, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		// go-redis's message quotes the URL, password included: never pass
		// it on.
		return nil, fmt.Errorf("redisconn: REDIS_URL is not a valid redis:// or rediss:// URL")
	}
	if caFile != "" {
		if opts.TLSConfig == nil {
			return nil, fmt.Errorf("redisconn: REDIS_TLS_CA_FILE is set but REDIS_URL is not rediss://")
		}
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("redisconn: REDIS_TLS_CA_FILE: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redisconn: REDIS_TLS_CA_FILE %s holds no PEM certificate", caFile)
		}
		opts.TLSConfig.RootCAs = pool
	}
	opts.DialTimeout = 3 * time.Second
	opts.ReadTimeout = 5 * time.Second
	opts.WriteTimeout = 5 * time.Second
	// A few quick retries ride out a failover; a Redis that stays down
	// must surface quickly as an error the API can turn into a 503.
	opts.MaxRetries = 2
	opts.MinRetryBackoff = 50 * time.Millisecond
	opts.MaxRetryBackoff = 250 * time.Millisecond
	return opts, nil
}

// Open parses url (see Options) and returns a client. It does not wait for
// Redis to answer: processes start, and report not-ready, while it is down.
func Open(url, caFile string) (redis.UniversalClient, error) {
	opts, err := Options(url, caFile)
	if err != nil {
		return nil, err
	}
	return redis.NewClient(opts), nil
}

// AsynqConnOpt gives opts to a library that opens its own asynq
// connections (asynqmon), credentials and TLS included.
func AsynqConnOpt(opts *redis.Options) asynq.RedisConnOpt { return connOpt{opts} }

type connOpt struct{ opts *redis.Options }

// MakeRedisClient is asynq.RedisConnOpt: a new client on the same options.
func (c connOpt) MakeRedisClient() interface{} { return redis.NewClient(c.opts) }
