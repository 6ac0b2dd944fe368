package waemu

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"go.mau.fi/libsignal/ecc"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waAdv"
	"go.mau.fi/whatsmeow/proto/waCompanionReg"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/keys"
	"google.golang.org/protobuf/proto"
)

// Signature prefixes of the device identity (whatsmeow pair.go).
var (
	advAccountSignaturePrefix = []byte{6, 0}
	advDeviceSignaturePrefix  = []byte{6, 1}
)

const (
	// firstRefLifetime and refLifetime mirror whatsmeow's QR channel: with
	// six refs the first code shows for 60 s, otherwise every code for 20 s.
	firstRefLifetime = 60 * time.Second
	refLifetime      = 20 * time.Second
	// refGrace allows for the delay between sending the refs and the client
	// starting its timers.
	refGrace = 2 * time.Second
	// pairPlatform is the primary device's platform in pair-success.
	pairPlatform = "android"
)

// registration is the pairing state of an unpaired client's connection.
// Fields other than refs, expires and identity are guarded by Server.mu.
type registration struct {
	refs     []string
	expires  []time.Time
	identity [32]byte // the companion's identity public key
	// pairing is set while a scan or code pairing owns the connection, and
	// stays set once it paired.
	pairing bool
	code    *codeHello
}

// startPairing sends a new client its pair-device refs, from which whatsmeow
// makes its QR codes, and arms the optional QR timeout.
func (c *conn) startPairing() error {
	s := c.srv
	pd := c.hs.payload.GetDevicePairingData()
	if len(pd.GetEIdent()) != 32 {
		c.closeAfter(0)
		return fmt.Errorf("registration payload has a %d-byte identity key", len(pd.GetEIdent()))
	}
	reg := &registration{}
	copy(reg.identity[:], pd.GetEIdent())
	n := s.opts.QRRefs
	nodes := make([]waBinary.Node, 0, n)
	end := time.Now()
	s.mu.Lock()
	for i := range n {
		ref := newRef()
		if n == DefaultQRRefs && i == 0 {
			end = end.Add(firstRefLifetime)
		} else {
			end = end.Add(refLifetime)
		}
		reg.refs = append(reg.refs, ref)
		reg.expires = append(reg.expires, end.Add(refGrace))
		s.refs[ref] = c
		nodes = append(nodes, waBinary.Node{Tag: "ref", Content: []byte(ref)})
	}
	c.reg = reg
	s.mu.Unlock()

	err := c.send(waBinary.Node{
		Tag:     "iq",
		Attrs:   serverAttrs("type", "set", "id", c.newID(), "xmlns", "md"),
		Content: []waBinary.Node{{Tag: "pair-device", Content: nodes}},
	})
	if err != nil {
		c.closeAfter(0)
		return err
	}
	c.log.Debug("pair-device refs sent", "refs", n)
	if s.opts.QRTimeout > 0 {
		c.unpairedTimeout(s.opts.QRTimeout)
	}
	return nil
}

// unpairedTimeout closes the connection after d unless it is pairing by then.
func (c *conn) unpairedTimeout(d time.Duration) {
	c.srv.spawn(func() {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		c.srv.mu.Lock()
		pairing := c.reg.pairing
		c.srv.mu.Unlock()
		if !pairing {
			c.log.Info("QR timeout: closing unpaired connection", "after", d.String())
			c.close()
		}
	})
}

// announcedDevice reads what the phone lists for a new linked device from
// the registration payload's companion properties: the operating system
// name (whatsmeow's DeviceProps.Os, DEVICE_NAME) and the platform type
// (DEVICE_PLATFORM). Unreadable properties give empty strings.
func announcedDevice(raw []byte) (osName, platform string) {
	var props waCompanionReg.DeviceProps
	if len(raw) == 0 || proto.Unmarshal(raw, &props) != nil {
		return "", ""
	}
	if props.PlatformType != nil {
		platform = props.GetPlatformType().String()
	}
	return props.GetOs(), platform
}

func newRef() string {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return "2@" + base64.RawURLEncoding.EncodeToString(b)
}

// retireRefsLocked takes a connection's refs out of service; a later scan of
// one of them fails with why.
func (s *Server) retireRefsLocked(reg *registration, why error) {
	now := time.Now()
	for ref, at := range s.retired {
		if now.Sub(at.at) > retiredTTL {
			delete(s.retired, ref)
		}
	}
	for _, ref := range reg.refs {
		if _, open := s.refs[ref]; open {
			delete(s.refs, ref)
			s.retired[ref] = retiredRef{err: why, at: now}
		}
	}
}

// qrData is a parsed QR string: "ref,noise pub,identity pub,adv secret"
// with the keys in standard base64 (whatsmeow makeQRData).
type qrData struct {
	ref      string
	noise    [32]byte
	identity [32]byte
	adv      []byte
}

