package waemu

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.mau.fi/libsignal/protocol"
	"go.mau.fi/libsignal/session"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"
)

// Message traffic between linked clients and the emulated phones.
//
// From a linked device: whatsmeow sends one <message> with a <to><enc> per
// device of the recipient and of its own account (send.go
// encryptMessageForDevices). The emulator decrypts the copy for the
// recipient's phone (device 0) and records the text in that phone's inbox;
// it decrypts the DeviceSentMessage copy for the sender's own phone too and
// checks it names the recipient (a real phone would show the message in its
// chat; here it is counted as own_device_copies); copies for other linked
// devices are relayed to them. Then it acks the message, the recipient's
// phone sends a delivery receipt, and the sender's own phone, which got its
// copy, sends a receipt of type "sender" (what whatsmeow itself sends as a
// companion for a copy of its account's own message, receipt.go
// sendMessageReceipt): the sending device learns from it that WhatsApp
// holds the message even when the recipient's phone is offline.
//
// To a linked device: a phone's message is encrypted for each linked device
// of the recipient account, in order, and stays in that device's outbox
// until the device sends its receipt; a device that was offline, or that
// dropped the connection before its receipt, gets every pending message
// again on its next login (the same ciphertext, as WhatsApp redelivers it,
// which whatsmeow's decrypted-event buffer recognises). A retry receipt
// (the device could not decrypt it) makes the phone start a new session with
// the device and send the message again.

// Errors of the message operations.
var (
	ErrNoLinkedDevices = errors.New("the account has no linked devices")
	ErrUnknownMessage  = errors.New("unknown message")
	ErrDuplicateID     = errors.New("message id already used")
	ErrBadMessage      = errors.New("bad message")
	ErrUnknownFault    = errors.New("unknown fault")
)

// Error codes of refused messages (<ack class="message" error=...>).
const (
	ackErrorBadRequest  = 400 // no participants, no copy for the recipient
	ackErrorUndecrypted = 488 // the recipient's copy did not decrypt
	ackErrorFault       = 479 // the error_ack fault's default
)

// InboxMessage is a message a linked device sent to a phone.
type InboxMessage struct {
	ID string `json:"id"`
	// From is the sending account's JID; Device the sending device.
	From   string    `json:"from"`
	Device string    `json:"device"`
	Text   string    `json:"text"`
	At     time.Time `json:"at"`
	// Count is how many times this id arrived (1 unless it was sent again).
	Count int  `json:"count"`
	Read  bool `json:"read"`

	// ownCopy: the sender's own phone decrypted its copy (it receipts
	// every arrival of the id with type "sender").
	ownCopy bool
}

// DeviceDelivery is the state of a phone's message at one linked device.
type DeviceDelivery struct {
	JID string `json:"jid"`
	// State is "pending" (not sent yet: offline, or waiting for the
	// device's keys), "sent", "delivered" (receipted) or "read".
	State string `json:"state"`
	// Sends counts every time the message went out to the device;
	// Redeliveries are the sends after the first.
	Sends        int        `json:"sends"`
	Redeliveries int        `json:"redeliveries"`
	DeliveredAt  *time.Time `json:"delivered_at,omitempty"`
	ReadAt       *time.Time `json:"read_at,omitempty"`
}

// SentMessage is a message a phone sent to a linked account.
type SentMessage struct {
	ID      string           `json:"id"`
	From    string           `json:"from"`
	To      string           `json:"to"`
	Text    string           `json:"text"`
	At      time.Time        `json:"at"`
	Devices []DeviceDelivery `json:"devices"`
}

// messaging holds the message state; it lives in memory (the -state file
// keeps the phones, their Signal sessions and the devices' keys).
type messaging struct {
	s      *Server
	phones phoneLocks

	mu       sync.Mutex
	inboxes  map[string]*inbox      // phone digits → what it received
	sent     map[string]*outMessage // message id → a phone's message
	outboxes map[string]*outbox     // device JID → pending deliveries
	faults   map[int]*Fault         // active fault switches
	nextF    int                    // last fault id

	in, out, dups, decryptFails, redeliveries, rejected, retryReceipts, ownCopies atomic.Int64
}

type inbox struct {
	msgs  []*InboxMessage
	byKey map[string]*InboxMessage // from + "/" + id
}

type outMessage struct {
	SentMessage
	devices map[string]*DeviceDelivery
	// payload, when set, is what is sent instead of the text (the own
	// phone's protocol messages, history.go).
	payload *waE2E.Message
}

// outbox is what waits to be delivered to one device, in order.
type outbox struct {
	mu    sync.Mutex // held while items are encrypted and sent, to keep order
	items []*outItem
}

