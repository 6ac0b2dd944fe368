package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"wasessions/e2e/harness"
	"wasessions/internal/testenv"
	"wasessions/tasks"
)

// Issue 14, goal 5: Redis that fails over. The programs reach Redis through
// three sentinels (REDIS_SENTINEL_*), with a primary and one replica. With
// linked sessions on two workers, new sessions are being created when the
// primary is SIGKILLed; their create tasks were acknowledged by the primary
// but never reached the replica (it was frozen, as when asynchronous
// replication lags at the moment of a crash), so the promoted replica has
// never heard of them. The stack carries on on the promoted replica: the
// linked sessions never noticed, the reconciler redoes the lost tasks (the
// new sessions show their QR and link), and nothing is hosted twice or
// paired again.
func TestRedisSentinelFailover(t *testing.T) {
	const n, k = 6, 3
	g := testenv.StartSentinelGroup(t)
	// QR_WAIT 0: a create answers at once, before its task has run (the
	// task is what the failover loses here). No rebalancing: every login
	// after the pairings is then a session that dropped.
	s := newStack(t, stackOpts{Workers: []string{"w1", "w2"}, Sentinel: g,
		Env: map[string]string{"QR_WAIT": "0s", "REBALANCE_MAX_MOVES": "0"}})
	ls := s.linkMany(n, 4)
	ids := sessionIDs(ls)
	s.waitAllConnected(ids, harness.WaitLong)
	s.checkHostedOnce(n)
	// Logins per pairing (whatsmeow logs in again right after pairing):
	// any login beyond that later is a linked session that dropped.
	before := s.EmuStats()
	if before.Logins%n != 0 {
		t.Fatalf("emulator %+v: logins are not a multiple of the %d pairings", before, n)
	}
	perPairing := before.Logins / n

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	primary, err := g.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	replica := g.Servers[0].Addr
	if replica == primary {
		replica = g.Servers[1].Addr
	}

	watch := s.watchAPI(ls[0].user, ls[1].user)
	// The tail that asynchronous replication loses: freeze the replica
	// and cut its link (what the primary already sent would still reach
	// it from the socket), hold the shared queue on the primary (the pause
	// is lost with the rest), and create k sessions. Their rows are in
	// Postgres, their tasks only on the primary.
	g.Signal(replica, syscall.SIGSTOP)
	if err := g.DataClient(primary, 0).ClientKillByFilter(ctx, "TYPE", "replica").Err(); err != nil {
		g.Signal(replica, syscall.SIGCONT)
		t.Fatal(err)
	}
	insp := asynq.NewInspectorFromRedisClient(g.DataClient(primary, 0))
	if err := insp.PauseQueue(tasks.QueueShared); err != nil {
		g.Signal(replica, syscall.SIGCONT)
		t.Fatal(err)
	}
	type pending struct {
		user, sessionID string
	}
	var news []pending
	for i := range k {
		u := newUser()
		sess, code, err := s.client.create(u)
		if err != nil || code != http.StatusCreated {
			g.Signal(replica, syscall.SIGCONT)
			t.Fatalf("create %d before the kill: %d %v", i, code, err)
		}
		news = append(news, pending{u, sess.SessionID})
	}
	if q, err := insp.GetQueueInfo(tasks.QueueShared); err != nil || q.Pending < k {
		g.Signal(replica, syscall.SIGCONT)
		t.Fatalf("the primary holds %+v (%v), want at least %d pending creates", q, err, k)
	}
	// The proof that the tail is lost is the replication offsets: what
	// the primary had written when it died against what the thawed
	// replica had applied, read before the sentinels can promote it
	// (down-after is a second). The queue of the promoted replica is no
	// proof either way: by the time the test reads it, the reconciler
	// may already have queued the lost creates again.
	written, err := g.ReplOffset(ctx, primary)
	if err != nil {
		g.Signal(replica, syscall.SIGCONT)
		t.Fatal(err)
	}
	killed := g.KillPrimary()
	start := time.Now()
	g.Signal(replica, syscall.SIGCONT)
	if killed != primary {
		t.Fatalf("killed %s, but the primary was %s", killed, primary)
	}
	applied, err := g.ReplOffset(ctx, replica)
	if err != nil {
		t.Fatal(err)
	}
	if applied >= written {
		t.Fatalf("the replica applied the primary's writes up to offset %d of %d: the creates were not lost, so this test proves nothing", applied, written)
	}
	now := g.WaitFailover(killed, 30*time.Second)
	promoted := time.Since(start)
	if now != replica {
		t.Fatalf("promoted %s, want the replica %s", now, replica)
	}

	// A user arriving after the failover gets a new session with its QR:
	// the API enqueues on the new primary and a worker takes the task.
	probe := newUser()
	s.WaitFor("a new session's QR after the failover", harness.WaitLong, func() (bool, string) {
		sess, code, err := s.client.create(probe)
		if err != nil || (code != http.StatusCreated && code != http.StatusOK) {
			return false, fmt.Sprintf("%d %v", code, err)
		}
		_, r, err := s.client.qr(probe)
		return err == nil && r.Status == http.StatusOK, fmt.Sprintf("session %s: %s %v", sess.SessionID, r, err)
	})
	working := time.Since(start)
	seen := watch.finish()
	t.Logf("API answers while the primary was killed and replaced: %s", seen.summary())
	for _, a := range seen {
		switch {
		case a.err != "":
			t.Errorf("%s: %s", a.call, a.err)
		case a.status == http.StatusServiceUnavailable && (a.code == "redis_unavailable" || a.code == "not_ready"):
		case a.status >= 500:
			t.Errorf("%s: %d %s during the failover; want 503 naming Redis", a.call, a.status, a.code)
		}
	}

	// The sessions whose creates were lost: the reconciler queues them
	// again, they show a QR, and the phone links them.
	for i, p := range news {
		dataURL, _, err := s.qrOf(p.user, session{})
		if err != nil {
			t.Fatalf("session %s (created before the kill): %v", p.sessionID, err)
		}
		qr, err := harness.DecodeQRDataURL(dataURL)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.phone.Scan(qr, phoneOf(2000+i), fmt.Sprintf("Late %d", i)); err != nil {
			t.Fatalf("session %s: scan: %v", p.sessionID, err)
		}
		ids = append(ids, p.sessionID)
	}
	redone := time.Since(start)
	if _, err := s.client.data("POST", pathDisconnect, probe, false, http.StatusAccepted, nil); err != nil {
		t.Fatal(err)
	}
	s.waitAllConnected(ids, harness.WaitLong)
	s.checkHostedOnce(n + k)
	s.checkNoRepairing(n + k)
	if after := s.EmuStats(); after.Logins-before.Logins != int64(k)*perPairing {
		t.Fatalf("emulator logins %d before the kill, %d after (%d per pairing, %d new pairings): a linked session reconnected",
			before.Logins, after.Logins, perPairing, k)
	}
	creates := 0
	for _, id := range s.WorkerIDs {
		creates += loggedSum(s.Workers[id].LogText(), "reconciled", "creates")
	}
	if creates < k {
		t.Fatalf("the reconcilers logged %d creates, want at least the %d lost", creates, k)
	}
	t.Logf("FIGURE Redis Sentinel failover (down-after %s, failover-timeout %s, 2 workers, %d linked sessions): replica promoted %s after the SIGKILL; a new session shows its QR %s after it; the %d lost creates redone by the reconciler (%d creates logged) and their QRs up %s after it; %d linked sessions never dropped",
		testenv.SentinelDownAfter, testenv.SentinelFailoverTimeout, n, promoted.Round(time.Millisecond), working.Round(time.Millisecond),
		k, creates, redone.Round(time.Millisecond), n)
}

