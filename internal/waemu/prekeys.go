package waemu

import (
	"encoding/binary"
	"fmt"

	"go.mau.fi/libsignal/ecc"
	"go.mau.fi/libsignal/keys/identity"
	"go.mau.fi/libsignal/keys/prekey"
	"go.mau.fi/libsignal/util/optional"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/keys"
)

// uploadedKeys is what a linked device uploaded (whatsmeow prekeys.go
// uploadPreKeys): the keys a peer needs to start a Signal session with it.
type uploadedKeys struct {
	RegistrationID uint32       `json:"registration_id"`
	Identity       []byte       `json:"identity"`
	SignedPreKey   storedPreKey `json:"signed_prekey"`
	// OneTime holds the one-time prekeys not yet handed out, oldest first,
	// packed as 3-byte id ‖ 32-byte public key: a first upload is 812 keys,
	// and a thousand devices' keys stay a few tens of MB.
	OneTime []byte `json:"one_time"`
}

// oneTimeSize is one packed one-time prekey.
const oneTimeSize = 3 + 32

// count is the number of one-time prekeys left (0 for nil).
func (k *uploadedKeys) count() int {
	if k == nil {
		return 0
	}
	return len(k.OneTime) / oneTimeSize
}

// preKeyCount is the number of one-time prekeys the server still holds for
// this connection's device (0 before login): whatsmeow uploads more when it
// drops below 5.
func (c *conn) preKeyCount() int {
	s := c.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.st.Devices[c.jid]; d != nil && c.jid != "" {
		return d.Keys.count()
	}
	return 0
}

// uploadPreKeys stores the registration id, identity, signed prekey and
// one-time prekeys of an upload: whatsmeow sends 812 after its first login
// and 50 whenever the count drops below 5. A malformed upload gets an iq
// error and changes nothing.
func (c *conn) uploadPreKeys(id string, node *waBinary.Node) {
	if c.jid == "" {
		c.replyError(id, 401, "not-authorized")
		return
	}
	up, err := parseUpload(node)
	if err != nil {
		c.log.Warn("malformed prekey upload", "jid", c.jid, "err", err)
		c.replyError(id, 400, "bad-request")
		return
	}
	s := c.srv
	s.mu.Lock()
	d := s.st.Devices[c.jid]
	if d == nil {
		s.mu.Unlock()
		c.replyError(id, 404, "item-not-found")
		return
	}
	first := d.Keys == nil
	if first {
		d.Keys = up
		// A device paired anew under a JID that existed before (device
		// numbers come round again) must not meet its predecessor's
		// sessions.
		addr := mustJID(c.jid).SignalAddress().String()
		for _, a := range s.st.Accounts {
			if a.Signal != nil {
				delete(a.Signal.Sessions, addr)
			}
		}
	} else {
		d.Keys.RegistrationID = up.RegistrationID
		d.Keys.Identity = up.Identity
		d.Keys.SignedPreKey = up.SignedPreKey
		d.Keys.OneTime = append(d.Keys.OneTime, up.OneTime...)
	}
	n := d.Keys.count()
	s.mu.Unlock()
	s.markDirty()
	c.log.Debug("prekeys uploaded", "jid", c.jid, "count", up.count(), "held", n)
	c.reply(id, nil)
	// Messages that waited for this device's keys can go now.
	s.msgs.flushLater(c)
}

// parseUpload reads an upload iq: <registration>, <type>, <identity>,
// <list><key>...</list>, <skey>.
func parseUpload(node *waBinary.Node) (*uploadedKeys, error) {
	reg, ok := node.GetChildByTag("registration").Content.([]byte)
	if !ok || len(reg) != 4 {
		return nil, fmt.Errorf("registration id is not 4 bytes")
	}
	ident, ok := node.GetChildByTag("identity").Content.([]byte)
	if !ok || len(ident) != 32 {
		return nil, fmt.Errorf("identity key is not 32 bytes")
	}
	spk, err := parseKeyNode(node.GetChildByTag("skey"), true)
	if err != nil {
		return nil, fmt.Errorf("signed prekey: %w", err)
	}
	if !ecc.VerifySignature(ecc.NewDjbECPublicKey([32]byte(ident)),
		append([]byte{ecc.DjbType}, spk.Pub...), [64]byte(spk.Signature)) {
		return nil, fmt.Errorf("signed prekey signature does not verify")
	}
	listNode := node.GetChildByTag("list")
	list := listNode.GetChildrenByTag("key")
	up := &uploadedKeys{
		RegistrationID: binary.BigEndian.Uint32(reg),
		Identity:       ident,
		SignedPreKey:   spk,
		OneTime:        make([]byte, 0, len(list)*oneTimeSize),
	}
	for _, kn := range list {
		k, err := parseKeyNode(kn, false)
		if err != nil {
			return nil, fmt.Errorf("one-time prekey: %w", err)
		}
		var id [4]byte
		binary.BigEndian.PutUint32(id[:], k.ID)
		up.OneTime = append(append(up.OneTime, id[1:]...), k.Pub...)
	}
	return up, nil
}

func parseKeyNode(n waBinary.Node, signed bool) (storedPreKey, error) {
	id, ok := n.GetChildByTag("id").Content.([]byte)
	if !ok || len(id) != 3 {
		return storedPreKey{}, fmt.Errorf("id is not 3 bytes")
	}
	pub, ok := n.GetChildByTag("value").Content.([]byte)
	if !ok || len(pub) != 32 {
		return storedPreKey{}, fmt.Errorf("value is not 32 bytes")
	}
	k := storedPreKey{ID: binary.BigEndian.Uint32(append([]byte{0}, id...)), Pub: pub}
	if signed {
		sig, ok := n.GetChildByTag("signature").Content.([]byte)
		if !ok || len(sig) != 64 {
			return storedPreKey{}, fmt.Errorf("signature is not 64 bytes")
		}
		k.Signature = sig
	}
	return k, nil
}

