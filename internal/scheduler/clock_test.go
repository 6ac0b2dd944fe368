package scheduler

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock that moves only when the test sets it, so tests
// reach any slot at once and never depend on real time passing.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(now time.Time) *fakeClock { return &fakeClock{now: now} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) WakeAt(t time.Time) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if !t.After(c.now) {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, fakeWaiter{at: t, ch: ch})
	return ch
}

// Set moves the clock to t and wakes everyone waiting for a time up to t.
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(t) {
			w.ch <- t
			continue
		}
		kept = append(kept, w)
	}
	c.waiters = kept
}

// recorder collects a scheduler's Fire reports for the test to wait on.
type recorder struct {
	ch chan Fire
	// skipped are reports await passed over, kept for later awaits.
	skipped []Fire
}

func newRecorder() *recorder { return &recorder{ch: make(chan Fire, 256)} }

func (r *recorder) onFire(f Fire) { r.ch <- f }

// next waits for the next report. The bound only keeps a broken scheduler
// from hanging the test; no assertion depends on how long anything takes.
func (r *recorder) next(t *testing.T) Fire {
	t.Helper()
	select {
	case f := <-r.ch:
		return f
	case <-time.After(30 * time.Second):
		t.Fatal("the scheduler reported no enqueue attempt")
		return Fire{}
	}
}

// await returns the first report of kind and slot not yet returned,
// waiting for it if need be; reports of other slots stay for later awaits.
// It is called from the test goroutine only.
func (r *recorder) await(t *testing.T, kind Kind, slot time.Time) Fire {
	t.Helper()
	match := func(f Fire) bool { return f.Kind == kind && f.Slot.Equal(slot) }
	for i, f := range r.skipped {
		if match(f) {
			r.skipped = append(r.skipped[:i], r.skipped[i+1:]...)
			return f
		}
	}
	for {
		f := r.next(t)
		if match(f) {
			return f
		}
		r.skipped = append(r.skipped, f)
	}
}

// logRecorder is a slog handler that keeps every record's message and
// attributes, so tests assert on structured records rather than text.
type logRecorder struct {
	mu      sync.Mutex
	records []loggedRecord
	notify  chan struct{}
}

type loggedRecord struct {
	Level slog.Level
	Msg   string
	Attrs map[string]any
}

func newLogRecorder() *logRecorder { return &logRecorder{notify: make(chan struct{}, 1)} }

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	rec := loggedRecord{Level: r.Level, Msg: r.Message, Attrs: map[string]any{}}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[a.Key] = a.Value.Resolve().Any()
		return true
	})
	h.mu.Lock()
	h.records = append(h.records, rec)
	h.mu.Unlock()
	select {
	case h.notify <- struct{}{}:
	default:
	}
	return nil
}

// WithAttrs and WithGroup drop the added context: the tests look only at
// each record's own message and attributes.
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecorder) WithGroup(string) slog.Handler      { return h }

// await waits until a record matching pred has been logged and returns it.
func (h *logRecorder) await(t *testing.T, what string, pred func(loggedRecord) bool) loggedRecord {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		h.mu.Lock()
		for _, r := range h.records {
			if pred(r) {
				h.mu.Unlock()
				return r
			}
		}
		h.mu.Unlock()
		select {
		case <-h.notify:
		case <-deadline:
			t.Fatalf("no log record %s", what)
		}
	}
}
