package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"wasessions/internal/store"
	"wasessions/internal/testenv"
)

// The current session of a user (what GET /status and GET /qr show) is the
// live one if any, else the newest (ties: the smaller id), whatever order
// Postgres reads the rows in.
func TestCurrentSessionIsLiveThenNewest(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	now := time.Now()
	type row struct {
		id, status, desired string
		age                 time.Duration
	}
	for _, tc := range []struct {
		name string
		rows []row
		want string
	}{
		{"live older than an ended one", []row{
			{"00000000-0000-4000-8000-000000000001", "connected", "linked", 3 * time.Hour},
			{"00000000-0000-4000-8000-000000000002", "failed", "linked", time.Hour},
		}, "00000000-0000-4000-8000-000000000001"},
		{"every live status counts", []row{
			{"00000000-0000-4000-8000-000000000001", "reconnecting", "linked", 3 * time.Hour},
			{"00000000-0000-4000-8000-000000000002", "expired", "gone", time.Hour},
		}, "00000000-0000-4000-8000-000000000001"},
		{"none live: the newest", []row{
			{"00000000-0000-4000-8000-000000000001", "disconnected", "gone", 3 * time.Hour},
			{"00000000-0000-4000-8000-000000000002", "logged_out", "linked", time.Hour},
			{"00000000-0000-4000-8000-000000000003", "failed", "linked", 2 * time.Hour},
		}, "00000000-0000-4000-8000-000000000002"},
		{"disconnect requested is not live", []row{
			{"00000000-0000-4000-8000-000000000001", "connected", "gone", 3 * time.Hour},
			{"00000000-0000-4000-8000-000000000002", "expired", "linked", time.Hour},
		}, "00000000-0000-4000-8000-000000000002"},
		{"same time: the smaller id", []row{
			{"00000000-0000-4000-8000-000000000009", "failed", "linked", time.Hour},
			{"00000000-0000-4000-8000-000000000003", "expired", "linked", time.Hour},
		}, "00000000-0000-4000-8000-000000000003"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user := uuid.NewString()
			f.exec(`INSERT INTO users (id) VALUES ($1)`, user)
			for _, r := range tc.rows {
				// ids are unique per test database: prefix them with the user.
				f.exec(`INSERT INTO whatsapp_sessions (id, user_id, session_id, status, desired_state, created_at)
					VALUES ($1, $2, $3, $4, $5, $6)`, idFor(user, r.id), user, "s-"+user+"-"+r.id, r.status, r.desired, now.Add(-r.age))
			}
			want := "s-" + user + "-" + tc.want
			cur, err := f.st.CurrentSession(f.ctx, user)
			if err != nil || cur.SessionID != want {
				t.Fatalf("CurrentSession = %s, %v; want %s", cur.SessionID, err, want)
			}
			st, err := f.st.CurrentStatus(f.ctx, user)
			if err != nil || st.SessionID != want {
				t.Fatalf("CurrentStatus = %s, %v; want %s", st.SessionID, err, want)
			}
		})
	}
}

// CurrentStatus decodes its row from the wire itself (statusRow): it must
// show exactly what CurrentSession reads through pgx, for NULLs and values
// alike, timestamps before and after Postgres's 2000 epoch to the
// microsecond, and over a connection that uses the simple protocol, where
// every value arrives as text.
func TestCurrentStatusIsCurrentSessionsStatus(t *testing.T) {
	t.Parallel()
	st, dsn := testenv.NewStore(t)
	simplePool, err := store.Connect(context.Background(), dsn+"&default_query_exec_mode=simple_protocol", 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(simplePool.Close)
	f := &fx{t: t, ctx: context.Background(), st: st}
	for _, tc := range []struct{ name, set string }{
		{"nullable columns NULL", `status_reason = NULL, phone_number = NULL, user_name = NULL, pairing_code = NULL,
			last_seen = NULL, expires_at = NULL, last_error = NULL, banned_until = NULL`},
		{"every column set", `status = 'reconnecting', status_reason = 'temporary_ban', phone_number = '+4915112345678',
			user_name = 'Zoë 🚀 "quoted"', pairing_code = 'ABCD-EFGH', is_connected = true, is_authenticated = true,
			last_seen = '2026-12-02 10:11:12.345678+00', expires_at = '2299-12-31 23:59:59.999999+00',
			created_at = '1999-12-31 23:59:59.000001+00', updated_at = '1970-01-01 00:00:00+00',
			last_error = 'connect_failure', banned_until = '2026-12-02 11:00:00.5+01'`},
		{"booleans false", `is_connected = false, is_authenticated = false, status = 'qr'`},
		// No live session: read in currentOfUser's order.
		{"ended", `status = 'logged_out', status_reason = 'logged_out', phone_number = '+4915112345678',
			last_seen = '2026-12-02 10:11:12.345678+00', last_error = 'logged_out', is_authenticated = false`},
		{"disconnect requested", `desired_state = 'gone', is_connected = true, is_authenticated = true`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := f.create()
			f.exec(`UPDATE whatsapp_sessions SET `+tc.set+` WHERE session_id = $1`, s.SessionID)
			cur, err := st.CurrentSession(f.ctx, s.UserID)
			if err != nil {
				t.Fatal(err)
			}
			want := utcTimes(cur.StatusOf())
			for name, via := range map[string]*store.Store{"extended protocol": st, "simple protocol": store.New(simplePool)} {
				got, err := via.CurrentStatus(f.ctx, s.UserID)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if got = utcTimes(got); !reflect.DeepEqual(got, want) {
					t.Errorf("%s: CurrentStatus =\n%s\nwant (CurrentSession's)\n%s", name, show(got), show(want))
				}
			}
		})
	}
	if _, err := st.CurrentStatus(f.ctx, uuid.NewString()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("CurrentStatus of a user without sessions: %v, want ErrNotFound", err)
	}
}