// outItem is one pending delivery: a phone's message (encrypted when it is
// first sent), a relayed copy, or a receipt.
type outItem struct {
	key       string      // "m:<id>" (message or relay) or "r:<type>:<id>" (receipt)
	msg       *outMessage // a phone's message, encrypted lazily; nil otherwise
	node      *waBinary.Node
	sentOn    *conn
	notBefore time.Time // delayed receipts
}

func newMessaging(s *Server) *messaging {
	return &messaging{
		s: s, inboxes: map[string]*inbox{}, sent: map[string]*outMessage{},
		outboxes: map[string]*outbox{}, faults: map[int]*Fault{},
	}
}

// ---- from linked devices ----

// handleMessage receives a <message> from a linked device.
func (c *conn) handleMessage(node *waBinary.Node) {
	s := c.srv
	m := s.msgs
	ag := node.AttrGetter()
	id := ag.OptionalString("id")
	to, _ := node.Attrs["to"].(types.JID)
	if c.jid == "" || id == "" {
		return
	}
	log := c.log.With("jid", c.jid, "msg_id", id)
	sender := mustJID(c.jid)
	if ag.OptionalString("category") == "peer" {
		// A protocol message between the account's own devices (whatsmeow
		// asks its phone for a message it could not decrypt); the
		// emulated phone takes it without acting on it.
		c.ackMessage(id, to, 0)
		return
	}

	if f := m.takeFault(FaultErrorAck, c.jid); f != nil {
		code := f.Code
		if code == 0 {
			code = ackErrorFault
		}
		m.rejected.Add(1)
		log.Info("message refused by fault switch", "code", code)
		c.ackMessage(id, to, code)
		return
	}

	s.mu.Lock()
	senderAcct := s.st.Accounts[sender.User]
	recipient := s.accountOfLocked(to)
	s.mu.Unlock()
	if senderAcct == nil || recipient == nil {
		m.rejected.Add(1)
		log.Warn("message to an unknown account refused", "to", to.String())
		c.ackMessage(id, to, ackErrorBadRequest)
		return
	}
	var tos []waBinary.Node
	if p, ok := node.GetOptionalChildByTag("participants"); ok {
		tos = p.GetChildrenByTag("to")
	}
	if len(tos) == 0 {
		m.rejected.Add(1)
		log.Warn("message without participants refused")
		c.ackMessage(id, to, ackErrorBadRequest)
		return
	}
	key := senderAcct.Phone + "/" + id
	// A second arrival of an id (whatsmeow resending the same frame after a
	// reconnect, or a sender retrying with the id it chose) is counted, not
	// decrypted again: the same ciphertext would fail as a replay.
	dup := m.inboxHas(recipient.Phone, key)

	var text string
	gotRecipient, failed, ownCopy := false, false, false
	for _, t := range tos {
		if dup {
			break
		}
		dj, ok := t.Attrs["jid"].(types.JID)
		enc, hasEnc := t.GetOptionalChildByTag("enc")
		if !ok || !hasEnc {
			continue
		}
		s.mu.Lock()
		target := s.accountOfLocked(dj)
		s.mu.Unlock()
		switch {
		case target == nil:
			log.Warn("copy for an unknown device dropped", "device", dj.String())
		case dj.Device == 0 && target == recipient:
			msg, err := m.decrypt(recipient, sender, enc)
			if err != nil {
				failed = true
				m.decryptFails.Add(1)
				log.Warn("recipient's copy did not decrypt", "err", err)
				continue
			}
			gotRecipient = true
			text = messageText(msg)
		case dj.Device == 0 && target == senderAcct:
			msg, err := m.decrypt(senderAcct, sender, enc)
			if err != nil {
				m.decryptFails.Add(1)
				log.Warn("own phone's copy did not decrypt", "err", err)
				continue
			}
			dsm := msg.GetDeviceSentMessage()
			if dest, err := types.ParseJID(dsm.GetDestinationJID()); err != nil || s.accountOf(dest) != recipient {
				log.Warn("own phone's copy names another chat", "destination", dsm.GetDestinationJID())
				continue
			}
			m.ownCopies.Add(1)
			ownCopy = true
		default:
			m.relay(c, dj, node, t)
		}
	}
	if dup {
		m.dups.Add(1)
		var n int
		n, ownCopy = m.recordDuplicate(recipient.Phone, key)
		log.Info("message arrived again", "count", n)
	} else if !gotRecipient {
		m.rejected.Add(1)
		code := ackErrorBadRequest
		if failed {
			code = ackErrorUndecrypted
		}
		log.Warn("message refused: no readable copy for the recipient's phone", "code", code)
		c.ackMessage(id, to, code)
		return
	} else {
		m.in.Add(1)
		m.record(recipient.Phone, key, &InboxMessage{
			ID: id, From: types.NewJID(senderAcct.Phone, types.DefaultUserServer).String(),
			Device: c.jid, Text: text, At: time.Now().UTC(), Count: 1, ownCopy: ownCopy,
		})
		log.Debug("message received", "to", to.String())
	}

	switch {
	case m.takeFault(FaultDropBeforeAck, c.jid) != nil:
		log.Info("dropping the socket before the ack (fault switch)")
		c.close()
		return
	case m.takeFault(FaultWithholdAck, c.jid) != nil:
		log.Info("withholding the ack (fault switch)")
	default:
		c.ackMessage(id, to, 0)
	}
	// The recipient's phone got it: delivery receipt to the sending device.
	m.queueReceipt(c.jid, recipient, id, "")
	if ownCopy {
		// So did the sender's own phone: its "sender" receipt names the chat.
		m.queueReceiptFor(c.jid, senderAcct, to, id, "sender")
	}
	m.flushLater(c)
}

