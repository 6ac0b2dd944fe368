package httpapi_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"wasessions/internal/store"
)

// adminSession decodes a session event of the admin stream, checked against
// the contract's AdminSession.
func (s *stream) adminSession(ev sseEvent) adminSessionJSON {
	s.t.Helper()
	if ev.Event != "session" {
		s.t.Fatalf("event %q, want session: %+v", ev.Event, ev)
	}
	doc, _ := spec(s.t)
	checkJSON(s.t, doc, "AdminSession", []byte(ev.Data))
	var v adminSessionJSON
	if err := json.Unmarshal([]byte(ev.Data), &v); err != nil {
		s.t.Fatal(err)
	}
	return v
}

// The admin stream is every user's session changes for an operator: it
// opens with ready, then sends each changed session as Postgres holds it
// (with whose it is and where it runs). An announcement on Redis only
// names a session: a forged one claiming a status makes the stream send
// the session's true state. A plain user gets 403 (TestAdminRoutesRefuseNonAdmins).
func TestAdminEventsStream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := newEnv(t, func(s *setup) { s.opts.BaseContext = ctx })
	base := e.serve()
	st := e.openStreamAt(t, base, adminEventsPath, e.token(newUser(), true))
	ev, _ := st.next(10 * time.Second)
	if ev.Event != "ready" {
		t.Fatalf("first event %+v, want ready", ev)
	}
	doc, _ := spec(t)
	checkJSON(t, doc, "AdminStreamNotice", []byte(ev.Data))

	// Two users' sessions change on a worker: both arrive, in order.
	a, b := e.newSession(t), e.newSession(t)
	wa := e.claim(t, a.SessionID, "w1")
	wa.showQR(t, "2@qr-a")
	got := st.adminSession(mustNext(t, st))
	if got.SessionID != a.SessionID || got.Status != "qr" || store.Str(got.WorkerID) != "w1" || got.UserID == "" {
		t.Fatalf("A's change: %+v", got)
	}
	e.claim(t, b.SessionID, "w2").connect(t, "15550007777", "Bo")
	got = st.adminSession(mustNext(t, st))
	if got.SessionID != b.SessionID || got.Status != "connected" || store.Str(got.PhoneNumber) != "+15550007777" ||
		store.Str(got.LastWorkerID) != "w2" || got.LeaseState != "held" {
		t.Fatalf("B's change: %+v", got)
	}

	// A forged announcement on B's channel names A's session with a status
	// it does not have: the stream sends A as it is.
	bs, err := e.store.Get(context.Background(), b.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := json.Marshal(map[string]any{"userId": bs.UserID, "sessionId": a.SessionID, "status": "failed", "type": "status"})
	if err := e.rdb.Publish(context.Background(), e.bus.Channel(bs.UserID), forged).Err(); err != nil {
		t.Fatal(err)
	}
	got = st.adminSession(mustNext(t, st))
	if got.SessionID != a.SessionID || got.Status != "qr" {
		t.Fatalf("after a forged announcement the stream sent %+v, want A's true state (qr)", got)
	}

	// An announcement that names no session (or more changed sessions at
	// once than the stream keeps, see events.TestHubStreamAllCollectsEveryUsersChanges)
	// is one resync: the client reads everything again.
	if err := e.rdb.Publish(context.Background(), e.bus.Channel(bs.UserID), `{"userId":"`+bs.UserID+`"}`).Err(); err != nil {
		t.Fatal(err)
	}
	ev = mustNext(t, st)
	if ev.Event != "resync" {
		t.Fatalf("after an announcement naming no session: %+v, want resync", ev)
	}
	checkJSON(t, doc, "AdminStreamNotice", []byte(ev.Data))

	// Shutdown ends it.
	cancel()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case _, open := <-st.events:
			if !open {
				return
			}
		case <-timeout:
			t.Fatal("admin stream still open after shutdown")
		}
	}
}

func mustNext(t *testing.T, s *stream) sseEvent {
	t.Helper()
	ev, ok := s.next(10 * time.Second)
	if !ok {
		t.Fatal("the stream ended")
	}
	return ev
}
