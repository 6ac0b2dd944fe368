package waemu

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.mau.fi/libsignal/ecc"
	groupRecord "go.mau.fi/libsignal/groups/state/record"
	"go.mau.fi/libsignal/keys/identity"
	"go.mau.fi/libsignal/protocol"
	"go.mau.fi/libsignal/state/record"
	"go.mau.fi/libsignal/state/store"
	wastore "go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/util/keys"
)

// signalSerializer is the protobuf serializer whatsmeow's own store uses.
var signalSerializer = wastore.SignalProtobufSerializer

// errNoGroups: the emulated phones have 1:1 chats only.
var errNoGroups = errors.New("waemu: group (sender key) messages are not emulated")

// phoneSignal is the Signal state of an emulated phone (device 0 of an
// account): its registration id, signed prekey, the one-time prekeys it
// handed out and not yet saw used, and its sessions and the identities of
// the devices it talks to. Sessions and identities are keyed by the remote
// address string ("user:device"), never by *SignalAddress (libsignal's test
// stores key by pointer and never find a session again). The identity key
// is the account's own (account.IdentityKey), as on a real phone, whose
// Signal identity is the key that signs its companions.
//
// Every field is guarded by Server.mu; the record bytes stored in the maps
// are never modified in place, so a snapshot marshalled under Server.mu is
// consistent.
type phoneSignal struct {
	RegistrationID uint32            `json:"registration_id"`
	SignedPreKey   storedPreKey      `json:"signed_prekey"`
	NextPreKeyID   uint32            `json:"next_prekey_id"`
	PreKeys        map[uint32][]byte `json:"prekeys"` // id → private key
	Sessions       map[string][]byte `json:"sessions"`
	Identities     map[string][]byte `json:"identities"`
}

// storedPreKey is a key pair with its id and, for a signed prekey, the
// signature by the identity key.
type storedPreKey struct {
	ID        uint32 `json:"id"`
	Priv      []byte `json:"priv,omitempty"`
	Pub       []byte `json:"pub"`
	Signature []byte `json:"signature,omitempty"`
}

// maxPreKeyID is the largest id that fits the 3 bytes of a <key><id>.
const maxPreKeyID = 1<<24 - 1

// newPhoneSignal makes the Signal state of a phone with this identity.
func newPhoneSignal(identity *keys.KeyPair) *phoneSignal {
	spk := identity.CreateSignedPreKey(1)
	return &phoneSignal{
		RegistrationID: randomUint32()%16380 + 1,
		SignedPreKey:   storedPreKey{ID: spk.KeyID, Priv: spk.Priv[:], Pub: spk.Pub[:], Signature: spk.Signature[:]},
		NextPreKeyID:   1,
		PreKeys:        map[uint32][]byte{},
		Sessions:       map[string][]byte{},
		Identities:     map[string][]byte{},
	}
}

// phoneStore is libsignal's store.SignalProtocol over one phone's state.
// Callers serialise whole Signal operations on a phone with its lock
// (Server.phoneLock); the store itself only takes Server.mu around map
// access.
type phoneStore struct {
	s        *Server
	identity *identity.KeyPair
	sig      *phoneSignal
}

var _ store.SignalProtocol = (*phoneStore)(nil)

func (s *Server) newPhoneStore(a *account) *phoneStore {
	kp := keys.NewKeyPairFromPrivateKey([32]byte(a.IdentityKey))
	return &phoneStore{
		s: s,
		identity: identity.NewKeyPair(identity.NewKey(ecc.NewDjbECPublicKey(*kp.Pub)),
			ecc.NewDjbECPrivateKey(*kp.Priv)),
		sig: a.Signal,
	}
}

func (p *phoneStore) GetIdentityKeyPair() *identity.KeyPair { return p.identity }

func (p *phoneStore) GetLocalRegistrationID() uint32 {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	return p.sig.RegistrationID
}

func (p *phoneStore) SaveIdentity(_ context.Context, addr *protocol.SignalAddress, key *identity.Key) error {
	pub := key.PublicKey().PublicKey()
	p.s.mu.Lock()
	p.sig.Identities[addr.String()] = pub[:]
	p.s.mu.Unlock()
	p.s.markDirty()
	return nil
}

// IsTrustedIdentity trusts every identity, as whatsmeow does with
// AutoTrustIdentity: a device that relinked under the same JID has a new
// identity, and the emulator's phones are not there to warn anyone.
func (p *phoneStore) IsTrustedIdentity(context.Context, *protocol.SignalAddress, *identity.Key) (bool, error) {
	return true, nil
}

func (p *phoneStore) LoadPreKey(_ context.Context, id uint32) (*record.PreKey, error) {
	p.s.mu.Lock()
	priv, ok := p.sig.PreKeys[id]
	p.s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("waemu: no one-time prekey %d", id)
	}
	kp := keys.NewKeyPairFromPrivateKey([32]byte(priv))
	return record.NewPreKey(id, ecc.NewECKeyPair(ecc.NewDjbECPublicKey(*kp.Pub), ecc.NewDjbECPrivateKey(*kp.Priv)), nil), nil
}

