package waemu

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"

	"go.mau.fi/libsignal/ecc"
	signallog "go.mau.fi/libsignal/logger"
	"go.mau.fi/whatsmeow/proto/waCert"
	"go.mau.fi/whatsmeow/util/keys"
	"google.golang.org/protobuf/proto"
)

// libsignal creates its package logger lazily, unsynchronised, on the first
// signature; two goroutines signing at once race on it. Creating it here, in
// single-threaded package initialisation, makes concurrent signing safe for
// the emulator and for the whatsmeow clients in the same process. The debug
// line it "logs" is discarded by libsignal's default logger.
func init() { signallog.Debug("waemu: libsignal logger initialised") }

// intermediateSerial is the serial of the emulator's intermediate
// certificate; the leaf names it as its issuer. whatsmeow requires the
// intermediate's own issuer serial to be 0 (WACertIssuerSerial).
const intermediateSerial = 1

// certs holds the emulator's key hierarchy: a root key clients trust, an
// intermediate key it signs, and the Noise static key the leaf certificate
// binds. All three derive from one seed, so an emulator restarted with the
// same seed is the same server to every client that trusted it.
type certs struct {
	root   *keys.KeyPair
	static *keys.KeyPair
	// chain is the marshalled waCert.CertChain sent (encrypted) in every
	// server hello.
	chain []byte
}

// newSeed returns a fresh random key seed.
func newSeed() ([]byte, error) {
	seed := make([]byte, 32)
	if _, err := rand.Read(seed); err != nil {
		return nil, fmt.Errorf("waemu: random seed: %w", err)
	}
	return seed, nil
}

// deriveKey turns seed into a Curve25519 key pair, one per label.
func deriveKey(seed []byte, label string) *keys.KeyPair {
	h := sha256.New()
	h.Write([]byte("waemu/" + label + "/"))
	h.Write(seed)
	var priv [32]byte
	copy(priv[:], h.Sum(nil))
	priv[0] &= 248
	priv[31] &= 127
	priv[31] |= 64
	return keys.NewKeyPairFromPrivateKey(priv)
}

// newCerts derives the key hierarchy from seed and signs the certificate
// chain whatsmeow's verifyServerCert (handshake.go) checks: the intermediate
// signed by the root with XEdDSA, the leaf (the Noise static key) signed by
// the intermediate. Validity times are not checked by the client.
func newCerts(seed []byte) (*certs, error) {
	root := deriveKey(seed, "root")
	inter := deriveKey(seed, "intermediate")
	static := deriveKey(seed, "static")

	interDetails, err := proto.Marshal(&waCert.CertChain_NoiseCertificate_Details{
		Serial:       proto.Uint32(intermediateSerial),
		IssuerSerial: proto.Uint32(0),
		Key:          inter.Pub[:],
	})
	if err != nil {
		return nil, fmt.Errorf("waemu: marshal intermediate certificate: %w", err)
	}
	leafDetails, err := proto.Marshal(&waCert.CertChain_NoiseCertificate_Details{
		Serial:       proto.Uint32(intermediateSerial + 1),
		IssuerSerial: proto.Uint32(intermediateSerial),
		Key:          static.Pub[:],
	})
	if err != nil {
		return nil, fmt.Errorf("waemu: marshal leaf certificate: %w", err)
	}
	interSig := ecc.CalculateSignature(ecc.NewDjbECPrivateKey(*root.Priv), interDetails)
	leafSig := ecc.CalculateSignature(ecc.NewDjbECPrivateKey(*inter.Priv), leafDetails)
	chain, err := proto.Marshal(&waCert.CertChain{
		Intermediate: &waCert.CertChain_NoiseCertificate{Details: interDetails, Signature: interSig[:]},
		Leaf:         &waCert.CertChain_NoiseCertificate{Details: leafDetails, Signature: leafSig[:]},
	})
	if err != nil {
		return nil, fmt.Errorf("waemu: marshal certificate chain: %w", err)
	}
	return &certs{root: root, static: static, chain: chain}, nil
}

// RootPubKey is the root key an emulator started with this KeySeed presents,
// so a test process can install it in whatsmeow (a process-wide setting)
// before any emulator runs.
func RootPubKey(seed []byte) [32]byte {
	return *deriveKey(seed, "root").Pub
}