// ackMessage answers a message; a non-zero code is an error ack, which
// whatsmeow's SendMessage returns as ErrServerReturnedError.
func (c *conn) ackMessage(id string, to types.JID, code int) {
	attrs := waBinary.Attrs{"class": "message", "id": id, "t": time.Now().Unix()}
	if !to.IsEmpty() {
		attrs["from"] = to
	}
	if code != 0 {
		attrs["error"] = code
	}
	if err := c.send(waBinary.Node{Tag: "ack", Attrs: attrs}); err != nil {
		c.log.Debug("ack not sent", "err", err)
	}
}

// decrypt opens one <enc> addressed to phone a, sent by device from.
func (m *messaging) decrypt(a *account, from types.JID, enc waBinary.Node) (*waE2E.Message, error) {
	ct, ok := enc.Content.([]byte)
	if !ok {
		return nil, fmt.Errorf("%w: enc has no bytes", ErrBadMessage)
	}
	typ := enc.AttrGetter().OptionalString("type")
	lock := m.phones.get(a.Phone)
	lock.Lock()
	st := m.phoneStore(a)
	addr := from.SignalAddress()
	cipher := session.NewCipher(session.NewBuilderFromSignal(st, addr, signalSerializer), addr)
	var plain []byte
	var err error
	switch typ {
	case "pkmsg":
		var msg *protocol.PreKeySignalMessage
		msg, err = protocol.NewPreKeySignalMessageFromBytes(ct, signalSerializer.PreKeySignalMessage, signalSerializer.SignalMessage)
		if err == nil {
			plain, err = cipher.DecryptMessage(context.Background(), msg)
		}
	case "msg":
		var msg *protocol.SignalMessage
		msg, err = protocol.NewSignalMessageFromBytes(ct, signalSerializer.SignalMessage)
		if err == nil {
			plain, err = cipher.Decrypt(context.Background(), msg)
		}
	default:
		err = fmt.Errorf("%w: enc type %q", ErrBadMessage, typ)
	}
	lock.Unlock()
	if err != nil {
		return nil, err
	}
	if plain, err = unpad(plain); err != nil {
		return nil, err
	}
	var msg waE2E.Message
	if err := proto.Unmarshal(plain, &msg); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadMessage, err)
	}
	return &msg, nil
}

// phoneStore is the Signal store of a's phone.
func (m *messaging) phoneStore(a *account) *phoneStore {
	m.s.mu.Lock()
	m.s.phoneSignalLocked(a)
	m.s.mu.Unlock()
	return m.s.newPhoneStore(a)
}

// unpad removes whatsmeow's padding (message.go padMessage): 1-15 bytes,
// each the padding length.
func unpad(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty plaintext", ErrBadMessage)
	}
	n := int(b[len(b)-1])
	if n == 0 || n > len(b) {
		return nil, fmt.Errorf("%w: bad padding", ErrBadMessage)
	}
	for _, x := range b[len(b)-n:] {
		if int(x) != n {
			return nil, fmt.Errorf("%w: bad padding", ErrBadMessage)
		}
	}
	return b[:len(b)-n], nil
}

// pad is whatsmeow's padMessage.
func pad(b []byte) []byte {
	var r [1]byte
	rand.Read(r[:])
	n := r[0] & 0xf
	if n == 0 {
		n = 0xf
	}
	out := make([]byte, len(b), len(b)+int(n))
	copy(out, b)
	for range n {
		out = append(out, n)
	}
	return out
}

func messageText(msg *waE2E.Message) string {
	if dsm := msg.GetDeviceSentMessage(); dsm != nil {
		// A note to self: the account's own phone gets the sender's copy.
		msg = dsm.GetMessage()
	}
	if t := msg.GetConversation(); t != "" {
		return t
	}
	return msg.GetExtendedTextMessage().GetText()
}

func (s *Server) accountOf(j types.JID) *account {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accountOfLocked(j)
}

func (m *messaging) inboxHas(phone, key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	ib := m.inboxes[phone]
	return ib != nil && ib.byKey[key] != nil
}

