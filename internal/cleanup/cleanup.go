// Package cleanup removes expired sessions: hourly from the scheduler (via
// a worker) and on demand from POST /api/integrations/sessions/cleanup. It
// runs from any process, because the one thing only a hosting worker can do,
// stopping a live client, is handed to that worker through its own queue.
package cleanup

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"wasessions/internal/events"
	"wasessions/internal/queue"
	"wasessions/internal/store"
	"wasessions/tasks"
)

// Deps are what a cleanup run needs.
type Deps struct {
	Store    *store.Store
	Enqueuer *queue.Enqueuer
	Bus      *events.Bus
	Log      *slog.Logger
}

// Options tune a run.
type Options struct {
	// Batch is how many rows one DELETE removes (bounded so a backlog
	// never holds locks on many rows at once). Default 500.
	Batch int
	// MessageRetention is how long messages of an ended session are kept
	// before this run deletes them (default 7 days).
	MessageRetention time.Duration
	// WaitHosted is how long to wait for hosting workers to stop expired
	// clients before deleting their rows; 0 leaves those rows to the next
	// run. The admin endpoint waits so its count includes them.
	WaitHosted time.Duration
	// HistoryRetention is how long status history rows are kept (the
	// admin detail view's "recent" changes); older ones are pruned in
	// batches of Batch. Default 30 days.
	HistoryRetention time.Duration
}

// Result is what a run did.
type Result struct {
	// Deleted rows (sessions cleaned up); their device keys went with them.
	Deleted int `json:"cleanedCount"`
	// HandedOff are expired sessions still hosted when the run began, whose
	// owners were told to stop them; those not yet stopped when the run
	// ended are deleted by the next run.
	HandedOff int `json:"handedOff"`
	// HistoryPruned are status history rows older than the retention.
	HistoryPruned int64 `json:"historyPruned"`
	// MessagesDeleted are messages past MESSAGE_RETENTION.
	MessagesDeleted int `json:"-"`
	// WebhookEventsDeleted are webhook events past MESSAGE_RETENTION whose
	// deliveries are all done or given up.
	WebhookEventsDeleted int `json:"-"`
}

// Run expires and deletes every session past its expiry.
func Run(ctx context.Context, d Deps, o Options) (Result, error) {
	if o.Batch <= 0 {
		o.Batch = 500
	}
	if o.HistoryRetention <= 0 {
		o.HistoryRetention = 30 * 24 * time.Hour
	}
	var res Result

	// 1. Hosted and expired: tell the owner to stop the client and delete
	//    the keys (disconnect task on its queue; its heartbeat would also
	//    notice desired_state = gone).
	hosted, err := d.Store.MarkHostedExpiredGone(ctx)
	if err != nil {
		return res, fmt.Errorf("cleanup: %w", err)
	}
	for _, s := range hosted {
		j, err := tasks.NewDisconnect(s.SessionID, string(store.ReasonSessionExpired), queue.ForSession(s))
		if err != nil {
			return res, fmt.Errorf("cleanup: %w", err)
		}
		if _, err := d.Enqueuer.Enqueue(ctx, j, false); err != nil {
			// The heartbeat path still stops it; note and go on.
			d.Log.WarnContext(ctx, "cleanup: could not hand expired session to its worker",
				"session_id", s.SessionID, "worker_id", store.Str(s.WorkerID), "error", err)
		}
	}
	res.HandedOff = len(hosted)
	if len(hosted) > 0 && o.WaitHosted > 0 {
		waitReleased(ctx, d.Store, hosted, o.WaitHosted)
	}

	// 2. Unhosted and expired: mark them so (an event tells the frontend).
	for {
		ended, err := d.Store.ExpireUnhosted(ctx, o.Batch)
		if err != nil {
			return res, fmt.Errorf("cleanup: %w", err)
		}
		for _, s := range ended {
			publish(ctx, d, events.FromSession(events.TypeStatus, s))
		}
		if len(ended) < o.Batch {
			break
		}
	}

	// 3. Delete them with their device keys, a batch at a time.
	for {
		gone, err := d.Store.DeleteExpired(ctx, o.Batch)
		if err != nil {
			return res, fmt.Errorf("cleanup: %w", err)
		}
		res.Deleted += len(gone)
		for _, g := range gone {
			publish(ctx, d, events.Event{Type: events.TypeStatus, SessionID: g.SessionID, UserID: g.UserID,
				Status: string(store.StatusExpired), Reason: string(store.ReasonSessionDeleted), At: time.Now()})
		}
		if len(gone) < o.Batch {
			break
		}
	}
	// 4. Status history past its retention (a deleted session's history
	//    went with it), a batch at a time.
	for {
		n, err := d.Store.PruneStatusHistory(ctx, o.HistoryRetention, o.Batch)
		if err != nil {
			return res, fmt.Errorf("cleanup: %w", err)
		}
		res.HistoryPruned += n
		if n < int64(o.Batch) {
			break
		}
	}
	// 5. Messages of sessions that ended more than the retention ago.
	retention := o.MessageRetention
	if retention <= 0 {
		retention = 7 * 24 * time.Hour
	}
	res.MessagesDeleted, err = d.Store.DeleteOldMessages(ctx, retention, o.Batch)
	if err != nil {
		return res, fmt.Errorf("cleanup: %w", err)
	}
	// 6. Webhook events as old, that no endpoint still waits for.
	res.WebhookEventsDeleted, err = d.Store.DeleteOldWebhookEvents(ctx, retention, o.Batch)
	if err != nil {
		return res, fmt.Errorf("cleanup: %w", err)
	}
	d.Log.InfoContext(ctx, fmt.Sprintf("Cleaned up %d expired WhatsApp sessions", res.Deleted),
		"cleaned_count", res.Deleted, "handed_off", res.HandedOff, "history_pruned", res.HistoryPruned, "messages_deleted", res.MessagesDeleted,
		"webhook_events_deleted", res.WebhookEventsDeleted)
	return res, nil
}

func publish(ctx context.Context, d Deps, e events.Event) {
	if d.Bus == nil {
		return
	}
	if err := d.Bus.Publish(ctx, e); err != nil {
		d.Log.WarnContext(ctx, "cleanup: publish event", "session_id", e.SessionID, "error", err)
	}
}

// waitReleased polls until every session in hosted has no live lease, or
// until within has passed.
func waitReleased(ctx context.Context, st *store.Store, hosted []store.Session, within time.Duration) {
	deadline := time.Now().Add(within)
	pending := make(map[string]bool, len(hosted))
	for _, s := range hosted {
		pending[s.SessionID] = true
	}
	for len(pending) > 0 && time.Now().Before(deadline) {
		for id := range pending {
			s, err := st.Get(ctx, id)
			if err != nil || !s.LeaseLive {
				delete(pending, id)
			}
		}
		if len(pending) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}
