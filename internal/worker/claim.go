package worker

import (
	"context"
	"errors"
	"time"

	"wasessions/internal/store"
)

// Why a claim held by holdClaim ended before its work did.
var (
	errClaimLost    = errors.New("claim lost: another worker claimed the session")
	errClaimExpired = errors.New("claim may have run out: it could not be extended in time")
)

// holdClaim keeps a claim alive that is not a hosting (the heartbeat
// renews only hosted sessions): a logout of an unhosted session connects
// and waits for WhatsApp twice, which can take longer than LEASE_TTL. It
// extends the lease every LEASE_TTL/3 and ends the returned context when
// the claim is fenced, or safetyMargin before it may run out by the local
// clock (validity counted from before each statement was sent, as the
// heartbeat does), so that the work stops before another worker can claim
// the session. sent is when the claim's statement was sent. The returned
// function ends the hold.
func (w *Worker) holdClaim(ctx context.Context, f store.Fence, sent time.Time) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	type extension struct {
		sent time.Time
		err  error
	}
	go func() {
		valid := sent.Add(w.cfg.LeaseTTL)
		expire := time.NewTimer(time.Until(valid.Add(-w.safetyMargin())))
		defer expire.Stop()
		renew := time.NewTicker(w.cfg.LeaseTTL / 3)
		defer renew.Stop()
		// Each extension runs on its own goroutine, so one stuck on a
		// hanging Postgres cannot hold up the expiry.
		results := make(chan extension, 1)
		inFlight := false
		for {
			select {
			case <-ctx.Done():
				return
			case <-expire.C:
				cancel(errClaimExpired)
				return
			case <-renew.C:
				if inFlight {
					continue
				}
				inFlight = true
				go func(at time.Time) {
					rctx, rcancel := context.WithTimeout(ctx, w.renewTimeout())
					defer rcancel()
					results <- extension{at, w.deps.Leases.ExtendClaim(rctx, f, w.cfg.LeaseTTL)}
				}(time.Now())
			case r := <-results:
				inFlight = false
				switch {
				case errors.Is(r.err, store.ErrFenced):
					cancel(errClaimLost)
					return
				case r.err == nil:
					if v := r.sent.Add(w.cfg.LeaseTTL); v.After(valid) {
						valid = v
						expire.Reset(time.Until(valid.Add(-w.safetyMargin())))
					}
				}
			}
		}
	}()
	return ctx, func() { cancel(nil) }
}