func (m *messaging) record(phone, key string, msg *InboxMessage) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ib := m.inboxes[phone]
	if ib == nil {
		ib = &inbox{byKey: map[string]*InboxMessage{}}
		m.inboxes[phone] = ib
	}
	if old := ib.byKey[key]; old != nil {
		old.Count++
		return
	}
	ib.byKey[key] = msg
	ib.msgs = append(ib.msgs, msg)
}

// recordDuplicate counts another arrival of a message the phone has, and
// says whether the sender's own phone had its copy.
func (m *messaging) recordDuplicate(phone, key string) (int, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	msg := m.inboxes[phone].byKey[key]
	msg.Count++
	return msg.Count, msg.ownCopy
}

// relay forwards the copy for another linked device (the sender's own, or
// the recipient account's) to that device, as the server fans a message
// out: <message from=sender device [recipient=chat]><enc/></message>.
func (m *messaging) relay(c *conn, dj types.JID, orig *waBinary.Node, to waBinary.Node) {
	s := c.srv
	s.mu.Lock()
	a := s.accountOfLocked(dj)
	var devJID string
	if a != nil {
		devJID = types.NewADJID(a.Phone, 0, uint8(dj.Device)).String()
		if s.st.Devices[devJID] == nil {
			devJID = ""
		}
	}
	s.mu.Unlock()
	if devJID == "" || devJID == c.jid {
		return
	}
	attrs := waBinary.Attrs{"from": mustJID(c.jid), "id": orig.Attrs["id"], "t": time.Now().Unix()}
	if t, ok := orig.Attrs["type"]; ok {
		attrs["type"] = t
	}
	if a != nil && a.Phone == mustJID(c.jid).User {
		attrs["recipient"] = orig.Attrs["to"]
	}
	n := &waBinary.Node{Tag: "message", Attrs: attrs, Content: to.GetChildren()}
	id, _ := orig.Attrs["id"].(string)
	m.enqueue(devJID, &outItem{key: "m:" + id, node: n})
	if dc := s.liveConn(devJID); dc != nil {
		m.flushLater(dc)
	}
}

// Inbox lists what linked devices sent to a phone, oldest first.
func (s *Server) Inbox(ref string) ([]InboxMessage, error) {
	s.mu.Lock()
	a, err := s.accountRefLocked(ref)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	m := s.msgs
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []InboxMessage{}
	if ib := m.inboxes[a.Phone]; ib != nil {
		for _, msg := range ib.msgs {
			out = append(out, *msg)
		}
	}
	return out, nil
}

// MarkRead makes a phone send read receipts for messages in its inbox (by
// id) to the devices that sent them. Unknown ids are an error and nothing
// is sent.
func (s *Server) MarkRead(ref string, ids []string) (int, error) {
	s.mu.Lock()
	a, err := s.accountRefLocked(ref)
	s.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, fmt.Errorf("%w: no ids", ErrBadMessage)
	}
	m := s.msgs
	m.mu.Lock()
	ib := m.inboxes[a.Phone]
	var found []*InboxMessage
	var missing []string
	for _, id := range ids {
		var hit *InboxMessage
		if ib != nil {
			for _, msg := range ib.msgs {
				if msg.ID == id {
					hit = msg
					break
				}
			}
		}
		if hit == nil {
			missing = append(missing, id)
		} else {
			found = append(found, hit)
		}
	}
	if len(missing) > 0 {
		m.mu.Unlock()
		return 0, fmt.Errorf("%w: %s", ErrUnknownMessage, strings.Join(missing, ", "))
	}
	devices := map[string]bool{}
	type rcpt struct{ dev, id string }
	var rs []rcpt
	for _, msg := range found {
		msg.Read = true
		rs = append(rs, rcpt{msg.Device, msg.ID})
		devices[msg.Device] = true
	}
	m.mu.Unlock()
	for _, r := range rs {
		m.queueReceipt(r.dev, a, r.id, "read")
	}
	for dev := range devices {
		m.flushDevice(dev)
	}
	return len(found), nil
}

// ---- receipts ----

// queueReceipt queues phone a's receipt (typ "" delivered, "read") for
// message id to device dev; it is resent on the device's next login until
// the client acks it.
func (m *messaging) queueReceipt(dev string, a *account, id, typ string) {
	m.queueReceiptFor(dev, a, types.EmptyJID, id, typ)
}

// queueReceiptFor is queueReceipt with the recipient attribute a phone's
// receipt for its own account's message carries (type "sender": the chat
// the message went to).
func (m *messaging) queueReceiptFor(dev string, a *account, recipient types.JID, id, typ string) {
	attrs := waBinary.Attrs{"from": types.NewJID(a.Phone, types.DefaultUserServer), "id": id, "t": time.Now().Unix()}
	if typ != "" {
		attrs["type"] = typ
	}
	if !recipient.IsEmpty() {
		attrs["recipient"] = recipient
	}
	item := &outItem{key: "r:" + typ + ":" + id, node: &waBinary.Node{Tag: "receipt", Attrs: attrs}}
	if f := m.takeFaultFrom(FaultDelayReceipts, dev, a.Phone); f != nil {
		d := time.Duration(f.Seconds * float64(time.Second))
		item.notBefore = time.Now().Add(d)
		m.s.spawn(func() {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-m.s.ctx.Done():
			case <-t.C:
				m.flushDevice(dev)
			}
		})
	}
	m.enqueue(dev, item)
}

