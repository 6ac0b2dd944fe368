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
	"net/http"
	"strings"
	"sync"

	signallog "go.mau.fi/libsignal/logger"
	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waCompanionReg"
	"go.mau.fi/whatsmeow/proto/waWa6"
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
	db        *sql.DB // the container's, for batchPreKeys
	endpoint  waendpoint.Endpoint
	log       *slog.Logger
	opts      HostOptions
}

// HostOptions are the worker-wide settings of the clients a Host makes.
type HostOptions struct {
	// Proxy is the worker's proxy for WhatsApp traffic (WA_PROXY:
	// socks5://, http:// or https://, with optional user:password); a
	// session's own proxy wins over it. Empty: direct.
	Proxy string
	// Versions is the client version clients announce; nil announces the
	// one compiled into whatsmeow.
	Versions *Versions
	// Device names the linked device on the user's phone.
	Device DeviceName
	// HistoryRecent lets clients download the history the phone sends after
	// pairing (HISTORY_SYNC=recent). Off by default: whatsmeow never asks
	// for a full sync (its DeviceProps.RequireFullSync is false), and with
	// this off no history blob is downloaded at all, which keeps a mass
	// pairing from holding many accounts' histories in memory at once.
	HistoryRecent bool
}

// DeviceName is what a user's phone lists for the linked device: the
// platform picks the icon and label (a browser or a desktop app), Name is
// the operating system shown next to it (whatsmeow's DeviceProps.Os).
type DeviceName struct {
	Name     string
	Platform waCompanionReg.DeviceProps_PlatformType
}

// DefaultDeviceName is what the phone shows unless DEVICE_NAME and
// DEVICE_PLATFORM say otherwise: "Chrome (Linux)", like a WhatsApp Web tab,
// which users recognise (the bare "wasessions" it used to show was not).
var DefaultDeviceName = DeviceName{Name: "Linux", Platform: waCompanionReg.DeviceProps_CHROME}

// Platforms maps DEVICE_PLATFORM's values to whatsmeow's platform types.
var Platforms = map[string]waCompanionReg.DeviceProps_PlatformType{
	"chrome":  waCompanionReg.DeviceProps_CHROME,
	"firefox": waCompanionReg.DeviceProps_FIREFOX,
	"safari":  waCompanionReg.DeviceProps_SAFARI,
	"edge":    waCompanionReg.DeviceProps_EDGE,
	"opera":   waCompanionReg.DeviceProps_OPERA,
	"desktop": waCompanionReg.DeviceProps_DESKTOP,
}

// Display is the name whatsmeow gives the phone when pairing by code
// (PairPhone's clientDisplayName), e.g. "Chrome (Linux)".
func (d DeviceName) Display() string {
	label := "Desktop"
	for name, p := range Platforms {
		if p == d.Platform && name != "desktop" {
			label = strings.ToUpper(name[:1]) + name[1:]
		}
	}
	return label + " (" + d.Name + ")"
}

// PairClient is the whatsmeow pairing client type matching the platform.
func (d DeviceName) PairClient() whatsmeow.PairClientType {
	switch d.Platform {
	case waCompanionReg.DeviceProps_FIREFOX:
		return whatsmeow.PairClientFirefox
	case waCompanionReg.DeviceProps_SAFARI:
		return whatsmeow.PairClientSafari
	case waCompanionReg.DeviceProps_EDGE:
		return whatsmeow.PairClientEdge
	case waCompanionReg.DeviceProps_OPERA:
		return whatsmeow.PairClientOpera
	case waCompanionReg.DeviceProps_DESKTOP:
		return whatsmeow.PairClientOtherWebClient
	default:
		return whatsmeow.PairClientChrome
	}
}

// NewHost builds a Host with default options; see NewHostWith.
func NewHost(db *sql.DB, endpoint waendpoint.Endpoint, log *slog.Logger) *Host {
	return NewHostWith(db, endpoint, log, HostOptions{})
}

// NewHostWith builds a Host on db (the service's Postgres through pgx's
// database/sql driver; whatsmeow's schema must already be applied, see
// internal/migrate). It installs the endpoint's root key into whatsmeow's
// process-global WACertPubKey and names the linked device as phones will
// list it, so call it once per process.
func NewHostWith(db *sql.DB, endpoint waendpoint.Endpoint, log *slog.Logger, opts HostOptions) *Host {
	endpoint.InstallRootKey()
	if opts.Device.Name == "" {
		opts.Device = DefaultDeviceName
	}
	setOSInfo(opts.Device)
	if opts.Versions == nil {
		opts.Versions = NewVersions(VersionOptions{})
	}
	return &Host{
		container: sqlstore.NewWithDB(db, "postgres", NewLogger(log.With("component", "sqlstore"))),
		db:        db,
		endpoint:  endpoint,
		log:       log,
		opts:      opts,
	}
}

