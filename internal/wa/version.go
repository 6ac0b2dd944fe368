package wa

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.mau.fi/whatsmeow"
	wastore "go.mau.fi/whatsmeow/store"
)

// Versions holds the WhatsApp web client version this worker's clients
// announce, and fetches the current one when asked.
//
// WhatsApp refuses clients older than the version it currently wants (405,
// whatsmeow's ClientOutdated), so a version compiled into the pinned
// whatsmeow goes stale after a few weeks. whatsmeow.GetLatestVersion reads
// the current one from the web client's page. Why not store.SetWAVersion:
// in the pinned whatsmeow it updates only the registration hash, not the
// version in the login payload (BaseClientPayload.UserAgent.AppVersion is
// captured once, at package init), and it writes process globals that
// connecting clients read without a lock. Host.NewClient therefore puts
// Current into each client's payload itself (Client.GetClientPayload).
type Versions struct {
	cur   atomic.Pointer[wastore.WAVersionContainer]
	fetch func(context.Context) (wastore.WAVersionContainer, error) // nil: never fetch
	log   *slog.Logger
	// observe is told the outcome of every fetch ("ok", "changed",
	// "error") for the worker's metrics; may be nil.
	observe func(outcome string, v wastore.WAVersionContainer)

	mu        sync.Mutex // one fetch at a time
	lastFetch time.Time  // when the last fetch ended, by the monotonic clock
}

// VersionOptions configure Versions.
type VersionOptions struct {
	// Pinned, when not zero, is announced always and nothing is fetched
	// (WA_VERSION).
	Pinned wastore.WAVersionContainer
	// Fetch turns fetching on. Off, the version compiled into whatsmeow
	// (or Pinned) is announced.
	Fetch bool
	// URL is the page to read instead of WhatsApp's own (WA_VERSION_URL);
	// empty reads https://web.whatsapp.com.
	URL string
	// Transport is the network path the clients use (their proxy); nil
	// means a direct connection.
	Transport http.RoundTripper
	// Timeout bounds one fetch; default 15s.
	Timeout time.Duration
	Log     *slog.Logger
	Observe func(outcome string, v wastore.WAVersionContainer)
}

// NewVersions starts from opts.Pinned or the version compiled into
// whatsmeow; call Refresh to fetch the current one.
func NewVersions(opts VersionOptions) *Versions {
	v := &Versions{log: opts.Log, observe: opts.Observe}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	start := wastore.GetWAVersion()
	if !opts.Pinned.IsZero() {
		start = opts.Pinned
	}
	v.cur.Store(&start)
	if opts.Pinned.IsZero() && opts.Fetch {
		client := versionHTTPClient(opts.URL, opts.Transport, opts.Timeout)
		v.fetch = func(ctx context.Context) (wastore.WAVersionContainer, error) {
			got, err := whatsmeow.GetLatestVersion(ctx, client)
			if err != nil {
				return wastore.WAVersionContainer{}, err
			}
			return *got, nil
		}
	}
	return v
}

// versionHTTPClient is the client GetLatestVersion uses. whatsmeow reads a
// fixed URL; with rawURL set, the transport sends that request to rawURL
// instead, so the parsing stays whatsmeow's own.
func versionHTTPClient(rawURL string, base http.RoundTripper, timeout time.Duration) *http.Client {
	if base == nil {
		base = directTransport()
	}
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	rt := base
	if rawURL != "" {
		if u, err := url.Parse(rawURL); err == nil {
			rt = &redirectTo{url: u, base: base}
		}
	}
	return &http.Client{Transport: rt, Timeout: timeout}
}

// redirectTo sends every request to one URL.
type redirectTo struct {
	url  *url.URL
	base http.RoundTripper
}

func (r *redirectTo) RoundTrip(req *http.Request) (*http.Response, error) {
	out := req.Clone(req.Context())
	u := *r.url
	out.URL = &u
	out.Host = u.Host
	return r.base.RoundTrip(out)
}

// Current is the version clients announce now.
func (v *Versions) Current() wastore.WAVersionContainer { return *v.cur.Load() }

// Fetches reports whether this Versions ever fetches (not pinned, not off).
func (v *Versions) Fetches() bool { return v.fetch != nil }

// Refresh fetches the current version and adopts it. A failure keeps the
// last known version (logged, and observed as "error"). changed says
// whether the version clients announce is now different from seen.
//
// Many sessions ask at once when WhatsApp raises its minimum (every client
// gets 405): fetches are serialised, and a fetch that ended less than
// minAge ago is not repeated; the callers behind it get its answer.
func (v *Versions) Refresh(ctx context.Context, seen wastore.WAVersionContainer, minAge time.Duration) (changed bool, err error) {
	if v.fetch == nil {
		return v.Current() != seen, nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if cur := v.Current(); cur != seen || (!v.lastFetch.IsZero() && time.Since(v.lastFetch) < minAge) {
		return cur != seen, nil
	}
	got, err := v.fetch(ctx)
	v.lastFetch = time.Now()
	if err != nil {
		v.observeOutcome("error", v.Current())
		v.log.Warn("client version fetch failed; keeping the last known version", "version", v.Current().String(), "error", err)
		return false, fmt.Errorf("wa: fetch client version: %w", err)
	}
	old := v.Current()
	if got == old {
		v.observeOutcome("ok", got)
		v.log.Info("client version is current", "version", got.String())
		return got != seen, nil
	}
	v.cur.Store(&got)
	v.observeOutcome("changed", got)
	v.log.Info("client version updated", "version", got.String(), "previous", old.String())
	return got != seen, nil
}

func (v *Versions) observeOutcome(outcome string, cur wastore.WAVersionContainer) {
	if v.observe != nil {
		v.observe(outcome, cur)
	}
}

// Run refreshes the version every interval until ctx ends. The first
// refresh happens at once; start-up never waits for it (clients connecting
// meanwhile announce the last known version and, if WhatsApp refuses it,
// ask again through ClientOutdated).
func (v *Versions) Run(ctx context.Context, every time.Duration) {
	if v.fetch == nil {
		return
	}
	for {
		_, _ = v.Refresh(ctx, v.Current(), 0)
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// ParseVersion reads "2.3000.1031080782"; "" is the zero version.
func ParseVersion(s string) (wastore.WAVersionContainer, error) {
	var v wastore.WAVersionContainer
	if strings.TrimSpace(s) == "" {
		return v, nil
	}
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 3 {
		return v, fmt.Errorf("version %q is not three dot-separated numbers", s)
	}
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return v, fmt.Errorf("version %q: %w", s, err)
		}
		v[i] = uint32(n)
	}
	return v, nil
}
