package httpapi

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"wasessions/internal/ratelimit"
	"wasessions/internal/reqparse"
	"wasessions/internal/store"
)

// Limits are the request rate limits, counted in Redis so that every API
// replica shares them (Deps.Limiter). A zero Limit is off.
type Limits struct {
	// Create caps new sessions per user (RATE_LIMIT_CREATE): create →
	// disconnect → create in a loop costs a worker a whatsmeow client, and
	// WhatsApp a pairing, each time.
	Create ratelimit.Limit
	// Disconnect caps disconnect requests per user (RATE_LIMIT_DISCONNECT).
	Disconnect ratelimit.Limit
	// PairingPhone caps new sessions asking for a pairing code per phone
	// number, whoever asks (RATE_LIMIT_PAIRING_PHONE): each one makes
	// WhatsApp send that phone a "link a device" notification, so without
	// it any user could harass any number, and get the workers' addresses
	// banned for every tenant.
	PairingPhone ratelimit.Limit
	// Send caps POST /messages per user (RATE_LIMIT_SEND): every accepted
	// message is a row in Postgres until its retention ends, and sends
	// beyond what the session's pacing (SEND_RATE) can deliver within
	// MESSAGE_TTL only expire. Retries with an Idempotency-Key count too.
	Send ratelimit.Limit
}

// Names of the limits: in the 429's details and in the Redis keys.
const (
	limitCreate       = "create"
	limitDisconnect   = "disconnect"
	limitPairingPhone = "pairing_phone"
	limitSend         = "send"
)

// limitMessages say, for a 429, what the caller did too often.
var limitMessages = map[string]string{
	limitCreate:       "too many new sessions for this user",
	limitDisconnect:   "too many disconnect requests for this user",
	limitPairingPhone: "too many pairing codes requested for this phone number",
	limitSend:         "too many messages sent by this user",
}

// perUser limits the authenticated caller on its route to lim, counted
// under name. It goes after authenticate, so a new route is one line:
//
//	app.Post(wa+"/disconnect", s.authenticate, s.perUser(limitDisconnect, s.opts.Limits.Disconnect), s.disconnect)
//
// and its name gets a sentence in limitMessages.
func (s *server) perUser(name string, lim ratelimit.Limit) fiber.Handler {
	return func(c *fiber.Ctx) error {
		ctx := s.requestContext()
		if err := s.allow(ctx, limitCheck{name, identity(c).UserID, lim}); err != nil {
			return err
		}
		return c.Next()
	}
}

// limitNewSession applies the create limits to a create that will make a
// new session: per user, and per phone number when it asks for a pairing
// code. A create that returns the user's live session makes nothing and
// is not counted, so clients may retry creates freely (through an outage,
// for one). Two concurrent creates can both be counted while one session
// is made: the error is on the safe side.
func (s *server) limitNewSession(ctx context.Context, userID string, req reqparse.CreateSession) error {
	if s.deps.Limiter == nil || (s.opts.Limits.Create.Off() && (req.PhoneNumber == nil || s.opts.Limits.PairingPhone.Off())) {
		return nil
	}
	if _, err := s.deps.Store.LiveSession(ctx, userID); err == nil {
		return nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	checks := []limitCheck{{limitCreate, userID, s.opts.Limits.Create}}
	if req.PhoneNumber != nil {
		checks = append(checks, limitCheck{limitPairingPhone, *req.PhoneNumber, s.opts.Limits.PairingPhone})
	}
	return s.allow(ctx, checks...)
}

// limitCheckBudget bounds each rate-limit check. A healthy Redis answers
// in about a millisecond; one that does not answer within this is hung or
// gone, and since the check fails open, waiting longer would only hold the
// user's request (without it, go-redis's ReadTimeout of 5 s per attempt
// held a create or a send 10 s on a hung Redis, and the create then had no
// time left to record its session).
const limitCheckBudget = 300 * time.Millisecond

// limitCheck is one limit to count for one request: the limit's name, the
// key it is counted under (a user, a phone number) and the limit.
type limitCheck struct {
	name string
	key  string
	lim  ratelimit.Limit
}

// allow counts one event of each check, in order: nil when all are
// allowed, else a 429 with Retry-After for the first that is over. When
// Redis does not answer one within limitCheckBudget, the request is
// allowed without the rest (they would wait on the same outage) and one
// warning logged: a caller cannot take Redis down, and the routes keep
// their documented outage behaviour (a create still records its session;
// its task waits for Redis like any other). The warning names the limits,
// never their keys (a phone number).
func (s *server) allow(ctx context.Context, checks ...limitCheck) error {
	for i, ch := range checks {
		if s.deps.Limiter == nil || ch.lim.Off() {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, limitCheckBudget)
		d, err := s.deps.Limiter.Allow(cctx, ch.name, ch.key, ch.lim)
		cancel()
		if err != nil {
			var unchecked []string
			for _, rest := range checks[i:] {
				if !rest.lim.Off() {
					unchecked = append(unchecked, rest.name)
				}
			}
			s.log.WarnContext(ctx, "rate limit not checked: Redis did not answer; allowing", "limits", unchecked, "error", err)
			return nil
		}
		if !d.Allowed {
			return tooMany(ch.name, ch.lim, d.RetryAfter)
		}
	}
	return nil
}

// tooMany is the 429 of a request over limit name.
func tooMany(name string, lim ratelimit.Limit, retryAfter time.Duration) error {
	secs := max(1, int(math.Ceil(retryAfter.Seconds())))
	return &apiError{Status: http.StatusTooManyRequests, Code: "rate_limited",
		Message: limitMessages[name] + " (at most " + strconv.Itoa(lim.N) + " per " + lim.Per.String() + "); retry in " + strconv.Itoa(secs) + " s",
		Details: fiber.Map{"limit": name, "retryAfterSeconds": secs},
		Header:  map[string]string{fiber.HeaderRetryAfter: strconv.Itoa(secs)}}
}
