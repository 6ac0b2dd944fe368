package waemu

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/coder/websocket"
	"go.mau.fi/whatsmeow/proto/waWa6"
	"go.mau.fi/whatsmeow/socket"
	"go.mau.fi/whatsmeow/util/keys"
	"google.golang.org/protobuf/proto"
)

// handshakeTimeout bounds how long a client may take between the websocket
// upgrade and its handshake finish (whatsmeow waits 20 s for our hello).
const handshakeTimeout = 20 * time.Second

// maxFrame is the largest frame the protocol allows (3-byte length).
const maxFrame = socket.FrameMaxSize

// noiseState is the server side of Noise_XX_25519_AESGCM_SHA256 as whatsmeow
// runs it (socket/noisehandshake.go): the hash starts as the 32-byte pattern
// itself, the salt as the hash, and every MixKey is HKDF-SHA256(salt, DH)
// split into the next salt and an AES-GCM key with a fresh counter.
// whatsmeow's own NoiseHandshake keeps its salt private and can only finish
// on a client socket, hence this server-side copy.
type noiseState struct {
	hash    []byte
	salt    []byte
	aead    cipher.AEAD
	counter uint32
}

func newNoiseState(header []byte) (*noiseState, error) {
	h := []byte(socket.NoiseStartPattern)
	if len(h) != 32 {
		sum := sha256.Sum256(h)
		h = sum[:]
	}
	aead, err := newGCM(h)
	if err != nil {
		return nil, err
	}
	ns := &noiseState{hash: h, salt: h, aead: aead}
	ns.mixHash(header)
	return ns, nil
}

func (ns *noiseState) mixHash(data []byte) {
	sum := sha256.Sum256(append(append([]byte{}, ns.hash...), data...))
	ns.hash = sum[:]
}

func (ns *noiseState) mixKey(priv, pub []byte) error {
	secret, err := x25519(priv, pub)
	if err != nil {
		return err
	}
	salt, key, err := expand(ns.salt, secret)
	if err != nil {
		return err
	}
	ns.salt = salt
	ns.counter = 0
	ns.aead, err = newGCM(key)
	return err
}

func (ns *noiseState) encrypt(plaintext []byte) []byte {
	ct := ns.aead.Seal(nil, iv(ns.counter), plaintext, ns.hash)
	ns.counter++
	ns.mixHash(ct)
	return ct
}

func (ns *noiseState) decrypt(ciphertext []byte) ([]byte, error) {
	pt, err := ns.aead.Open(nil, iv(ns.counter), ciphertext, ns.hash)
	ns.counter++
	if err != nil {
		return nil, fmt.Errorf("noise decrypt: %w", err)
	}
	ns.mixHash(ciphertext)
	return pt, nil
}

// split derives the transport keys: the client writes with the first and
// reads with the second, so the server does the opposite.
func (ns *noiseState) split() (fromClient, toClient cipher.AEAD, err error) {
	k1, k2, err := expand(ns.salt, nil)
	if err != nil {
		return nil, nil, err
	}
	if fromClient, err = newGCM(k1); err != nil {
		return nil, nil, err
	}
	if toClient, err = newGCM(k2); err != nil {
		return nil, nil, err
	}
	return fromClient, toClient, nil
}

// expand is whatsmeow's extractAndExpand: 64 bytes of HKDF-SHA256 output
// split in two.
func expand(salt, ikm []byte) (first, second []byte, err error) {
	out, err := hkdf.Key(sha256.New, ikm, salt, "", 64)
	if err != nil {
		return nil, nil, fmt.Errorf("noise hkdf: %w", err)
	}
	return out[:32], out[32:], nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("gcm: %w", err)
	}
	return aead, nil
}

// iv is the 12-byte nonce for counter n: 8 zero bytes, then n big-endian.
func iv(n uint32) []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint32(b[8:], n)
	return b
}

func x25519(priv, pub []byte) ([]byte, error) {
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("x25519 private key: %w", err)
	}
	p, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("x25519 public key: %w", err)
	}
	secret, err := k.ECDH(p)
	if err != nil {
		return nil, fmt.Errorf("x25519: %w", err)
	}
	return secret, nil
}

// frameReader splits the websocket stream into protocol frames: the client's
// first message starts with the 4-byte "WA" header, every frame is a 3-byte
// big-endian length and its data, and frames may span or share websocket
// messages (socket/framesocket.go).
type frameReader struct {
	ws         *websocket.Conn
	buf        []byte
	headerSeen bool
}

