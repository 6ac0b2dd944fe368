package worker

import (
	"testing"
	"time"

	"wasessions/internal/store"
)

func TestTakeoverStart(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	w := "w1"
	tests := []struct {
		name     string
		prev     store.Session
		wantKind string
		wantAt   time.Time
	}{
		{"released by its worker", store.Session{Status: store.StatusReconnecting, UpdatedAt: at}, "handoff", at},
		{"lease lapsed: last heartbeat one TTL before its end",
			store.Session{Status: store.StatusConnected, WorkerID: &w, LeaseUntil: &at, UpdatedAt: at.Add(-time.Hour)}, "failover", at.Add(-30 * time.Second)},
		{"still leased", store.Session{Status: store.StatusConnected, WorkerID: &w, LeaseUntil: &at, LeaseLive: true}, "", time.Time{}},
		{"never hosted", store.Session{Status: store.StatusPending, UpdatedAt: at}, "", time.Time{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			kind, since, ok := takeoverStart(tc.prev, 30*time.Second)
			if kind != tc.wantKind || ok != (tc.wantKind != "") || !since.Equal(tc.wantAt) {
				t.Fatalf("got %q %v %v, want %q %v", kind, since, ok, tc.wantKind, tc.wantAt)
			}
		})
	}
}
