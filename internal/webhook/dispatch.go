package webhook

import (
	"context"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"

	"wasessions/internal/netguard"
	"wasessions/internal/queue"
	"wasessions/internal/store"
	"wasessions/tasks"
)

// notifyChannel is what the outbox trigger notifies at commit.
const notifyChannel = "wasessions_webhooks"

// dispatchBatch bounds one look for due deliveries.
const dispatchBatch = 500

// Dispatcher finds the deliveries due now (the head of each session's
// deliveries to each endpoint) and enqueues one task per attempt. Every
// worker runs one; task ids name the attempt, so two dispatchers finding
// the same delivery enqueue it once. It looks when the outbox trigger
// notifies (at the commit of an event), after every attempt, and every
// PollInterval regardless: a lost notification or task, or a killed
// worker, delays a delivery by at most that much (or the attempt's lease).
type Dispatcher struct {
	opts    Options
	store   *store.Store
	enq     *queue.Enqueuer
	metrics *Metrics
	log     *slog.Logger
	wake    chan struct{}
}

// NewDispatcher builds a dispatcher; Run runs it.
func NewDispatcher(opts Options, st *store.Store, enq *queue.Enqueuer, m *Metrics, log *slog.Logger) *Dispatcher {
	if m == nil {
		m = NewMetrics(nil)
	}
	return &Dispatcher{opts: opts.withDefaults(), store: st, enq: enq, metrics: m, log: log, wake: make(chan struct{}, 1)}
}

// Wake makes the dispatcher look for due deliveries now.
func (d *Dispatcher) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// backlogEvery is how often the backlog gauges are refreshed.
const backlogEvery = 10 * time.Second

// Run dispatches until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) {
	go d.listen(ctx, d.store.Pool())
	tick := time.NewTicker(d.opts.PollInterval)
	defer tick.Stop()
	var lastBacklog time.Time
	for {
		full := d.dispatch(ctx)
		if time.Since(lastBacklog) >= backlogEvery {
			d.refreshBacklog(ctx)
			lastBacklog = time.Now()
		}
		if full {
			continue // more due than one batch
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-d.wake:
		}
	}
}

// dispatch enqueues what is due and reports whether there may be more.
func (d *Dispatcher) dispatch(ctx context.Context) bool {
	due, err := d.store.DueWebhooks(ctx, d.opts.PerEndpoint, dispatchBatch)
	if err != nil {
		if ctx.Err() == nil {
			d.log.WarnContext(ctx, "webhooks: could not look for due deliveries", "error", err)
		}
		return false
	}
	enqueued := 0
	for _, w := range due {
		j, err := tasks.NewWebhookDeliver(w.EndpointID, w.EventID, w.Attempts)
		if err != nil {
			d.log.ErrorContext(ctx, "webhooks: task", "error", err)
			continue
		}
		res, err := d.enq.Enqueue(ctx, j, false)
		if err != nil {
			if ctx.Err() == nil {
				d.log.WarnContext(ctx, "webhooks: could not enqueue a delivery", "endpoint_id", w.EndpointID,
					"event_id", w.EventID, "error", err)
			}
			return false
		}
		if res == queue.Enqueued {
			enqueued++
		}
	}
	// A full batch that was all new: look again at once. One that was
	// already queued is waiting for the workers, not for us.
	return len(due) == dispatchBatch && enqueued > 0
}

func (d *Dispatcher) refreshBacklog(ctx context.Context) {
	bl, err := d.store.WebhookBacklogs(ctx)
	if err != nil {
		return
	}
	d.metrics.OldestPending.Reset()
	d.metrics.Pending.Reset()
	for _, b := range bl {
		d.metrics.OldestPending.WithLabelValues(b.EndpointID).Set(b.OldestAge)
		d.metrics.Pending.WithLabelValues(b.EndpointID).Set(float64(b.Pending))
	}
}

// listen wakes the dispatcher on every notification of the outbox
// trigger, reconnecting after Postgres restarts; polling covers the gaps.
func (d *Dispatcher) listen(ctx context.Context, pool *pgxpool.Pool) {
	backoff := time.Second
	for ctx.Err() == nil {
		err := func() error {
			conn, err := pool.Acquire(ctx)
			if err != nil {
				return err
			}
			defer conn.Release()
			if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
				conn.Conn().Close(context.Background()) //nolint:errcheck // a broken connection is dropped
				return err
			}
			backoff = time.Second
			d.Wake() // anything committed before LISTEN
			for {
				if _, err := conn.Conn().WaitForNotification(ctx); err != nil {
					// Do not hand a connection that is LISTENing back to the pool.
					conn.Conn().Close(context.Background()) //nolint:errcheck
					return err
				}
				d.Wake()
			}
		}()
		if ctx.Err() != nil {
			return
		}
		d.log.DebugContext(ctx, "webhooks: listen interrupted; polling meanwhile", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// Service is the delivery side a worker runs: the dispatcher, and an asynq
// server of its own on tasks.QueueWebhooks, so slow receivers take only
// webhook slots, never the session tasks'.
type Service struct {
	Dispatcher *Dispatcher
	Deliverer  *Deliverer
	srv        *asynq.Server
}

// ServiceDeps are what NewService needs.
type ServiceDeps struct {
	Store    *store.Store
	Enqueuer *queue.Enqueuer
	Sealer   *Sealer
	Guard    netguard.Guard
	Metrics  *Metrics
	Log      *slog.Logger
	// Server is the asynq server to run deliveries on (its Queues must be
	// tasks.QueueWebhooks only); nil runs no server (tests that drive
	// Handle themselves).
	Server *asynq.Server
}

// NewService wires a dispatcher and a deliverer.
func NewService(opts Options, d ServiceDeps) *Service {
	disp := NewDispatcher(opts, d.Store, d.Enqueuer, d.Metrics, d.Log)
	del := NewDeliverer(opts, d.Store, d.Sealer, d.Guard, d.Metrics, d.Log)
	del.done = disp.Wake
	return &Service{Dispatcher: disp, Deliverer: del, srv: d.Server}
}

// Mux routes the delivery task to the deliverer.
func (s *Service) Mux() *asynq.ServeMux {
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.TypeWebhookDeliver, s.Deliverer.Handle)
	return mux
}

// Start starts the asynq server (if any) and the dispatcher; both stop
// when ctx ends or Stop is called.
func (s *Service) Start(ctx context.Context) error {
	if s.srv != nil {
		if err := s.srv.Start(s.Mux()); err != nil {
			return err
		}
	}
	go s.Dispatcher.Run(ctx)
	return nil
}

// Stop waits for attempts in flight (up to the server's shutdown timeout);
// an attempt cut off is retried after its lease.
func (s *Service) Stop() {
	if s.srv != nil {
		s.srv.Shutdown()
	}
}
