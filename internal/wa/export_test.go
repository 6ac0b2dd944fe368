package wa

import wastore "go.mau.fi/whatsmeow/store"

// SQLStoreDevice is a new device with whatsmeow's own prekey store (one
// INSERT per key), to compare batchPreKeys with.
func (h *Host) SQLStoreDevice() *wastore.Device { return h.container.NewDevice() }

// IsBatched reports whether s is batchPreKeys.
func IsBatched(s wastore.PreKeyStore) bool {
	_, ok := s.(*batchPreKeys)
	return ok
}

// LIDs is the Host's LID map, which every device it loads shares.
func (h *Host) LIDs() wastore.LIDStore { return h.container.LIDMap }
