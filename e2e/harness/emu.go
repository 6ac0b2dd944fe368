package harness

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Emulator drives the emulator's control API: it is the user's phone
// (scan, unlink) and the network (drop), and it reports what WhatsApp sees
// (devices, connections, conflicts).
type Emulator struct {
	// Base is http://host:port of the emulator's -control listener.
	Base string
	HTTP *http.Client
}

// EmuStats are the emulator's counters (GET /stats).
type EmuStats struct {
	Connections int64 `json:"connections"`
	Pairings    int64 `json:"pairings"`
	Logins      int64 `json:"logins"`
	Conflicts   int64 `json:"conflicts"`
	Refused     int64 `json:"refused_logins"`
	Devices     int   `json:"devices"`
}

// EmuDevice is what the emulator knows of a linked device.
type EmuDevice struct {
	JID       string `json:"jid"`
	Phone     string `json:"phone"`
	Name      string `json:"name"`
	Connected bool   `json:"connected"`
	Conflicts int    `json:"conflicts"`
	// OS and Platform: what the phone lists for the device (DEVICE_NAME,
	// DEVICE_PLATFORM, as announced at pairing).
	OS       string `json:"os"`
	Platform string `json:"platform"`
}

// Call sends a JSON request and decodes a JSON answer into out (if not
// nil); it returns the HTTP status, and an error for transport failures or
// a status other than want.
func (c *Emulator) Call(method, path string, body, out any, want int) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.Base+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, fmt.Errorf("emulator %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		return resp.StatusCode, fmt.Errorf("emulator %s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("emulator %s %s: decode %q: %w", method, path, b, err)
		}
	}
	return resp.StatusCode, nil
}

// PubKey is the emulator's root key, as WA_SERVER_PUBKEY takes it.
func (c *Emulator) PubKey() (string, error) {
	var r struct {
		PubKey string `json:"pubkey"`
	}
	_, err := c.Call("GET", "/pubkey", nil, &r, http.StatusOK)
	return r.PubKey, err
}

// Scan is the phone scanning a QR string; it returns the new device's JID.
func (c *Emulator) Scan(qr, phone, name string) (string, error) {
	var r struct {
		JID string `json:"jid"`
	}
	_, err := c.Call("POST", "/phone/scan", map[string]string{"qr": qr, "phone": phone, "name": name}, &r, http.StatusOK)
	return r.JID, err
}

// Stats are the emulator's counters.
func (c *Emulator) Stats() (EmuStats, error) {
	var s EmuStats
	_, err := c.Call("GET", "/stats", nil, &s, http.StatusOK)
	return s, err
}

// Devices are the linked devices.
func (c *Emulator) Devices() ([]EmuDevice, error) {
	var d []EmuDevice
	_, err := c.Call("GET", "/devices", nil, &d, http.StatusOK)
	return d, err
}

// Device describes one device; found is false on 404.
func (c *Emulator) Device(jid string) (d EmuDevice, found bool, err error) {
	status, err := c.Call("GET", "/devices/"+url.PathEscape(jid), nil, &d, http.StatusOK)
	if status == http.StatusNotFound {
		return d, false, nil
	}
	return d, err == nil, err
}

// Unlink is the phone removing the device from its linked devices.
func (c *Emulator) Unlink(jid string) error {
	_, err := c.Call("POST", "/devices/"+url.PathEscape(jid)+"/unlink", nil, nil, http.StatusOK)
	return err
}

// Drop closes the device's socket; it reports whether one was open.
func (c *Emulator) Drop(jid string) (bool, error) {
	var r struct {
		Dropped bool `json:"dropped"`
	}
	_, err := c.Call("POST", "/devices/"+url.PathEscape(jid)+"/drop", nil, &r, http.StatusOK)
	return r.Dropped, err
}

// RefuseLogins makes logins of known devices fail for d (0 stops it).
func (c *Emulator) RefuseLogins(d time.Duration) error {
	_, err := c.Call("POST", "/refuse-logins", map[string]float64{"seconds": d.Seconds()}, nil, http.StatusOK)
	return err
}

// ConnectedDevices counts the devices with a live connection.
func (c *Emulator) ConnectedDevices() (int, error) {
	ds, err := c.Devices()
	n := 0
	for _, d := range ds {
		if d.Connected {
			n++
		}
	}
	return n, err
}
