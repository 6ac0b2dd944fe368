package wa

import (
	"context"
	"database/sql"
	"fmt"
	"sync"

	"go.mau.fi/whatsmeow"
	wastore "go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/util/keys"
)

// Pairing a device makes whatsmeow generate and upload 812 one-time
// prekeys, and its sqlstore writes them first, one INSERT (one commit, one
// WAL flush) per key: most of a pairing's cost. batchPreKeys writes them in
// one INSERT instead. The durability is the same: the keys are committed,
// as uploaded=false, before GetOrGenPreKeys returns, and so before
// whatsmeow uploads them; whatsmeow marks them uploaded only after the
// server has acknowledged the upload. A crash at any point leaves either
// no key uploaded, or every uploaded key's private half in Postgres
// (TestPreKeysSurviveACrashAfterUpload). Counting the uploaded keys stops
// at preKeyCountBound (UploadedPreKeyCount); everything else about
// prekeys (reading one, removing a used one, marking) stays sqlstore's.

// batchContainer attaches batchPreKeys to a new device when whatsmeow
// first saves it (after pairing), which is when sqlstore attaches its own.
type batchContainer struct {
	*sqlstore.Container
	db *sql.DB
}

// PutDevice saves the device, then swaps in the batched prekey store.
func (c *batchContainer) PutDevice(ctx context.Context, dev *wastore.Device) error {
	err := c.Container.PutDevice(ctx, dev)
	withBatchPreKeys(dev, c.db)
	return err
}

// withBatchPreKeys wraps an initialised device's prekey store (once).
func withBatchPreKeys(dev *wastore.Device, db *sql.DB) {
	if dev == nil || !dev.Initialized || dev.ID == nil || dev.PreKeys == nil {
		return
	}
	if _, done := dev.PreKeys.(*batchPreKeys); done {
		return
	}
	dev.PreKeys = &batchPreKeys{PreKeyStore: dev.PreKeys, db: db, jid: dev.ID.String()}
}

// preKeyCountBound is as far as UploadedPreKeyCount counts. whatsmeow asks
// for the count at every login, so at every restore, and only compares it
// with MinPreKeyCount (below it, it uploads a new batch) and with 0 (none
// uploaded: the first 812). sqlstore counted every row of the device, 812
// after pairing: about a quarter of a restore's time in Postgres (the
// statement figures of make scale). Counting up to one batch keeps both
// decisions, and the figure whatsmeow logs means the same up to a batch.
const preKeyCountBound = whatsmeow.WantedPreKeyCount

// batchPreKeys is sqlstore's prekey store with GetOrGenPreKeys writing the
// keys it generates in one statement, and UploadedPreKeyCount bounded.
type batchPreKeys struct {
	wastore.PreKeyStore // sqlstore's, for everything else
	db                  *sql.DB
	jid                 string // whatsmeow_pre_keys.jid: the device JID as sqlstore writes it

	// mu serialises generating keys: both GetOrGenPreKeys and GenOnePreKey
	// take the next id from MAX(key_id).
	mu sync.Mutex
}

// GetOrGenPreKeys returns count keys not yet uploaded: those already
// stored first (oldest first, as sqlstore does), then new ones, committed
// in one INSERT before they are returned.
func (p *batchPreKeys) GetOrGenPreKeys(ctx context.Context, count uint32) ([]*keys.PreKey, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*keys.PreKey, 0, count)
	rows, err := p.db.QueryContext(ctx, `SELECT key_id, key FROM whatsmeow_pre_keys
		WHERE jid = $1 AND uploaded = false ORDER BY key_id LIMIT $2`, p.jid, count)
	if err != nil {
		return nil, fmt.Errorf("wa: read prekeys not uploaded: %w", err)
	}
	for rows.Next() {
		var id uint32
		var priv []byte
		if err := rows.Scan(&id, &priv); err != nil {
			rows.Close()
			return nil, fmt.Errorf("wa: read prekey: %w", err)
		}
		if len(priv) != 32 {
			rows.Close()
			return nil, fmt.Errorf("wa: prekey %d of %s: %w", id, p.jid, sqlstore.ErrInvalidLength)
		}
		out = append(out, &keys.PreKey{KeyPair: *keys.NewKeyPairFromPrivateKey([32]byte(priv)), KeyID: id})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("wa: read prekeys not uploaded: %w", err)
	}
	missing := int(count) - len(out)
	if missing <= 0 {
		return out, nil
	}
	var last sql.NullInt64
	if err := p.db.QueryRowContext(ctx, `SELECT MAX(key_id) FROM whatsmeow_pre_keys WHERE jid = $1`, p.jid).Scan(&last); err != nil {
		return nil, fmt.Errorf("wa: next prekey id: %w", err)
	}
	ids := make([]int32, missing)
	privs := make([][]byte, missing)
	for i := range missing {
		k := keys.NewPreKey(uint32(last.Int64) + 1 + uint32(i))
		out = append(out, k)
		ids[i], privs[i] = int32(k.KeyID), k.Priv[:]
	}
	if _, err := p.db.ExecContext(ctx, `INSERT INTO whatsmeow_pre_keys (jid, key_id, key, uploaded)
		SELECT $1, k.id, k.key, false FROM unnest($2::integer[], $3::bytea[]) AS k(id, key)`,
		p.jid, ids, privs); err != nil {
		return nil, fmt.Errorf("wa: store %d new prekeys: %w", missing, err)
	}
	return out, nil
}

// UploadedPreKeyCount is the number of keys marked uploaded, counted up to
// preKeyCountBound: min(uploaded, preKeyCountBound).
func (p *batchPreKeys) UploadedPreKeyCount(ctx context.Context) (int, error) {
	var n int
	if err := p.db.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT 1 FROM whatsmeow_pre_keys
		WHERE jid = $1 AND uploaded LIMIT $2) AS k`, p.jid, preKeyCountBound).Scan(&n); err != nil {
		return 0, fmt.Errorf("wa: count uploaded prekeys: %w", err)
	}
	return n, nil
}

// GenOnePreKey is sqlstore's, serialised with GetOrGenPreKeys.
func (p *batchPreKeys) GenOnePreKey(ctx context.Context) (*keys.PreKey, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.PreKeyStore.GenOnePreKey(ctx)
}
