package waemu

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// stateVersion is the format of the -state file.
const stateVersion = 1

// account is a simulated phone: a WhatsApp account with its number, name,
// LID and identity key. It outlives its linked devices, as a phone does, so
// relinking the same number keeps the same LID and identity.
type account struct {
	Phone string `json:"phone"` // digits, no '+'
	Name  string `json:"name"`
	LID   string `json:"lid"` // user part of the account's LID
	// IdentityKey is the phone's Curve25519 identity private key, which
	// signs its companions' device identities.
	IdentityKey []byte `json:"identity_key"`
	RawID       uint32 `json:"raw_id"`
	KeyIndex    uint32 `json:"key_index"`   // last key index handed out
	LastDevice  uint16 `json:"last_device"` // last device number handed out
	// Peer marks a contact created through the control API (peers.go)
	// rather than by pairing.
	Peer bool `json:"peer,omitempty"`
	// Signal is the phone's (device 0's) Signal state, made when it is
	// first needed (signalstore.go).
	Signal *phoneSignal `json:"signal,omitempty"`
}

// device is a linked companion device, what whatsmeow calls a Store.
type device struct {
	JID         string        `json:"jid"`
	LID         string        `json:"lid"`
	Phone       string        `json:"phone"`
	NoiseKey    []byte        `json:"noise_key"`      // public; must match every login's Noise static key
	IdentityKey []byte        `json:"identity_key"`   // public
	Keys        *uploadedKeys `json:"keys,omitempty"` // what the device uploaded (prekeys.go)
	Conflicts   int           `json:"conflicts"`      // logins that replaced a live connection
	PairedAt    time.Time     `json:"paired_at"`
	// OS and Platform are what the phone lists for the device, as the
	// client announced them when it paired (DeviceProps.Os, PlatformType).
	OS       string `json:"os,omitempty"`
	Platform string `json:"platform,omitempty"`
}

// snapshot is the persisted state. It holds private keys of simulated
// phones (test data, never real ones), so the file is written 0600.
type snapshot struct {
	Version  int                 `json:"version"`
	KeySeed  string              `json:"key_seed"`
	Accounts map[string]*account `json:"accounts"`
	Devices  map[string]*device  `json:"devices"`
}

func newSnapshot() *snapshot {
	return &snapshot{Version: stateVersion, Accounts: map[string]*account{}, Devices: map[string]*device{}}
}

// loadSnapshot reads path; a missing file is an empty state.
func loadSnapshot(path string) (*snapshot, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return newSnapshot(), nil
	} else if err != nil {
		return nil, fmt.Errorf("waemu: read state: %w", err)
	}
	st := newSnapshot()
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("waemu: parse state %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("waemu: state %s has version %d, want %d", path, st.Version, stateVersion)
	}
	if st.Accounts == nil {
		st.Accounts = map[string]*account{}
	}
	if st.Devices == nil {
		st.Devices = map[string]*device{}
	}
	return st, nil
}

// seed returns the key seed stored in the state, if any.
func (st *snapshot) seed() ([]byte, error) {
	if st.KeySeed == "" {
		return nil, nil
	}
	b, err := hex.DecodeString(st.KeySeed)
	if err != nil {
		return nil, fmt.Errorf("waemu: state key seed: %w", err)
	}
	return b, nil
}

// writeFileAtomic replaces path with data so a crash leaves the old or the
// new file, never half of one.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("waemu: write state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("waemu: write state: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("waemu: write state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("waemu: write state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("waemu: write state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("waemu: write state: %w", err)
	}
	return nil
}

// normalizePhone turns "+1 555-123 4567" into "15551234567" and checks it
// looks like an international number (what whatsmeow's PairPhone accepts).
func normalizePhone(phone string) (string, error) {
	var b strings.Builder
	for _, r := range phone {
		switch {
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == '+' || r == ' ' || r == '-' || r == '(' || r == ')' || r == '.':
		default:
			return "", fmt.Errorf("%w: %q has a character other than digits", ErrBadPhone, phone)
		}
	}
	digits := b.String()
	if len(digits) < 7 || len(digits) > 15 {
		return "", fmt.Errorf("%w: %q must have 7 to 15 digits", ErrBadPhone, phone)
	}
	if digits[0] == '0' {
		return "", fmt.Errorf("%w: %q is not international (starts with 0)", ErrBadPhone, phone)
	}
	return digits, nil
}

// randomDigits returns n random decimal digits.
func randomDigits(n int) string {
	var b strings.Builder
	for range n {
		d, err := rand.Int(rand.Reader, big.NewInt(10))
		if err != nil {
			panic(fmt.Sprintf("crypto/rand: %v", err))
		}
		b.WriteByte(byte('0' + d.Int64()))
	}
	return b.String()
}

func randomUint32() uint32 {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return binary.BigEndian.Uint32(b[:])
}
