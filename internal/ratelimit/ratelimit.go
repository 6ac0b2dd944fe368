// Package ratelimit counts what a caller may do per period, in Redis, so
// that every API replica shares one count: a limit of 3 an hour is 3 an
// hour whichever replicas the requests land on.
//
// It is a thin layer over github.com/go-redis/redis_rate (GCRA in one Lua
// script, so a check and its count are atomic). What it adds: a Limit
// that reads from a setting ("10/1m", "off"), key names that keep
// personal data such as phone numbers out of Redis's key space, and a
// Decision that says how long to wait.
package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// Limit is N events per Per, at most N at once (a burst of N, then one
// every Per/N). The zero Limit is no limit.
type Limit struct {
	N   int
	Per time.Duration
}

// Off reports whether l limits nothing.
func (l Limit) Off() bool { return l.N <= 0 || l.Per <= 0 }

// String is the setting's form: "3/1h0m0s", or "off".
func (l Limit) String() string {
	if l.Off() {
		return "off"
	}
	return strconv.Itoa(l.N) + "/" + l.Per.String()
}

// Parse reads "N/duration" (e.g. "10/1m", "3/1h") or "off".
func Parse(s string) (Limit, error) {
	s = strings.TrimSpace(s)
	if s == "off" {
		return Limit{}, nil
	}
	ns, ds, ok := strings.Cut(s, "/")
	if !ok {
		return Limit{}, fmt.Errorf("want N/duration (e.g. 10/1m) or off, got %q", s)
	}
	n, err := strconv.Atoi(ns)
	if err != nil || n < 1 {
		return Limit{}, fmt.Errorf("want a count of at least 1 before the '/', got %q", ns)
	}
	d, err := time.ParseDuration(ds)
	if err != nil || d < time.Second {
		return Limit{}, fmt.Errorf("want a duration of at least 1s after the '/', got %q", ds)
	}
	return Limit{N: n, Per: d}, nil
}

// UnmarshalText lets a Limit be a configuration field.
func (l *Limit) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// Decision is the answer to one Allow.
type Decision struct {
	Allowed bool
	// Remaining is how many more events the limit allows right now.
	Remaining int
	// RetryAfter is how long to wait before the next event is allowed;
	// zero when Allowed.
	RetryAfter time.Duration
}

// Limiter checks limits against one Redis.
type Limiter struct {
	rl *redis_rate.Limiter
}

// New returns a Limiter on rdb (the process's one Redis client).
func New(rdb redis.UniversalClient) *Limiter {
	return &Limiter{rl: redis_rate.NewLimiter(rdb)}
}

// Allow counts one event of kind name (the limit's name: "create",
// "pairing_phone") for key (a user id, a phone number) against lim and
// says whether it may happen. A refused event is not counted. An Off
// limit allows everything without asking Redis.
func (l *Limiter) Allow(ctx context.Context, name, key string, lim Limit) (Decision, error) {
	if lim.Off() {
		return Decision{Allowed: true, Remaining: -1}, nil
	}
	res, err := l.rl.Allow(ctx, redisKey(name, key), redis_rate.Limit{Rate: lim.N, Burst: lim.N, Period: lim.Per})
	if err != nil {
		return Decision{}, fmt.Errorf("rate limit %s: %w", name, err)
	}
	d := Decision{Allowed: res.Allowed > 0, Remaining: res.Remaining}
	if !d.Allowed {
		d.RetryAfter = res.RetryAfter
	}
	return d, nil
}

// redisKey names a limit's counter: "wasessions:<name>:<sha256 of key>",
// which redis_rate prefixes with "rate:". The key is hashed so that
// phone numbers and user ids are not listed by anyone who can run KEYS.
func redisKey(name, key string) string {
	sum := sha256.Sum256([]byte(key))
	return "wasessions:" + name + ":" + hex.EncodeToString(sum[:16])
}
