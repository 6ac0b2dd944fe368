package auth_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"wasessions/internal/auth"
)

// FuzzVerifyHeader feeds the bearer-token check any header: it never
// panics, refuses with one of the documented codes and a message that
// never echoes the token, and accepts only a token it signed itself: one
// of the seeds, unchanged (nothing else carries a valid signature).
// scripts/fuzz.sh runs it (briefly in `make test`, longer in `make fuzz`).
func FuzzVerifyHeader(f *testing.F) {
	cfg := auth.Config{Secret: []byte(secret), Issuer: "iss-a", Audience: "aud-a"}
	signer, err := auth.NewSigner(cfg)
	if err != nil {
		f.Fatal(err)
	}
	v, err := auth.NewVerifier(cfg)
	if err != nil {
		f.Fatal(err)
	}
	valid := map[string]bool{}
	for _, admin := range []bool{false, true} {
		tok, err := signer.Sign(user, admin, time.Hour)
		if err != nil {
			f.Fatal(err)
		}
		valid[tok] = true
		f.Add("Bearer " + tok)
		f.Add("bearer  " + tok + " ")
		// The same token with its payload or signature cut short.
		f.Add("Bearer " + tok[:len(tok)-3])
		f.Add("Bearer " + strings.Replace(tok, ".", "..", 1))
	}
	for _, s := range []string{"", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer a.b.c", "Bearer e30.e30.",
		"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "Bearer \x00"} {
		f.Add(s)
	}
	codes := map[auth.Code]bool{auth.CodeMissing: true, auth.CodeMalformed: true, auth.CodeInvalid: true,
		auth.CodeExpired: true, auth.CodeClaims: true}
	f.Fuzz(func(t *testing.T, header string) {
		id, err := v.VerifyHeader(header)
		if err == nil {
			_, tok, _ := strings.Cut(strings.TrimSpace(header), " ")
			if !valid[strings.TrimSpace(tok)] {
				t.Fatalf("accepted a token it never signed: %q", header)
			}
			if u, perr := uuid.Parse(id.UserID); perr != nil || u.String() != id.UserID {
				t.Fatalf("identity %q is not a canonical UUID", id.UserID)
			}
			return
		}
		ae, ok := err.(*auth.Error)
		if !ok {
			t.Fatalf("not an *auth.Error: %T %v", err, err)
		}
		if !codes[ae.Code] {
			t.Fatalf("undocumented code %q", ae.Code)
		}
		if _, tok, _ := strings.Cut(strings.TrimSpace(header), " "); len(tok) >= 8 && strings.Contains(ae.Msg, tok) {
			t.Fatalf("the message echoes the token: %q", ae.Msg)
		}
	})
}
