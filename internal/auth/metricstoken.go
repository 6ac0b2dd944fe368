package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"

	"wasessions/internal/reqparse"
)

// MetricsToken is METRICS_TOKEN, the static bearer token every program's
// /metrics asks for when it is set (the api's, on HTTP_ADDR or
// API_METRICS_ADDR, and a worker's, on METRICS_ADDR). Scrapers are not
// users: they carry no JWT. The zero MetricsToken asks for nothing.
type MetricsToken struct {
	set  bool
	want [sha256.Size]byte
}

// NewMetricsToken returns the check for token ("" for none).
func NewMetricsToken(token string) MetricsToken {
	if token == "" {
		return MetricsToken{}
	}
	return MetricsToken{set: true, want: sha256.Sum256([]byte(token))}
}

// Required reports whether a token is asked for.
func (t MetricsToken) Required() bool { return t.set }

// Allows reports whether an Authorization header value carries the token
// ("Bearer <token>", the scheme in any case). The comparison runs in
// constant time over hashes, so neither the token's content nor its
// length leaks through timing.
func (t MetricsToken) Allows(authorization string) bool {
	if !t.set {
		return true
	}
	got, ok := reqparse.Bearer(authorization)
	if !ok {
		return false
	}
	h := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(h[:], t.want[:]) == 1
}

// Protect serves next only to requests carrying the token; others get 401
// with a WWW-Authenticate challenge and a JSON error in the API's
// envelope.
func (t MetricsToken) Protect(next http.Handler) http.Handler {
	if !t.set {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if t.Allows(r.Header.Get("Authorization")) {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"success":false,"error":{"code":"metrics_unauthorized","message":"/metrics needs Authorization: Bearer <METRICS_TOKEN>"}}` + "\n"))
	})
}
