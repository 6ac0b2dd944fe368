package waemu

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	waBinary "go.mau.fi/whatsmeow/binary"
	wastore "go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"

	"wasessions/internal/wa"
)

// The real server's refusals, switchable at run time, so the service's
// handling of them can be tested without WhatsApp:
//
//   - a minimum client version: an older client gets failure 405, which
//     whatsmeow reports as ClientOutdated (login and pairing alike);
//   - a temporary ban of one device until an instant: failure 402 with the
//     seconds left, whatsmeow's TemporaryBan;
//   - a burst of failure 503 for the next N logins (ServiceUnavailable,
//     which whatsmeow retries by itself);
//   - the version document: the web client's page carrying
//     "client_revision":N, which whatsmeow.GetLatestVersion parses, served
//     by the control API at GET /web so a worker can read the version the
//     emulator currently wants.
//
// It also remembers the address each device's last login came from, so a
// test can see that a client connected through a proxy.

// Further connect failure reasons (whatsmeow events.ConnectFailureReason).
const (
	failureTempBanned     = 402
	failureClientOutdated = 405
)

// refusals is the emulator's refusal state; its own lock keeps it apart
// from the protocol state.
type refusals struct {
	mu          sync.Mutex
	minVersion  wastore.WAVersionContainer // zero: any version is accepted
	served      wastore.WAVersionContainer // the version the document announces
	bans        map[string]ban             // device JID → ban
	unavailable int                        // next logins answered 503
	loginFrom   map[string]string          // device JID → remote address of its last login

	outdated, banned, burst int64
}

type ban struct {
	until time.Time
	code  int
}

// RefusalStats count the refusals sent since start.
type RefusalStats struct {
	Outdated    int64 `json:"outdated"`
	Banned      int64 `json:"banned"`
	Unavailable int64 `json:"unavailable"`
}

func (r *refusals) init() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bans == nil {
		r.bans = map[string]ban{}
		r.loginFrom = map[string]string{}
	}
}

// SetMinVersion makes the emulator refuse clients announcing a version
// below v with failure 405; the zero version accepts every client.
func (s *Server) SetMinVersion(v wastore.WAVersionContainer) {
	s.ref.init()
	s.ref.mu.Lock()
	s.ref.minVersion = v
	s.ref.mu.Unlock()
	s.log.Info("minimum client version set", "version", v.String())
	if v.IsZero() {
		return
	}
	// Live clients below the minimum are sent away, as when WhatsApp
	// retires a version: their next login is refused with 405.
	s.mu.Lock()
	var old []*conn
	for _, c := range s.live {
		if announcedVersion(c).LessThan(v) {
			old = append(old, c)
		}
	}
	s.mu.Unlock()
	for _, c := range old {
		c.close()
	}
}

func announcedVersion(c *conn) wastore.WAVersionContainer {
	av := c.hs.payload.GetUserAgent().GetAppVersion()
	return wastore.WAVersionContainer{av.GetPrimary(), av.GetSecondary(), av.GetTertiary()}
}

// SetServedVersion sets the version the document at GET /web announces;
// the zero version announces the one compiled into whatsmeow.
func (s *Server) SetServedVersion(v wastore.WAVersionContainer) {
	s.ref.init()
	s.ref.mu.Lock()
	s.ref.served = v
	s.ref.mu.Unlock()
}

// ServedVersion is the version the document announces.
func (s *Server) ServedVersion() wastore.WAVersionContainer {
	s.ref.mu.Lock()
	defer s.ref.mu.Unlock()
	if s.ref.served.IsZero() {
		return wastore.GetWAVersion()
	}
	return s.ref.served
}

// Ban refuses logins of device jid with failure 402 for d (d <= 0 lifts
// the ban); code is the ban reason whatsmeow reports (TempBanReason).
func (s *Server) Ban(jid string, d time.Duration, code int) {
	s.ref.init()
	s.ref.mu.Lock()
	if d <= 0 {
		delete(s.ref.bans, jid)
	} else {
		s.ref.bans[jid] = ban{until: time.Now().Add(d), code: code}
	}
	s.ref.mu.Unlock()
	s.log.Info("device ban set", "jid", jid, "for", d.String())
	if d > 0 {
		// A banned device's live connection ends, as WhatsApp's does.
		s.mu.Lock()
		c := s.live[jid]
		s.mu.Unlock()
		if c != nil {
			c.close()
		}
	}
}

// RefuseNextLogins answers the next n logins with failure 503.
func (s *Server) RefuseNextLogins(n int) {
	s.ref.init()
	s.ref.mu.Lock()
	s.ref.unavailable = max(n, 0)
	s.ref.mu.Unlock()
}

// LoginFrom is the remote address the last login of device jid came from
// ("" if it never logged in).
func (s *Server) LoginFrom(jid string) string {
	s.ref.mu.Lock()
	defer s.ref.mu.Unlock()
	return s.ref.loginFrom[jid]
}

// RefusalStats reports the refusals sent so far.
func (s *Server) RefusalStats() RefusalStats {
	s.ref.mu.Lock()
	defer s.ref.mu.Unlock()
	return RefusalStats{Outdated: s.ref.outdated, Banned: s.ref.banned, Unavailable: s.ref.burst}
}

