package store_test

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"go.mau.fi/whatsmeow/proto/waAdv"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types"

	"wasessions/internal/store"
	"wasessions/internal/testenv"
)

func sortedKeys(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }

// ExpireUnhosted ends live sessions past their expiry that no worker hosts,
// with the reason the frontend shows (an unscanned QR timed out vs a linked
// session expired); it never touches a hosted session (its worker must stop
// the client first), a session not yet expired, or one that already ended.
func TestExpireUnhosted(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	pending := f.create()
	qr := f.unhosted(store.StatusQR)
	connected := f.unhosted(store.StatusConnected)
	reconnecting := f.unhosted(store.StatusReconnecting)
	hostedConnected, _ := f.hosted("w", store.StatusConnected)
	hostedQR, _ := f.hosted("w", store.StatusQR)
	notExpired := f.unhosted(store.StatusConnected)
	ended := f.ended(store.StatusDisconnected, true)
	for _, s := range []store.Session{pending, qr, connected, reconnecting, hostedConnected, hostedQR, ended} {
		f.expire(s.SessionID)
	}

	wantReason := map[string]string{
		pending.SessionID:      "qr_timeout",
		qr.SessionID:           "qr_timeout",
		connected.SessionID:    "session_expired",
		reconnecting.SessionID: "session_expired",
	}
	// Two at a time: the limit bounds each call, repeated calls finish.
	got := map[string]bool{}
	for range 3 {
		batch, err := f.st.ExpireUnhosted(f.ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(batch) > 2 {
			t.Fatalf("limit 2 expired %d sessions", len(batch))
		}
		for _, s := range batch {
			if got[s.SessionID] {
				t.Fatalf("%s expired twice", s.SessionID)
			}
			got[s.SessionID] = true
		}
	}
	if !slices.Equal(sortedKeys(got), slices.Sorted(maps.Keys(wantReason))) {
		t.Fatalf("expired %v, want %v", sortedKeys(got), slices.Sorted(maps.Keys(wantReason)))
	}
	for id, reason := range wantReason {
		s := f.get(id)
		if s.Status != store.StatusExpired || store.Str(s.StatusReason) != reason || s.IsConnected || s.QRCode != nil || s.QRRaw != nil {
			t.Errorf("%s: status %s reason %q connected %v qr %q; want expired/%s", id, s.Status, store.Str(s.StatusReason), s.IsConnected, store.Str(s.QRCode), reason)
		}
		if s.WorkerID != nil || s.LeaseUntil != nil {
			t.Errorf("%s: an ended session still names a worker %q (lease %v)", id, store.Str(s.WorkerID), s.LeaseUntil)
		}
	}
	for _, s := range []store.Session{hostedConnected, hostedQR, notExpired} {
		if g := f.get(s.SessionID); g.Status != s.Status {
			t.Errorf("%s (%s) became %s", s.SessionID, s.Status, g.Status)
		}
	}
	if g := f.get(ended.SessionID); g.Status != store.StatusDisconnected {
		t.Errorf("ended session became %s", g.Status)
	}
}

// A worker whose lease lapsed (paused, partitioned) while the sweep ended
// its session as expired must not bring the session back: its heartbeat
// loses the lease and its writes are fenced.
func TestExpireUnhostedFencesTheLapsedOwner(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	s, fence := f.hosted("w-slow", store.StatusConnected)
	f.lapseLease(s.SessionID)
	f.expire(s.SessionID)
	if got, err := f.st.ExpireUnhosted(f.ctx, 10); err != nil || len(got) != 1 {
		t.Fatalf("expire: %v %d", err, len(got))
	}
	r, err := f.st.Renew(f.ctx, "w-slow", []store.Held{{SessionID: s.SessionID, Epoch: fence.Epoch}}, leaseTTL, sessionTTL)
	if err != nil {
		t.Fatal(err)
	}
	if r.Kept[s.SessionID] {
		t.Errorf("the lapsed owner renewed an expired session")
	}
	if _, err := f.st.MarkConnected(f.ctx, fence, store.Linked{DeviceJID: store.Str(s.DeviceJID), Reason: "reconnected"}, sessionTTL); err == nil {
		t.Errorf("the lapsed owner marked an expired session connected")
	}
	if g := f.get(s.SessionID); g.Status != store.StatusExpired || g.LeaseLive {
		t.Fatalf("after the lapsed owner: status %s lease live %v", g.Status, g.LeaseLive)
	}
}

// MarkHostedExpiredGone hands expired sessions that a worker still hosts to
// that worker (desired gone, owner named); it leaves unhosted, unexpired
// and already-gone sessions alone.
func TestMarkHostedExpiredGone(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	hostedQR, _ := f.hosted("w-1", store.StatusQR)
	hostedConnected, _ := f.hosted("w-2", store.StatusReconnecting)
	hostedFresh, _ := f.hosted("w-1", store.StatusConnected)
	unhosted := f.unhosted(store.StatusConnected)
	alreadyGone, _ := f.hosted("w-1", store.StatusConnected)
	if _, err := f.st.RequestDisconnect(f.ctx, alreadyGone.UserID); err != nil {
		t.Fatal(err)
	}
	for _, s := range []store.Session{hostedQR, hostedConnected, unhosted, alreadyGone} {
		f.expire(s.SessionID)
	}
	got, err := f.st.MarkHostedExpiredGone(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{hostedQR.SessionID: "w-1", hostedConnected.SessionID: "w-2"}
	if len(got) != len(want) {
		t.Fatalf("marked %v, want %v", sortedKeys(ids(got)), slices.Sorted(maps.Keys(want)))
	}
	for _, s := range got {
		if w, ok := want[s.SessionID]; !ok || store.Str(s.WorkerID) != w || s.DesiredState != store.DesiredGone ||
			store.Str(s.StatusReason) != "session_expired" || !s.LeaseLive {
			t.Errorf("marked %s: worker %q desired %s reason %q live %v", s.SessionID, store.Str(s.WorkerID), s.DesiredState, store.Str(s.StatusReason), s.LeaseLive)
		}
	}
	for _, s := range []store.Session{hostedFresh, unhosted} {
		if g := f.get(s.SessionID); g.DesiredState != store.DesiredLinked {
			t.Errorf("%s became %s", s.SessionID, g.DesiredState)
		}
	}
	if again, err := f.st.MarkHostedExpiredGone(f.ctx); err != nil || len(again) != 0 {
		t.Fatalf("second run marked %d (%v)", len(again), err)
	}
}

// Unhosted is exactly the reconciler's to-do list: live sessions nobody
// hosts and disconnects not yet carried out; nothing hosted, nothing
// finished.
func TestUnhosted(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	want := map[string]bool{}
	add := func(s store.Session) { want[s.SessionID] = true }

	add(f.create())                                 // pending, never claimed (create task lost)
	add(f.unhosted(store.StatusQR))                 // pairing worker died
	add(f.unhosted(store.StatusConnected))          // hosting worker died
	add(f.unhosted(store.StatusReconnecting))       // ditto
	gonePending := f.create()                       // user gave up before a worker took it
	goneDevice := f.unhosted(store.StatusConnected) // disconnect not yet carried out
	goneHosted, _ := f.hosted("w", store.StatusConnected)
	goneEnded := f.ended(store.StatusDisconnected, true) // carried out: no device left
	for _, s := range []store.Session{gonePending, goneDevice, goneHosted} {
		if _, err := f.st.RequestDisconnect(f.ctx, s.UserID); err != nil {
			t.Fatal(err)
		}
	}
	add(gonePending)
	add(goneDevice)
	f.hosted("w", store.StatusConnected) // hosted
	f.hosted("w", store.StatusPending)   // hosted
	f.ended(store.StatusFailed, false)   // ended, device kept, still linked: nothing to do
	f.ended(store.StatusLoggedOut, true) // ended
	_ = goneEnded

	got, err := f.st.Unhosted(f.ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if g, w := sortedKeys(ids(got)), sortedKeys(want); !slices.Equal(g, w) {
		t.Fatalf("unhosted %v\nwant %v", g, w)
	}
	if got, err := f.st.Unhosted(f.ctx, 2); err != nil || len(got) != 2 {
		t.Fatalf("limit 2: %d (%v)", len(got), err)
	}
}

// The reconciler's sweep runs every RESTORE_INTERVAL over a table that
// keeps every finished session until cleanup: it must read the partial
// hosting index, not the whole table. The plan is the one Postgres used for
// the store's own query (auto_explain, sent back to this client).
func TestSweepsUseHostingIndex(t *testing.T) {
	t.Parallel()
	_, dsn := testenv.NewStore(t)
	ctx := context.Background()

	var (
		mu    sync.Mutex
		plans []string
	)
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	cfg.ConnConfig.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		if strings.Contains(n.Message, "Query Text") {
			mu.Lock()
			plans = append(plans, n.Message)
			mu.Unlock()
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	st := store.New(pool)

	// 50,000 finished sessions, 200 live ones (half hosted), 50 disconnects
	// to carry out: the shape of a table between two cleanups.
	if _, err := pool.Exec(ctx, `
		INSERT INTO users (id) SELECT gen_random_uuid() FROM generate_series(1, 50250);
		WITH u AS (SELECT id, row_number() OVER () AS n FROM users)
		INSERT INTO whatsapp_sessions (user_id, session_id, status, desired_state, device_jid, worker_id, lease_until, expires_at)
		SELECT id, 'whatsapp_' || id || '_1',
			CASE WHEN n <= 50000 THEN 'disconnected' WHEN n <= 50200 THEN 'connected' ELSE 'disconnected' END,
			CASE WHEN n <= 50200 THEN 'linked' ELSE 'gone' END,
			CASE WHEN n > 50000 THEN n || ':1@s.whatsapp.net' END,
			CASE WHEN n > 50000 AND n % 2 = 0 THEN 'w' END,
			CASE WHEN n > 50000 AND n % 2 = 0 THEN now() + interval '1 hour' END,
			now() + interval '1 day'
		FROM u;
		ANALYZE whatsapp_sessions;
		LOAD 'auto_explain';
		SET auto_explain.log_min_duration = 0;
		SET auto_explain.log_nested_statements = on;
		SET client_min_messages = log;`); err != nil {
		t.Fatal(err)
	}
	unhosted, err := st.Unhosted(ctx, 2000)
	if err != nil {
		t.Fatal(err)
	}
	if len(unhosted) != 125 {
		t.Fatalf("unhosted: %d rows, want 125", len(unhosted))
	}
	if _, err := st.ExpireUnhosted(ctx, 2000); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(plans) < 2 {
		t.Fatalf("auto_explain reported %d plans, want 2", len(plans))
	}
	t.Logf("Unhosted plan:\n%s", plans[0])
	if !strings.Contains(plans[0], "idx_whatsapp_sessions_hosting") || strings.Contains(plans[0], "Seq Scan on whatsapp_sessions") {
		t.Errorf("Unhosted does not use idx_whatsapp_sessions_hosting:\n%s", plans[0])
	}
	// ExpireUnhosted may pick either index (expires_at is as selective),
	// but never a scan of the whole table.
	if strings.Contains(plans[1], "Seq Scan on whatsapp_sessions") {
		t.Errorf("ExpireUnhosted scans the whole table:\n%s", plans[1])
	}
}

// newDevice stores a real whatsmeow device (keys and pre-keys), the way a
// worker does when pairing succeeds, and returns its jid as whatsmeow
// writes it.
func newDevice(t *testing.T, pool *pgxpool.Pool, user uint64) string {
	t.Helper()
	ctx := context.Background()
	container := sqlstore.NewWithDB(stdlib.OpenDBFromPool(pool), "postgres", nil)
	dev := container.NewDevice()
	jid := types.NewADJID(strconv.FormatUint(user, 10), 0, 3)
	dev.ID = &jid
	dev.Account = &waAdv.ADVSignedDeviceIdentity{
		Details:             []byte("details"),
		AccountSignature:    make([]byte, 64),
		AccountSignatureKey: make([]byte, 32),
		DeviceSignature:     make([]byte, 64),
	}
	if err := container.PutDevice(ctx, dev); err != nil {
		t.Fatalf("put device: %v", err)
	}
	if _, err := dev.PreKeys.GetOrGenPreKeys(ctx, 3); err != nil {
		t.Fatalf("pre-keys: %v", err)
	}
	return jid.String()
}

func countRows(t *testing.T, f *fx, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := f.st.Pool().QueryRow(f.ctx, sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// DeleteExpired removes expired, unhosted rows in batches of at most N and
// takes their device keys with them; rows not yet expired and expired rows
// whose worker still holds the lease (client not yet stopped) survive, keys
// included.
func TestDeleteExpiredBatchesAndKeys(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	const batch = 3
	withDevice := func(s store.Session, fence store.Fence, user uint64) (store.Session, string) {
		jid := newDevice(t, f.st.Pool(), user)
		s, err := f.st.MarkConnected(f.ctx, fence, store.Linked{DeviceJID: jid, Reason: "paired"}, sessionTTL)
		if err != nil {
			t.Fatal(err)
		}
		return s, jid
	}
	doomed := map[string]bool{}
	var doomedJIDs []string
	for i := range 8 {
		s, fence := f.hosted("w-dead", store.StatusPending)
		if i%2 == 0 {
			var jid string
			s, jid = withDevice(s, fence, 15550000100+uint64(i))
			doomedJIDs = append(doomedJIDs, jid)
		}
		f.lapseLease(s.SessionID)
		f.expire(s.SessionID)
		doomed[s.SessionID] = true
	}
	// An ended session past its expiry is deleted too.
	e := f.ended(store.StatusLoggedOut, true)
	f.expire(e.SessionID)
	doomed[e.SessionID] = true

	keep := map[string]bool{}
	var keptJIDs []string
	s, fence := f.hosted("w-live", store.StatusPending)
	s, jid := withDevice(s, fence, 15550000200)
	f.expire(s.SessionID) // expired, but its worker still holds the lease
	keep[s.SessionID], keptJIDs = true, append(keptJIDs, jid)
	s, fence = f.hosted("w-live", store.StatusPending)
	s, jid = withDevice(s, fence, 15550000201)
	f.lapseLease(s.SessionID) // unhosted but not expired
	keep[s.SessionID], keptJIDs = true, append(keptJIDs, jid)
	keep[f.create().SessionID] = true

	got := map[string]bool{}
	for calls := 0; ; calls++ {
		if calls > 10 {
			t.Fatal("DeleteExpired never ran out of rows")
		}
		gone, err := f.st.DeleteExpired(f.ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		if len(gone) > batch {
			t.Fatalf("batch of %d deleted %d rows", batch, len(gone))
		}
		if len(gone) == 0 {
			break
		}
		for _, g := range gone {
			if got[g.SessionID] || keep[g.SessionID] || g.UserID == "" {
				t.Fatalf("deleted %+v (again, or one to keep)", g)
			}
			got[g.SessionID] = true
		}
	}
	if !slices.Equal(sortedKeys(got), sortedKeys(doomed)) {
		t.Fatalf("deleted %v\nwant %v", sortedKeys(got), sortedKeys(doomed))
	}
	if n := countRows(t, f, `SELECT count(*) FROM whatsapp_sessions`); n != len(keep) {
		t.Fatalf("%d rows left, want %d", n, len(keep))
	}
	for id := range keep {
		f.get(id)
	}
	for _, jid := range doomedJIDs {
		if n := countRows(t, f, `SELECT count(*) FROM whatsmeow_device WHERE jid = $1`, jid); n != 0 {
			t.Errorf("device %s of a deleted session is still stored", jid)
		}
		if n := countRows(t, f, `SELECT count(*) FROM whatsmeow_pre_keys WHERE jid = $1`, jid); n != 0 {
			t.Errorf("%d pre-keys of deleted device %s are still stored", n, jid)
		}
	}
	for _, jid := range keptJIDs {
		if ok, err := f.st.DeviceExists(f.ctx, jid); err != nil || !ok {
			t.Errorf("device %s of a kept session is gone (%v)", jid, err)
		}
		if n := countRows(t, f, `SELECT count(*) FROM whatsmeow_pre_keys WHERE jid = $1`, jid); n != 3 {
			t.Errorf("kept device %s has %d pre-keys, want 3", jid, n)
		}
	}
}
