package wa_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"

	"go.mau.fi/whatsmeow/types"

	"wasessions/internal/wa"
)

// Every login stores the device's own LID mapping; whatsmeow writes it in a
// transaction under its process-wide LID lock unless the mapping is cached,
// and a worker that has just started has nothing cached, so a mass restore
// queued every login behind that lock. A device loaded through a Host (or
// primed in bulk, as a restarting worker does) has its stored mapping
// cached: the login's store writes nothing. A mapping that differs from
// the stored one is still written.
//
// Writes are made visible by a statement trigger that refuses any write to
// whatsmeow_lid_map; the "whatsmeow alone" case shows the login's store
// does write without the priming (it failed for every case before it).
func TestLoginStoresNoKnownLIDMappingAgain(t *testing.T) {
	w := newPrekeyWorld(t)
	ctx := context.Background()

	type linked struct {
		jid string
		lid types.JID
		pn  types.JID
	}
	var devs []linked
	db1 := w.open(t)
	h1 := wa.NewHostWith(db1, w.ep, w.log, wa.HostOptions{})
	for _, phone := range []string{"+15550000201", "+15550000202"} {
		dev := h1.NewDevice()
		cli := w.pair(t, h1, dev, phone, nil)
		// Disconnected at the end: at once it would race whatsmeow's
		// own prekey count query after the upload (inside whatsmeow).
		t.Cleanup(cli.Disconnect)
		if dev.LID.IsEmpty() {
			t.Fatalf("%s: paired without a LID", dev.ID)
		}
		devs = append(devs, linked{jid: dev.ID.String(), lid: dev.LID, pn: dev.ID.ToNonAD()})
	}
	db := w.open(t)
	for _, d := range devs {
		var lid string
		if err := db.QueryRowContext(ctx, `SELECT lid FROM whatsmeow_lid_map WHERE pn = $1`, d.pn.User).Scan(&lid); err != nil || lid != d.lid.User {
			t.Fatalf("%s: stored LID %q (%v), want %q", d.jid, lid, err, d.lid.User)
		}
	}

	refuseWrites(t, db)
	tests := []struct {
		name      string
		prepare   func(*wa.Host) error
		wantWrite bool
	}{
		{"whatsmeow alone", func(*wa.Host) error { return nil }, true},
		{"loaded device", func(h *wa.Host) error {
			_, err := h.LoadDevice(ctx, devs[0].jid)
			return err
		}, false},
		{"primed in bulk", func(h *wa.Host) error {
			return h.PrimeLIDs(ctx, []string{devs[0].jid, devs[1].jid})
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := wa.NewHostWith(w.open(t), w.ep, w.log, wa.HostOptions{}) // a new worker: nothing cached
			if err := tt.prepare(h); err != nil {
				t.Fatal(err)
			}
			err := h.LIDs().PutLIDMapping(ctx, devs[0].lid, devs[0].pn)
			wrote := err != nil && strings.Contains(err.Error(), "lid map written")
			if err != nil && !wrote {
				t.Fatal(err)
			}
			if wrote != tt.wantWrite {
				t.Fatalf("the login's store wrote the mapping: %v, want %v (err %v)", wrote, tt.wantWrite, err)
			}
		})
	}

	t.Run("changed mapping still written", func(t *testing.T) {
		if _, err := db.ExecContext(ctx, `DROP TRIGGER refuse_lid_writes ON whatsmeow_lid_map`); err != nil {
			t.Fatal(err)
		}
		h := wa.NewHostWith(w.open(t), w.ep, w.log, wa.HostOptions{})
		if err := h.PrimeLIDs(ctx, []string{devs[1].jid}); err != nil {
			t.Fatal(err)
		}
		moved := types.JID{User: devs[1].lid.User + "9", Server: types.HiddenUserServer}
		if err := h.LIDs().PutLIDMapping(ctx, moved, devs[1].pn); err != nil {
			t.Fatal(err)
		}
		var lid string
		if err := db.QueryRowContext(ctx, `SELECT lid FROM whatsmeow_lid_map WHERE pn = $1`, devs[1].pn.User).Scan(&lid); err != nil || lid != moved.User {
			t.Fatalf("stored LID %q (%v) after a change, want %q", lid, err, moved.User)
		}
	})
}

// refuseWrites makes every INSERT, UPDATE or DELETE statement on
// whatsmeow_lid_map fail, even one that matches no row.
func refuseWrites(t *testing.T, db *sql.DB) {
	t.Helper()
	for _, q := range []string{
		`CREATE FUNCTION refuse_lid_writes() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'lid map written'; END $$`,
		`CREATE TRIGGER refuse_lid_writes BEFORE INSERT OR UPDATE OR DELETE ON whatsmeow_lid_map
		FOR EACH STATEMENT EXECUTE FUNCTION refuse_lid_writes()`,
	} {
		if _, err := db.ExecContext(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
}