// handleReceipt takes a linked device's receipt for a message a phone sent
// (or relayed): delivered, read, or a retry request (counted: the emulator
// does not re-encrypt).
func (c *conn) handleReceipt(node *waBinary.Node) {
	if c.jid == "" {
		return
	}
	m := c.srv.msgs
	ag := node.AttrGetter()
	typ := ag.OptionalString("type")
	ids := []string{ag.OptionalString("id")}
	if list, ok := node.GetOptionalChildByTag("list"); ok {
		for _, item := range list.GetChildrenByTag("item") {
			if id, ok := item.Attrs["id"].(string); ok {
				ids = append(ids, id)
			}
		}
	}
	if typ == "retry" {
		m.retryReceipts.Add(1)
		m.retry(c, ids[0], node)
		return
	}
	now := time.Now().UTC()
	m.mu.Lock()
	for _, id := range ids {
		if msg := m.sent[id]; msg != nil {
			if d := msg.devices[c.jid]; d != nil {
				switch typ {
				case "read", "read-self", "played":
					if d.DeliveredAt == nil {
						d.DeliveredAt = &now
					}
					d.ReadAt = &now
					d.State = "read"
				default:
					if d.DeliveredAt == nil {
						d.DeliveredAt = &now
						if d.State != "read" {
							d.State = "delivered"
						}
					}
				}
			}
		}
	}
	m.mu.Unlock()
	m.remove(c.jid, func(it *outItem) bool {
		for _, id := range ids {
			if it.key == "m:"+id {
				return true
			}
		}
		return false
	})
}

// maxRetries bounds how often a phone re-encrypts one message for one
// device (whatsmeow asks up to 5 times).
const maxRetries = 5

// retry answers a retry receipt as the sending phone does: it drops its
// session with the device, starts a new one from the device's keys, and
// sends the message again with the same id and the retry count.
func (m *messaging) retry(c *conn, id string, node *waBinary.Node) {
	count := 1
	if r, ok := node.GetOptionalChildByTag("retry"); ok {
		count = r.AttrGetter().OptionalInt("count")
	}
	log := c.log.With("jid", c.jid, "msg_id", id, "count", count)
	m.mu.Lock()
	msg := m.sent[id]
	m.mu.Unlock()
	if msg == nil || count > maxRetries {
		log.Warn("retry receipt not answered", "known", msg != nil)
		return
	}
	ob := m.outboxOf(c.jid)
	ob.mu.Lock()
	var it *outItem
	for _, x := range ob.items {
		if x.key == "m:"+id && x.msg == msg {
			it = x
		}
	}
	if it == nil {
		ob.mu.Unlock()
		log.Warn("retry receipt for a message already receipted")
		return
	}
	n, err := m.reencrypt(msg, c.jid, count)
	if err != nil {
		ob.mu.Unlock()
		log.Warn("retry not possible", "err", err)
		return
	}
	it.node, it.sentOn = n, nil
	ob.mu.Unlock()
	log.Info("the client could not decrypt a message; sent again on a new session")
	m.flushLater(c)
}

// reencrypt starts a new session of msg's phone with device dev and
// encrypts msg on it, marking the copy as retry number count.
func (m *messaging) reencrypt(msg *outMessage, dev string, count int) (*waBinary.Node, error) {
	s := m.s
	s.mu.Lock()
	a := s.st.Accounts[mustJID(msg.From).User]
	s.mu.Unlock()
	if a == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownPeer, msg.From)
	}
	lock := m.phones.get(a.Phone)
	lock.Lock()
	err := m.phoneStore(a).DeleteSession(context.Background(), mustJID(dev).SignalAddress())
	lock.Unlock()
	if err != nil {
		return nil, err
	}
	n, err := m.encryptFor(msg, dev)
	if err != nil {
		return nil, err
	}
	enc := n.GetChildren()[0]
	enc.Attrs["count"] = count
	return n, nil
}

// handleAck takes a linked device's ack of a receipt the emulator sent.
func (c *conn) handleAck(node *waBinary.Node) {
	ag := node.AttrGetter()
	if ag.OptionalString("class") == "notification" {
		c.deliver(node) // a Barrier's, if one waits for it
		return
	}
	if c.jid == "" || ag.OptionalString("class") != "receipt" {
		return
	}
	key := "r:" + ag.OptionalString("type") + ":" + ag.OptionalString("id")
	c.srv.msgs.remove(c.jid, func(it *outItem) bool { return it.key == key })
}

