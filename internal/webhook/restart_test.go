package webhook

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"wasessions/internal/store"
	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
	"wasessions/tasks"
)

// testSession is a user's session the tests make events for.
type testSession struct{ user, id string }

// producer stores an inbound message (one message.received event) for
// each session in turn, one every interval, like a worker receiving
// messages. A write that fails (Postgres away) is tried again with the
// same WhatsApp message id until it is stored, so one whose commit
// succeeded but whose answer was lost is not stored twice.
type producer struct {
	stop    chan struct{}
	done    chan struct{}
	stored  atomic.Int64
	retried atomic.Int64
}

func (e *env) produce(ss []testSession, every time.Duration) *producer {
	p := &producer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for i := 0; ; i++ {
			s := ss[i%len(ss)]
			in := store.Inbound{SessionID: s.id, UserID: s.user, Chat: "+15550001", Text: "hello",
				WAMessageID: fmt.Sprintf("3EB0%012d", waN.Add(1)), Timestamp: time.Now()}
			for {
				ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
				_, _, err := e.st.SaveInbound(ctx, in)
				cancel()
				if err == nil {
					p.stored.Add(1)
					break
				}
				p.retried.Add(1)
				select {
				case <-p.stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
			select {
			case <-p.stop:
				return
			case <-time.After(every):
			}
		}
	}()
	return p
}

// Stop stops producing and waits for the write in progress.
func (p *producer) Stop() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

// sessions creates n users with a session each.
func (e *env) sessions(n int) []testSession {
	var ss []testSession
	for range n {
		u, s := e.session()
		ss = append(ss, testSession{u, s})
	}
	return ss
}

// wantAll lists every session's events in sequence order, as stored.
func (e *env) wantAll(ss []testSession) (map[string][]string, int) {
	want, total := map[string][]string{}, 0
	for _, s := range ss {
		want[s.id] = e.eventsOf(s.id)
		total += len(want[s.id])
	}
	return want, total
}

// restartSchedule retries quickly, many times: a test's restart must
// never make a delivery give up.
var restartSchedule = func() []time.Duration {
	out := []time.Duration{200 * time.Millisecond, 500 * time.Millisecond}
	for range 60 {
		out = append(out, 2*time.Second)
	}
	return out
}()

// Redis is killed while events are being delivered and comes back empty
// (no persistence): the asynq tasks queued for deliveries are lost. The
// deliveries are rows in Postgres, so the dispatchers enqueue them again:
// every event arrives, in order per session, each webhook-id accepted
// once (a retry repeats the id).
func TestRedisRestartLosesNothing(t *testing.T) {
	rs := testenv.StartRedisServer(t)
	e := newEnv(t, envOpts{Options: Options{Schedule: restartSchedule, PerEndpoint: 4}, concurrency: 8, redis: rs})
	r := newReceiver(t)
	r.slow.Store(int64(30 * time.Millisecond)) // a backlog of tasks waits in Redis
	_, sec := e.endpoint("00000000-0000-0000-0000-0000000000ad", r.URL(), true)
	r.setSecrets(sec)
	ss := e.sessions(10)
	p := e.produce(ss, 5*time.Millisecond)
	t.Cleanup(p.Stop)

	r.waitFor(30, 2*time.Minute)
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	testfactory.Eventually(t, "delivery tasks to be queued in Redis", func() bool {
		q, err := insp.GetQueueInfo(tasks.QueueWebhooks)
		return err == nil && q.Pending+q.Active > 0
	})
	before := r.count()
	rs.Stop() // every queued task is gone with it
	time.Sleep(3 * time.Second)
	rs.Start()
	t.Logf("Redis restarted after %d deliveries; %d events stored so far", before, p.stored.Load())
	time.Sleep(3 * time.Second)
	p.Stop()

	want, total := e.wantAll(ss)
	r.waitFor(total, 5*time.Minute) // a bound for a loaded machine, not a speed claim
	checkOrder(t, r.deliveries(), want)
	if f := r.failures(); len(f) > 0 {
		t.Fatalf("requests that did not verify: %v", f)
	}
	if r.count() <= before {
		t.Fatal("nothing was delivered after the restart")
	}
	t.Logf("%d events delivered in order, %d repeated ids", total, r.repeats)
}

// listening reports whether a dispatcher holds a LISTEN on the outbox
// channel in the test's database.
func (e *env) listening() bool {
	var n int
	err := e.st.Pool().QueryRow(e.ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND query = 'LISTEN `+notifyChannel+`'`).Scan(&n)
	return err == nil && n > 0
}

// Postgres is restarted (an immediate shutdown: every connection dropped,
// transactions in flight rolled back) while events are being made and
// delivered. Every event Postgres holds arrives, in order per session,
// each webhook-id accepted once; and the dispatcher's LISTEN comes back:
// the poll interval is an hour, so events made after the restart, once
// everything before was delivered, can only be dispatched by a
// notification.
func TestPostgresRestartLosesNothing(t *testing.T) {
	pg := testenv.StartPostgresServer(t)
	e := newEnv(t, envOpts{Options: Options{Schedule: restartSchedule, PerEndpoint: 4, PollInterval: time.Hour,
		Timeout: 2 * time.Second}, concurrency: 8, pg: pg})
	r := newReceiver(t)
	r.slow.Store(int64(30 * time.Millisecond))
	_, sec := e.endpoint("00000000-0000-0000-0000-0000000000ad", r.URL(), true)
	r.setSecrets(sec)
	ss := e.sessions(10)
	testfactory.Eventually(t, "the dispatcher to LISTEN", e.listening)
	p := e.produce(ss, 5*time.Millisecond)
	t.Cleanup(p.Stop)

	r.waitFor(30, 2*time.Minute)
	before := r.count()
	pg.Stop()
	time.Sleep(3 * time.Second)
	pg.Start()
	t.Logf("Postgres restarted after %d deliveries; %d events stored so far, %d writes retried",
		before, p.stored.Load(), p.retried.Load())
	// Keep making events for longer than an attempt's lease (an attempt
	// claimed before the restart whose outcome could not be recorded is
	// tried again once its lease ends, at the next dispatch).
	time.Sleep(15 * time.Second)
	p.Stop()

	want, total := e.wantAll(ss)
	r.waitFor(total, 5*time.Minute) // a bound for a loaded machine, not a speed claim
	checkOrder(t, r.deliveries(), want)
	if r.count() <= before {
		t.Fatal("nothing was delivered after the restart")
	}

	testfactory.Eventually(t, "the dispatcher to LISTEN again", e.listening)
	for _, s := range ss {
		e.inbound(s.user, s.id)
	}
	want, total = e.wantAll(ss)
	r.waitFor(total, 2*time.Minute) // only a notification can wake the dispatcher
	checkOrder(t, r.deliveries(), want)
	if f := r.failures(); len(f) > 0 {
		t.Fatalf("requests that did not verify: %v", f)
	}
	t.Logf("%d events delivered in order, %d repeated ids, %d writes retried", total, r.repeats, p.retried.Load())
}
