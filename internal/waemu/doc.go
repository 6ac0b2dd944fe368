// Package waemu is a WhatsApp multi-device protocol server that the
// unmodified whatsmeow client accepts, so the service's session management
// can be tested end to end on machines that never reach WhatsApp.
//
// It speaks the real wire protocol: a websocket at /ws/chat carrying
// length-prefixed frames, the Noise XX handshake with a certificate chain
// signed by the emulator's own root key (clients trust it through
// whatsmeow.WACertPubKey, see internal/waendpoint), and whatsmeow's binary
// XML nodes. On top of that it implements what session management needs and
// nothing more:
//
//   - pairing by QR code (pair-device refs, a simulated phone that "scans"
//     the QR string and answers with a signed device identity, the 515
//     stream restart) and by phone code (whatsmeow's PairPhone);
//   - the login of a known device and the queries whatsmeow makes after it
//     (prekey count and upload, passive mode, keepalive pings);
//   - breaking things on request: unlinking a device, dropping its socket,
//     replacing an older connection when a second one logs in as the same
//     device, refusing logins for a while;
//   - peer phones that exchange Signal-encrypted texts with linked clients:
//     usync device lists and contacts, prekey bundles from the keys devices
//     upload, messages both ways with acks, delivery and read receipts, and
//     redelivery of unreceipted messages at the next login;
//   - a JSON control API (see Server.Handler) and Go functions with the same
//     operations for in-process tests.
//
// App state, groups, media and history sync are out of scope: unknown
// queries get an empty result so the client stays healthy.
//
// The files follow whatsmeow's layout, one per protocol concern: noise.go
// (handshake and transport), certs.go, conn.go (framing and node dispatch),
// pair.go, paircode.go, login.go, iq.go, state.go, control.go, server.go;
// for messages peers.go, prekeys.go, usync.go, signalstore.go (the
// phones' Signal state), messages.go and control_messages.go.
package waemu