// ---- to linked devices ----

// SendText makes phone from send text to the linked account to (a phone
// number or JID) with message id (generated when empty). It returns once
// the message is queued for every linked device of the account and sent to
// those that are connected.
func (s *Server) SendText(ctx context.Context, from, to, text, id string) (string, error) {
	if text == "" {
		return "", fmt.Errorf("%w: empty text", ErrBadMessage)
	}
	if id == "" {
		id = newMessageID()
	}
	s.mu.Lock()
	fa, err := s.accountRefLocked(from)
	if err != nil {
		s.mu.Unlock()
		return "", err
	}
	ta, err := s.accountRefLocked(to)
	if err != nil {
		s.mu.Unlock()
		return "", err
	}
	devs := s.linkedDevicesLocked(ta.Phone)
	s.mu.Unlock()
	if len(devs) == 0 {
		return "", fmt.Errorf("%w: +%s", ErrNoLinkedDevices, ta.Phone)
	}
	m := s.msgs
	msg := &outMessage{
		SentMessage: SentMessage{
			ID: id, From: types.NewJID(fa.Phone, types.DefaultUserServer).String(),
			To: types.NewJID(ta.Phone, types.DefaultUserServer).String(), Text: text, At: time.Now().UTC(),
		},
		devices: map[string]*DeviceDelivery{},
	}
	m.mu.Lock()
	if m.sent[id] != nil {
		m.mu.Unlock()
		return "", fmt.Errorf("%w: %s", ErrDuplicateID, id)
	}
	for _, d := range devs {
		msg.devices[d.JID] = &DeviceDelivery{JID: d.JID, State: "pending"}
	}
	m.sent[id] = msg
	m.mu.Unlock()
	m.out.Add(1)
	for _, d := range devs {
		m.enqueue(d.JID, &outItem{key: "m:" + id, msg: msg})
	}
	for _, d := range devs {
		if err := ctx.Err(); err != nil {
			return id, err
		}
		m.flushDevice(d.JID)
	}
	return id, nil
}

// Message is the per-device delivery state of a message a phone sent.
func (s *Server) Message(id string) (SentMessage, error) {
	m := s.msgs
	m.mu.Lock()
	defer m.mu.Unlock()
	msg := m.sent[id]
	if msg == nil {
		return SentMessage{}, fmt.Errorf("%w: %s", ErrUnknownMessage, id)
	}
	out := msg.SentMessage
	out.Devices = make([]DeviceDelivery, 0, len(msg.devices))
	for _, d := range msg.devices {
		out.Devices = append(out.Devices, *d)
	}
	sort.Slice(out.Devices, func(i, j int) bool { return out.Devices[i].JID < out.Devices[j].JID })
	return out, nil
}

func newMessageID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "3EB0" + strings.ToUpper(hex.EncodeToString(b))
}

func (m *messaging) outboxOf(dev string) *outbox {
	m.mu.Lock()
	defer m.mu.Unlock()
	ob := m.outboxes[dev]
	if ob == nil {
		ob = &outbox{}
		m.outboxes[dev] = ob
	}
	return ob
}

func (m *messaging) enqueue(dev string, it *outItem) {
	ob := m.outboxOf(dev)
	ob.mu.Lock()
	ob.items = append(ob.items, it)
	ob.mu.Unlock()
}

func (m *messaging) remove(dev string, match func(*outItem) bool) {
	ob := m.outboxOf(dev)
	ob.mu.Lock()
	ob.items = deleteItems(ob.items, match)
	ob.mu.Unlock()
}

func deleteItems(items []*outItem, match func(*outItem) bool) []*outItem {
	out := items[:0]
	for _, it := range items {
		if !match(it) {
			out = append(out, it)
		}
	}
	clear(items[len(out):])
	return out
}

// flushDevice sends what is pending to dev if it is connected.
func (m *messaging) flushDevice(dev string) {
	if c := m.s.liveConn(dev); c != nil {
		m.flush(c)
	}
}

// liveConn is the logged-in connection of a device, or nil.
func (s *Server) liveConn(dev string) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live[dev]
}

// flushLater flushes c's outbox off the caller's goroutine (the read loop
// must not wait for writes).
func (m *messaging) flushLater(c *conn) {
	if c.jid == "" {
		return
	}
	m.s.spawn(func() { m.flush(c) })
}