// Versions is the version keeper the Host's clients announce.
func (h *Host) Versions() *Versions { return h.opts.Versions }

// Device is the name the Host's clients give the phone.
func (h *Host) Device() DeviceName { return h.opts.Device }

// osInfoOnce names the linked device (whatsmeow's process-global client
// payload and device props) once: clients read them on every handshake, so
// writing them again, even with the same values, races with clients
// already connecting (several hosts in one test process). The first Host's
// name wins.
var osInfoOnce sync.Once

func setOSInfo(d DeviceName) {
	osInfoOnce.Do(func() {
		wastore.SetOSInfo(d.Name, [3]uint32{1, 0, 0})
		wastore.DeviceProps.PlatformType = d.Platform.Enum()
	})
}

// NewDevice returns a fresh, unsaved device for pairing; whatsmeow saves it
// when the phone accepts the link, and from then on it writes new one-time
// prekeys in one statement (batchPreKeys).
func (h *Host) NewDevice() *wastore.Device {
	dev := h.container.NewDevice()
	dev.Container = &batchContainer{Container: h.container, db: h.db}
	return dev
}

// LoadDevice reads a linked device's keys, and its LID mapping into the
// cache its login will look in (lids.go). It returns (nil, nil) when the
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
	withBatchPreKeys(dev, h.db)
	h.primeOwnLID(ctx, dev) // see lids.go
	return dev, nil
}

// ClientOptions are one session's settings for its client.
type ClientOptions struct {
	// Proxy is the session's own proxy (set by an admin); it wins over
	// the worker's. Empty: the worker's.
	Proxy string
	// OnHandshake, when set, is told the version each connection attempt
	// announces (to tell, on ClientOutdated, whether a newer one came
	// since).
	OnHandshake func(wastore.WAVersionContainer)
}

// NewClient returns a client for dev that dials the configured server
// (through the session's or the worker's proxy) and announces the current
// client version. It never reconnects by itself.
func (h *Host) NewClient(dev *wastore.Device, log *slog.Logger, opts ClientOptions) (*whatsmeow.Client, error) {
	cli := whatsmeow.NewClient(dev, NewLogger(log))
	proxy := opts.Proxy
	if proxy == "" {
		proxy = h.opts.Proxy
	}
	if err := h.route(cli, proxy); err != nil {
		return nil, err
	}
	versions, onHandshake := h.opts.Versions, opts.OnHandshake
	cli.GetClientPayload = func() *waWa6.ClientPayload {
		p := cli.Store.GetClientPayload() // a clone of whatsmeow's base payload
		v := versions.Current()
		p.UserAgent.AppVersion = v.ProtoAppVersion()
		if p.DevicePairingData != nil {
			hash := v.Hash()
			p.DevicePairingData.BuildHash = hash[:]
		}
		if onHandshake != nil {
			onHandshake(v)
		}
		return p
	}
	// Exactly once into Postgres: the ack and receipt of a message go back
	// to WhatsApp only after every event handler returned true (the worker's
	// returns true once the message is committed), and the decrypted
	// plaintext is buffered in the key store's transaction, so a message
	// WhatsApp delivers again after a crash still decrypts although the
	// Signal session already moved on.
	cli.SynchronousAck = true
	cli.EnableDecryptedEventBuffer = true
	// History is never downloaded by whatsmeow itself: with
	// HISTORY_SYNC=recent the worker downloads it in its handler, before
	// the receipt (history.go); with none, not at all.
	cli.ManualHistorySyncDownload = true
	// The worker's session loop reconnects (backoff with jitter, release
	// to another worker, waiting out bans); whatsmeow's own auto-reconnect
	// would be a second mechanism, and one that outlives the hosting.
	cli.EnableAutoReconnect = false
	cli.InitialAutoReconnect = false
	return cli, nil
}

// route points cli at the endpoint through proxy ("" for direct).
func (h *Host) route(cli *whatsmeow.Client, proxy string) error {
	if h.endpoint.IsWhatsApp() {
		if proxy == "" {
			return nil
		}
		if err := cli.SetProxyAddress(proxy); err != nil {
			return fmt.Errorf("wa: proxy %s: %w", RedactProxy(proxy), err)
		}
		return nil
	}
	t, err := ProxyTransport(proxy)
	if err != nil {
		return err
	}
	h.endpoint.ApplyVia(cli, t)
	return nil
}

// WorkerTransport is the network path of the worker's clients (its proxy,
// if any), for the requests the worker makes itself: the version fetch.
func (h *Host) WorkerTransport() (*http.Transport, error) { return ProxyTransport(h.opts.Proxy) }

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
