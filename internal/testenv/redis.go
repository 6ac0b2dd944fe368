package testenv

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisAddr is the host:port of the shared test Redis server.
func RedisAddr() string {
	if v := os.Getenv("TEST_REDIS_ADDR"); v != "" {
		return v
	}
	return "127.0.0.1:6379"
}

// redisLockTTL bounds how long a crashed test process can hold a logical DB.
const redisLockTTL = 15 * time.Minute

// maxTestDB is the highest logical database tests use.
const maxTestDB = 14

// RedisDB is one logical Redis database reserved for a single test.
type RedisDB struct {
	Addr string
	DB   int
}

// URL is the redis:// URL of the reserved database, as the programs take it
// in REDIS_URL.
func (r RedisDB) URL() string { return fmt.Sprintf("redis://%s/%d", r.Addr, r.DB) }

// Options are go-redis options for the reserved database.
func (r RedisDB) Options() *redis.Options { return &redis.Options{Addr: r.Addr, DB: r.DB} }

// NewRedisDB reserves a logical database (1..14; 0 is `make run`'s and 15
// `make demo`'s) on
// the shared test Redis, empties it, and empties and releases it when the test
// ends. The reservation is a SET NX key in database 0, so parallel test
// packages never share a database.
func NewRedisDB(t testing.TB) RedisDB {
	t.Helper()
	return newRedisDBOn(t, RedisAddr())
}

func newRedisDBOn(t testing.TB, addr string) RedisDB {
	t.Helper()
	ctx := context.Background()
	ctl := redis.NewClient(&redis.Options{Addr: addr, DB: 0})
	defer ctl.Close()
	if err := ctl.Ping(ctx).Err(); err != nil {
		t.Fatalf("testenv: Redis is not reachable at %s (run `make test`, which starts it): %v", addr, err)
	}
	owner := strconv.Itoa(os.Getpid()) + ":" + randomHex(4)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		for db := 1; db <= maxTestDB; db++ {
			key := "wasessions:testenv:db:" + strconv.Itoa(db)
			ok, err := ctl.SetNX(ctx, key, owner, redisLockTTL).Result()
			if err != nil {
				t.Fatalf("testenv: reserve Redis db: %v", err)
			}
			if !ok {
				continue
			}
			r := RedisDB{Addr: addr, DB: db}
			flush(t, r)
			t.Cleanup(func() {
				flush(t, r)
				c := redis.NewClient(&redis.Options{Addr: addr, DB: 0})
				defer c.Close()
				// Release only our own reservation.
				if v, _ := c.Get(context.Background(), key).Result(); v == owner {
					c.Del(context.Background(), key)
				}
			})
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: all %d test Redis databases on %s stayed reserved for 2m", maxTestDB, addr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func flush(t testing.TB, r RedisDB) {
	c := redis.NewClient(r.Options())
	defer c.Close()
	if err := c.FlushDB(context.Background()).Err(); err != nil {
		t.Errorf("testenv: flush Redis db %d: %v", r.DB, err)
	}
}
