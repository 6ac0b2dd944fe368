// Package wa is the worker's only contact with whatsmeow: it creates
// devices and clients whose keys live in Postgres (whatsmeow's sqlstore on
// the service's own database), points them at the configured
// WhatsApp-protocol server, and routes whatsmeow's logging into slog
// without the payloads that carry keys.
package wa

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	signallog "go.mau.fi/libsignal/logger"
	"go.mau.fi/whatsmeow"
	wastore "go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types"

	"wasessions/internal/waendpoint"
)

// libsignal, under whatsmeow, creates its package logger lazily and
// unsynchronised on the first signature: two devices created or restored at
// once (a mass restore, parallel pairings) race on it. Creating it here, in
// single-threaded package initialisation, makes that safe. The default
// logger discards debug lines, so this one is never printed.
func init() { signallog.Debug("wa: libsignal logger initialised") }

// Host makes whatsmeow clients for the sessions a worker hosts.
type Host struct {
	container *sqlstore.Container
	endpoint  waendpoint.Endpoint
	log       *slog.Logger
}

// NewHost builds a Host on db (the service's Postgres through pgx's
// database/sql driver; whatsmeow's schema must already be applied, see
// internal/migrate). It installs the endpoint's root key into whatsmeow's
// process-global WACertPubKey and names the linked device as phones will
// list it, so call it once per process.
func NewHost(db *sql.DB, endpoint waendpoint.Endpoint, log *slog.Logger) *Host {
	endpoint.InstallRootKey()
	setOSInfo()
	return &Host{
		container: sqlstore.NewWithDB(db, "postgres", NewLogger(log.With("component", "sqlstore"))),
		endpoint:  endpoint,
		log:       log,
	}
}

// setOSInfo names the linked device (whatsmeow's process-global client
// payload) once: clients read that payload on every handshake, so writing
// it again, even with the same values, races with clients already
// connecting (several hosts in one test process).
var setOSInfo = sync.OnceFunc(func() { wastore.SetOSInfo("wasessions", [3]uint32{1, 0, 0}) })

// NewDevice returns a fresh, unsaved device for pairing; whatsmeow saves it
// when the phone accepts the link.
func (h *Host) NewDevice() *wastore.Device { return h.container.NewDevice() }

// LoadDevice reads a linked device's keys. It returns (nil, nil) when the
// keys are gone (logged out elsewhere, or cleaned up).
func (h *Host) LoadDevice(ctx context.Context, jid string) (*wastore.Device, error) {
	parsed, err := types.ParseJID(jid)
	if err != nil {
		return nil, fmt.Errorf("wa: parse device jid %q: %w", jid, err)
	}
	dev, err := h.container.GetDevice(ctx, parsed)
	if err != nil {
		return nil, fmt.Errorf("wa: load device: %w", err)
	}
	return dev, nil
}

// NewClient returns a client for dev that dials the configured server and,
// for a linked device, reconnects by itself after a dropped socket or a
// failed first dial (whatsmeow's auto-reconnect, with its delay capped so a
// long outage never leaves a session minutes away from recovering).
func (h *Host) NewClient(dev *wastore.Device, log *slog.Logger) *whatsmeow.Client {
	cli := whatsmeow.NewClient(dev, NewLogger(log))
	h.endpoint.Apply(cli)
	cli.EnableAutoReconnect = true
	cli.InitialAutoReconnect = dev.ID != nil
	cli.AutoReconnectHook = func(error) bool {
		// whatsmeow waits 2s × AutoReconnectErrors; keep that at most 30s.
		if cli.AutoReconnectErrors > 15 {
			cli.AutoReconnectErrors = 15
		}
		return true
	}
	return cli
}

// PhoneOf is the phone number of a linked device, E.164 with a leading '+':
// the user part of a device JID on s.whatsapp.net is the number.
func PhoneOf(jid *types.JID) string {
	if jid == nil || jid.User == "" || jid.Server != types.DefaultUserServer {
		return ""
	}
	return "+" + jid.User
}

// NameOf is the account's display name as far as whatsmeow knows it: the
// push name once app-state sync has delivered it, else the business name
// sent at pairing.
func NameOf(dev *wastore.Device) string {
	if dev == nil {
		return ""
	}
	if n := strings.TrimSpace(dev.PushName); n != "" {
		return n
	}
	return strings.TrimSpace(dev.BusinessName)
}
