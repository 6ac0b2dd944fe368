package store_test

import (
	"errors"
	"testing"
	"time"

	"wasessions/internal/store"
)

// listAll pages through AdminList and returns every session id in order.
func (f *fx) listAll(filter store.AdminFilter) []string {
	f.t.Helper()
	var out []string
	for pages := 0; ; pages++ {
		if pages > 100 {
			f.t.Fatal("admin list: the cursor never ends")
		}
		page, next, err := f.st.AdminList(f.ctx, filter)
		if err != nil {
			f.t.Fatalf("admin list: %v", err)
		}
		if len(page) > filter.Limit {
			f.t.Fatalf("page of %d rows, limit %d", len(page), filter.Limit)
		}
		for _, s := range page {
			out = append(out, s.SessionID)
		}
		if next == nil {
			return out
		}
		filter.After = next
	}
}

func TestAdminListPagesEveryUsersSessionsByFilter(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	// Newest first: created in this order, so listed in reverse.
	var all []string
	onW1 := map[string]bool{}
	connected := map[string]bool{}
	for i := 0; i < 7; i++ {
		var s store.Session
		switch i % 3 {
		case 0:
			s = f.create()
		case 1:
			s, _ = f.hosted("w1", store.StatusConnected)
			onW1[s.SessionID], connected[s.SessionID] = true, true
		case 2:
			s, _ = f.hosted("w2", store.StatusConnected)
			connected[s.SessionID] = true
		}
		all = append([]string{s.SessionID}, all...)
	}
	owner := f.get(all[3]).UserID

	tests := []struct {
		name   string
		filter store.AdminFilter
		want   func(id string) bool
	}{
		{"everything, pages of 2", store.AdminFilter{Limit: 2}, func(string) bool { return true }},
		{"everything, one page", store.AdminFilter{Limit: store.MaxAdminPage}, func(string) bool { return true }},
		{"status connected", store.AdminFilter{Status: store.StatusConnected, Limit: 2}, func(id string) bool { return connected[id] }},
		{"status pending", store.AdminFilter{Status: store.StatusPending, Limit: 1}, func(id string) bool { return !connected[id] }},
		{"worker w1", store.AdminFilter{WorkerID: "w1", Limit: 1}, func(id string) bool { return onW1[id] }},
		{"worker w1 and connected", store.AdminFilter{WorkerID: "w1", Status: store.StatusConnected, Limit: 5}, func(id string) bool { return onW1[id] }},
		{"one user", store.AdminFilter{UserID: owner, Limit: 5}, func(id string) bool { return id == all[3] }},
		{"no such worker", store.AdminFilter{WorkerID: "nobody", Limit: 5}, func(string) bool { return false }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var want []string
			for _, id := range all {
				if tc.want(id) {
					want = append(want, id)
				}
			}
			got := f.listAll(tc.filter)
			if len(got) != len(want) {
				t.Fatalf("got %v\nwant %v", got, want)
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("row %d: got %v\nwant %v", i, got, want)
				}
			}
		})
	}

	if _, _, err := f.st.AdminList(f.ctx, store.AdminFilter{Limit: store.MaxAdminPage + 1}); err == nil {
		t.Fatal("a limit over the maximum was accepted")
	}
}

func TestCursorRoundTripsAndRejectsForgeries(t *testing.T) {
	t.Parallel()
	c := store.Cursor{CreatedAt: time.UnixMicro(1767225600123456).UTC(), ID: "0b7c6f4e-3c1a-4d7e-9a51-2f0d4a1e8b11"}
	back, err := store.ParseCursor(c.String())
	if err != nil || !back.CreatedAt.Equal(c.CreatedAt) || back.ID != c.ID {
		t.Fatalf("round trip: %+v, %v; want %+v", back, err, c)
	}
	for _, bad := range []string{"", "!!!", "bm9fdW5kZXJzY29yZQ", "MTIzX25vdC1hLXV1aWQ", "eF8wYjdjNmY0ZS0zYzFhLTRkN2UtOWE1MS0yZjBkNGExZThiMTE"} {
		if _, err := store.ParseCursor(bad); !errors.Is(err, store.ErrBadCursor) {
			t.Errorf("ParseCursor(%q) = %v, want ErrBadCursor", bad, err)
		}
	}
}

