package wa

import (
	"context"
	"fmt"

	wastore "go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
)

// Every login (whatsmeow's handleConnectSuccess) stores the device's own
// LID-to-phone-number mapping. sqlstore's LID map is one per container,
// shared by every device of the process, and a mapping it has not cached
// is written in a transaction (BEGIN, DELETE, INSERT, COMMIT) while it
// holds the map's one lock. A worker that has just started has cached
// none, so a mass restore ran every login through that lock one after the
// other: about 300 ms of each restore's login at 32 restores at once, all
// waiting (docs/BENCHMARKS.md, "Scale"). A mapping read into the cache
// first makes the login's store a cache hit that writes nothing, which is
// exactly what whatsmeow does for a mapping it already knows; a mapping
// that differs from the stored one is still written.

// primeChunk bounds the phone numbers of one lookup (sqlstore puts them in
// one IN list: one bind parameter each).
const primeChunk = 1000

// PrimeLIDs reads the stored LID mappings of the linked devices deviceJIDs
// into the LID cache in one query per primeChunk devices, so that their
// logins find them cached (a worker taking back its sessions after a
// restart calls it with all of them).
func (h *Host) PrimeLIDs(ctx context.Context, deviceJIDs []string) error {
	pns := make([]types.JID, 0, len(deviceJIDs))
	for _, s := range deviceJIDs {
		jid, err := types.ParseJID(s)
		if err != nil {
			return fmt.Errorf("wa: parse device jid %q: %w", s, err)
		}
		if jid.Server == types.DefaultUserServer {
			pns = append(pns, jid.ToNonAD())
		}
	}
	for len(pns) > 0 {
		n := min(len(pns), primeChunk)
		if _, err := h.container.LIDMap.GetManyLIDsForPNs(ctx, pns[:n]); err != nil {
			return fmt.Errorf("wa: read LID mappings: %w", err)
		}
		pns = pns[n:]
	}
	return nil
}

// primeOwnLID reads dev's own mapping into the cache (one short query
// when it is not there yet; nothing when PrimeLIDs read it). A failure
// costs only the login's write, which whatsmeow then makes as before.
func (h *Host) primeOwnLID(ctx context.Context, dev *wastore.Device) {
	if dev == nil || dev.ID == nil || dev.ID.Server != types.DefaultUserServer {
		return
	}
	if _, err := h.container.LIDMap.GetLIDForPN(ctx, dev.ID.ToNonAD()); err != nil {
		h.log.Warn("read the device's LID mapping before login", "error", err)
	}
}