// fetchBundles answers <iq xmlns="encrypt" type="get"><key><user jid/>...
// with a bundle per requested device (whatsmeow prekeys.go
// nodeToPreKeyBundle): a peer's or the account's own phone, or a linked
// device from what it uploaded. Each bundle hands out (consumes) one
// one-time prekey. Unknown devices get an <error> in their <user>.
func (c *conn) fetchBundles(id string, key waBinary.Node) {
	var users []waBinary.Node
	for _, u := range key.GetChildrenByTag("user") {
		j, ok := u.Attrs["jid"].(types.JID)
		if !ok {
			continue
		}
		out := waBinary.Node{Tag: "user", Attrs: waBinary.Attrs{"jid": j}}
		if b, err := c.srv.bundleNodes(j); err != nil {
			out.Content = []waBinary.Node{{Tag: "error", Attrs: waBinary.Attrs{"code": 404, "text": "item-not-found"}}}
		} else {
			out.Content = b
		}
		users = append(users, out)
	}
	c.reply(id, []waBinary.Node{{Tag: "list", Content: users}})
}

// bundle is a device's prekey bundle as the server hands it out.
type bundle struct {
	regID    uint32
	identity []byte
	signed   storedPreKey
	oneTime  *storedPreKey // nil when none is left
}

// bundleNodes hands out the bundle of device j as <user> children.
func (s *Server) bundleNodes(j types.JID) ([]waBinary.Node, error) {
	b, err := s.takeBundle(j)
	if err != nil {
		return nil, err
	}
	var reg [4]byte
	binary.BigEndian.PutUint32(reg[:], b.regID)
	nodes := []waBinary.Node{
		{Tag: "registration", Content: reg[:]},
		{Tag: "type", Content: []byte{ecc.DjbType}},
		{Tag: "identity", Content: b.identity},
		keyNode("skey", b.signed),
	}
	if b.oneTime != nil {
		nodes = append(nodes, keyNode("key", *b.oneTime))
	}
	return nodes, nil
}

func keyNode(tag string, k storedPreKey) waBinary.Node {
	var id [4]byte
	binary.BigEndian.PutUint32(id[:], k.ID)
	n := waBinary.Node{Tag: tag, Content: []waBinary.Node{
		{Tag: "id", Content: id[1:]},
		{Tag: "value", Content: k.Pub},
	}}
	if k.Signature != nil {
		n.Content = append(n.GetChildren(), waBinary.Node{Tag: "signature", Content: k.Signature})
	}
	return n
}

// takeBundle returns device j's bundle and consumes its one-time prekey:
// for device 0 a fresh one from the emulated phone, for a linked device the
// oldest it uploaded.
func (s *Server) takeBundle(j types.JID) (bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accountOfLocked(j)
	if a == nil {
		return bundle{}, fmt.Errorf("%w: %s", ErrUnknownPeer, j)
	}
	if j.Device == 0 {
		sig := s.phoneSignalLocked(a)
		kp := keys.NewKeyPair()
		id := sig.NextPreKeyID
		sig.NextPreKeyID = sig.NextPreKeyID%maxPreKeyID + 1
		sig.PreKeys[id] = kp.Priv[:]
		s.markDirty()
		pub := keys.NewKeyPairFromPrivateKey([32]byte(a.IdentityKey)).Pub
		return bundle{regID: sig.RegistrationID, identity: pub[:], signed: sig.SignedPreKey,
			oneTime: &storedPreKey{ID: id, Pub: kp.Pub[:]}}, nil
	}
	d := s.st.Devices[types.NewADJID(a.Phone, 0, uint8(j.Device)).String()]
	if d == nil || d.Keys == nil {
		return bundle{}, fmt.Errorf("%w: %s has no keys", ErrUnknownDevice, j)
	}
	b := bundle{regID: d.Keys.RegistrationID, identity: d.Keys.Identity, signed: d.Keys.SignedPreKey}
	if len(d.Keys.OneTime) >= oneTimeSize {
		rec := d.Keys.OneTime[:oneTimeSize]
		b.oneTime = &storedPreKey{
			ID:  binary.BigEndian.Uint32(append([]byte{0}, rec[:3]...)),
			Pub: append([]byte(nil), rec[3:]...),
		}
		d.Keys.OneTime = d.Keys.OneTime[oneTimeSize:]
		if len(d.Keys.OneTime) == 0 {
			d.Keys.OneTime = nil
		}
		s.markDirty()
	}
	return b, nil
}

// libsignalBundle turns a handed-out bundle into libsignal's form, for the
// emulated phones' own sessions with linked devices.
func (b bundle) libsignalBundle(deviceID uint32) *prekey.Bundle {
	ident := identity.NewKey(ecc.NewDjbECPublicKey([32]byte(b.identity)))
	spk := ecc.NewDjbECPublicKey([32]byte(b.signed.Pub))
	if b.oneTime == nil {
		return prekey.NewBundle(b.regID, deviceID, optional.NewEmptyUint32(), b.signed.ID,
			nil, spk, [64]byte(b.signed.Signature), ident)
	}
	return prekey.NewBundle(b.regID, deviceID, optional.NewOptionalUint32(b.oneTime.ID), b.signed.ID,
		ecc.NewDjbECPublicKey([32]byte(b.oneTime.Pub)), spk, [64]byte(b.signed.Signature), ident)
}

// mustJID parses a JID the emulator made itself.
func mustJID(s string) types.JID {
	j, err := types.ParseJID(s)
	if err != nil {
		panic(fmt.Sprintf("waemu: bad internal JID %q: %v", s, err))
	}
	return j
}
