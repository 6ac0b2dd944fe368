package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Refusals of Hub.Stream: the API answers them with 429.
var (
	// ErrUserStreams: the user already has HubOptions.PerUser streams open
	// on this process.
	ErrUserStreams = errors.New("events: too many event streams for this user")
	// ErrProcessStreams: this process already serves HubOptions.Total
	// streams.
	ErrProcessStreams = errors.New("events: too many event streams on this process")
	// ErrHubClosed: the hub was closed (the process is shutting down).
	ErrHubClosed = errors.New("events: hub closed")
)

// HubOptions bound what a Hub serves; zero values take the defaults.
type HubOptions struct {
	// PerUser caps one user's open streams on this process (default 5).
	PerUser int
	// Total caps the streams open on this process (default 2000).
	Total int
	// PendingMessages caps the message changes a listener holds for its
	// reader (default 1000); a reader that falls further behind is told
	// (Changes.Overflow) instead of the hub growing without bound.
	PendingMessages int
	// Probe is how long the subscription may stay silent before the hub
	// pings Redis over it; a ping unanswered for as long again means the
	// connection is dead (default 10s).
	Probe time.Duration
	// Log receives one line per subscription start and loss.
	Log *slog.Logger
}

// Hub is one process's single Redis subscription to every user's events
// (a pattern subscription on the bus's database-scoped channel prefix),
// fanned out in memory to the subscribers of each user. Before it, each
// event stream held its own pub/sub connection, so one token could open
// enough streams to exhaust Redis's maxclients and stop asynq for
// everyone; now the number of Redis connections does not depend on the
// number of streams, and the streams themselves are capped.
//
// A subscriber receives no event contents, only a signal that one of its
// user's sessions changed, or which of its user's messages reached which
// status: whatever can publish on Redis can forge an event, so the reader
// (the API) reads the session, or that status of that message, from
// Postgres, the source of truth, and shows that.
//
// The subscription starts with the first subscriber, and ends when its
// connection fails; every subscription then ends too (its C is closed), so
// each stream ends and its client reconnects and reads the current state
// afresh: nothing published while the hub was deaf is silently lost. The
// next Subscribe or Stream subscribes again.
type Hub struct {
	bus  *Bus
	opts HubOptions

	// subscribing serialises (re)subscribing: a one-slot semaphore rather
	// than a mutex, so that a caller waiting behind a subscription that
	// hangs on Redis gives up at its own deadline instead of queueing
	// behind it (every create and stream of the process would).
	subscribing chan struct{}

	mu      sync.Mutex
	ps      *redis.PubSub // nil while not subscribed
	cancel  context.CancelFunc
	users   map[string]map[*Listener]struct{}
	all     map[*Listener]struct{} // StreamAll's listeners: every user's changes
	streams map[string]int
	total   int
	closed  bool
}

