package migrate_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/pressly/goose/v3"

	"wasessions/internal/migrate"
	"wasessions/internal/store"
	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
	"wasessions/migrations"
)

// Sessions that the code before issue 16 ended 'failed' for a reason that
// now heals (client outdated, temporary ban, refused login), with their
// device keys, are picked up again by the first deploy of the change: the
// migration makes each one 'reconnecting' without a lease, which the
// reconciler restores. Sessions failed for other reasons, without a device,
// no longer wanted, expired, or of a user who already has a live session
// stay as they were; and running the migrations again changes nothing.
func TestMigrationHealsSessionsFailedForHealableReasons(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool, db := testfactory.DB(t, testenv.NewDatabase(t), 4)

	// The schema as the previous release left it.
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 1); err != nil {
		t.Fatal(err)
	}

	type row struct {
		name, user, status, reason, desired string
		device                              bool
		expired                             bool
		heals                               bool
	}
	const (
		u1 = "10000000-0000-4000-8000-000000000001"
		u2 = "10000000-0000-4000-8000-000000000002"
		u3 = "10000000-0000-4000-8000-000000000003"
		u4 = "10000000-0000-4000-8000-000000000004"
		u5 = "10000000-0000-4000-8000-000000000005"
		u6 = "10000000-0000-4000-8000-000000000006"
		u7 = "10000000-0000-4000-8000-000000000007"
		u8 = "10000000-0000-4000-8000-000000000008"
	)
	rows := []row{
		{name: "outdated", user: u1, status: "failed", reason: "client_outdated", desired: "linked", device: true, heals: true},
		{name: "banned", user: u2, status: "failed", reason: "temporary_ban", desired: "linked", device: true, heals: true},
		{name: "refused", user: u3, status: "failed", reason: "connect_failure", desired: "linked", device: true, heals: true},
		{name: "no device", user: u4, status: "failed", reason: "client_outdated", desired: "linked"},
		{name: "pair error", user: u5, status: "failed", reason: "pair_error", desired: "linked", device: true},
		{name: "unwanted", user: u6, status: "failed", reason: "client_outdated", desired: "gone", device: true},
		{name: "expired", user: u7, status: "failed", reason: "client_outdated", desired: "linked", device: true, expired: true},
		// u8 linked again since: the old failed session stays failed.
		{name: "old of relinked user", user: u8, status: "failed", reason: "client_outdated", desired: "linked", device: true},
		{name: "relinked", user: u8, status: "connected", reason: "paired", desired: "linked", device: true},
	}
	for i, r := range rows {
		if _, err := pool.Exec(ctx, `INSERT INTO users (id) VALUES ($1) ON CONFLICT DO NOTHING`, r.user); err != nil {
			t.Fatal(err)
		}
		expires := "now() + interval '1 hour'"
		if r.expired {
			expires = "now() - interval '1 hour'"
		}
		var device any
		if r.device {
			device = "1555000000" + string(rune('0'+i)) + ":1@s.whatsapp.net"
		}
		if _, err := pool.Exec(ctx, `INSERT INTO whatsapp_sessions
			(user_id, session_id, status, status_reason, desired_state, device_jid, is_authenticated, expires_at, last_error)
			VALUES ($1, $2, $3, $4, $5, $6::text, $6::text IS NOT NULL, `+expires+`, 'old error')`,
			r.user, r.name, r.status, r.reason, r.desired, device); err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
	}

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for range 2 { // the second run must change nothing
		if err := migrate.Up(ctx, db, log); err != nil {
			t.Fatal(err)
		}
		st := store.New(pool)
		for _, r := range rows {
			got, err := st.Get(ctx, r.name)
			if err != nil {
				t.Fatalf("%s: %v", r.name, err)
			}
			if r.heals {
				if got.Status != store.StatusReconnecting || store.Str(got.StatusReason) != "healed_after_upgrade" ||
					got.WorkerID != nil || got.DeviceJID == nil {
					t.Errorf("%s: status=%s reason=%s worker=%v device=%v, want reconnecting/healed_after_upgrade without lease",
						r.name, got.Status, store.Str(got.StatusReason), got.WorkerID, got.DeviceJID)
				}
				continue
			}
			if string(got.Status) != r.status || store.Str(got.StatusReason) != r.reason {
				t.Errorf("%s: status=%s reason=%s, want it left %s/%s", r.name, got.Status, store.Str(got.StatusReason), r.status, r.reason)
			}
		}
	}

	// The reconciler's view: the healed sessions need a worker; the other
	// failed sessions the user still wants do not.
	unhosted, err := store.New(pool).Unhosted(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, s := range unhosted {
		names[s.SessionID] = true
	}
	for _, r := range rows {
		if r.desired != "linked" || r.status != "failed" {
			continue // a live row, or keys to delete: a worker's job either way
		}
		if r.heals != names[r.name] {
			t.Errorf("%s: needs a worker = %v, want %v", r.name, names[r.name], r.heals)
		}
	}
}
