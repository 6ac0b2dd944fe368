// Package auth verifies and issues the API's bearer tokens: HS256 JWTs
// signed with JWT_SECRET whose subject is the caller's user UUID and whose
// optional role "admin" marks operators.
//
// Only HS256 is accepted, whatever the token's header says, so a token
// with alg "none", or one signed with an RSA public key used as an HMAC
// secret, is refused before any signature is checked. Every refusal carries
// a distinct Code, so a client can tell an expired token (get a new one)
// from a forged or garbled one (a bug), without the API ever echoing the
// token back.
package auth

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"wasessions/internal/reqparse"
)

// RoleAdmin is the role claim that marks an operator: global stats and
// cleanup.
const RoleAdmin = "admin"

// Code names why a token was refused; the API puts it in the error
// envelope of its 401 answer.
type Code string

// Refusal codes.
const (
	// CodeMissing: no Authorization header at all.
	CodeMissing Code = "token_missing"
	// CodeMalformed: the header is not "Bearer <token>", or the token is not
	// a well-formed JWT (three base64url parts of valid JSON).
	CodeMalformed Code = "token_malformed"
	// CodeInvalid: the signature does not verify with JWT_SECRET, or the
	// token uses an algorithm other than HS256 (including "none").
	CodeInvalid Code = "token_invalid"
	// CodeExpired: the token's exp has passed.
	CodeExpired Code = "token_expired"
	// CodeClaims: the signature is fine but a claim is not: exp missing,
	// nbf/iat in the future, wrong iss or aud, sub not a user UUID.
	CodeClaims Code = "token_claims_invalid"
)

// Error is a refused token. Msg is safe to show the client: it never
// contains the token or the secret.
type Error struct {
	Code Code
	Msg  string
	Err  error
}

// Error reads "code: message"; like Msg, it never contains the token.
func (e *Error) Error() string { return string(e.Code) + ": " + e.Msg }

// Unwrap exposes the jwt library's error for errors.Is.
func (e *Error) Unwrap() error { return e.Err }

// Identity is who a verified token speaks for.
type Identity struct {
	// UserID is the token's subject, a UUID in canonical lowercase form
	// (the form Postgres returns), so that it names the same user, and the
	// same event channel, however the issuer spelled it.
	UserID string
	// Admin is true for role "admin".
	Admin bool
	// ExpiresAt is the token's exp: what the token grants ends then, an
	// open event stream included.
	ExpiresAt time.Time
}

// Claims are the token's claims: the registered ones plus the role.
type Claims struct {
	jwt.RegisteredClaims
	Role string `json:"role,omitempty"`
}

// Config is what verifying and signing share.
type Config struct {
	// Secret is JWT_SECRET; config.Validate requires at least 32 bytes.
	Secret []byte
	// Issuer and Audience, when set, are required to match (JWT_ISSUER,
	// JWT_AUDIENCE) and are put into issued tokens.
	Issuer   string
	Audience string
	// Leeway tolerates clock skew between issuer and API on exp/nbf/iat.
	Leeway time.Duration
	// MaxTTL (JWT_MAX_TTL, default 24h) is the longest lifetime, exp - iat,
	// a token may have: a stolen token is only worth what is left of it,
	// and the API has no revocation list. A token without iat may not be
	// valid for longer than MaxTTL from now (exp - now).
	MaxTTL time.Duration
	// Now is the clock (time.Now when nil); tests move it.
	Now func() time.Time
}

