package testenv

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// StartStandby makes a second cluster a streaming standby of s (as a
// Postgres failover pair runs it): pg_basebackup -R from s into a new data
// directory, started on a free loopback port. With sync true, s then waits
// for the standby to flush every commit (synchronous_standby_names), so a
// crash of s loses nothing a client saw committed; the standby itself does
// not inherit that setting, so once promoted it commits on its own. The
// standby is stopped when the test ends.
func (s *PostgresServer) StartStandby(t testing.TB, sync bool) *PostgresServer {
	t.Helper()
	st := newPostgresServer(t, "wasessions-pg-standby-", s.bin, s.asPG)
	// -R writes primary_conninfo and standby.signal; initdb's pg_hba.conf
	// already trusts replication connections on loopback.
	st.run("pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-U", "postgres",
		"-D", st.dir, "-R", "-X", "stream", "-c", "fast", "--no-sync")
	st.Start()
	t.Cleanup(st.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	want := "async"
	if sync {
		s.exec(ctx, "ALTER SYSTEM SET synchronous_standby_names = '*'")
		s.exec(ctx, "SELECT pg_reload_conf()")
		want = "sync"
	}
	for {
		var state string
		err := s.query(ctx, "SELECT coalesce(max(sync_state), '') FROM pg_stat_replication WHERE state = 'streaming'", &state)
		if err == nil && state == want {
			return st
		}
		if ctx.Err() != nil {
			t.Fatalf("testenv: the standby on port %d is not streaming (%s): %q %v", st.Port, want, state, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Promote makes a standby the primary (pg_ctl promote) and returns once it
// accepts writes.
func (s *PostgresServer) Promote() {
	s.t.Helper()
	s.run("pg_ctl", "-D", s.dir, "-w", "-t", "60", "promote")
}

// InRecovery reports whether the cluster is a standby (or an error if it
// cannot be asked).
func (s *PostgresServer) InRecovery(ctx context.Context) (bool, error) {
	var in bool
	err := s.query(ctx, "SELECT pg_is_in_recovery()", &in)
	return in, err
}

// NewFailoverDatabase creates a database on primary (replicated to its
// standbys) and returns its multi-host DSN over the standbys, then the
// primary (see MultiHostDSN): standbys first, so that a client that ignored
// target_session_attrs would land on a read-only server. The database is not dropped at the end: the clusters are
// the test's own and go with it, and the primary may be dead by then.
func NewFailoverDatabase(t testing.TB, primary *PostgresServer, standbys ...*PostgresServer) string {
	t.Helper()
	name := "wst_" + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	primary.exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	// A synchronous commit is flushed on the standby, not yet replayed:
	// wait until each standby shows the database.
	for _, st := range standbys {
		for {
			var n int
			err := st.query(ctx, "SELECT count(*) FROM pg_database WHERE datname = '"+name+"'", &n)
			if err == nil && n == 1 {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("testenv: database %s not on the standby on port %d: %v", name, st.Port, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	u, err := url.Parse(primary.AdminURL())
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	u.Path = "/" + name
	return MultiHostDSN(t, u.String(), append(standbys, primary)...)
}

// MultiHostDSN is dsn (a database on one of servers) with every server as
// a host, and target_session_attrs=read-write: libpq's and pgx's way to
// follow a primary that moves between hosts.
func MultiHostDSN(t testing.TB, dsn string, servers ...*PostgresServer) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	hosts := make([]string, len(servers))
	for i, s := range servers {
		hosts[i] = fmt.Sprintf("127.0.0.1:%d", s.Port)
	}
	q := u.Query()
	q.Set("target_session_attrs", "read-write")
	// url.URL would escape the commas of a host list: build it by hand.
	return fmt.Sprintf("%s://%s@%s%s?%s", u.Scheme, u.User.String(), strings.Join(hosts, ","), u.Path, q.Encode())
}

func (s *PostgresServer) exec(ctx context.Context, sql string) {
	s.t.Helper()
	c, err := pgx.Connect(ctx, s.AdminURL())
	if err != nil {
		s.t.Fatalf("testenv: %v", err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, sql); err != nil {
		s.t.Fatalf("testenv: %s: %v", sql, err)
	}
}

func (s *PostgresServer) query(ctx context.Context, sql string, dest any) error {
	c, err := pgx.Connect(ctx, s.AdminURL())
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	return c.QueryRow(ctx, sql).Scan(dest)
}
