package waemu

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"strings"
	"time"

	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/keys"
)

const (
	// linkCodeAlphabet is whatsmeow's linkingBase32 alphabet (pair-code.go).
	linkCodeAlphabet = "123456789ABCDEFGHJKLMNPQRSTVWXYZ"
	// linkCodeIterations is PBKDF2's iteration count for the code key (2<<16).
	linkCodeIterations = 2 << 16
)

// codeHello is a client's request to pair by phone code (stage
// companion_hello of PairPhone). Fields are guarded by Server.mu.
type codeHello struct {
	phone   string // digits of the number the client asked to pair with
	wrapped []byte // salt(32) ‖ iv(16) ‖ AES-CTR(companion ephemeral public key)
	ref     string
	at      time.Time
	// finish receives the client's companion_finish iq while PairCode waits.
	finish chan *waBinary.Node
}

// handleCodePairIQ answers the two iqs of whatsmeow's PairPhone flow.
func (c *conn) handleCodePairIQ(node *waBinary.Node, reg waBinary.Node) {
	id := node.AttrGetter().OptionalString("id")
	s := c.srv
	if c.reg == nil {
		c.replyError(id, 400, "bad-request")
		return
	}
	switch stage := reg.AttrGetter().OptionalString("stage"); stage {
	case "companion_hello":
		jid, _ := reg.Attrs["jid"].(types.JID)
		wrapped, _ := reg.GetChildByTag("link_code_pairing_wrapped_companion_ephemeral_pub").Content.([]byte)
		authKey, _ := reg.GetChildByTag("companion_server_auth_key_pub").Content.([]byte)
		phone, err := normalizePhone(jid.User)
		if err != nil || len(wrapped) != 80 || string(authKey) != string(c.hs.clientStatic[:]) {
			c.log.Warn("bad companion_hello", "phone_ok", err == nil, "wrapped_len", len(wrapped))
			c.replyError(id, 400, "bad-request")
			return
		}
		h := &codeHello{phone: phone, wrapped: wrapped, ref: newRef(), at: time.Now()}
		s.mu.Lock()
		c.reg.code = h
		s.mu.Unlock()
		c.log.Debug("code pairing requested", "phone", phone)
		c.reply(id, []waBinary.Node{{Tag: "link_code_companion_reg", Content: []waBinary.Node{
			{Tag: "link_code_pairing_ref", Content: []byte(h.ref)},
		}}})
	case "companion_finish":
		s.mu.Lock()
		var ch chan *waBinary.Node
		if c.reg.code != nil {
			ch = c.reg.code.finish
		}
		s.mu.Unlock()
		if ch == nil {
			c.replyError(id, 400, "bad-request")
			return
		}
		select {
		case ch <- node:
		default:
			c.replyError(id, 409, "conflict")
		}
	default:
		c.replyError(id, 400, "bad-request")
	}
}

// PairCode is the simulated phone entering the 8-character code a client
// got from PairPhone ("ABCD-EFGH"; the dash is optional). The pending code
// pairing is found by phone number (digits, "+" optional); phone may be
// empty when only one is pending. It links a device as Scan does and
// returns its JID.
func (s *Server) PairCode(ctx context.Context, code, phone, name string) (jid string, err error) {
	code = strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(code))
	if len(code) != 8 || strings.Trim(code, linkCodeAlphabet) != "" {
		return "", fmt.Errorf("%w: want 8 characters of %s", ErrMalformedCode, linkCodeAlphabet)
	}
	if phone != "" {
		if phone, err = normalizePhone(phone); err != nil {
			return "", err
		}
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return "", ErrClosed
	}
	var c *conn
	var h *codeHello
	pending := 0
	for cand := range s.conns {
		if cand.reg == nil || cand.reg.code == nil || cand.reg.pairing {
			continue
		}
		if phone != "" && cand.reg.code.phone != phone {
			continue
		}
		pending++
		if h == nil || cand.reg.code.at.After(h.at) {
			c, h = cand, cand.reg.code
		}
	}
	switch {
	case pending == 0:
		s.mu.Unlock()
		return "", ErrUnknownCode
	case pending > 1 && phone == "":
		s.mu.Unlock()
		return "", ErrAmbiguousCode
	}
	if _, err := s.accountLocked(h.phone, name); err != nil {
		s.mu.Unlock()
		return "", err
	}
	a := s.st.Accounts[h.phone]
	phoneKey := keys.NewKeyPairFromPrivateKey([32]byte(a.IdentityKey))
	finish := make(chan *waBinary.Node, 1)
	h.finish = finish
	c.reg.pairing = true
	s.mu.Unlock()

	paired := false
	defer func() {
		if !paired {
			s.mu.Lock()
			h.finish = nil
			c.reg.pairing = false
			s.mu.Unlock()
		}
	}()

	companionEph := unwrapLinkKey(h.wrapped, code)
	primaryEph := keys.NewKeyPair()
	wrappedPrimary, err := wrapLinkKey(primaryEph.Pub[:], code)
	if err != nil {
		return "", err
	}
	err = c.send(waBinary.Node{
		Tag:   "notification",
		Attrs: serverAttrs("type", "link_code_companion_reg", "id", c.newID(), "t", time.Now().Unix()),
		Content: []waBinary.Node{{
			Tag:   "link_code_companion_reg",
			Attrs: waBinary.Attrs{"stage": "primary_hello"},
			Content: []waBinary.Node{
				{Tag: "link_code_pairing_ref", Content: []byte(h.ref)},
				{Tag: "link_code_pairing_wrapped_primary_ephemeral_pub", Content: wrappedPrimary},
				{Tag: "primary_identity_pub", Content: phoneKey.Pub[:]},
			},
		}},
	})
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrClientGone, err)
	}
	fin, err := c.await(ctx, finish)
	if err != nil {
		return "", err
	}
	finID := fin.AttrGetter().OptionalString("id")
	adv, err := finishCodePairing(fin, h.ref, companionEph, primaryEph, phoneKey, c.reg.identity)
	if err != nil {
		c.replyError(finID, 401, "not-authorized")
		return "", err
	}
	c.reply(finID, nil)

	s.mu.Lock()
	s.retireRefsLocked(c.reg, ErrQRUsed)
	s.mu.Unlock()
	paired = true
	return c.pair(ctx, h.phone, adv)
}

