// Package waemutest helps drive many real whatsmeow clients against the
// emulator (internal/waemu) at once.
//
// A newly linked whatsmeow device generates and inserts 812 one-time prekeys
// (812 Curve25519 key pairs, 812 INSERTs) before it reports Connected. That is
// the client's cost, not the emulator's, and with hundreds of clients in one
// process (under -race, or in the load test) it dominates everything else.
// PreKeyPool.NewDevice keeps a device's one-time prekeys in memory, drawn
// from one shared pool, while every other part of the device (identity, sessions,
// LID map, ...) stays in whatsmeow's Postgres sqlstore. The client code
// itself is unmodified.
package waemutest

import (
	"context"
	"fmt"
	"sync"

	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/util/keys"
)

// poolSize covers the first upload (812) and one refill (50).
const poolSize = 812 + 50

// PreKeyPool is a set of one-time prekeys shared by many devices. Sharing is
// harmless for tests, also when a peer phone starts a session with such a
// device: a one-time prekey only adds one DH term, and each device's own
// identity and signed prekey keep its sessions distinct.
type PreKeyPool struct {
	keys []*keys.PreKey
}

// NewPreKeyPool generates the shared prekeys (812 + 50: the first upload
// and one refill).
func NewPreKeyPool() *PreKeyPool {
	p := &PreKeyPool{keys: make([]*keys.PreKey, poolSize)}
	for i := range p.keys {
		p.keys[i] = keys.NewPreKey(uint32(i + 1))
	}
	return p
}

// NewDevice is container.NewDevice with one-time prekeys kept in memory.
func (p *PreKeyPool) NewDevice(container *sqlstore.Container) *store.Device {
	dev := container.NewDevice()
	dev.Container = &memPreKeyContainer{Container: container, pool: p}
	return dev
}

// memPreKeyContainer swaps in the memory prekey store when whatsmeow first
// saves the device (after pairing), which is when sqlstore would attach its
// own. Loading the device again from the container gives a plain sqlstore
// device.
type memPreKeyContainer struct {
	*sqlstore.Container
	pool *PreKeyPool
}

// PutDevice saves the device and keeps its prekeys in memory.
func (c *memPreKeyContainer) PutDevice(ctx context.Context, dev *store.Device) error {
	err := c.Container.PutDevice(ctx, dev)
	if _, ok := dev.PreKeys.(*memPreKeys); !ok && dev.Initialized {
		dev.PreKeys = &memPreKeys{pool: c.pool.keys}
	}
	return err
}

// memPreKeys implements store.PreKeyStore over the shared pool.
type memPreKeys struct {
	pool     []*keys.PreKey // read-only
	mu       sync.Mutex
	uploaded uint32 // keys 1..uploaded were uploaded
}

func (m *memPreKeys) GetOrGenPreKeys(_ context.Context, count uint32) ([]*keys.PreKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if int(m.uploaded+count) > len(m.pool) {
		return nil, fmt.Errorf("waemutest: prekey pool of %d exhausted", len(m.pool))
	}
	return m.pool[m.uploaded : m.uploaded+count], nil
}

func (m *memPreKeys) GenOnePreKey(context.Context) (*keys.PreKey, error) {
	return keys.NewPreKey(poolSize + 1), nil
}

func (m *memPreKeys) GetPreKey(_ context.Context, id uint32) (*keys.PreKey, error) {
	if id >= 1 && int(id) <= len(m.pool) {
		return m.pool[id-1], nil
	}
	return nil, nil
}

func (m *memPreKeys) RemovePreKey(context.Context, uint32) error { return nil }

func (m *memPreKeys) MarkPreKeysAsUploaded(_ context.Context, upToID uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.uploaded = upToID
	return nil
}

func (m *memPreKeys) UploadedPreKeyCount(context.Context) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int(m.uploaded), nil
}