func (c Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Verifier checks bearer tokens. It is safe for concurrent use.
type Verifier struct {
	cfg    Config
	parser *jwt.Parser
}

// NewVerifier returns a Verifier for cfg; an empty secret is an error
// because it would accept tokens anyone can forge.
func NewVerifier(cfg Config) (*Verifier, error) {
	if len(cfg.Secret) == 0 {
		return nil, errors.New("auth: empty JWT secret")
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(cfg.now),
		jwt.WithIssuedAt(),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.MaxTTL <= 0 {
		cfg.MaxTTL = DefaultMaxTTL
	}
	return &Verifier{cfg: cfg, parser: jwt.NewParser(opts...)}, nil
}

// DefaultMaxTTL is MaxTTL when none is configured.
const DefaultMaxTTL = 24 * time.Hour

// VerifyHeader checks the value of an Authorization header, which must be
// "Bearer <token>" (the scheme is case-insensitive, RFC 7235).
func (v *Verifier) VerifyHeader(authorization string) (Identity, error) {
	if strings.TrimSpace(authorization) == "" {
		return Identity{}, &Error{Code: CodeMissing, Msg: "the Authorization header is required: Bearer <token>"}
	}
	token, ok := reqparse.Bearer(authorization)
	if !ok {
		return Identity{}, &Error{Code: CodeMalformed, Msg: "the Authorization header must be: Bearer <token>"}
	}
	return v.Verify(token)
}

// Verify checks a token and returns who it speaks for.
func (v *Verifier) Verify(token string) (Identity, error) {
	var claims Claims
	_, err := v.parser.ParseWithClaims(token, &claims, func(t *jwt.Token) (any, error) {
		// WithValidMethods already refused every other alg; this check
		// keeps the key function safe on its own.
		if t.Method != jwt.SigningMethodHS256 {
			return nil, fmt.Errorf("unexpected signing method %v", t.Header["alg"])
		}
		return v.cfg.Secret, nil
	})
	if err != nil {
		return Identity{}, classify(err)
	}
	if err := v.checkLifetime(claims); err != nil {
		return Identity{}, err
	}
	id, err := uuid.Parse(claims.Subject)
	if err != nil || len(claims.Subject) != 36 || id == uuid.Nil {
		return Identity{}, &Error{Code: CodeClaims, Msg: "the token's sub must be the user's UUID (8-4-4-4-12 hex digits)"}
	}
	return Identity{UserID: id.String(), Admin: claims.Role == RoleAdmin, ExpiresAt: claims.ExpiresAt.Time}, nil
}

// checkLifetime refuses a token valid for longer than MaxTTL: exp - iat,
// or without iat, exp - now (less the leeway: the clocks may differ).
func (v *Verifier) checkLifetime(c Claims) error {
	exp := c.ExpiresAt.Time // required: the parser checked it is there
	if c.IssuedAt != nil {
		if exp.Sub(c.IssuedAt.Time) > v.cfg.MaxTTL {
			return &Error{Code: CodeClaims, Msg: fmt.Sprintf("the token's lifetime (exp - iat) is longer than the %s allowed", v.cfg.MaxTTL)}
		}
		return nil
	}
	if exp.Sub(v.cfg.now()) > v.cfg.MaxTTL+v.cfg.Leeway {
		return &Error{Code: CodeClaims, Msg: fmt.Sprintf("the token has no iat and is valid for longer than the %s allowed", v.cfg.MaxTTL)}
	}
	return nil
}

// classify turns the jwt library's error into a refusal with a code and a
// message that says what to fix.
func classify(err error) *Error {
	e := &Error{Err: err}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		e.Code, e.Msg = CodeMalformed, "the token is not a well-formed JWT"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		e.Code, e.Msg = CodeInvalid, "the token's signature or algorithm is not accepted (HS256 only)"
	case errors.Is(err, jwt.ErrTokenExpired):
		e.Code, e.Msg = CodeExpired, "the token has expired"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		e.Code, e.Msg = CodeClaims, "the token has no exp claim; exp is required"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		e.Code, e.Msg = CodeClaims, "the token's iss is not the configured issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		e.Code, e.Msg = CodeClaims, "the token's aud does not include the configured audience"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		e.Code, e.Msg = CodeClaims, "the token is not valid yet (nbf or iat in the future)"
	default:
		e.Code, e.Msg = CodeInvalid, "the token is not valid"
	}
	return e
}

// Signer issues tokens, for `api token` and tests.
type Signer struct {
	cfg Config
}

// NewSigner returns a Signer for cfg.
func NewSigner(cfg Config) (*Signer, error) {
	if len(cfg.Secret) == 0 {
		return nil, errors.New("auth: empty JWT secret")
	}
	return &Signer{cfg: cfg}, nil
}

// Sign issues an HS256 token for userID (a UUID) valid for ttl, with role
// admin when admin is true, and the configured iss and aud.
func (s *Signer) Sign(userID string, admin bool, ttl time.Duration) (string, error) {
	id, err := uuid.Parse(userID)
	if err != nil || len(userID) != 36 || id == uuid.Nil {
		return "", fmt.Errorf("auth: user id %q is not a UUID", userID)
	}
	if ttl <= 0 {
		return "", fmt.Errorf("auth: ttl must be positive, got %s", ttl)
	}
	now := s.cfg.now()
	c := Claims{RegisteredClaims: jwt.RegisteredClaims{
		Subject:   id.String(),
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		Issuer:    s.cfg.Issuer,
	}}
	if s.cfg.Audience != "" {
		c.Audience = jwt.ClaimStrings{s.cfg.Audience}
	}
	if admin {
		c.Role = RoleAdmin
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(s.cfg.Secret)
	if err != nil {
		return "", fmt.Errorf("auth: sign: %w", err)
	}
	return tok, nil
}
