// Package reconcile closes the gap between what each session should be
// (desired_state) and what it is (status, lease): the one mechanism that
// recovers from a failed enqueue after the row committed, a SIGKILLed
// worker, lost Redis data and a dropped message alike (docs/ARCHITECTURE.md,
// "Reconcile and restore"). It is idempotent: every task it enqueues has a
// deterministic id, so running it twice, or on two workers at once, enqueues
// nothing twice.
package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"wasessions/internal/events"
	"wasessions/internal/queue"
	"wasessions/internal/store"
	"wasessions/tasks"
)

// Deps are what a reconcile run needs.
type Deps struct {
	Store    *store.Store
	Enqueuer *queue.Enqueuer
	Bus      *events.Bus
	Log      *slog.Logger
	// MaxMoves caps the sessions one pass moves between workers to even
	// out their load (see Rebalance); 0 turns rebalancing off.
	MaxMoves int
	// MessageTTL is how long an outbound message may wait (default 1h).
	MessageTTL time.Duration
}

// Result counts what a run enqueued, by task kind.
type Result struct {
	Expired     int
	Creates     int
	Restores    int
	Disconnects int
	// AlreadyQueued are gaps whose task was already on its way.
	AlreadyQueued int
	// ReapedQueues are worker queues with no server left, drained to
	// wa:shared and deleted.
	ReapedQueues int
	// Moves are sessions asked to move to a less loaded worker.
	Moves int
	// MessagesFailed are queued messages that can no longer go out (their
	// session ended, or they waited past MESSAGE_TTL with no host).
	MessagesFailed int
	// SendersWoken are hosted sessions with queued messages whose sender
	// was woken (a lost wake-up task costs at most one pass).
	SendersWoken int
}

// Limit bounds the sessions one run looks at; the next run takes the rest.
const Limit = 2000

// Run performs one reconcile pass.
func Run(ctx context.Context, d Deps) (Result, error) {
	var res Result

	// Live sessions past expiry with no worker: they end here, as expired.
	ended, err := d.Store.ExpireUnhosted(ctx, Limit)
	if err != nil {
		return res, fmt.Errorf("reconcile: %w", err)
	}
	for _, s := range ended {
		res.Expired++
		if d.Bus != nil {
			if err := d.Bus.Publish(ctx, events.FromSession(events.TypeStatus, s)); err != nil {
				d.Log.WarnContext(ctx, "reconcile: publish event", "session_id", s.SessionID, "error", err)
			}
		}
	}

	gaps, err := d.Store.Unhosted(ctx, Limit)
	if err != nil {
		return res, fmt.Errorf("reconcile: %w", err)
	}
	for _, s := range gaps {
		var (
			j   tasks.Job
			err error
			ctr *int
		)
		switch {
		case s.DesiredState == store.DesiredGone:
			j, err = tasks.NewDisconnect(s.SessionID, "reconcile", queue.ForSession(s))
			ctr = &res.Disconnects
		case s.DeviceJID == nil:
			// Pairing cannot move between processes (the unpaired keys live
			// in the lost client's memory), so it starts over: a new QR.
			j, err = tasks.NewCreate(s.SessionID, s.LeaseEpoch, "reconcile")
			ctr = &res.Creates
		default:
			j, err = tasks.NewRestore(s.SessionID, s.LeaseEpoch, "lease_expired")
			ctr = &res.Restores
		}
		if err != nil {
			return res, fmt.Errorf("reconcile: %w", err)
		}
		r, err := d.Enqueuer.Enqueue(ctx, j, false)
		if err != nil {
			return res, fmt.Errorf("reconcile: session %s: %w", s.SessionID, err)
		}
		if r == queue.Enqueued {
			*ctr++
		} else {
			res.AlreadyQueued++
		}
	}

	if err := reconcileMessages(ctx, d, &res); err != nil {
		return res, err
	}

	n, err := d.Enqueuer.ReapWorkerQueues(ctx, d.Log)
	if err != nil {
		// Hygiene only: the gaps above are already covered.
		d.Log.WarnContext(ctx, "reconcile: reap worker queues", "error", err)
	}
	res.ReapedQueues = n

	if d.MaxMoves > 0 {
		moves, err := Rebalance(ctx, d)
		if err != nil {
			// Balance is an optimisation; every session is hosted either way.
			d.Log.WarnContext(ctx, "reconcile: rebalance", "error", err)
		}
		res.Moves = moves
	}
	return res, nil
}

