package waemu

import (
	"bytes"
	"strconv"
	"time"

	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"
)

// Connect failure reasons (whatsmeow events.ConnectFailureReason).
const (
	failureLoggedOut          = 401 // LoggedOut{OnConnect: true}; the client deletes its store
	failureServiceUnavailable = 503 // the client reconnects with growing delays
)

// login handles a login payload: a known device with the Noise key it
// paired with gets <success>, and an older live connection of the same
// device is replaced. Unknown devices get failure 401 and, while logins are
// refused, known ones get 503. A failed login keeps the socket open a moment
// so the client reads the failure before the close.
func (c *conn) login() {
	s := c.srv
	p := c.hs.payload
	jid := types.NewADJID(strconv.FormatUint(p.GetUsername(), 10), 0, uint8(p.GetDevice())).String()
	log := c.log.With("jid", jid)

	s.mu.Lock()
	d := s.st.Devices[jid]
	reason := 0
	switch {
	case p.Username == nil || d == nil:
		reason = failureLoggedOut
	case !bytes.Equal(d.NoiseKey, c.hs.clientStatic[:]):
		reason = failureLoggedOut
	case time.Now().Before(s.refuseUntil):
		reason = failureServiceUnavailable
	}
	if reason != 0 {
		s.mu.Unlock()
		if reason == failureServiceUnavailable {
			s.refused.Add(1)
		}
		log.Info("login refused", "reason", reason, "known", d != nil)
		c.endWith(waBinary.Node{Tag: "failure", Attrs: waBinary.Attrs{"reason": reason, "location": "emu"}})
		return
	}
	old := s.live[jid]
	if old != nil && old.ctx.Err() != nil {
		old = nil // its socket already ended; it is just not forgotten yet
	}
	s.live[jid] = c
	c.jid = jid
	if old != nil {
		d.Conflicts++
		s.conflicts.Add(1)
	}
	lid, _ := types.ParseJID(d.LID)
	s.mu.Unlock()

	if old != nil {
		log.Warn("second connection for a device: replacing the older one")
		s.markDirty()
		if !s.spawn(func() { old.endWith(streamErrorReplaced()) }) {
			old.close()
		}
	}
	now := time.Now().Unix()
	err := c.send(waBinary.Node{Tag: "success", Attrs: waBinary.Attrs{
		"t": now, "lid": lid, "location": "emu", "creation": now,
	}})
	if err != nil {
		log.Debug("success not sent", "err", err)
		c.close()
		return
	}
	s.logins.Add(1)
	log.Info("device logged in", "replaced", old != nil)
	// What the device missed while offline (or did not receipt before it
	// went away) is delivered again.
	s.msgs.flushLater(c)
}
