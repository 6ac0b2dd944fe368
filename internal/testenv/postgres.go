package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// AdminDatabaseURL is the DSN used to create and drop per-test databases.
func AdminDatabaseURL() string {
	if v := os.Getenv("TEST_DATABASE_URL"); v != "" {
		return v
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// NewDatabase creates an empty database with a random name on the test
// Postgres server and returns its DSN. The database (and every connection
// still open to it) is dropped when the test ends, so parallel tests and
// parallel packages never see each other's rows.
func NewDatabase(t testing.TB) string {
	t.Helper()
	return newDatabaseOn(t, AdminDatabaseURL())
}

func newDatabaseOn(t testing.TB, adminURL string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatalf("testenv: Postgres is not reachable at %s (run `make test`, which starts it): %v", redactURL(adminURL), err)
	}
	defer admin.Close(context.Background())

	name := "wst_" + randomHex(8)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("testenv: create database %s: %v", name, err)
	}
	t.Cleanup(func() { dropDatabase(t, adminURL, name) })

	u, err := url.Parse(adminURL)
	if err != nil {
		t.Fatalf("testenv: parse %s: %v", redactURL(adminURL), err)
	}
	u.Path = "/" + name
	return u.String()
}

func dropDatabase(t testing.TB, adminURL, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Errorf("testenv: drop database %s: %v", name, err)
		return
	}
	defer admin.Close(context.Background())
	// WITH (FORCE) terminates connections a test left open (Postgres 13+).
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		t.Errorf("testenv: drop database %s: %v", name, err)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return hex.EncodeToString(b)
}

// redactURL hides a password in a DSN before it goes into a failure message.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return strings.SplitN(s, "@", 2)[len(strings.SplitN(s, "@", 2))-1]
	}
	return u.Redacted()
}
