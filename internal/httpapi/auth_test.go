package httpapi_test

import (
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// jwtRoutes are every route that needs a bearer token.
var jwtRoutes = []struct{ method, path string }{
	{"POST", "/api/integrations/whatsapp/session"},
	{"GET", "/api/integrations/whatsapp/qr"},
	{"GET", "/api/integrations/whatsapp/status"},
	{"POST", "/api/integrations/whatsapp/disconnect"},
	{"GET", "/api/integrations/whatsapp/events"},
	{"GET", "/api/integrations/sessions/stats"},
	{"POST", "/api/integrations/sessions/cleanup"},
	{"PUT", "/api/integrations/admin/sessions/x/proxy"},
}

func rawToken(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAuthMatrix(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	user := newUser()
	now := time.Now()
	good := func() jwt.MapClaims {
		return jwt.MapClaims{"sub": user, "exp": now.Add(time.Hour).Unix(), "iss": testIssuer, "aud": testAudience, "role": "admin"}
	}
	with := func(k string, v any) jwt.MapClaims {
		c := good()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	hs256 := func(c jwt.MapClaims) string {
		return "Bearer " + rawToken(t, jwt.SigningMethodHS256, []byte(testSecret), c)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, header, code string
	}{
		{"missing header", "", "token_missing"},
		{"non-bearer scheme", "Basic YWRtaW46c2VjcmV0", "token_malformed"},
		{"bearer without token", "Bearer", "token_malformed"},
		{"malformed token", "Bearer abc.def.ghi", "token_malformed"},
		{"not a jwt at all", "Bearer hello", "token_malformed"},
		{"wrong signature", "Bearer " + rawToken(t, jwt.SigningMethodHS256, []byte(testSecret+"-other"), good()), "token_invalid"},
		{"alg none", "Bearer " + rawToken(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good()), "token_invalid"},
		{"HS512 with the right secret", "Bearer " + rawToken(t, jwt.SigningMethodHS512, []byte(testSecret), good()), "token_invalid"},
		{"RS256", "Bearer " + rawToken(t, jwt.SigningMethodRS256, rsaKey, good()), "token_invalid"},
		{"expired", hs256(with("exp", now.Add(-time.Minute).Unix())), "token_expired"},
		{"missing exp", hs256(with("exp", nil)), "token_claims_invalid"},
		{"wrong issuer", hs256(with("iss", "someone-else")), "token_claims_invalid"},
		{"wrong audience", hs256(with("aud", "another-api")), "token_claims_invalid"},
		{"sub not a uuid", hs256(with("sub", "alice")), "token_claims_invalid"},
	}
	for _, rt := range jwtRoutes {
		for _, tc := range cases {
			t.Run(rt.method+" "+rt.path+"/"+tc.name, func(t *testing.T) {
				h := map[string]string{}
				if tc.header != "" {
					h["Authorization"] = tc.header
				}
				r := e.do(req{method: rt.method, path: rt.path, header: h})
				r.wantError(t, http.StatusUnauthorized, tc.code)
				if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer ") {
					t.Fatalf("WWW-Authenticate = %q", r.Header.Get("WWW-Authenticate"))
				}
				if tok := strings.TrimPrefix(tc.header, "Bearer "); len(tok) > 8 && strings.Contains(string(r.Body), tok) {
					t.Fatal("the response echoes the token")
				}
			})
		}
		t.Run(rt.method+" "+rt.path+"/valid", func(t *testing.T) {
			if rt.path == "/api/integrations/whatsapp/events" {
				return // a stream: covered through a real listener in events_test.go
			}
			r := e.do(req{method: rt.method, path: rt.path, header: map[string]string{"Authorization": hs256(good())}})
			if r.Status == http.StatusUnauthorized {
				t.Fatalf("valid token refused: %s", r.Body)
			}
		})
	}
	// Tokens never reach the log.
	tok := rawToken(t, jwt.SigningMethodHS256, []byte(testSecret), good())
	e.do(req{method: "GET", path: "/api/integrations/whatsapp/status", token: tok})
	if strings.Contains(e.logs.String(), tok) || strings.Contains(e.logs.String(), testSecret) {
		t.Fatal("a token or the secret was logged")
	}
}
