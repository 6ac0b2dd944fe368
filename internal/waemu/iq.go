package waemu

import (
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"
)

// handleIQ answers the client's get/set queries: what whatsmeow asks after
// login (prekey count and upload, passive mode), what it asks before a send
// (usync device lists and contacts, prekey bundles), keepalive pings, the
// phone-code pairing stages and logout. Anything else gets an empty result,
// which keeps the client quiet (an unanswered iq costs it 75 s).
func (c *conn) handleIQ(node *waBinary.Node) {
	ag := node.AttrGetter()
	id := ag.OptionalString("id")
	xmlns := ag.OptionalString("xmlns")
	var first waBinary.Node
	if children := node.GetChildren(); len(children) > 0 {
		first = children[0]
	}
	switch {
	case xmlns == "w:p":
		c.srv.keepalives.Add(1)
		c.reply(id, nil)
	case xmlns == "encrypt" && first.Tag == "count":
		c.reply(id, []waBinary.Node{{Tag: "count", Attrs: waBinary.Attrs{"value": c.preKeyCount()}}})
	case xmlns == "encrypt" && ag.OptionalString("type") == "set":
		c.uploadPreKeys(id, node)
	case xmlns == "encrypt" && first.Tag == "key":
		c.fetchBundles(id, first)
	case xmlns == "usync" && first.Tag == "usync":
		c.usync(id, first)
	case xmlns == "md" && first.Tag == "link_code_companion_reg":
		c.handleCodePairIQ(node, first)
	case xmlns == "md" && first.Tag == "remove-companion-device":
		c.logout(id, first)
	default:
		c.reply(id, nil)
	}
}

// reply sends an iq result.
func (c *conn) reply(id string, content []waBinary.Node) {
	n := waBinary.Node{Tag: "iq", Attrs: serverAttrs("type", "result", "id", id)}
	if content != nil {
		n.Content = content
	}
	if err := c.send(n); err != nil {
		c.log.Debug("reply not sent", "err", err)
	}
}

// replyError sends an iq error, which whatsmeow turns into an IQError.
func (c *conn) replyError(id string, code int, text string) {
	err := c.send(waBinary.Node{Tag: "iq", Attrs: serverAttrs("type", "error", "id", id),
		Content: []waBinary.Node{{Tag: "error", Attrs: waBinary.Attrs{"code": code, "text": text}}}})
	if err != nil {
		c.log.Debug("error reply not sent", "err", err)
	}
}

// logout handles whatsmeow's Logout: the device removes itself. The device
// is forgotten, the iq answered, and the socket closed by whatsmeow as soon
// as it has the answer (the emulator closes it after logoutLinger if not).
func (c *conn) logout(id string, req waBinary.Node) {
	jid, _ := req.Attrs["jid"].(types.JID)
	s := c.srv
	s.mu.Lock()
	own := c.jid != "" && jid.String() == c.jid && s.st.Devices[c.jid] != nil
	if own {
		delete(s.st.Devices, c.jid)
		if s.live[c.jid] == c {
			delete(s.live, c.jid)
		}
	}
	s.mu.Unlock()
	if !own {
		c.replyError(id, 403, "forbidden")
		return
	}
	s.markDirty()
	c.log.Info("device logged out by the client", "jid", c.jid, "reason", req.AttrGetter().OptionalString("reason"))
	c.reply(id, nil)
	c.closeAfter(logoutLinger)
}