// refusal decides whether a connection that completed the handshake is
// refused, and with which failure node.
func (s *Server) refusal(c *conn) (waBinary.Node, bool) {
	s.ref.init()
	p := c.hs.payload
	announced := announcedVersion(c)
	login := p.GetDevicePairingData() == nil && p.Username != nil
	jid := ""
	if login {
		jid = types.NewADJID(strconv.FormatUint(p.GetUsername(), 10), 0, uint8(p.GetDevice())).String()
	}

	r := &s.ref
	r.mu.Lock()
	defer r.mu.Unlock()
	if jid != "" {
		r.loginFrom[jid] = c.remote
	}
	fail := func(reason int, attrs waBinary.Attrs) (waBinary.Node, bool) {
		if attrs == nil {
			attrs = waBinary.Attrs{}
		}
		attrs["reason"] = reason
		attrs["location"] = "emu"
		c.log.Info("connection refused", "reason", reason, "jid", jid, "version", announced.String())
		return waBinary.Node{Tag: "failure", Attrs: attrs}, true
	}
	if !r.minVersion.IsZero() && announced.LessThan(r.minVersion) {
		r.outdated++
		return fail(failureClientOutdated, nil)
	}
	if !login {
		return waBinary.Node{}, false
	}
	if b, ok := r.bans[jid]; ok {
		left := time.Until(b.until)
		if left > 0 {
			r.banned++
			// Whole seconds, rounded up: a client that waits what it is told
			// must not come back before the ban ends.
			return fail(failureTempBanned, waBinary.Attrs{"code": b.code, "expire": int(math.Ceil(left.Seconds()))})
		}
		delete(r.bans, jid)
	}
	if r.unavailable > 0 {
		r.unavailable--
		r.burst++
		return fail(failureServiceUnavailable, nil)
	}
	return waBinary.Node{}, false
}

// refusalRoutes adds the refusal switches to the control API.
func (s *Server) refusalRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /web", s.handleVersionDocument)
	mux.HandleFunc("PUT /refusals/min-version", s.handleMinVersion)
	mux.HandleFunc("PUT /refusals/served-version", s.handleServedVersion)
	mux.HandleFunc("POST /refusals/ban", s.handleBan)
	mux.HandleFunc("POST /refusals/unavailable", s.handleUnavailable)
	mux.HandleFunc("GET /refusals/stats", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.RefusalStats())
	})
	mux.HandleFunc("GET /logins/{jid}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"jid": r.PathValue("jid"), "remote": s.LoginFrom(r.PathValue("jid"))})
	})
}

// handleVersionDocument serves what whatsmeow.GetLatestVersion reads from
// web.whatsapp.com: a page with the web client's revision in it.
func (s *Server) handleVersionDocument(w http.ResponseWriter, _ *http.Request) {
	v := s.ServedVersion()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprintf(w, "<!DOCTYPE html><html><head><script>self.__bootstrap={\"client_revision\":%d,\"server_revision\":%d}</script></head><body></body></html>\n", v[2], v[2])
}

type versionBody struct {
	Version string `json:"version"`
}

func (s *Server) readVersion(w http.ResponseWriter, r *http.Request) (wastore.WAVersionContainer, bool) {
	var req versionBody
	if !readJSON(w, r, &req) {
		return wastore.WAVersionContainer{}, false
	}
	v, err := wa.ParseVersion(req.Version)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{err.Error()})
		return v, false
	}
	return v, true
}

func (s *Server) handleMinVersion(w http.ResponseWriter, r *http.Request) {
	if v, ok := s.readVersion(w, r); ok {
		s.SetMinVersion(v)
		writeJSON(w, http.StatusOK, versionBody{v.String()})
	}
}

func (s *Server) handleServedVersion(w http.ResponseWriter, r *http.Request) {
	if v, ok := s.readVersion(w, r); ok {
		s.SetServedVersion(v)
		writeJSON(w, http.StatusOK, versionBody{s.ServedVersion().String()})
	}
}

func (s *Server) handleBan(w http.ResponseWriter, r *http.Request) {
	var req struct {
		JID     string   `json:"jid"`
		Seconds *float64 `json:"seconds"`
		Code    int      `json:"code"`
	}
	if !readJSON(w, r, &req) || !require(w, req.JID != "" && req.Seconds != nil && *req.Seconds >= 0 && *req.Seconds <= 366*24*3600, "jid and seconds (0 lifts the ban, at most a year) are required") {
		return
	}
	if _, err := s.Device(req.JID); err != nil {
		writeError(w, err)
		return
	}
	d := time.Duration(*req.Seconds * float64(time.Second))
	s.Ban(req.JID, d, req.Code)
	writeJSON(w, http.StatusOK, map[string]any{"jid": req.JID, "banned": d > 0, "seconds": *req.Seconds})
}

func (s *Server) handleUnavailable(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Count *int `json:"count"`
	}
	if !readJSON(w, r, &req) || !require(w, req.Count != nil && *req.Count >= 0 && *req.Count <= 1_000_000, "count (0 to 1000000) is required") {
		return
	}
	s.RefuseNextLogins(*req.Count)
	writeJSON(w, http.StatusOK, map[string]any{"count": *req.Count})
}
