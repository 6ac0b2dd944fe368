package wa

import (
	"context"
	"errors"
	"fmt"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"
)

// History sync is stored before WhatsApp is told it arrived, or recovered.
//
// Clients always run with ManualHistorySyncDownload: whatsmeow's own
// download runs on a goroutine after the notification was receipted, so a
// worker killed in between would lose the history. Instead the worker
// downloads it in its handler for the notification's events.Message, which
// under SynchronousAck holds the message's receipt until the texts are
// committed (a failure returns false: WhatsApp may deliver it again).
//
// whatsmeow also sends a "hist_sync" receipt for the notification on a
// goroutine of its own, before any handler runs, so the handler alone
// cannot promise WhatsApp will deliver it again. What makes it durable is
// whatsmeow's decrypted-event buffer: the notification's plaintext is
// committed in the transaction that decrypted it, before either receipt,
// and cleared only after every handler returned true. A plaintext still
// there is a notification whose handling never finished: PendingHistory
// finds them for the next host to store.

// HistoryNotification is the history sync notification m carries (m as
// events.Message gives it), or nil.
func HistoryNotification(m *waE2E.Message) *waE2E.HistorySyncNotification {
	if dsm := m.GetDeviceSentMessage().GetMessage(); dsm != nil {
		m = dsm
	}
	return m.GetProtocolMessage().GetHistorySyncNotification()
}

// BufferedHistory is a history sync notification whatsmeow decrypted for a
// device and whose handling never finished.
type BufferedHistory struct {
	// Hash keys it in whatsmeow's buffer (ClearBufferedEventPlaintext).
	Hash         [32]byte
	Notification *waE2E.HistorySyncNotification
}

// PendingHistory lists device's buffered history notifications whose
// handlers never all returned true. It reads whatsmeow's event buffer
// table (sqlstore's whatsmeow_event_buffer, in the pinned whatsmeow's
// schema), which has no listing call: a whatsmeow upgrade that changes it
// fails TestHistorySurvivesAFailedStoreAndAWorkerGone.
func (h *Host) PendingHistory(ctx context.Context, device types.JID) ([]BufferedHistory, error) {
	rows, err := h.db.QueryContext(ctx, `SELECT ciphertext_hash, plaintext FROM whatsmeow_event_buffer
		WHERE our_jid = $1 AND plaintext IS NOT NULL ORDER BY insert_timestamp`, device.String())
	if err != nil {
		return nil, fmt.Errorf("wa: read event buffer: %w", err)
	}
	defer rows.Close()
	var out []BufferedHistory
	for rows.Next() {
		var hash, plain []byte
		if err := rows.Scan(&hash, &plain); err != nil {
			return nil, fmt.Errorf("wa: read event buffer: %w", err)
		}
		// The buffer keeps the padded plaintext of a v2 message (whatsmeow
		// unpads after buffering); anything else is not a notification.
		plain, err := unpad(plain)
		if err != nil || len(hash) != 32 {
			continue
		}
		var m waE2E.Message
		if proto.Unmarshal(plain, &m) != nil {
			continue
		}
		if n := HistoryNotification(&m); n != nil {
			out = append(out, BufferedHistory{Hash: [32]byte(hash), Notification: n})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("wa: read event buffer: %w", err)
	}
	return out, nil
}

// unpad strips the padding of a v2 plaintext: n bytes of value n (whatsmeow
// pads with 1 to 15 and accepts any n, message.go unpadMessage).
func unpad(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, errors.New("empty plaintext")
	}
	n := int(b[len(b)-1])
	if n == 0 || n > len(b) {
		return nil, errors.New("bad padding")
	}
	for _, x := range b[len(b)-n:] {
		if int(x) != n {
			return nil, errors.New("bad padding")
		}
	}
	return b[:len(b)-n], nil
}

// HistoryRecent says whether clients store the history phones share
// (HISTORY_SYNC=recent).
func (h *Host) HistoryRecent() bool { return h.opts.HistoryRecent }