// reconcileMessages closes the outbox's gaps: queued messages that can no
// longer go out fail (session_ended, expired), and every hosted session with
// queued messages gets a wake-up on its host's queue. The wake-up's id names
// the oldest queued message, so while one is pending no second is added.
func reconcileMessages(ctx context.Context, d Deps, res *Result) error {
	ttl := d.MessageTTL
	if ttl <= 0 {
		ttl = time.Hour
	}
	failed, err := d.Store.FailStranded(ctx, ttl, Limit)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	res.MessagesFailed = len(failed)
	for _, m := range failed {
		if d.Bus != nil {
			if err := d.Bus.Publish(ctx, events.FromMessage(events.TypeMessageStatus, m)); err != nil {
				d.Log.WarnContext(ctx, "reconcile: publish event", "session_id", m.SessionID, "error", err)
			}
		}
	}
	waiting, err := d.Store.SessionsWithQueued(ctx, Limit)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	for _, o := range waiting {
		if !o.LeaseLive || o.WorkerID == nil {
			continue // its next host drains the outbox when it claims it
		}
		q, err := tasks.WorkerQueue(*o.WorkerID)
		if err != nil {
			return fmt.Errorf("reconcile: %w", err)
		}
		j, err := tasks.NewSend(o.SessionID, o.Oldest, q)
		if err != nil {
			return fmt.Errorf("reconcile: %w", err)
		}
		r, err := d.Enqueuer.Enqueue(ctx, j, false)
		if err != nil {
			return fmt.Errorf("reconcile: wake sender of %s: %w", o.SessionID, err)
		}
		if r == queue.Enqueued {
			res.SendersWoken++
		}
	}
	return nil
}

// serverActive is the status asynq publishes for a server that takes
// tasks; a server that received SIGTERM is listed as "stopped" until it
// exits.
const serverActive = "active"

// Rebalance evens out how many sessions each running worker hosts. Sessions
// never move back on their own: after a rolling deploy (each worker in turn
// hands its sessions to the others) nearly all of them would sit on the
// worker restarted last. Rebalance asks the most loaded workers to hand up
// to d.MaxMoves connected sessions to the least loaded ones, through a
// session:handoff task on the donor's own queue; the donor disconnects
// without logging out, releases the lease and enqueues the restore on the
// receiver's queue, exactly as in a graceful shutdown, so the user sees a
// reconnect of well under a second and never a QR. A worker is a donor only
// when it holds more than its fair share (ceil(total/workers)) and at least
// two more than the least loaded one, so a balanced cluster stays still.
func Rebalance(ctx context.Context, d Deps) (int, error) {
	running, err := d.Enqueuer.Workers()
	if err != nil {
		return 0, err
	}
	counts := map[string]int{}
	for _, w := range running {
		// A worker shutting down stays listed as "stopped" while it hands
		// its sessions off; its count falls towards zero, which would make
		// it the favourite receiver of sessions it can no longer take.
		if w.Active {
			counts[w.ID] = 0
		}
	}
	if len(counts) < 2 {
		return 0, nil
	}
	hosted, err := d.Store.HostedCounts(ctx)
	if err != nil {
		return 0, err
	}
	total := 0
	for id := range counts {
		counts[id] = hosted[id]
		total += hosted[id]
	}
	fair := (total + len(counts) - 1) / len(counts)

	workers := make([]string, 0, len(counts))
	for id := range counts {
		workers = append(workers, id)
	}
	// The most loaded first; ties by id, so every run decides alike.
	sort.Slice(workers, func(i, j int) bool {
		if counts[workers[i]] != counts[workers[j]] {
			return counts[workers[i]] > counts[workers[j]]
		}
		return workers[i] < workers[j]
	})
	receiver := func() string {
		best := ""
		for _, id := range workers {
			if counts[id] < fair && (best == "" || counts[id] < counts[best]) {
				best = id
			}
		}
		return best
	}

	moves := 0
	for _, donor := range workers {
		excess := counts[donor] - fair
		if excess <= 0 || moves >= d.MaxMoves {
			break
		}
		if to := receiver(); to == "" || counts[donor]-counts[to] < 2 {
			continue
		}
		ids, err := d.Store.Movable(ctx, donor, min(excess, d.MaxMoves-moves))
		if err != nil {
			return moves, err
		}
		for _, sid := range ids {
			to := receiver()
			if to == "" || counts[donor]-counts[to] < 2 {
				break
			}
			j, err := tasks.NewHandoff(sid, donor, to)
			if err != nil {
				return moves, err
			}
			r, err := d.Enqueuer.Enqueue(ctx, j, false)
			if err != nil {
				return moves, fmt.Errorf("session %s: %w", sid, err)
			}
			counts[donor]--
			counts[to]++
			if r == queue.Enqueued {
				moves++
			}
		}
	}
	if moves > 0 {
		d.Log.InfoContext(ctx, "rebalancing: sessions asked to move to less loaded workers",
			"moves", moves, "workers", len(counts), "sessions", total, "fair_share", fair)
	}
	return moves, nil
}
