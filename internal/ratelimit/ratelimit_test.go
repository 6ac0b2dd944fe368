package ratelimit_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"wasessions/internal/ratelimit"
	"wasessions/internal/testenv"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    ratelimit.Limit
		wantErr bool
	}{
		{"3/1h", ratelimit.Limit{N: 3, Per: time.Hour}, false},
		{"10/1m", ratelimit.Limit{N: 10, Per: time.Minute}, false},
		{" 5/30s ", ratelimit.Limit{N: 5, Per: 30 * time.Second}, false},
		{"off", ratelimit.Limit{}, false},
		{"3", ratelimit.Limit{}, true},
		{"0/1m", ratelimit.Limit{}, true},
		{"-1/1m", ratelimit.Limit{}, true},
		{"3/soon", ratelimit.Limit{}, true},
		{"3/10ms", ratelimit.Limit{}, true},
		{"three/1h", ratelimit.Limit{}, true},
	}
	for _, tt := range tests {
		got, err := ratelimit.Parse(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("Parse(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
	if s := (ratelimit.Limit{N: 3, Per: time.Hour}).String(); s != "3/1h0m0s" {
		t.Errorf("String = %q", s)
	}
}

// TestSharedAcrossClients: two limiters on two Redis clients (two API
// replicas) draw from one count; a refused event says how long to wait and
// is not counted; another key has its own count; an off limit never asks.
func TestSharedAcrossClients(t *testing.T) {
	t.Parallel()
	db := testenv.NewRedisDB(t)
	a, b := redis.NewClient(db.Options()), redis.NewClient(db.Options())
	t.Cleanup(func() { a.Close(); b.Close() })
	la, lb := ratelimit.New(a), ratelimit.New(b)
	ctx := context.Background()
	lim := ratelimit.Limit{N: 3, Per: time.Hour}
	phone := "+15550001111"

	for i, l := range []*ratelimit.Limiter{la, lb, la} {
		d, err := l.Allow(ctx, "pairing_phone", phone, lim)
		if err != nil || !d.Allowed {
			t.Fatalf("event %d: %+v, %v", i+1, d, err)
		}
	}
	for _, l := range []*ratelimit.Limiter{lb, la} {
		d, err := l.Allow(ctx, "pairing_phone", phone, lim)
		if err != nil {
			t.Fatal(err)
		}
		// GCRA with 3 an hour: the next one is allowed 20 minutes after the first.
		if d.Allowed || d.RetryAfter < 15*time.Minute || d.RetryAfter > 20*time.Minute {
			t.Fatalf("4th event: %+v, want refused with a retry in (15m, 20m]", d)
		}
	}
	if d, err := lb.Allow(ctx, "pairing_phone", "+15550002222", lim); err != nil || !d.Allowed {
		t.Fatalf("another phone: %+v, %v", d, err)
	}
	if d, err := lb.Allow(ctx, "create", phone, lim); err != nil || !d.Allowed {
		t.Fatalf("another limit, same key: %+v, %v", d, err)
	}

	keys, err := a.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 {
		t.Fatalf("keys %v, want one per (limit, key)", keys)
	}
	for _, k := range keys {
		if strings.Contains(k, "5550001111") || !strings.HasPrefix(k, "rate:wasessions:") {
			t.Fatalf("key %q: want rate:wasessions:<limit>:<hash>, never the phone number", k)
		}
		if ttl, err := a.TTL(ctx, k).Result(); err != nil || ttl <= 0 || ttl > time.Hour {
			t.Fatalf("key %q expires in %v (%v): counters must not outlive their period", k, ttl, err)
		}
	}

	a.Close()
	if d, err := la.Allow(ctx, "create", "u", ratelimit.Limit{}); err != nil || !d.Allowed {
		t.Fatalf("off limit with Redis unusable: %+v, %v", d, err)
	}
	if _, err := la.Allow(ctx, "create", "u", lim); err == nil {
		t.Fatal("a limit checked on a closed client did not fail")
	}
}
