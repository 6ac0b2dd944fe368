// Package redisconn opens the one go-redis client each process shares
// between asynq (client, server, inspector), the event bus, the rate
// limits and readiness checks: one pool per process, not one per library,
// so a process's Redis connections stay few and bounded. It is the only
// place a Redis client is built from the settings.
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
//
// With Redis Sentinel (Settings.SentinelAddrs, from REDIS_SENTINEL_ADDRS),
// the client asks the sentinels which server is the primary of
// SentinelMaster, dials it, and follows a failover: when the sentinels
// promote a replica (+switch-master), the client drops its connections to
// the old primary and the next command dials the new one. REDIS_URL then
// still gives the primary's credentials, database and transport; its host
// is not dialled. asynq, the event hub's subscription and the rate limits
// all ride on that one client, so they fail over together.
package redisconn

import (
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Settings are how a process reaches Redis (REDIS_URL, REDIS_TLS_CA_FILE
// and the REDIS_SENTINEL_* settings, see internal/config).
type Settings struct {
	// URL is redis:// or rediss:// with the credentials and database.
	URL string
	// CAFile (a PEM file, may be empty) is the only trusted root for
	// rediss://.
	CAFile string
	// SentinelAddrs (host:port of each sentinel), when not empty, switch
	// the client to Sentinel: the primary is whichever server the
	// sentinels name for SentinelMaster.
	SentinelAddrs []string
	// SentinelMaster is the name the sentinels monitor the primary under
	// ("sentinel monitor <name> ...").
	SentinelMaster string
	// SentinelUsername and SentinelPassword authenticate to the sentinels
	// themselves (their requirepass or an ACL user), which may differ from
	// the primary's credentials in URL.
	SentinelUsername string
	SentinelPassword string
}

// Sentinel reports whether s reaches Redis through Sentinel.
func (s Settings) Sentinel() bool { return len(s.SentinelAddrs) > 0 }

// Conn is parsed Settings: it makes the process's client, and clients for
// libraries that open their own connections (asynqmon).
type Conn struct {
	single   *redis.Options
	failover *redis.FailoverOptions
}

// New checks s and returns the Conn for it. It does not dial.
func New(s Settings) (*Conn, error) {
	opts, err := Options(s.URL, s.CAFile)
	if err != nil {
		return nil, err
	}
	if !s.Sentinel() {
		if s.SentinelMaster != "" {
			return nil, fmt.Errorf("redisconn: REDIS_SENTINEL_MASTER is set but REDIS_SENTINEL_ADDRS is not")
		}
		return &Conn{single: opts}, nil
	}
	if s.SentinelMaster == "" {
		return nil, fmt.Errorf("redisconn: REDIS_SENTINEL_ADDRS is set but REDIS_SENTINEL_MASTER is not")
	}
	for _, a := range s.SentinelAddrs {
		if h, p, err := net.SplitHostPort(a); err != nil || h == "" || p == "" {
			return nil, fmt.Errorf("redisconn: REDIS_SENTINEL_ADDRS: %q is not host:port", a)
		}
	}
	return &Conn{failover: &redis.FailoverOptions{
		MasterName:       s.SentinelMaster,
		SentinelAddrs:    append([]string(nil), s.SentinelAddrs...),
		SentinelUsername: s.SentinelUsername,
		SentinelPassword: s.SentinelPassword,
		Username:         opts.Username,
		Password:         opts.Password,
		DB:               opts.DB,
		// The same certificate check for the sentinels and the primary:
		// rediss://'s host name is what every certificate must be valid
		// for, as the primary's address changes with each failover.
		TLSConfig:       opts.TLSConfig,
		DialTimeout:     opts.DialTimeout,
		ReadTimeout:     opts.ReadTimeout,
		WriteTimeout:    opts.WriteTimeout,
		MaxRetries:      opts.MaxRetries,
		MinRetryBackoff: opts.MinRetryBackoff,
		MaxRetryBackoff: opts.MaxRetryBackoff,
		// The same deadline rule for the primary and the sentinels (see
		// Options).
		ContextTimeoutEnabled: opts.ContextTimeoutEnabled,
	}}, nil
}

// Client returns a new client: a plain one, or a Sentinel failover client
// (a *redis.Client too, so code that reads its Options, such as the
// event bus's channel prefix, sees the database either way).
func (c *Conn) Client() *redis.Client {
	if c.failover != nil {
		return redis.NewFailoverClient(c.failover)
	}
	return redis.NewClient(c.single)
}

// DB is the logical database the clients use.
func (c *Conn) DB() int {
	if c.failover != nil {
		return c.failover.DB
	}
	return c.single.DB
}

// AsynqConnOpt gives the same settings to a library that opens its own
// asynq connections (asynqmon), credentials, TLS and Sentinel included.
// It plays the part of asynq.RedisFailoverClientOpt, which would lose the
// ACL user of the sentinels and the private CA.
func (c *Conn) AsynqConnOpt() asynq.RedisConnOpt { return connOpt{c} }

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
	// A few quick retries ride out a dropped connection; a Redis that
	// stays down (or a failover still under way) must surface quickly as
	// an error the API can turn into a 503.
	opts.MaxRetries = 2
	opts.MinRetryBackoff = 50 * time.Millisecond
	opts.MaxRetryBackoff = 250 * time.Millisecond
	// A caller's deadline bounds its command. Without this, go-redis sets
	// each socket deadline from ReadTimeout and WriteTimeout alone and
	// looks at the context only between attempts, so on a Redis that
	// accepts connections and never answers (a host gone from the network,
	// a frozen primary) a request with a 300 ms budget still waited 5 s
	// per attempt: an API request 10 s and more. With it, the socket
	// deadline is the earlier of the context's deadline and the timeout,
	// so it only ever shortens a wait, and a context without a deadline
	// waits as before. That keeps what runs on context.Background as it
	// was: asynq's dequeue (a Lua script, not a blocking command), its
	// heartbeats and its inspector; asynq's processor acknowledges a task
	// under the task's lease deadline, which it means as a bound anyway.
	// Pub/sub (the event hub, asynq's cancellation channel) honours the
	// context whatever this says. A command cut by its deadline loses its
	// connection (the reply may still come), so a short deadline is for
	// a hang, not for a Redis that is merely slow.
	opts.ContextTimeoutEnabled = true
	return opts, nil
}

// Open parses url (see Options) and returns a client on a single server.
// It does not wait for Redis to answer: processes start, and report
// not-ready, while it is down.
func Open(url, caFile string) (redis.UniversalClient, error) {
	return OpenSettings(Settings{URL: url, CAFile: caFile})
}

// OpenSettings is Open for any Settings, Sentinel included.
func OpenSettings(s Settings) (redis.UniversalClient, error) {
	c, err := New(s)
	if err != nil {
		return nil, err
	}
	return c.Client(), nil
}

// AsynqConnOpt gives opts to a library that opens its own asynq
// connections (asynqmon), credentials and TLS included.
func AsynqConnOpt(opts *redis.Options) asynq.RedisConnOpt { return connOpt{&Conn{single: opts}} }

type connOpt struct{ c *Conn }

// MakeRedisClient is asynq.RedisConnOpt: a new client on the same settings.
func (c connOpt) MakeRedisClient() interface{} { return c.c.Client() }