// NewHub returns a hub on bus's client and channels; it subscribes when
// the first subscriber arrives. Close it on shutdown.
func NewHub(bus *Bus, opts HubOptions) *Hub {
	if opts.PerUser <= 0 {
		opts.PerUser = 5
	}
	if opts.Total <= 0 {
		opts.Total = 2000
	}
	if opts.PendingMessages <= 0 {
		opts.PendingMessages = 1000
	}
	if opts.Probe <= 0 {
		opts.Probe = 10 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Hub{bus: bus, opts: opts, subscribing: make(chan struct{}, 1),
		users: make(map[string]map[*Listener]struct{}), all: make(map[*Listener]struct{}), streams: make(map[string]int)}
}

// Listener signals changes of one user's sessions and messages.
type Listener struct {
	// C receives a value when one of the user's sessions or messages
	// changed; changes that come faster than they are read are coalesced
	// into one, and Take says what they were. C is closed when the
	// subscription ends: Close, the hub's connection lost, or Hub.Close.
	C <-chan struct{}

	c       chan struct{}
	hub     *Hub
	userID  string
	counted bool
	ended   bool // guarded by hub.mu

	// One user's listeners, guarded by hub.mu: what changed since the last
	// Take, and which message changes that holds (each is kept once).
	changes Changes
	seen    map[MessageChange]struct{}

	// StreamAll's listeners only, guarded by hub.mu: the sessions named by
	// the changes not yet taken, and whether more changed than are kept.
	every    bool
	pending  map[string]struct{}
	overflow bool
}

// MessageChange names a status one of the user's messages reached (an
// id and a status as published: to be looked up, never shown as is).
type MessageChange struct {
	MessageID string
	Status    string
}

// Changes is what happened since the last Take.
type Changes struct {
	// Session: one of the user's sessions changed.
	Session bool
	// Messages are the message changes announced, in order, each once.
	Messages []MessageChange
	// Overflow: more message changes came than HubOptions.PendingMessages
	// before the reader took them; those past the cap are not in Messages.
	Overflow bool
}

// Take returns the changes signalled since the last Take and forgets them
// (a listener of one user; StreamAll's use Changed).
func (s *Listener) Take() Changes {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	c := s.changes
	s.changes = Changes{}
	clear(s.seen)
	return c
}

// MaxPendingChanges is how many changed sessions a StreamAll listener
// keeps between two Changed calls; beyond it Changed reports an overflow
// (the reader reads everything again) instead of growing without bound.
const MaxPendingChanges = 256

// Changed returns the sessions named by the changes signalled since the
// last call, and clears them. overflow means more sessions changed than
// MaxPendingChanges, or a change named no session: the reader must read
// everything again. The ids come from the published events, which anything
// able to publish on Redis can forge: read the sessions they name from the
// database and show that, never take them for a change itself. Only
// StreamAll's listeners collect them.
func (s *Listener) Changed() (sessionIDs []string, overflow bool) {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	for id := range s.pending {
		sessionIDs = append(sessionIDs, id)
	}
	overflow = s.overflow
	clear(s.pending)
	s.overflow = false
	return sessionIDs, overflow
}

// Close ends the subscription; it is safe to call more than once.
func (s *Listener) Close() {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.hub.endLocked(s)
}

// Subscribe signals userID's changes, uncounted by the stream caps: for a
// request that waits a bounded time for one change (a create waiting for
// its first QR code). It returns once the hub's Redis subscription is
// confirmed, so no change published after it returns is missed.
func (h *Hub) Subscribe(ctx context.Context, userID string) (*Listener, error) {
	return h.add(ctx, userID, false)
}

// Stream is Subscribe for a long-lived event stream, counted against the
// caps: ErrUserStreams or ErrProcessStreams when one is reached.
func (h *Hub) Stream(ctx context.Context, userID string) (*Listener, error) {
	return h.add(ctx, userID, true)
}

// StreamAll is Stream for an operator's view of every user's sessions
// (the admin dashboard's live updates): its listener is signalled on every
// user's change and collects the session ids the changes name (Changed).
// It is counted against the caps under key (the operator's user id), like
// that user's own streams.
func (h *Hub) StreamAll(ctx context.Context, key string) (*Listener, error) {
	if err := h.admit(key); err != nil {
		return nil, err
	}
	return h.addListener(ctx, key, true, true)
}

// Streams is the number of event streams open on this process.
func (h *Hub) Streams() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.total
}

func (h *Hub) add(ctx context.Context, userID string, counted bool) (*Listener, error) {
	return h.addListener(ctx, userID, counted, false)
}

func (h *Hub) addListener(ctx context.Context, userID string, counted, every bool) (*Listener, error) {
	if counted && !every {
		// Refuse over the caps before touching Redis.
		if err := h.admit(userID); err != nil {
			return nil, err
		}
	}
	if err := h.ensure(ctx); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.closed:
		return nil, ErrHubClosed
	case h.ps == nil:
		// Lost between ensure and here: the caller retries like any outage.
		return nil, fmt.Errorf("events: subscribe: %w", redis.ErrClosed)
	}
	if counted {
		if err := h.admitLocked(userID); err != nil {
			return nil, err
		}
		h.streams[userID]++
		h.total++
	}
	c := make(chan struct{}, 1)
	s := &Listener{C: c, c: c, hub: h, userID: userID, counted: counted}
	if every {
		s.every, s.pending = true, make(map[string]struct{})
		h.all[s] = struct{}{}
		return s, nil
	}
	set := h.users[userID]
	if set == nil {
		set = make(map[*Listener]struct{})
		h.users[userID] = set
	}
	set[s] = struct{}{}
	return s, nil
}

func (h *Hub) admit(userID string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.admitLocked(userID)
}

func (h *Hub) admitLocked(userID string) error {
	switch {
	case h.streams[userID] >= h.opts.PerUser:
		return ErrUserStreams
	case h.total >= h.opts.Total:
		return ErrProcessStreams
	}
	return nil
}

// endLocked removes s and closes its C, once.
func (h *Hub) endLocked(s *Listener) {
	if s.ended {
		return
	}
	s.ended = true
	close(s.c)
	if s.every {
		delete(h.all, s)
	} else if set := h.users[s.userID]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(h.users, s.userID)
		}
	}
	if s.counted {
		if h.streams[s.userID]--; h.streams[s.userID] <= 0 {
			delete(h.streams, s.userID)
		}
		h.total--
	}
}