// flush sends, in order, every pending item of c's device that was not yet
// sent on this connection. A phone's message is encrypted when it is first
// sent; if the device has no keys yet (it logged in but did not upload
// them), that message and everything after it wait for the upload.
func (m *messaging) flush(c *conn) {
	ob := m.outboxOf(c.jid)
	ob.mu.Lock()
	defer ob.mu.Unlock()
	now := time.Now()
	for _, it := range ob.items {
		if it.sentOn == c || now.Before(it.notBefore) {
			continue
		}
		if c.ctx.Err() != nil {
			return
		}
		if it.node == nil {
			n, err := m.encryptFor(it.msg, c.jid)
			if err != nil {
				c.log.Info("message waits for the device's keys", "jid", c.jid, "msg_id", it.msg.ID, "err", err)
				return
			}
			it.node = n
		}
		if err := c.send(*it.node); err != nil {
			c.log.Debug("delivery interrupted", "jid", c.jid, "err", err)
			return
		}
		resend := it.sentOn != nil
		it.sentOn = c
		if it.msg != nil {
			m.mu.Lock()
			if d := it.msg.devices[c.jid]; d != nil {
				d.Sends++
				if resend {
					d.Redeliveries++
				}
				if d.State == "pending" {
					d.State = "sent"
				}
			}
			m.mu.Unlock()
		}
		if resend && strings.HasPrefix(it.key, "m:") {
			m.redeliveries.Add(1)
		}
	}
}

// encryptFor encrypts a phone's message for one linked device, starting a
// session from the device's bundle (consuming a one-time prekey) when the
// phone has none: pkmsg until the device answers on the session, msg after.
func (m *messaging) encryptFor(msg *outMessage, dev string) (*waBinary.Node, error) {
	s := m.s
	from := mustJID(msg.From)
	devJID := mustJID(dev)
	s.mu.Lock()
	a := s.st.Accounts[from.User]
	s.mu.Unlock()
	if a == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownPeer, msg.From)
	}
	payload := msg.payload
	if payload == nil {
		payload = &waE2E.Message{Conversation: proto.String(msg.Text)}
	}
	plain, err := proto.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("marshal message: %w", err)
	}
	lock := m.phones.get(a.Phone)
	lock.Lock()
	defer lock.Unlock()
	st := m.phoneStore(a)
	addr := devJID.SignalAddress()
	builder := session.NewBuilderFromSignal(st, addr, signalSerializer)
	ctx := context.Background()
	if ok, _ := st.ContainsSession(ctx, addr); !ok {
		b, err := s.takeBundle(devJID)
		if err != nil {
			return nil, err
		}
		if err := builder.ProcessBundle(ctx, b.libsignalBundle(uint32(devJID.Device))); err != nil {
			return nil, fmt.Errorf("process bundle of %s: %w", dev, err)
		}
	}
	ct, err := session.NewCipher(builder, addr).Encrypt(ctx, pad(plain))
	if err != nil {
		return nil, fmt.Errorf("encrypt for %s: %w", dev, err)
	}
	typ := "msg"
	if ct.Type() == protocol.PREKEY_TYPE {
		typ = "pkmsg"
	}
	return &waBinary.Node{
		Tag: "message",
		Attrs: waBinary.Attrs{
			"from": from, "id": msg.ID, "t": msg.At.Unix(), "type": "text", "notify": a.Name,
			"sender_lid": types.NewJID(a.LID, types.HiddenUserServer),
		},
		Content: []waBinary.Node{{Tag: "enc", Attrs: waBinary.Attrs{"v": "2", "type": typ}, Content: ct.Serialize()}},
	}, nil
}

// ---- fault switches ----

// Fault kinds.
const (
	// FaultWithholdAck receives and records a message but never acks it:
	// whatsmeow's SendMessage times out.
	FaultWithholdAck = "withhold_ack"
	// FaultErrorAck refuses a message with <ack error=code> (default 479):
	// SendMessage returns ErrServerReturnedError.
	FaultErrorAck = "error_ack"
	// FaultDropBeforeAck records a message and closes the socket before
	// the ack: whatsmeow reconnects and sends the same frame again.
	FaultDropBeforeAck = "drop_before_ack"
	// FaultDelayReceipts holds the phones' receipts to the device for
	// Seconds (only those of Phone when it is set: that phone is offline).
	FaultDelayReceipts = "delay_receipts"
)

// Fault is an active fault switch.
type Fault struct {
	ID   int    `json:"id"`
	Kind string `json:"fault"`
	// Device scopes it to one linked device (JID); empty means all.
	Device string `json:"device,omitempty"`
	// Remaining is how many more messages it applies to; 0 means until it
	// is cleared.
	Remaining int     `json:"remaining,omitempty"`
	Code      int     `json:"code,omitempty"`    // error_ack
	Seconds   float64 `json:"seconds,omitempty"` // delay_receipts
	// Phone scopes delay_receipts to the receipts of one phone (digits of
	// its number); empty means every phone's.
	Phone string `json:"phone,omitempty"`
}