// utcTimes is s with its times in UTC, so that values equal to the
// microsecond compare equal whatever location the decoder chose.
func utcTimes(s store.SessionStatus) store.SessionStatus {
	for _, p := range []**time.Time{&s.LastSeen, &s.ExpiresAt, &s.BannedUntil} {
		if *p != nil {
			t := (**p).UTC()
			*p = &t
		}
	}
	s.CreatedAt, s.UpdatedAt = s.CreatedAt.UTC(), s.UpdatedAt.UTC()
	return s
}

func show(s store.SessionStatus) string {
	b, _ := json.MarshalIndent(s, "", "  ")
	return string(b)
}

// idFor makes id unique to user while keeping the order of the ids of one
// user: the first 8 hex digits come from the user, the rest from id.
func idFor(user, id string) string { return user[:8] + id[8:] }

// TestCurrentSessionReadsInIndexOrder: the statements that read a user's
// current session (GET /status polls one) read the first entry of
// idx_whatsapp_sessions_current and stop: no sort, whether Postgres plans
// them for the user at hand or with the generic plan it switches a
// prepared statement to after a few runs. The user has the most sessions
// of anyone (the case a sort would cost most), among 5,000 others.
func TestCurrentSessionReadsInIndexOrder(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	f.seedAdmin(5_000)
	user := uuid.NewString()
	f.exec(`INSERT INTO users (id) VALUES ($1)`, user)
	f.exec(`INSERT INTO whatsapp_sessions (user_id, session_id, status, desired_state, created_at)
		SELECT $1, $2 || g, 'failed', 'linked', now() - g * interval '1 minute'
		FROM generate_series(1, 30) g`, user, "s-"+user+"-")
	f.exec(`ANALYZE whatsapp_sessions`)
	pooled, err := f.st.Pool().Acquire(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Taken out of the pool: no one else sees its plan_cache_mode.
	conn := pooled.Hijack()
	defer conn.Close(f.ctx)
	n := 0
	for name, q := range store.CurrentQueries {
		for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
			n++
			for _, sql := range []string{`SET plan_cache_mode = ` + mode, fmt.Sprintf(`PREPARE cur%d AS %s`, n, q.SQL)} {
				if _, err := conn.Exec(f.ctx, sql); err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
			}
			var raw []byte
			if err := conn.QueryRow(f.ctx, fmt.Sprintf(`EXPLAIN (FORMAT JSON) EXECUTE cur%d('%s')`, n, user)).Scan(&raw); err != nil {
				t.Fatalf("explain: %v", err)
			}
			var out []struct {
				Plan planNode `json:"Plan"`
			}
			if err := json.Unmarshal(raw, &out); err != nil || len(out) != 1 {
				t.Fatalf("explain output: %v %s", err, raw)
			}
			var nodes, indexes []string
			out[0].Plan.walk(func(p planNode) {
				nodes = append(nodes, p.NodeType)
				if p.IndexName != "" {
					indexes = append(indexes, p.IndexName)
				}
			})
			joined := strings.Join(nodes, " > ")
			if strings.Contains(joined, "Sort") || strings.Join(indexes, ",") != q.Index {
				t.Errorf("%s (%s): plan %s via %v; want an index scan of %s without a sort",
					name, mode, joined, indexes, q.Index)
			}
			t.Logf("%s (%s): %s via %v", name, mode, joined, indexes)
		}
	}
}

// CurrentStatus bounds its query by ctx's deadline on the connection itself
// (not by pgx watching ctx). The connection must go back to the pool without
// that deadline: the next caller on it, with no deadline of its own, must not
// fail once the earlier request's deadline has passed.
func TestCurrentStatusLeavesNoDeadlineOnTheConnection(t *testing.T) {
	t.Parallel()
	_, dsn := testenv.NewStore(t)
	pool, err := store.Connect(context.Background(), dsn, 1) // one connection: the next query reuses it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	st := store.New(pool)
	f := &fx{t: t, ctx: context.Background(), st: st}
	s := f.create()

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := st.CurrentStatus(ctx, s.UserID); err != nil {
		t.Fatal(err)
	}
	<-ctx.Done()
	time.Sleep(10 * time.Millisecond) // past the deadline by the clock the connection's deadline uses
	if _, err := st.CurrentStatus(context.Background(), s.UserID); err != nil {
		t.Fatalf("the connection's next query after a bounded one: %v", err)
	}
	if _, err := st.Get(context.Background(), s.SessionID); err != nil {
		t.Fatalf("another query on that connection: %v", err)
	}
}