// finishCodePairing is the phone's side of companion_finish: decrypt the
// key bundle with the ephemeral shared secret (which only matches when the
// code was right) and derive the adv secret as the client did.
func finishCodePairing(fin *waBinary.Node, ref string, companionEph []byte, primaryEph, phoneKey *keys.KeyPair, companionIdentity [32]byte) ([]byte, error) {
	reg := fin.GetChildByTag("link_code_companion_reg")
	bundle, _ := reg.GetChildByTag("link_code_pairing_wrapped_key_bundle").Content.([]byte)
	finRef, _ := reg.GetChildByTag("link_code_pairing_ref").Content.([]byte)
	ident, _ := reg.GetChildByTag("companion_identity_public").Content.([]byte)
	if string(finRef) != ref || string(ident) != string(companionIdentity[:]) || len(bundle) < 32+12+16 {
		return nil, fmt.Errorf("%w: companion_finish does not match the pairing", ErrPairRejected)
	}
	eph, err := x25519(primaryEph.Priv[:], companionEph)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrWrongCode, err)
	}
	key, err := hkdf.Key(sha256.New, eph, bundle[:32], "link_code_pairing_key_bundle_encryption_key", 32)
	if err != nil {
		return nil, fmt.Errorf("key bundle key: %w", err)
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	plain, err := aead.Open(nil, bundle[32:44], bundle[44:], nil)
	if err != nil {
		return nil, ErrWrongCode
	}
	if len(plain) != 96 || string(plain[:32]) != string(companionIdentity[:]) || string(plain[32:64]) != string(phoneKey.Pub[:]) {
		return nil, fmt.Errorf("%w: key bundle names other keys", ErrPairRejected)
	}
	identityShared, err := x25519(phoneKey.Priv[:], companionIdentity[:])
	if err != nil {
		return nil, fmt.Errorf("identity shared secret: %w", err)
	}
	adv, err := hkdf.Key(sha256.New, concat(eph, identityShared, plain[64:]), nil, "adv_secret", 32)
	if err != nil {
		return nil, fmt.Errorf("adv secret: %w", err)
	}
	return adv, nil
}

// linkCodeCipher is AES-CTR keyed by PBKDF2-SHA256(code, salt).
func linkCodeCipher(code string, salt, ivb []byte) (cipher.Stream, error) {
	key, err := pbkdf2.Key(sha256.New, code, salt, linkCodeIterations, 32)
	if err != nil {
		return nil, fmt.Errorf("pbkdf2: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	return cipher.NewCTR(block, ivb), nil
}

// unwrapLinkKey decrypts salt(32) ‖ iv(16) ‖ key(32). AES-CTR has no
// integrity: a wrong code yields a wrong key, found out at companion_finish.
func unwrapLinkKey(wrapped []byte, code string) []byte {
	out := make([]byte, 32)
	stream, err := linkCodeCipher(code, wrapped[:32], wrapped[32:48])
	if err != nil {
		return out
	}
	stream.XORKeyStream(out, wrapped[48:80])
	return out
}

func wrapLinkKey(pub []byte, code string) ([]byte, error) {
	out := make([]byte, 80)
	if _, err := rand.Read(out[:48]); err != nil {
		return nil, fmt.Errorf("crypto/rand: %w", err)
	}
	stream, err := linkCodeCipher(code, out[:32], out[32:48])
	if err != nil {
		return nil, err
	}
	stream.XORKeyStream(out[48:], pub)
	return out, nil
}