func (fr *frameReader) next(ctx context.Context) ([]byte, error) {
	for {
		if len(fr.buf) >= 3 {
			n := int(fr.buf[0])<<16 | int(fr.buf[1])<<8 | int(fr.buf[2])
			if len(fr.buf) >= 3+n {
				frame := fr.buf[3 : 3+n : 3+n]
				fr.buf = fr.buf[3+n:]
				if len(fr.buf) == 0 {
					fr.buf = nil
				}
				return frame, nil
			}
		}
		typ, msg, err := fr.ws.Read(ctx)
		if err != nil {
			return nil, err
		}
		if typ != websocket.MessageBinary {
			continue
		}
		if !fr.headerSeen {
			if !bytes.HasPrefix(msg, socket.WAConnHeader) {
				return nil, errors.New("missing WA connection header")
			}
			msg = msg[len(socket.WAConnHeader):]
			fr.headerSeen = true
		}
		if fr.buf == nil {
			fr.buf = msg
		} else {
			fr.buf = append(fr.buf, msg...)
		}
	}
}

// writeFrame sends one frame in its own websocket message.
func writeFrame(ctx context.Context, ws *websocket.Conn, data []byte) error {
	if len(data) >= maxFrame {
		return fmt.Errorf("frame of %d bytes is too large", len(data))
	}
	msg := make([]byte, 3+len(data))
	msg[0], msg[1], msg[2] = byte(len(data)>>16), byte(len(data)>>8), byte(len(data))
	copy(msg[3:], data)
	return ws.Write(ctx, websocket.MessageBinary, msg)
}

// handshakeResult is what the server learns from a completed handshake.
type handshakeResult struct {
	// clientStatic is the client's Noise static public key: the device's
	// NoiseKey, which also appears in its QR code.
	clientStatic [32]byte
	payload      *waWa6.ClientPayload
	fromClient   cipher.AEAD
	toClient     cipher.AEAD
}

// serverHandshake runs the responder side of Noise XX (handshake.go):
// read the client hello, answer with our ephemeral, our encrypted static key
// and the encrypted certificate chain, then read the client's encrypted static
// key and ClientPayload.
func serverHandshake(ctx context.Context, fr *frameReader, ws *websocket.Conn, c *certs) (*handshakeResult, error) {
	ns, err := newNoiseState(socket.WAConnHeader)
	if err != nil {
		return nil, err
	}
	frame, err := fr.next(ctx)
	if err != nil {
		return nil, fmt.Errorf("read client hello: %w", err)
	}
	var hello waWa6.HandshakeMessage
	if err := proto.Unmarshal(frame, &hello); err != nil {
		return nil, fmt.Errorf("parse client hello: %w", err)
	}
	clientEph := hello.GetClientHello().GetEphemeral()
	if len(clientEph) != 32 {
		return nil, fmt.Errorf("client hello has a %d-byte ephemeral key", len(clientEph))
	}
	ns.mixHash(clientEph)

	eph := keys.NewKeyPair()
	ns.mixHash(eph.Pub[:])
	if err := ns.mixKey(eph.Priv[:], clientEph); err != nil {
		return nil, err
	}
	staticCT := ns.encrypt(c.static.Pub[:])
	if err := ns.mixKey(c.static.Priv[:], clientEph); err != nil {
		return nil, err
	}
	certCT := ns.encrypt(c.chain)
	out, err := proto.Marshal(&waWa6.HandshakeMessage{ServerHello: &waWa6.HandshakeMessage_ServerHello{
		Ephemeral: eph.Pub[:],
		Static:    staticCT,
		Payload:   certCT,
	}})
	if err != nil {
		return nil, fmt.Errorf("marshal server hello: %w", err)
	}
	if err := writeFrame(ctx, ws, out); err != nil {
		return nil, fmt.Errorf("send server hello: %w", err)
	}

	frame, err = fr.next(ctx)
	if err != nil {
		return nil, fmt.Errorf("read client finish: %w", err)
	}
	var finish waWa6.HandshakeMessage
	if err := proto.Unmarshal(frame, &finish); err != nil {
		return nil, fmt.Errorf("parse client finish: %w", err)
	}
	static, err := ns.decrypt(finish.GetClientFinish().GetStatic())
	if err != nil {
		return nil, fmt.Errorf("client static key: %w", err)
	}
	if len(static) != 32 {
		return nil, fmt.Errorf("client static key has %d bytes", len(static))
	}
	if err := ns.mixKey(eph.Priv[:], static); err != nil {
		return nil, err
	}
	payloadBytes, err := ns.decrypt(finish.GetClientFinish().GetPayload())
	if err != nil {
		return nil, fmt.Errorf("client payload: %w", err)
	}
	var payload waWa6.ClientPayload
	if err := proto.Unmarshal(payloadBytes, &payload); err != nil {
		return nil, fmt.Errorf("parse client payload: %w", err)
	}
	fromClient, toClient, err := ns.split()
	if err != nil {
		return nil, err
	}
	res := &handshakeResult{payload: &payload, fromClient: fromClient, toClient: toClient}
	copy(res.clientStatic[:], static)
	return res, nil
}
