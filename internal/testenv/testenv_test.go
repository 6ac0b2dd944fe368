package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"wasessions/internal/store"
)

func TestNewDatabaseIsEmptyAndDistinct(t *testing.T) {
	a, b := NewDatabase(t), NewDatabase(t)
	if a == b {
		t.Fatalf("two calls returned the same database %s", a)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM information_schema.tables WHERE table_schema='public'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("fresh database has %d tables", n)
	}
}

func TestNewRedisDBReservesDistinctDatabases(t *testing.T) {
	a, b := NewRedisDB(t), NewRedisDB(t)
	if a.DB == b.DB || a.DB == 0 || b.DB == 0 {
		t.Fatalf("got databases %d and %d", a.DB, b.DB)
	}
	ctx := context.Background()
	c := redis.NewClient(a.Options())
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	d := redis.NewClient(b.Options())
	defer d.Close()
	if n, _ := d.Exists(ctx, "k").Result(); n != 0 {
		t.Fatal("key leaked across reserved databases")
	}
}

func TestPrivateServersRestart(t *testing.T) {
	ctx := context.Background()
	rs := StartRedisServer(t)
	c := redis.NewClient(&redis.Options{Addr: rs.Addr, MaxRetries: -1})
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	rs.Stop()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("ping succeeded while the private redis was stopped")
	}
	rs.Start()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("after restart: %v", err)
	}

	ps := StartPostgresServer(t)
	dsn := ps.NewDatabase(t)
	ps.Stop()
	if _, err := pgx.Connect(ctx, dsn); err == nil {
		t.Fatal("connect succeeded while the private postgres was stopped")
	}
	ps.Start()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	conn.Close(ctx)
}

// A primary and its synchronous standby behind one multi-host DSN with
// target_session_attrs=read-write: after the primary crashes and the
// standby is promoted, the same pool finds the new primary by itself, every
// committed row is there, and writes succeed (what the programs rely on,
// see e2e TestPostgresFailover).
func TestStandbyPromotion(t *testing.T) {
	t.Parallel()
	primary := StartPostgresServer(t)
	standby := primary.StartStandby(t, true)
	dsn := NewFailoverDatabase(t, primary, standby)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool, err := store.Connect(ctx, dsn, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, "CREATE TABLE t (n int)"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "INSERT INTO t SELECT generate_series(1, 100)"); err != nil {
		t.Fatal(err)
	}
	if in, err := standby.InRecovery(ctx); err != nil || !in {
		t.Fatalf("the standby before the failover: in recovery %v, %v", in, err)
	}
	primary.Stop()
	standby.Promote()
	var n int
	deadline := time.Now().Add(30 * time.Second)
	for {
		// The pool's connections to the dead primary fail once each;
		// new ones skip it and the standby until it is read-write.
		_, err = pool.Exec(ctx, "INSERT INTO t VALUES (101)")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write through the pool after the promotion: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 101 {
		t.Fatalf("after the failover: %d rows (%v), want the 100 committed before it and 1 after", n, err)
	}
}

// A Redis client through a FaultProxy sees the faults the proxy makes: a
// refusal fails at once, a hang fails only when the client's own timeout
// runs out, and after each the same client works again.
func TestProxyRedisFaults(t *testing.T) {
	r := NewRedisDB(t)
	p := NewFaultProxy(t, "redis", r.Addr)
	c := p.ProxyRedis(r)
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("set through the proxy: %v", err)
	}
	direct := redis.NewClient(r.Options())
	defer direct.Close()
	if v, err := direct.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("proxied write not in the reserved database: %q %v", v, err)
	}
	for _, tt := range []struct {
		fault      string
		break_, up func()
	}{{"down", p.Down, p.Up}, {"hang", p.Hang, p.Unhang}} {
		tt.break_()
		start := time.Now()
		err := c.Ping(ctx).Err()
		took := time.Since(start)
		if err == nil {
			t.Fatalf("%s: ping answered through a broken proxy", tt.fault)
		}
		if tt.fault == "hang" && took < time.Second {
			t.Fatalf("hang: ping failed after %s (%v); a hanging Redis should not answer at all", took, err)
		}
		tt.up()
		if err := c.Ping(ctx).Err(); err != nil {
			t.Fatalf("%s: ping after the fault ended: %v", tt.fault, err)
		}
	}
}
