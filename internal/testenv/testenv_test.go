package testenv

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
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
