package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/hibiken/asynq"

	"wasessions/internal/netguard"
	"wasessions/internal/store"
	"wasessions/tasks"
)

// Options are the delivery settings (internal/config documents each).
type Options struct {
	// Schedule is the wait before each retry: len(Schedule)+1 attempts in
	// all (WEBHOOK_RETRY_SCHEDULE).
	Schedule []time.Duration
	// Timeout bounds one attempt (default 10s).
	Timeout time.Duration
	// PerEndpoint caps attempts in flight to one endpoint across all
	// workers (WEBHOOK_ENDPOINT_CONCURRENCY).
	PerEndpoint int
	// DisableAfter turns off an endpoint every attempt to which failed
	// for this long (WEBHOOK_DISABLE_AFTER, default 5 days).
	DisableAfter time.Duration
	// PollInterval is how often a dispatcher looks for due deliveries
	// without being woken (WEBHOOK_POLL_INTERVAL).
	PollInterval time.Duration
}

// DefaultSchedule: 9 attempts over about 28 hours.
var DefaultSchedule = []time.Duration{5 * time.Second, time.Minute, 5 * time.Minute, 30 * time.Minute,
	2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}

func (o Options) withDefaults() Options {
	if len(o.Schedule) == 0 {
		o.Schedule = DefaultSchedule
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.PerEndpoint <= 0 {
		o.PerEndpoint = 4
	}
	if o.DisableAfter <= 0 {
		o.DisableAfter = 5 * 24 * time.Hour
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	return o
}

// Deliverer makes delivery attempts: the handler of tasks.TypeWebhookDeliver.
type Deliverer struct {
	opts    Options
	store   *store.Store
	sealer  *Sealer
	client  *http.Client
	metrics *Metrics
	log     *slog.Logger
	// done is called after every recorded attempt: the dispatcher looks
	// for the next due delivery at once (the session's next event).
	done func()
}

// NewDeliverer builds the handler; guard decides where it may connect.
func NewDeliverer(opts Options, st *store.Store, sealer *Sealer, guard netguard.Guard, m *Metrics, log *slog.Logger) *Deliverer {
	opts = opts.withDefaults()
	if m == nil {
		m = NewMetrics(nil)
	}
	return &Deliverer{opts: opts, store: st, sealer: sealer, client: guard.Client(opts.Timeout), metrics: m, log: log,
		done: func() {}}
}

// lease is how long a claimed attempt may run before another worker may
// try again: the request's timeout and room to record its outcome.
func (d *Deliverer) lease() time.Duration { return d.opts.Timeout + 10*time.Second }

// Handle makes the attempt a task names. Every outcome, the receiver's
// failures included, is recorded in Postgres and the task succeeds: the
// retry schedule lives there, not in asynq. Only a failure to reach
// Postgres fails the task (the dispatcher enqueues it again anyway).
func (d *Deliverer) Handle(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.ParseWebhookDeliver(t)
	if err != nil {
		return err
	}
	// After a delivery, the session's next event to the same endpoint is
	// attempted in the same task while the task has time for a whole
	// attempt: a backlog drains without a dispatch per event. A failure,
	// or nothing due, hands back to the dispatcher.
	start := time.Now()
	budget := tasks.WebhookTimeout - d.lease()
	for {
		delivered, session, err := d.one(ctx, p)
		if err != nil || !delivered || time.Since(start) > budget-d.opts.Timeout || ctx.Err() != nil {
			d.done()
			return err
		}
		next, ok, err := d.store.NextWebhookHead(ctx, p.EndpointID, session)
		if err != nil || !ok {
			d.done()
			return err
		}
		p = tasks.WebhookPayload{EndpointID: next.EndpointID, EventID: next.EventID, Attempts: next.Attempts}
	}
}

// one makes the attempt p names, if it can be claimed, and records it.
func (d *Deliverer) one(ctx context.Context, p tasks.WebhookPayload) (delivered bool, sessionID string, err error) {
	c, err := d.store.ClaimWebhook(ctx, p.EndpointID, p.EventID, p.Attempts, d.lease(), d.opts.PerEndpoint)
	if errors.Is(err, store.ErrWebhookNotDue) || errors.Is(err, store.ErrWebhookBusy) {
		d.metrics.Deliveries.WithLabelValues("skipped").Inc()
		return false, "", nil
	}
	if err != nil {
		return false, "", err
	}
	o := d.attempt(ctx, c)
	disabled, err := d.store.RecordWebhookOutcome(context.WithoutCancel(ctx), o)
	if err != nil {
		return false, "", err
	}
	log := d.log.With("endpoint_id", c.Endpoint.ID, "event_id", c.Event.ID, "session_id", c.Event.SessionID,
		"event_type", c.Event.Type, "sequence", c.Event.Sequence, "attempt", c.Attempt, "http_status", o.HTTPStatus,
		"latency_ms", o.Latency.Milliseconds())
	switch o.Result {
	case store.WebhookDelivered:
		d.metrics.Deliveries.WithLabelValues("delivered").Inc()
		if c.Attempt == 1 {
			d.metrics.Latency.Observe(time.Since(c.Event.OccurredAt).Seconds())
		}
		log.DebugContext(ctx, "webhook delivered")
	case store.WebhookRetry:
		d.metrics.Deliveries.WithLabelValues("retry").Inc()
		log.InfoContext(ctx, "webhook attempt failed; will retry", "error", o.Error, "retry_in", o.RetryIn.String())
	case store.WebhookGiveUp:
		d.metrics.Deliveries.WithLabelValues("gave_up").Inc()
		log.WarnContext(ctx, "webhook gave up after the last attempt; the event stays replayable", "error", o.Error)
	case store.WebhookGone:
		d.metrics.Deliveries.WithLabelValues("gone").Inc()
	}
	if disabled != "" {
		log.WarnContext(ctx, "webhook endpoint turned off", "reason", disabled)
	}
	return o.Result == store.WebhookDelivered, c.Event.SessionID, nil
}

// attempt sends the event once and classifies the answer.
func (d *Deliverer) attempt(ctx context.Context, c ClaimedWebhookView) store.WebhookOutcome {
	o := store.WebhookOutcome{EndpointID: c.Endpoint.ID, EventID: c.Event.ID, Attempt: c.Attempt,
		DisableAfter: d.opts.DisableAfter}
	start := time.Now()
	status, err := d.post(ctx, c)
	o.Latency = time.Since(start)
	d.metrics.AttemptDuration.Observe(o.Latency.Seconds())
	o.HTTPStatus = status
	switch {
	case err == nil && status >= 200 && status < 300:
		o.Result = store.WebhookDelivered
		return o
	case err == nil && status == http.StatusGone:
		o.Result = store.WebhookGone
		o.Error = "the receiver answered 410 Gone: endpoint turned off"
		o.RetryIn = 0
		return o
	case err != nil:
		o.Error = err.Error()
	default:
		o.Error = "the receiver answered " + strconv.Itoa(status)
	}
	if c.Attempt > len(d.opts.Schedule) {
		o.Result = store.WebhookGiveUp
		return o
	}
	o.Result = store.WebhookRetry
	o.RetryIn = jitter(d.opts.Schedule[c.Attempt-1])
	return o
}

// maxResponse is how much of a receiver's answer is read (and thrown away).
const maxResponse = 64 << 10

// ClaimedWebhookView is the claimed attempt (store.ClaimedWebhook).
type ClaimedWebhookView = store.ClaimedWebhook

// jitter spreads a retry over ±10% of its wait, so receivers coming back
// are not hit by every retry at the same instant.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d - d/10 + rand.N(d/5+1)
}

// post sends the signed request; the error is short and secret-free
// (it is stored and shown in GET .../deliveries).
func (d *Deliverer) post(ctx context.Context, c store.ClaimedWebhook) (int, error) {
	body, err := d.body(ctx, c.Event)
	if err != nil {
		return 0, err
	}
	secrets, err := d.secrets(c.Endpoint)
	if err != nil {
		return 0, err
	}
	ts := time.Now()
	sig, err := Sign(secrets, c.Event.ID, ts, body)
	if err != nil {
		return 0, err
	}
	rctx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, c.Endpoint.URL, bytes.NewReader(body))
	if err != nil {
		return 0, errors.New("the endpoint URL is not valid")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "wasessions-webhooks/1")
	req.Header.Set("webhook-id", c.Event.ID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set("webhook-signature", sig)
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, describe(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
	return resp.StatusCode, nil
}

// describe turns a transport error into a sentence without the URL
// (which http.Client puts into every error).
func describe(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var to interface{ Timeout() bool }
	switch {
	case errors.Is(err, netguard.ErrRefused):
		return err
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &to) && to.Timeout():
		return errors.New("timed out")
	}
	return fmt.Errorf("connection failed: %w", err)
}

func (d *Deliverer) body(ctx context.Context, ev store.WebhookEvent) ([]byte, error) {
	if ev.Body != nil {
		return []byte(*ev.Body), nil
	}
	b, err := Render(ev)
	if err != nil {
		return nil, err
	}
	stored, err := d.store.SetWebhookBody(ctx, ev.ID, string(b))
	if err != nil {
		return nil, err
	}
	return []byte(stored), nil
}

// secrets are the endpoint's signing secrets: the current one, and the
// previous one during a rotation's overlap.
func (d *Deliverer) secrets(e store.WebhookEndpoint) ([]string, error) {
	cur, err := d.sealer.Open(e.Secret)
	if err != nil {
		return nil, err
	}
	out := []string{cur}
	if e.PreviousSecret != nil && e.PreviousSecretUntil != nil && time.Now().Before(*e.PreviousSecretUntil) {
		prev, err := d.sealer.Open(*e.PreviousSecret)
		if err != nil {
			return nil, err
		}
		out = append(out, prev)
	}
	return out, nil
}
