package waemu

import (
	"bytes"
	"compress/zlib"
	"context"
	"fmt"
	"time"

	"go.mau.fi/whatsmeow/proto/waCommon"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/proto/waHistorySync"
	"go.mau.fi/whatsmeow/proto/waWeb"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"
)

// History sync: after pairing, a real phone shares recent chats with the
// new linked device in a HistorySyncNotification protocol message from its
// own device 0. whatsmeow announces (DeviceProps.HistorySyncConfig
// InlineInitialPayloadInE2EeMsg) that it takes the initial payload inline,
// so the emulator puts the zlib-compressed HistorySync in
// InitialHistBootstrapInlinePayload instead of a media blob: a client that
// downloads history (whatsmeow without ManualHistorySyncDownload) decodes
// it and dispatches events.HistorySync; one that does not ignores it.

// HistoryChat is one one-to-one chat of a history sync: the contact and
// the texts of the chat, oldest first.
type HistoryChat struct {
	// With is the contact (a phone number or JID of a known account).
	With     string        `json:"with"`
	Messages []HistoryText `json:"messages"`
}

// HistoryText is one text of a chat's history.
type HistoryText struct {
	// ID is the message id (generated when empty).
	ID   string `json:"id"`
	Text string `json:"text"`
	// FromMe: the account sent it (else the contact did).
	FromMe bool      `json:"fromMe"`
	At     time.Time `json:"at"`
}

// SendHistorySync has account's phone share chats with every linked device
// of the account, as one history sync notification. It returns the
// notification's message id and the chats with their message ids filled.
func (s *Server) SendHistorySync(ctx context.Context, account string, chats []HistoryChat) (string, []HistoryChat, error) {
	s.mu.Lock()
	a, err := s.accountRefLocked(account)
	if err != nil {
		s.mu.Unlock()
		return "", nil, err
	}
	devs := s.linkedDevicesLocked(a.Phone)
	hs := &waHistorySync.HistorySync{
		SyncType:   waHistorySync.HistorySync_INITIAL_BOOTSTRAP.Enum(),
		ChunkOrder: proto.Uint32(1),
		Progress:   proto.Uint32(100),
	}
	var order uint64
	for i, c := range chats {
		with, err := s.accountRefLocked(c.With)
		if err != nil {
			s.mu.Unlock()
			return "", nil, err
		}
		chat := types.NewJID(with.Phone, types.DefaultUserServer).String()
		conv := &waHistorySync.Conversation{ID: proto.String(chat)}
		for j, m := range c.Messages {
			if m.Text == "" {
				s.mu.Unlock()
				return "", nil, fmt.Errorf("%w: empty text in the history of %s", ErrBadMessage, c.With)
			}
			if m.ID == "" {
				m.ID = newMessageID()
			}
			if m.At.IsZero() {
				m.At = time.Now().UTC()
			}
			chats[i].Messages[j] = m
			order++
			conv.Messages = append(conv.Messages, &waHistorySync.HistorySyncMsg{
				Message: &waWeb.WebMessageInfo{
					Key:              &waCommon.MessageKey{RemoteJID: proto.String(chat), FromMe: proto.Bool(m.FromMe), ID: proto.String(m.ID)},
					Message:          &waE2E.Message{Conversation: proto.String(m.Text)},
					MessageTimestamp: proto.Uint64(uint64(m.At.Unix())),
				},
				MsgOrderID: proto.Uint64(order),
			})
		}
		hs.Conversations = append(hs.Conversations, conv)
	}
	s.mu.Unlock()
	if len(devs) == 0 {
		return "", nil, fmt.Errorf("%w: +%s", ErrNoLinkedDevices, a.Phone)
	}
	raw, err := proto.Marshal(hs)
	if err != nil {
		return "", nil, fmt.Errorf("marshal history: %w", err)
	}
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	zw.Write(raw)
	if err := zw.Close(); err != nil {
		return "", nil, fmt.Errorf("compress history: %w", err)
	}
	own := types.NewJID(a.Phone, types.DefaultUserServer).String()
	id := newMessageID()
	msg := &outMessage{
		SentMessage: SentMessage{ID: id, From: own, To: own, Text: "(history sync)", At: time.Now().UTC()},
		devices:     map[string]*DeviceDelivery{},
		payload: &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{
			Type: waE2E.ProtocolMessage_HISTORY_SYNC_NOTIFICATION.Enum(),
			HistorySyncNotification: &waE2E.HistorySyncNotification{
				SyncType:                          waE2E.HistorySyncType_INITIAL_BOOTSTRAP.Enum(),
				ChunkOrder:                        proto.Uint32(1),
				Progress:                          proto.Uint32(100),
				FileLength:                        proto.Uint64(uint64(z.Len())),
				InitialHistBootstrapInlinePayload: z.Bytes(),
			},
		}},
	}
	m := s.msgs
	m.mu.Lock()
	for _, d := range devs {
		msg.devices[d.JID] = &DeviceDelivery{JID: d.JID, State: "pending"}
	}
	m.sent[id] = msg
	m.mu.Unlock()
	for _, d := range devs {
		m.enqueue(d.JID, &outItem{key: "m:" + id, msg: msg})
	}
	for _, d := range devs {
		if err := ctx.Err(); err != nil {
			return id, chats, err
		}
		m.flushDevice(d.JID)
	}
	return id, chats, nil
}
