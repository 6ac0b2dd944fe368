package auth_test

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"wasessions/internal/auth"
)

const (
	secret = "0123456789abcdef0123456789abcdef-test"
	user   = "6f1c2d3e-4a5b-4c6d-8e7f-901234567890"
)

func sign(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// claims are a token's claims, changed one at a time.
type claims jwt.MapClaims

// with returns a copy of c with k set to v, or removed when v is nil.
func (c claims) with(k string, v any) claims {
	out := claims{}
	for kk, vv := range c {
		out[kk] = vv
	}
	if v == nil {
		delete(out, k)
	} else {
		out[k] = v
	}
	return out
}

func TestVerifyHeader(t *testing.T) {
	now := time.Now()
	exp := now.Add(time.Hour).Unix()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	good := jwt.MapClaims{"sub": user, "exp": exp, "iss": "iss-a", "aud": "aud-a"}
	with := func(k string, v any) claims { return claims(good).with(k, v) }
	hs := func(c claims) string {
		return "Bearer " + sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims(c))
	}
	unsignedNone := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good)
	// A token whose header says HS256 but whose payload was edited after
	// signing (sub swapped to another user).
	tampered := func() string {
		parts := strings.Split(sign(t, jwt.SigningMethodHS256, []byte(secret), good), ".")
		parts[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"11111111-2222-4333-8444-555555555555","exp":` + strconv.FormatInt(exp, 10) + `}`))
		return strings.Join(parts, ".")
	}()

	cases := []struct {
		name   string
		header string
		code   auth.Code // "" = accepted
		admin  bool
	}{
		{"valid", hs(claims(good)), "", false},
		{"valid lowercase scheme", "bearer " + sign(t, jwt.SigningMethodHS256, []byte(secret), good), "", false},
		{"valid admin", hs(with("role", "admin")), "", true},
		{"other role is no admin", hs(with("role", "Admin")), "", false},
		{"uppercase sub normalised", hs(with("sub", strings.ToUpper(user))), "", false},
		{"missing", "", auth.CodeMissing, false},
		{"blank", "   ", auth.CodeMissing, false},
		{"basic scheme", "Basic dXNlcjpwYXNz", auth.CodeMalformed, false},
		{"bearer without token", "Bearer ", auth.CodeMalformed, false},
		{"token without scheme", sign(t, jwt.SigningMethodHS256, []byte(secret), good), auth.CodeMalformed, false},
		{"garbage", "Bearer not.a.jwt", auth.CodeMalformed, false},
		{"two parts", "Bearer abc.def", auth.CodeMalformed, false},
		{"wrong secret", "Bearer " + sign(t, jwt.SigningMethodHS256, []byte(secret+"x"), good), auth.CodeInvalid, false},
		{"tampered payload", "Bearer " + tampered, auth.CodeInvalid, false},
		{"alg none", "Bearer " + unsignedNone, auth.CodeInvalid, false},
		{"HS512 with the right secret", "Bearer " + sign(t, jwt.SigningMethodHS512, []byte(secret), good), auth.CodeInvalid, false},
		{"RS256", "Bearer " + sign(t, jwt.SigningMethodRS256, rsaKey, good), auth.CodeInvalid, false},
		{"expired", hs(with("exp", now.Add(-time.Hour).Unix())), auth.CodeExpired, false},
		{"missing exp", hs(with("exp", nil)), auth.CodeClaims, false},
		{"not yet valid", hs(with("nbf", now.Add(time.Hour).Unix())), auth.CodeClaims, false},
		{"issued in the future", hs(with("iat", now.Add(time.Hour).Unix())), auth.CodeClaims, false},
		{"wrong issuer", hs(with("iss", "iss-b")), auth.CodeClaims, false},
		{"missing issuer", hs(with("iss", nil)), auth.CodeClaims, false},
		{"wrong audience", hs(with("aud", "aud-b")), auth.CodeClaims, false},
		{"audience list containing ours", hs(with("aud", []string{"x", "aud-a"})), "", false},
		{"sub not a uuid", hs(with("sub", "alice")), auth.CodeClaims, false},
		{"sub uuid without hyphens", hs(with("sub", strings.ReplaceAll(user, "-", ""))), auth.CodeClaims, false},
		{"sub urn form", hs(with("sub", "urn:uuid:"+user)), auth.CodeClaims, false},
		{"sub nil uuid", hs(with("sub", "00000000-0000-0000-0000-000000000000")), auth.CodeClaims, false},
		{"missing sub", hs(with("sub", nil)), auth.CodeClaims, false},
		{"exp as string", hs(with("exp", "tomorrow")), auth.CodeMalformed, false},
		// JWT_MAX_TTL (24h here): a long-lived token is refused, measured
		// as exp - iat, or exp - now without iat.
		{"lifetime of a year", hs(with("iat", now.Unix()).with("exp", now.Add(365*24*time.Hour).Unix())), auth.CodeClaims, false},
		{"lifetime just over the max", hs(with("iat", now.Add(-time.Hour).Unix()).with("exp", now.Add(23*time.Hour+time.Minute).Unix())), auth.CodeClaims, false},
		{"lifetime exactly the max", hs(with("iat", now.Add(-time.Hour).Unix()).with("exp", now.Add(23*time.Hour).Unix())), "", false},
		{"no iat, valid for a year", hs(with("exp", now.Add(365*24*time.Hour).Unix())), auth.CodeClaims, false},
		{"no iat, valid for 23h", hs(with("exp", now.Add(23*time.Hour).Unix())), "", false},
	}
	v, err := auth.NewVerifier(auth.Config{Secret: []byte(secret), Issuer: "iss-a", Audience: "aud-a"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.VerifyHeader(tc.header)
			if tc.code == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if id.UserID != user || id.Admin != tc.admin {
					t.Fatalf("identity = %+v", id)
				}
				return
			}
			var ae *auth.Error
			if !errors.As(err, &ae) {
				t.Fatalf("err = %v, want *auth.Error %s", err, tc.code)
			}
			if ae.Code != tc.code {
				t.Fatalf("code = %s (%v), want %s", ae.Code, err, tc.code)
			}
			if strings.Contains(ae.Msg, strings.TrimPrefix(tc.header, "Bearer ")) && tc.header != "" && strings.TrimSpace(tc.header) != "" && tc.header != "Bearer " {
				t.Fatalf("message echoes the token: %q", ae.Msg)
			}
		})
	}
}

func TestIssuerAndAudienceOnlyCheckedWhenConfigured(t *testing.T) {
	v, err := auth.NewVerifier(auth.Config{Secret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": user, "exp": time.Now().Add(time.Minute).Unix(), "iss": "anyone", "aud": "anything"})
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("refused: %v", err)
	}
}

func TestSignerRoundTrip(t *testing.T) {
	cfg := auth.Config{Secret: []byte(secret), Issuer: "iss-a", Audience: "aud-a"}
	s, err := auth.NewSigner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, admin := range []bool{false, true} {
		tok, err := s.Sign(user, admin, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		id, err := v.Verify(tok)
		if err != nil {
			t.Fatalf("verify own token: %v", err)
		}
		if id.UserID != user || id.Admin != admin {
			t.Fatalf("identity = %+v, want admin=%v", id, admin)
		}
	}
	// A token from the past is expired by the time it is verified.
	past := cfg
	past.Now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	old, _ := auth.NewSigner(past)
	tok, err := old.Sign(user, false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var ae *auth.Error
	if _, err := v.Verify(tok); !errors.As(err, &ae) || ae.Code != auth.CodeExpired {
		t.Fatalf("old token: %v", err)
	}
	if _, err := s.Sign("not-a-uuid", false, time.Hour); err == nil {
		t.Fatal("signed a token for a non-UUID subject")
	}
	if _, err := s.Sign(user, false, 0); err == nil {
		t.Fatal("signed a token with no lifetime")
	}
	if _, err := auth.NewVerifier(auth.Config{}); err == nil {
		t.Fatal("verifier without a secret")
	}
}

// BenchmarkVerify is the cost the bearer check adds to every API request.
func BenchmarkVerify(b *testing.B) {
	cfg := auth.Config{Secret: []byte(secret), Issuer: "iss-a", Audience: "aud-a"}
	s, _ := auth.NewSigner(cfg)
	v, _ := auth.NewVerifier(cfg)
	tok, err := s.Sign(user, false, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	header := "Bearer " + tok
	for b.Loop() {
		if _, err := v.VerifyHeader(header); err != nil {
			b.Fatal(err)
		}
	}
}