// loggedSum adds up the integer field of every JSON log line whose msg is
// msg.
func loggedSum(logs, msg, field string) int {
	sum := 0
	for _, line := range strings.Split(logs, "\n") {
		var l map[string]any
		if json.Unmarshal([]byte(line), &l) != nil || l["msg"] != msg {
			continue
		}
		if v, ok := l[field].(float64); ok {
			sum += int(v)
		}
	}
	return sum
}

// Issue 14, goal 6: Postgres that fails over. The programs' DATABASE_URL
// names a primary and its streaming standby (synchronous, so the crash
// loses no commit) with target_session_attrs=read-write. With linked
// sessions on two workers, the primary crashes (pg_ctl stop -m immediate)
// and, once the workers have stopped their clients for want of their
// leases, the standby is promoted (pg_ctl promote): every program finds the
// new primary by itself, the sessions are connected again (restored from
// their stored keys, as after a Postgres restart), none paired again,
// none hosted twice, and a new session links on the new primary.
func TestPostgresFailover(t *testing.T) {
	const n = 6
	primary := testenv.StartPostgresServer(t)
	standby := primary.StartStandby(t, true)
	dsn := testenv.NewFailoverDatabase(t, primary, standby)
	s := newStack(t, stackOpts{Workers: []string{"w1", "w2"}, DSN: dsn, Env: map[string]string{"REBALANCE_MAX_MOVES": "0"}})
	ls := s.linkMany(n, 3)
	ids := sessionIDs(ls)
	s.waitAllConnected(ids, harness.WaitLong)
	s.checkHostedOnce(n)

	watch := s.watchAPI(ls[0].user, ls[1].user)
	primary.Stop() // -m immediate: a crash
	crashed := time.Now()
	// Failover managers take a while to decide (Patroni's TTL is 30s by
	// default): long enough for the workers to lose their leases, so they
	// stop their clients (self-fencing), exactly as while a single
	// Postgres restarts.
	s.WaitFor("the workers to stop their clients (self-fencing)", harness.WaitLong, func() (bool, string) {
		c, err := s.phone.ConnectedDevices()
		return err == nil && c == 0, fmt.Sprintf("%d devices still connected (err %v)", c, err)
	})
	fenced := time.Since(crashed)
	start := time.Now()
	standby.Promote()
	promoted := time.Since(start)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if in, err := standby.InRecovery(ctx); err != nil || in {
		t.Fatalf("the promoted standby: in recovery %v, %v", in, err)
	}
	s.WaitFor("the API to read from the new primary", harness.WaitLong, func() (bool, string) {
		st, err := s.client.status(ls[0].user)
		return err == nil && st.SessionID == ls[0].sessionID, fmt.Sprint(err)
	})
	apiBack := time.Since(start)
	took := s.waitAllConnected(ids, 2*harness.WaitLong)
	back := time.Since(start)
	seen := watch.finish()
	t.Logf("API answers while the primary was replaced: %s", seen.summary())
	for _, a := range seen {
		switch {
		case a.err != "":
			t.Errorf("%s: %s", a.call, a.err)
		case a.status == http.StatusServiceUnavailable && (a.code == "database_unavailable" || a.code == "not_ready"):
		case a.status >= 500:
			t.Errorf("%s: %d %s during the failover; want 503 naming Postgres", a.call, a.status, a.code)
		}
	}
	s.checkHostedOnce(n)
	s.checkNoRepairing(n)

	// Writes go to the new primary: a new user links.
	s.link(newUser(), phoneOf(3000), "After failover")
	s.checkHostedOnce(n + 1)
	s.checkNoRepairing(n + 1)
	t.Logf("FIGURE Postgres failover (synchronous standby, LEASE_TTL %s, RESTORE_INTERVAL %s, 2 workers, %d linked sessions): clients self-fenced %s after the crash; pg_ctl promote took %s; from the promotion the API answered from the new primary after %s and all sessions were connected again under live leases after %s (%s of it waiting for them once the API was back); 0 new pairings",
		harness.LeaseTTL, harness.RestoreInterval, n, fenced.Round(time.Millisecond), promoted.Round(time.Millisecond), apiBack.Round(time.Millisecond),
		back.Round(time.Millisecond), took.Round(time.Millisecond))
}