// ensure subscribes, unless the hub is subscribed already.
func (h *Hub) ensure(ctx context.Context) error {
	h.mu.Lock()
	up, closed := h.ps != nil, h.closed
	h.mu.Unlock()
	if closed {
		return ErrHubClosed
	}
	if up {
		return nil
	}
	select {
	case h.subscribing <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("events: subscribe: %w", ctx.Err())
	}
	defer func() { <-h.subscribing }()
	h.mu.Lock()
	up = h.ps != nil
	h.mu.Unlock()
	if up {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		// A pub/sub read has no ReadTimeout: its only bound is the
		// context's deadline, so without one the confirmation below
		// would wait forever on a Redis that accepted the connection and
		// never answers. An unanswered Probe is what the receive loop
		// calls a dead connection, too.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.opts.Probe)
		defer cancel()
	}
	pattern := h.bus.prefix + "*"
	ps := h.bus.rdb.PSubscribe(ctx, pattern)
	if _, err := ps.Receive(ctx); err != nil { // the psubscribe confirmation
		ps.Close()
		return fmt.Errorf("events: subscribe: %w", err)
	}
	loopCtx, cancel := context.WithCancel(context.Background())
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		cancel()
		ps.Close()
		return ErrHubClosed
	}
	h.ps, h.cancel = ps, cancel
	h.mu.Unlock()
	h.opts.Log.Info("event hub subscribed", "pattern", pattern)
	go h.receive(loopCtx, ps)
	return nil
}

// receive reads the subscription until it fails or the hub closes.
func (h *Hub) receive(ctx context.Context, ps *redis.PubSub) {
	awaitingPong := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, h.opts.Probe)
		if err != nil {
			if ctx.Err() != nil {
				return // Close
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !awaitingPong {
				if err = ps.Ping(ctx); err == nil {
					awaitingPong = true
					continue
				}
			}
			h.lost(ps, err)
			return
		}
		awaitingPong = false
		if m, ok := msg.(*redis.Message); ok {
			h.dispatch(m)
		}
	}
}

// dispatch signals the subscribers of the user the channel names. The
// payload must name the same user (a message that does not is dropped);
// nothing else in it is passed on but the session, or for a message event
// the message id and status, the reader is to look up. StreamAll's
// listeners (sessions only) are not told of message events.
func (h *Hub) dispatch(m *redis.Message) {
	userID, ok := strings.CutPrefix(m.Channel, h.bus.prefix)
	if !ok || userID == "" {
		return
	}
	var w struct {
		UserID    string `json:"userId"`
		SessionID string `json:"sessionId"`
		Type      string `json:"type"`
		MessageID string `json:"messageId"`
		Status    string `json:"status"`
	}
	if err := json.Unmarshal([]byte(m.Payload), &w); err != nil || w.UserID != userID {
		return
	}
	isMessage := w.Type == TypeMessageReceived || w.Type == TypeMessageStatus
	if isMessage && (w.MessageID == "" || w.Status == "") {
		return
	}
	mc := MessageChange{MessageID: w.MessageID, Status: w.Status}
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.users[userID] {
		switch {
		case !isMessage:
			s.changes.Session = true
		case len(s.changes.Messages) >= h.opts.PendingMessages:
			s.changes.Overflow = true
		default:
			if s.seen == nil {
				s.seen = make(map[MessageChange]struct{})
			}
			if _, dup := s.seen[mc]; !dup {
				s.seen[mc] = struct{}{}
				s.changes.Messages = append(s.changes.Messages, mc)
			}
		}
		signal(s)
	}
	if isMessage {
		return
	}
	for s := range h.all {
		switch {
		case s.overflow:
		case w.SessionID == "" || len(w.SessionID) > maxSessionIDLen || len(s.pending) >= MaxPendingChanges:
			s.overflow = true
			clear(s.pending)
		default:
			s.pending[w.SessionID] = struct{}{}
		}
		signal(s)
	}
}

// maxSessionIDLen is the session_id column's size: a longer id names no
// session.
const maxSessionIDLen = 255

// signal wakes s's reader, unless a signal is already pending (coalesced).
func signal(s *Listener) {
	select {
	case s.c <- struct{}{}:
	default:
	}
}

// lost ends the subscription after its connection failed, and every
// subscriber with it.
func (h *Hub) lost(ps *redis.PubSub, err error) {
	h.mu.Lock()
	if h.ps == ps {
		h.ps = nil
		h.cancel()
	}
	n := h.endAllLocked()
	h.mu.Unlock()
	ps.Close()
	h.opts.Log.Warn("event hub: Redis subscription lost; ending every event stream", "error", err, "streams_ended", n)
}

func (h *Hub) endAllLocked() int {
	n := 0
	for _, set := range h.users {
		for s := range set {
			h.endLocked(s)
			n++
		}
	}
	return n
}

// Close ends the subscription and every subscriber; later calls to
// Subscribe and Stream fail with ErrHubClosed.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	ps := h.ps
	h.ps = nil
	if h.cancel != nil {
		h.cancel()
	}
	h.endAllLocked()
	h.mu.Unlock()
	if ps != nil {
		ps.Close()
	}
}
