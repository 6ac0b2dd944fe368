package waemu

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/keys"
)

// Peer phones are the other end of a chat: WhatsApp accounts hosted by the
// emulator whose primary device (device 0) has real Signal keys, so linked
// clients can send them messages and receive messages from them. A peer is
// an account like the ones pairing creates (a phone number, a LID, an
// identity key); the account of a linked client has the same kind of
// device 0, which receives the copies whatsmeow encrypts for its own
// account's other devices.

// ErrUnknownPeer is returned for a phone number or JID no account has.
var ErrUnknownPeer = errors.New("unknown peer")

// PeerInfo describes a peer phone.
type PeerInfo struct {
	JID   string `json:"jid"`
	LID   string `json:"lid"`
	Phone string `json:"phone"` // "+" and digits
	Name  string `json:"name"`
	// Created is false when the phone already had an account.
	Created bool `json:"created"`
}

// AddPeer creates the peer phone with this number and push name (generated
// when empty), or returns the existing account of that number: it is
// idempotent per phone number. A later call with a non-empty name renames
// it.
func (s *Server) AddPeer(phone, name string) (PeerInfo, error) {
	digits, err := normalizePhone(phone)
	if err != nil {
		return PeerInfo{}, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return PeerInfo{}, ErrClosed
	}
	_, existed := s.st.Accounts[digits]
	if _, err := s.accountLocked(digits, name); err != nil {
		s.mu.Unlock()
		return PeerInfo{}, err
	}
	a := s.st.Accounts[digits]
	a.Peer = true
	s.phoneSignalLocked(a)
	info := peerInfo(a)
	s.mu.Unlock()
	s.markDirty()
	info.Created = !existed
	if info.Created {
		s.log.Info("peer phone created", "jid", info.JID, "lid", info.LID)
	}
	return info, nil
}

// Peers lists the peer phones, sorted by JID.
func (s *Server) Peers() []PeerInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []PeerInfo
	for _, a := range s.st.Accounts {
		if a.Peer {
			out = append(out, peerInfo(a))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].JID < out[j].JID })
	return out
}

func peerInfo(a *account) PeerInfo {
	return PeerInfo{
		JID:   types.NewJID(a.Phone, types.DefaultUserServer).String(),
		LID:   types.NewJID(a.LID, types.HiddenUserServer).String(),
		Phone: "+" + a.Phone,
		Name:  a.Name,
	}
}

// phoneSignalLocked returns the account's phone Signal state, making it on
// first use.
func (s *Server) phoneSignalLocked(a *account) *phoneSignal {
	if a.Signal == nil {
		a.Signal = newPhoneSignal(keys.NewKeyPairFromPrivateKey([32]byte(a.IdentityKey)))
	}
	return a.Signal
}

// accountOfLocked finds the account of a phone-number or LID JID (any
// device part).
func (s *Server) accountOfLocked(j types.JID) *account {
	switch j.Server {
	case types.DefaultUserServer, types.LegacyUserServer:
		return s.st.Accounts[strings.TrimPrefix(j.User, "+")]
	case types.HiddenUserServer:
		return s.accountByLIDLocked(j.User)
	}
	return nil
}

// accountByLIDLocked looks a LID user up, through an index kept in memory
// (LIDs are unique and accounts are never removed).
func (s *Server) accountByLIDLocked(lid string) *account {
	if phone, ok := s.lids[lid]; ok {
		return s.st.Accounts[phone]
	}
	for _, a := range s.st.Accounts {
		if a.LID == lid {
			if s.lids == nil {
				s.lids = map[string]string{}
			}
			s.lids[lid] = a.Phone
			return a
		}
	}
	return nil
}

// parseAccountRef parses what the control API accepts for an account: a
// phone number ("+15550001234", digits) or a JID (phone number or LID).
func parseAccountRef(ref string) (types.JID, error) {
	if strings.Contains(ref, "@") {
		j, err := types.ParseJID(ref)
		if err != nil {
			return types.JID{}, fmt.Errorf("%w: %q: %w", ErrBadPhone, ref, err)
		}
		return j.ToNonAD(), nil
	}
	digits, err := normalizePhone(ref)
	if err != nil {
		return types.JID{}, err
	}
	return types.NewJID(digits, types.DefaultUserServer), nil
}

// accountLockedRef resolves a control API reference to an account.
func (s *Server) accountRefLocked(ref string) (*account, error) {
	j, err := parseAccountRef(ref)
	if err != nil {
		return nil, err
	}
	a := s.accountOfLocked(j)
	if a == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownPeer, ref)
	}
	return a, nil
}

// linkedDevicesLocked lists the linked devices of an account, sorted by
// device number.
func (s *Server) linkedDevicesLocked(phone string) []*device {
	var out []*device
	for _, d := range s.st.Devices {
		if d.Phone == phone {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].JID < out[j].JID })
	return out
}

func (s *Server) peerCountLocked() int {
	n := 0
	for _, a := range s.st.Accounts {
		if a.Peer {
			n++
		}
	}
	return n
}
