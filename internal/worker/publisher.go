package worker

import (
	"context"
	"log/slog"
	"time"

	"wasessions/internal/events"
)

// publishTimeout bounds one event's publish to Redis.
const publishTimeout = 5 * time.Second

// publisherBacklog is how many events may wait for Redis before new ones
// are dropped.
const publisherBacklog = 4096

// publisher sends the worker's live updates to Redis in the order they
// were made, on a goroutine of its own. Those who make them (a session's
// loop, a task handler) only queue them: a Redis that hangs held each
// publish for the client's read timeout and its retries (5 to 11 s), so a
// session's loop stalled on every state change, and a SIGTERM's handoffs
// ran out of Shutdown's budget and were abandoned with their leases held
// (TestShutdownHandsOffEverySessionWhenRedisHangs). An event is a live
// update, never state (Postgres has it): when the backlog is full it is
// dropped and logged.
type publisher struct {
	bus   *events.Bus
	log   *slog.Logger
	queue chan any // events.Event, or a flush marker (chan struct{})
}

func newPublisher(bus *events.Bus, log *slog.Logger) *publisher {
	p := &publisher{bus: bus, log: log, queue: make(chan any, publisherBacklog)}
	go p.run()
	return p
}

// run lives as long as the process: the worker has no end of its own
// (handlers may still finish after Shutdown), and it holds no resources.
func (p *publisher) run() {
	for m := range p.queue {
		switch m := m.(type) {
		case chan struct{}:
			close(m)
		case events.Event:
			ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
			err := p.bus.Publish(ctx, m)
			cancel()
			if err != nil {
				p.log.Warn("publish event", "session_id", m.SessionID, "event", m.Type, "error", err)
			}
		}
	}
}

// publish queues e without waiting.
func (p *publisher) publish(e events.Event) {
	select {
	case p.queue <- e:
	default:
		p.log.Warn("event dropped: publish backlog full (Redis slow or away)", "session_id", e.SessionID, "event", e.Type)
	}
}

// flush waits until the events queued before it were published (or
// failed), or ctx ends.
func (p *publisher) flush(ctx context.Context) {
	done := make(chan struct{})
	select {
	case p.queue <- done:
	case <-ctx.Done():
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
}
