package waemu

import (
	"strings"

	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"
)

// usync answers <iq xmlns="usync"><usync><query>...</query><list>...</list>
// in the shape whatsmeow parses (user.go usync, parseDeviceList,
// IsOnWhatsApp, GetUserInfo): one <user> per listed user, with a child per
// queried protocol the emulator knows:
//
//   - devices: device 0 (the phone) and the account's linked devices but
//     the asking one (whatsmeow's GetUserDevices documents that the server
//     leaves it out; listed, it would make the client fetch its own bundle,
//     consuming one of its prekeys, at every send), so a send reaches the
//     peer's phone and the copies for the sender's own other devices;
//   - contact: type "in" for a number that has an account (a peer, or an
//     account with linked devices), "out" for any other;
//   - lid: the account's LID, which newer whatsmeow versions send to.
//
// A user the emulator does not know gets an empty device list, so a send to
// it has no participants and is refused (see handleMessage).
func (c *conn) usync(id string, req waBinary.Node) {
	var protocols []string
	query := req.GetChildByTag("query")
	for _, q := range query.GetChildren() {
		protocols = append(protocols, q.Tag)
	}
	s := c.srv
	var users []waBinary.Node
	s.mu.Lock()
	list := req.GetChildByTag("list")
	for _, u := range list.GetChildrenByTag("user") {
		users = append(users, s.usyncUserLocked(u, protocols, c.jid))
	}
	s.mu.Unlock()
	ag := req.AttrGetter()
	c.reply(id, []waBinary.Node{{
		Tag: "usync",
		Attrs: waBinary.Attrs{
			"sid": ag.OptionalString("sid"), "mode": ag.OptionalString("mode"),
			"context": ag.OptionalString("context"), "last": "true", "index": "0",
		},
		Content: []waBinary.Node{{Tag: "list", Content: users}},
	}})
}

// usyncUserLocked answers one <user> of a usync list.
func (s *Server) usyncUserLocked(u waBinary.Node, protocols []string, asking string) waBinary.Node {
	var j types.JID
	var contact string
	if cj, ok := u.Attrs["jid"].(types.JID); ok {
		j = cj.ToNonAD()
	} else {
		// <user><contact>+15550001234@c.us</contact></user>
		contact = contentString(u.GetChildByTag("contact").Content)
		number := strings.TrimPrefix(strings.SplitN(contact, "@", 2)[0], "+")
		if digits, err := normalizePhone(number); err == nil {
			j = types.NewJID(digits, types.DefaultUserServer)
		} else {
			j = types.NewJID(number, types.DefaultUserServer)
		}
	}
	a := s.accountOfLocked(j)
	out := waBinary.Node{Tag: "user", Attrs: waBinary.Attrs{"jid": j}}
	var children []waBinary.Node
	for _, p := range protocols {
		switch p {
		case "devices":
			var list []waBinary.Node
			if a != nil {
				list = append(list, waBinary.Node{Tag: "device", Attrs: waBinary.Attrs{"id": 0}})
				for _, d := range s.linkedDevicesLocked(a.Phone) {
					if d.JID == asking {
						continue
					}
					list = append(list, waBinary.Node{Tag: "device",
						Attrs: waBinary.Attrs{"id": int(mustJID(d.JID).Device), "key-index": 1}})
				}
			}
			children = append(children, waBinary.Node{Tag: "devices",
				Content: []waBinary.Node{{Tag: "device-list", Content: list}}})
		case "contact":
			typ := "out"
			if a != nil {
				typ = "in"
			}
			n := waBinary.Node{Tag: "contact", Attrs: waBinary.Attrs{"type": typ}}
			if contact != "" {
				n.Content = []byte(contact)
			}
			children = append(children, n)
		case "lid":
			n := waBinary.Node{Tag: "lid"}
			if a != nil {
				n.Attrs = waBinary.Attrs{"val": types.NewJID(a.LID, types.HiddenUserServer)}
			}
			children = append(children, n)
		}
	}
	if len(children) > 0 {
		out.Content = children
	}
	return out
}

// contentString reads node content that the binary decoder may give as
// bytes or as a string.
func contentString(v any) string {
	switch c := v.(type) {
	case []byte:
		return string(c)
	case string:
		return c
	}
	return ""
}
