package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"wasessions/internal/store"
	"wasessions/internal/testenv"
)

// The API answers 503 (retry later) when Postgres is down and a 4xx/500
// when Postgres rejected a query; IsUnavailable is what tells them apart.
func TestIsUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	// Rejected queries on a running server: not unavailable.
	f := newFx(t)
	s := f.create()
	_, syntaxErr := f.st.Pool().Exec(ctx, `SELEC 1`)
	_, fkErr := f.st.Pool().Exec(ctx, `INSERT INTO whatsapp_sessions (user_id, session_id) VALUES ($1, 'x')`, uuid.NewString())
	_, uniqueErr := f.st.Pool().Exec(ctx, `INSERT INTO whatsapp_sessions (user_id, session_id) VALUES ($1, $2)`, s.UserID, s.SessionID)
	_, checkErr := f.st.Pool().Exec(ctx, `UPDATE whatsapp_sessions SET status = 'bogus'`)
	_, badUUID := f.st.Stats(ctx, "not-a-uuid")
	_, notFound := f.st.Get(ctx, "whatsapp_missing")
	for name, err := range map[string]error{
		"syntax error": syntaxErr, "foreign key": fkErr, "unique": uniqueErr, "check": checkErr, "bad uuid": badUUID,
	} {
		if err == nil {
			t.Fatalf("%s: the statement succeeded", name)
		}
		if store.IsUnavailable(err) {
			t.Errorf("%s: IsUnavailable(%v) = true", name, err)
		}
	}
	if store.IsUnavailable(nil) || store.IsUnavailable(notFound) || store.IsUnavailable(store.ErrFenced) {
		t.Errorf("IsUnavailable is true for nil, ErrNotFound or ErrFenced")
	}

	// A stopped server: unavailable, whether the pool had connections open
	// (killed under it) or must dial (refused).
	pg := testenv.StartPostgresServer(t)
	dsn := pg.NewDatabase(t)
	t.Cleanup(pg.Start) // before the database is dropped (cleanups run last-in first-out)
	pool, err := store.Connect(ctx, dsn, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	st := store.New(pool)
	if err := st.Ping(ctx); err != nil {
		t.Fatalf("ping before stop: %v", err)
	}
	pg.Stop()
	for i := range 3 {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := st.Ping(cctx)
		cancel()
		if err == nil {
			t.Fatalf("ping %d succeeded on a stopped server", i)
		}
		if !store.IsUnavailable(err) {
			t.Errorf("ping %d on a stopped server: IsUnavailable(%v) = false", i, err)
		}
	}
	_, err = st.Get(ctx, "whatsapp_x")
	if err == nil || errors.Is(err, store.ErrNotFound) || !store.IsUnavailable(err) {
		t.Errorf("get on a stopped server: IsUnavailable(%v) = false", err)
	}
	fresh, err := store.Connect(ctx, dsn, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if err := store.New(fresh).Ping(ctx); err == nil || !store.IsUnavailable(err) {
		t.Errorf("first dial to a stopped server: IsUnavailable(%v) = false", err)
	}
}