func (p *phoneStore) StorePreKey(_ context.Context, id uint32, r *record.PreKey) error {
	priv := r.KeyPair().PrivateKey().Serialize()
	p.s.mu.Lock()
	p.sig.PreKeys[id] = priv[:]
	p.s.mu.Unlock()
	p.s.markDirty()
	return nil
}

func (p *phoneStore) ContainsPreKey(_ context.Context, id uint32) (bool, error) {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	_, ok := p.sig.PreKeys[id]
	return ok, nil
}

// RemovePreKey consumes a one-time prekey once a pkmsg used it.
func (p *phoneStore) RemovePreKey(_ context.Context, id uint32) error {
	p.s.mu.Lock()
	delete(p.sig.PreKeys, id)
	p.s.mu.Unlock()
	p.s.markDirty()
	return nil
}

func (p *phoneStore) LoadSession(_ context.Context, addr *protocol.SignalAddress) (*record.Session, error) {
	p.s.mu.Lock()
	raw := p.sig.Sessions[addr.String()]
	p.s.mu.Unlock()
	if raw == nil {
		return record.NewSession(signalSerializer.Session, signalSerializer.State), nil
	}
	sess, err := record.NewSessionFromBytes(raw, signalSerializer.Session, signalSerializer.State)
	if err != nil {
		return nil, fmt.Errorf("waemu: session with %s: %w", addr, err)
	}
	return sess, nil
}

func (p *phoneStore) GetSubDeviceSessions(_ context.Context, name string) ([]uint32, error) {
	return nil, nil
}

func (p *phoneStore) StoreSession(_ context.Context, addr *protocol.SignalAddress, r *record.Session) error {
	raw := r.Serialize()
	p.s.mu.Lock()
	p.sig.Sessions[addr.String()] = raw
	p.s.mu.Unlock()
	p.s.markDirty()
	return nil
}

func (p *phoneStore) ContainsSession(_ context.Context, addr *protocol.SignalAddress) (bool, error) {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	_, ok := p.sig.Sessions[addr.String()]
	return ok, nil
}

func (p *phoneStore) DeleteSession(_ context.Context, addr *protocol.SignalAddress) error {
	p.s.mu.Lock()
	delete(p.sig.Sessions, addr.String())
	p.s.mu.Unlock()
	p.s.markDirty()
	return nil
}

func (p *phoneStore) DeleteAllSessions(context.Context) error {
	p.s.mu.Lock()
	clear(p.sig.Sessions)
	p.s.mu.Unlock()
	p.s.markDirty()
	return nil
}

func (p *phoneStore) LoadSignedPreKey(_ context.Context, id uint32) (*record.SignedPreKey, error) {
	p.s.mu.Lock()
	spk := p.sig.SignedPreKey
	p.s.mu.Unlock()
	if id != spk.ID {
		return nil, fmt.Errorf("waemu: no signed prekey %d", id)
	}
	return record.NewSignedPreKey(id, 0, ecc.NewECKeyPair(
		ecc.NewDjbECPublicKey([32]byte(spk.Pub)), ecc.NewDjbECPrivateKey([32]byte(spk.Priv)),
	), [64]byte(spk.Signature), nil), nil
}

func (p *phoneStore) LoadSignedPreKeys(ctx context.Context) ([]*record.SignedPreKey, error) {
	p.s.mu.Lock()
	id := p.sig.SignedPreKey.ID
	p.s.mu.Unlock()
	r, err := p.LoadSignedPreKey(ctx, id)
	if err != nil {
		return nil, err
	}
	return []*record.SignedPreKey{r}, nil
}

func (p *phoneStore) StoreSignedPreKey(context.Context, uint32, *record.SignedPreKey) error {
	return errors.New("waemu: a phone's signed prekey is fixed")
}

func (p *phoneStore) ContainsSignedPreKey(_ context.Context, id uint32) (bool, error) {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	return id == p.sig.SignedPreKey.ID, nil
}

func (p *phoneStore) RemoveSignedPreKey(context.Context, uint32) error {
	return errors.New("waemu: a phone's signed prekey is fixed")
}

func (p *phoneStore) StoreSenderKey(context.Context, *protocol.SenderKeyName, *groupRecord.SenderKey) error {
	return errNoGroups
}

func (p *phoneStore) LoadSenderKey(context.Context, *protocol.SenderKeyName) (*groupRecord.SenderKey, error) {
	return nil, errNoGroups
}

// phoneLocks serialise Signal operations per phone: libsignal loads a
// session, changes it and stores it, and two of those interleaved on one
// session would lose a ratchet step.
type phoneLocks struct {
	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

func (l *phoneLocks) get(phone string) *sync.Mutex {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.locks == nil {
		l.locks = map[string]*sync.Mutex{}
	}
	m := l.locks[phone]
	if m == nil {
		m = &sync.Mutex{}
		l.locks[phone] = m
	}
	return m
}
