package webhook

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// NewSecret returns a fresh signing secret in the Standard Webhooks form,
// "whsec_" and 32 random bytes in base64.
func NewSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("webhook: secret: %w", err)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(b), nil
}

// Sealer encrypts signing secrets for storage with AES-256-GCM when it has
// a key (WEBHOOK_SECRET_KEY), and stores them as they are otherwise. A
// secret must be stored in a form the service can read back: HMAC needs
// the secret itself, so hashing is not an option.
type Sealer struct {
	aead cipher.AEAD
}

const sealedPrefix = "enc:v1:"

// NewSealer takes a 32-byte key as 64 hex characters, or "" for no
// encryption.
func NewSealer(key string) (*Sealer, error) {
	if key == "" {
		return &Sealer{}, nil
	}
	b, err := hex.DecodeString(key)
	if err != nil || len(b) != 32 {
		return nil, errors.New("webhook: WEBHOOK_SECRET_KEY must be 64 hex characters (32 bytes)")
	}
	block, err := aes.NewCipher(b)
	if err != nil {
		return nil, fmt.Errorf("webhook: secret key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("webhook: secret key: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// Seal is secret as stored.
func (s *Sealer) Seal(secret string) (string, error) {
	if s.aead == nil {
		return secret, nil
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("webhook: seal: %w", err)
	}
	ct := s.aead.Seal(nonce, nonce, []byte(secret), nil)
	return sealedPrefix + base64.StdEncoding.EncodeToString(ct), nil
}

// Open is the secret behind a stored value.
func (s *Sealer) Open(stored string) (string, error) {
	rest, sealed := strings.CutPrefix(stored, sealedPrefix)
	if !sealed {
		return stored, nil
	}
	if s.aead == nil {
		return "", errors.New("webhook: a secret is encrypted but WEBHOOK_SECRET_KEY is not set")
	}
	b, err := base64.StdEncoding.DecodeString(rest)
	if err != nil || len(b) < s.aead.NonceSize() {
		return "", errors.New("webhook: a stored secret is damaged")
	}
	pt, err := s.aead.Open(nil, b[:s.aead.NonceSize()], b[s.aead.NonceSize():], nil)
	if err != nil {
		return "", errors.New("webhook: a stored secret does not open with WEBHOOK_SECRET_KEY")
	}
	return string(pt), nil
}

// Sign is the webhook-signature header for one attempt: one "v1,<sig>"
// per secret, separated by spaces, as the specification allows during a
// rotation. Signing is the Standard Webhooks library's own.
func Sign(secrets []string, id string, ts time.Time, body []byte) (string, error) {
	sigs := make([]string, 0, len(secrets))
	for _, sec := range secrets {
		wh, err := standardwebhooks.NewWebhook(sec)
		if err != nil {
			return "", fmt.Errorf("webhook: signing secret: %w", err)
		}
		sig, err := wh.Sign(id, ts, body)
		if err != nil {
			return "", fmt.Errorf("webhook: sign: %w", err)
		}
		sigs = append(sigs, sig)
	}
	return strings.Join(sigs, " "), nil
}