func TestStatusHistoryRecordsEveryChangeFromAnyWriter(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	s, fence := f.hosted("w1", store.StatusConnected)
	if _, err := f.st.MarkReconnecting(f.ctx, fence, store.ReasonConnectionLost, store.ErrServerUnreachable); err != nil {
		t.Fatal(err)
	}
	// A write that changes neither status nor reason records nothing.
	if _, err := f.st.SetUserName(f.ctx, fence, "Bea"); err != nil {
		t.Fatal(err)
	}
	// A writer outside the store (an operator with psql) is recorded too.
	f.exec(`UPDATE whatsapp_sessions SET status = 'failed', status_reason = 'manual' WHERE session_id = $1`, s.SessionID)

	h, err := f.st.StatusHistory(f.ctx, s.SessionID, 50)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ status, reason string }{
		{"failed", "manual"}, {"reconnecting", "connection_lost"}, {"connected", "paired"}, {"pending", ""},
	}
	if len(h) != len(want) {
		t.Fatalf("history has %d rows, want %d: %+v", len(h), len(want), h)
	}
	for i, w := range want {
		if string(h[i].Status) != w.status || store.Str(h[i].StatusReason) != w.reason {
			t.Errorf("history[%d] = %s/%s, want %s/%s", i, h[i].Status, store.Str(h[i].StatusReason), w.status, w.reason)
		}
	}
	if store.Str(h[1].WorkerID) != "w1" || store.Str(h[1].LastError) != string(store.ErrServerUnreachable) {
		t.Errorf("reconnecting row: worker %q, last error %q", store.Str(h[1].WorkerID), store.Str(h[1].LastError))
	}
	if limited, _ := f.st.StatusHistory(f.ctx, s.SessionID, 2); len(limited) != 2 {
		t.Errorf("limit 2 gave %d rows", len(limited))
	}
}

func TestPruneStatusHistoryDeletesOnlyOldRowsInBatches(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	old := f.create()
	for i := 0; i < 4; i++ {
		f.exec(`UPDATE whatsapp_sessions SET status_reason = $2 WHERE session_id = $1`, old.SessionID, "r"+string(rune('a'+i)))
	}
	f.exec(`UPDATE session_status_history SET changed_at = now() - interval '40 days'`)
	fresh := f.create()

	n, err := f.st.PruneStatusHistory(f.ctx, 30*24*time.Hour, 3)
	if err != nil || n != 3 {
		t.Fatalf("first batch: %d, %v; want 3", n, err)
	}
	n, err = f.st.PruneStatusHistory(f.ctx, 30*24*time.Hour, 3)
	if err != nil || n != 2 {
		t.Fatalf("second batch: %d, %v; want 2", n, err)
	}
	if h, _ := f.st.StatusHistory(f.ctx, old.SessionID, 50); len(h) != 0 {
		t.Fatalf("old history left: %+v", h)
	}
	if h, _ := f.st.StatusHistory(f.ctx, fresh.SessionID, 50); len(h) != 1 {
		t.Fatalf("fresh history: %+v, want its one row", h)
	}
}

func TestRequestDisconnectSessionIsIdempotent(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	s, _ := f.hosted("w1", store.StatusConnected)
	other := f.create()

	got, changed, err := f.st.RequestDisconnectSession(f.ctx, s.SessionID)
	if err != nil || !changed || got.DesiredState != store.DesiredGone || store.Str(got.WorkerID) != "w1" {
		t.Fatalf("first: %+v changed=%v err=%v", got, changed, err)
	}
	if _, changed, err := f.st.RequestDisconnectSession(f.ctx, s.SessionID); err != nil || changed {
		t.Fatalf("second: changed=%v err=%v, want unchanged", changed, err)
	}
	if _, changed, err := f.st.RequestDisconnectSession(f.ctx, "whatsapp_nobody_1"); err != nil || changed {
		t.Fatalf("unknown session: changed=%v err=%v", changed, err)
	}
	if f.get(other.SessionID).DesiredState != store.DesiredLinked {
		t.Fatal("another session was touched")
	}
}