func parseQR(qr string) (qrData, error) {
	var q qrData
	parts := strings.Split(strings.TrimSpace(qr), ",")
	if len(parts) != 4 || parts[0] == "" {
		return q, fmt.Errorf("%w: want 4 comma-separated parts, got %d", ErrMalformedQR, len(parts))
	}
	q.ref = parts[0]
	for i, dst := range [][]byte{q.noise[:], q.identity[:], nil} {
		raw, err := base64.StdEncoding.DecodeString(parts[i+1])
		if err != nil {
			return q, fmt.Errorf("%w: part %d is not base64", ErrMalformedQR, i+2)
		}
		if len(raw) != 32 {
			return q, fmt.Errorf("%w: part %d has %d bytes, want 32", ErrMalformedQR, i+2, len(raw))
		}
		if dst == nil {
			q.adv = raw
		} else {
			copy(dst, raw)
		}
	}
	return q, nil
}

// Scan is the simulated phone scanning a QR code: it links a new device of
// the account with this phone number (generated when empty; "+" optional)
// and push name (generated when empty) to the client that shows the code.
// It returns once the client accepted the pairing and was told to restart
// its stream; the client then logs in by itself.
func (s *Server) Scan(ctx context.Context, qr, phone, name string) (string, error) {
	q, err := parseQR(qr)
	if err != nil {
		return "", err
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
	c := s.refs[q.ref]
	if c == nil {
		r, ok := s.retired[q.ref]
		s.mu.Unlock()
		if ok {
			return "", r.err
		}
		return "", ErrUnknownQR
	}
	reg := c.reg
	for i, ref := range reg.refs {
		if ref == q.ref && time.Now().After(reg.expires[i]) {
			s.mu.Unlock()
			return "", ErrQRExpired
		}
	}
	if q.noise != c.hs.clientStatic || q.identity != reg.identity {
		s.mu.Unlock()
		return "", fmt.Errorf("%w: its keys are not those of the client that showed it", ErrMalformedQR)
	}
	if reg.pairing {
		s.mu.Unlock()
		return "", ErrQRUsed
	}
	phone, err = s.accountLocked(phone, name)
	if err != nil {
		s.mu.Unlock()
		return "", err
	}
	reg.pairing = true
	s.retireRefsLocked(reg, ErrQRUsed)
	s.mu.Unlock()
	return c.pair(ctx, phone, q.adv)
}

// accountLocked returns the phone number of the account for phone (digits)
// and name, creating it, and a number when phone is empty.
func (s *Server) accountLocked(phone, name string) (string, error) {
	if phone == "" {
		for {
			phone = "1555" + randomDigits(7)
			if s.st.Accounts[phone] == nil {
				break
			}
		}
	}
	a := s.st.Accounts[phone]
	if a == nil {
		lid := ""
		for lid == "" || s.lidTakenLocked(lid) {
			lid = "1" + randomDigits(14)
		}
		if name == "" {
			name = fmt.Sprintf("Emu User %03d", len(s.st.Accounts)+1)
		}
		a = &account{Phone: phone, Name: name, LID: lid, IdentityKey: keys.NewKeyPair().Priv[:], RawID: randomUint32()}
		s.st.Accounts[phone] = a
	} else if name != "" {
		a.Name = name
	}
	return phone, nil
}

func (s *Server) lidTakenLocked(lid string) bool {
	for _, a := range s.st.Accounts {
		if a.LID == lid {
			return true
		}
	}
	return false
}

// nextDeviceLocked hands out the account's next free device number (1-255;
// AD-JIDs carry it in one byte).
func (s *Server) nextDeviceLocked(a *account) (uint8, error) {
	for range 255 {
		a.LastDevice = a.LastDevice%255 + 1
		jid := types.NewADJID(a.Phone, 0, uint8(a.LastDevice)).String()
		if s.st.Devices[jid] == nil {
			return uint8(a.LastDevice), nil
		}
	}
	return 0, fmt.Errorf("waemu: account +%s has 255 linked devices", a.Phone)
}

// pair sends pair-success to the client with a device identity signed by the
// account's identity key and authenticated with the client's adv secret,
// checks the client's counter-signature, records the device and restarts the
// stream (515) so the client logs in (pair.go handlePair).
func (c *conn) pair(ctx context.Context, phone string, adv []byte) (jid string, err error) {
	s := c.srv
	reg := c.reg
	defer func() {
		if err != nil {
			c.log.Warn("pairing failed", "err", err)
			c.closeAfter(closeLinger)
		}
	}()

	s.mu.Lock()
	a := s.st.Accounts[phone]
	devNum, err := s.nextDeviceLocked(a)
	if err != nil {
		s.mu.Unlock()
		return "", err
	}
	a.KeyIndex++
	keyIndex, rawID, name, lidUser := a.KeyIndex, a.RawID, a.Name, a.LID
	phoneKey := keys.NewKeyPairFromPrivateKey([32]byte(a.IdentityKey))
	s.mu.Unlock()
	s.markDirty()

	devJID := types.NewADJID(phone, 0, devNum)
	lid := types.NewADJID(lidUser, types.LIDDomain, devNum)

	details, err := proto.Marshal(&waAdv.ADVDeviceIdentity{
		RawID:       proto.Uint32(rawID),
		Timestamp:   proto.Uint64(uint64(time.Now().Unix())),
		KeyIndex:    proto.Uint32(keyIndex),
		AccountType: waAdv.ADVEncryptionType_E2EE.Enum(),
		DeviceType:  waAdv.ADVEncryptionType_E2EE.Enum(),
	})
	if err != nil {
		return "", fmt.Errorf("marshal device identity: %w", err)
	}
	accountSig := ecc.CalculateSignature(ecc.NewDjbECPrivateKey(*phoneKey.Priv),
		concat(advAccountSignaturePrefix, details, reg.identity[:]))
	signed, err := proto.Marshal(&waAdv.ADVSignedDeviceIdentity{
		Details:             details,
		AccountSignatureKey: phoneKey.Pub[:],
		AccountSignature:    accountSig[:],
	})
	if err != nil {
		return "", fmt.Errorf("marshal signed device identity: %w", err)
	}
	mac := hmac.New(sha256.New, adv)
	mac.Write(signed)
	container, err := proto.Marshal(&waAdv.ADVSignedDeviceIdentityHMAC{
		Details:     signed,
		HMAC:        mac.Sum(nil),
		AccountType: waAdv.ADVEncryptionType_E2EE.Enum(),
	})
	if err != nil {
		return "", fmt.Errorf("marshal device identity container: %w", err)
	}

	resp, err := c.request(ctx, waBinary.Node{
		Tag:   "iq",
		Attrs: serverAttrs("type", "set", "id", c.newID(), "xmlns", "md"),
		Content: []waBinary.Node{{Tag: "pair-success", Content: []waBinary.Node{
			{Tag: "device-identity", Content: container},
			{Tag: "platform", Attrs: waBinary.Attrs{"name": pairPlatform}},
			{Tag: "device", Attrs: waBinary.Attrs{"jid": devJID, "lid": lid}},
			{Tag: "biz", Attrs: waBinary.Attrs{"name": name}},
		}}},
	})
	if err != nil {
		return "", err
	}
	if err := verifyPairSign(resp, details, reg.identity, *phoneKey.Pub, keyIndex); err != nil {
		return "", err
	}

	osName, platform := announcedDevice(c.hs.payload.GetDevicePairingData().GetDeviceProps())
	s.mu.Lock()
	s.st.Devices[devJID.String()] = &device{
		JID: devJID.String(), LID: lid.String(), Phone: phone,
		NoiseKey: c.hs.clientStatic[:], IdentityKey: reg.identity[:], PairedAt: time.Now().UTC(),
		OS: osName, Platform: platform,
	}
	s.mu.Unlock()
	s.pairings.Add(1)
	s.markDirty()
	c.log.Info("device paired", "jid", devJID.String(), "lid", lid.String())

	// The client saved its device and expects a stream restart; it closes
	// the socket itself and logs in on a new one.
	if err := c.send(streamErrorRestart()); err != nil {
		c.log.Warn("515 not sent; the client will not log in by itself", "err", err)
	}
	c.closeAfter(restartLinger)
	return devJID.String(), nil
}

// verifyPairSign checks the client's pair-device-sign answer: the same
// device identity details, counter-signed with the companion's identity key
// over [6,1] ‖ details ‖ companion identity ‖ account identity.
func verifyPairSign(resp *waBinary.Node, details []byte, companion, account [32]byte, keyIndex uint32) error {
	if t := resp.AttrGetter().OptionalString("type"); t != "result" {
		errNode, _ := resp.GetOptionalChildByTag("error")
		ag := errNode.AttrGetter()
		return fmt.Errorf("%w: %s %s", ErrPairRejected, ag.OptionalString("code"), ag.OptionalString("text"))
	}
	idNode, ok := resp.GetOptionalChildByTag("pair-device-sign", "device-identity")
	if !ok {
		return fmt.Errorf("%w: no pair-device-sign in the answer", ErrPairRejected)
	}
	if ki := idNode.AttrGetter().OptionalString("key-index"); ki != fmt.Sprint(keyIndex) {
		return fmt.Errorf("%w: key index %q, want %d", ErrPairRejected, ki, keyIndex)
	}
	raw, _ := idNode.Content.([]byte)
	var signed waAdv.ADVSignedDeviceIdentity
	if err := proto.Unmarshal(raw, &signed); err != nil {
		return fmt.Errorf("%w: parse device identity: %w", ErrPairRejected, err)
	}
	if !bytes.Equal(signed.GetDetails(), details) {
		return fmt.Errorf("%w: device identity details changed", ErrPairRejected)
	}
	sig := signed.GetDeviceSignature()
	if len(sig) != 64 {
		return fmt.Errorf("%w: device signature has %d bytes", ErrPairRejected, len(sig))
	}
	msg := concat(advDeviceSignaturePrefix, details, companion[:], account[:])
	if !ecc.VerifySignature(ecc.NewDjbECPublicKey(companion), msg, [64]byte(sig)) {
		return fmt.Errorf("%w: bad device signature", ErrPairRejected)
	}
	return nil
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