// SetFault turns a fault switch on and returns it with its id.
func (s *Server) SetFault(f Fault) (Fault, error) {
	switch f.Kind {
	case FaultWithholdAck, FaultErrorAck, FaultDropBeforeAck:
	case FaultDelayReceipts:
		if f.Seconds <= 0 || f.Seconds > 3600 {
			return Fault{}, fmt.Errorf("%w: delay_receipts needs seconds in (0, 3600]", ErrBadMessage)
		}
	default:
		return Fault{}, fmt.Errorf("%w: %q (want %s, %s, %s or %s)", ErrUnknownFault, f.Kind,
			FaultWithholdAck, FaultErrorAck, FaultDropBeforeAck, FaultDelayReceipts)
	}
	if f.Remaining < 0 {
		return Fault{}, fmt.Errorf("%w: count must be >= 0", ErrBadMessage)
	}
	if f.Kind == FaultErrorAck && f.Code != 0 && (f.Code < 400 || f.Code > 599) {
		return Fault{}, fmt.Errorf("%w: code must be 400-599", ErrBadMessage)
	}
	if f.Phone != "" {
		if f.Kind != FaultDelayReceipts {
			return Fault{}, fmt.Errorf("%w: phone applies to delay_receipts only", ErrBadMessage)
		}
		p := strings.TrimPrefix(f.Phone, "+")
		if p == "" || strings.Trim(p, "0123456789") != "" {
			return Fault{}, fmt.Errorf("%w: phone %q is not a number", ErrBadMessage, f.Phone)
		}
		f.Phone = p
	}
	if f.Device != "" {
		j, err := types.ParseJID(f.Device)
		if err != nil {
			return Fault{}, fmt.Errorf("%w: device %q: %w", ErrBadMessage, f.Device, err)
		}
		f.Device = j.String()
	}
	m := s.msgs
	m.mu.Lock()
	m.nextF++
	f.ID = m.nextF
	m.faults[f.ID] = &f
	m.mu.Unlock()
	s.log.Info("fault switch on", "fault", f.Kind, "device", f.Device, "count", f.Remaining)
	return f, nil
}

// Faults lists the active fault switches.
func (s *Server) Faults() []Fault {
	m := s.msgs
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Fault, 0, len(m.faults))
	for _, f := range m.faults {
		out = append(out, *f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// ClearFaults turns every fault switch off.
func (s *Server) ClearFaults() {
	m := s.msgs
	m.mu.Lock()
	clear(m.faults)
	m.mu.Unlock()
	s.log.Info("fault switches cleared")
}

// takeFault returns the oldest active fault of this kind for dev, counting
// one use of it.
func (m *messaging) takeFault(kind, dev string) *Fault {
	return m.takeFaultFrom(kind, dev, "")
}

// takeFaultFrom is takeFault for something phone sends (a receipt): a
// fault scoped to another phone does not apply.
func (m *messaging) takeFaultFrom(kind, dev, phone string) *Fault {
	m.mu.Lock()
	defer m.mu.Unlock()
	var hit *Fault
	for _, f := range m.faults {
		if f.Kind == kind && (f.Device == "" || f.Device == dev) && (f.Phone == "" || f.Phone == phone) &&
			(hit == nil || f.ID < hit.ID) {
			hit = f
		}
	}
	if hit == nil {
		return nil
	}
	out := *hit
	if hit.Remaining > 0 {
		hit.Remaining--
		if hit.Remaining == 0 {
			delete(m.faults, hit.ID)
		}
	}
	return &out
}

// MessageStats are the message counters of Stats.
type MessageStats struct {
	// MessagesIn are distinct messages linked devices sent to phones.
	MessagesIn int64 `json:"messages_in"`
	// MessagesOut are messages phones sent to linked accounts (one per
	// send, whatever the number of devices).
	MessagesOut int64 `json:"messages_out"`
	// DuplicateMessages are arrivals of a message id a phone already had.
	DuplicateMessages int64 `json:"duplicate_messages"`
	// DecryptFailures are copies for an emulated phone that did not
	// decrypt.
	DecryptFailures int64 `json:"decrypt_failures"`
	// Redeliveries are sends of a message (or relayed copy) to a device
	// that had it already, after a reconnect.
	Redeliveries int64 `json:"redeliveries"`
	// RejectedMessages got an error ack.
	RejectedMessages int64 `json:"rejected_messages"`
	// RetryReceipts are the clients' requests to resend a message they
	// could not decrypt (each answered on a new session).
	RetryReceipts int64 `json:"retry_receipts"`
	// OwnDeviceCopies are the sender's copies its own phone decrypted.
	OwnDeviceCopies int64 `json:"own_device_copies"`
}

func (m *messaging) stats() MessageStats {
	return MessageStats{
		MessagesIn: m.in.Load(), MessagesOut: m.out.Load(), DuplicateMessages: m.dups.Load(),
		DecryptFailures: m.decryptFails.Load(), Redeliveries: m.redeliveries.Load(),
		RejectedMessages: m.rejected.Load(), RetryReceipts: m.retryReceipts.Load(),
		OwnDeviceCopies: m.ownCopies.Load(),
	}
}
