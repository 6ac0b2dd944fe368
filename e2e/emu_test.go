package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// emuClient drives the emulator's control API: it is the user's phone
// (scan, unlink) and the network (drop), and it reports what WhatsApp sees
// (devices, connections, conflicts).
type emuClient struct {
	base string // http://host:port of -control
	http *http.Client
}

type emuStats struct {
	Connections int64 `json:"connections"`
	Pairings    int64 `json:"pairings"`
	Logins      int64 `json:"logins"`
	Conflicts   int64 `json:"conflicts"`
	Refused     int64 `json:"refused_logins"`
	Devices     int   `json:"devices"`
}

type emuDevice struct {
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

// call sends a JSON request and decodes a JSON answer into out (if not
// nil); it returns the HTTP status, and an error for transport failures or
// a status other than want.
func (c *emuClient) call(method, path string, body, out any, want int) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
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

func (c *emuClient) pubkey() (string, error) {
	var r struct {
		PubKey string `json:"pubkey"`
	}
	_, err := c.call("GET", "/pubkey", nil, &r, http.StatusOK)
	return r.PubKey, err
}

// scan is the phone scanning a QR string; it returns the new device's JID.
func (c *emuClient) scan(qr, phone, name string) (string, error) {
	var r struct {
		JID string `json:"jid"`
	}
	_, err := c.call("POST", "/phone/scan", map[string]string{"qr": qr, "phone": phone, "name": name}, &r, http.StatusOK)
	return r.JID, err
}

func (c *emuClient) stats() (emuStats, error) {
	var s emuStats
	_, err := c.call("GET", "/stats", nil, &s, http.StatusOK)
	return s, err
}

func (c *emuClient) devices() ([]emuDevice, error) {
	var d []emuDevice
	_, err := c.call("GET", "/devices", nil, &d, http.StatusOK)
	return d, err
}

// device describes one device; found is false on 404.
func (c *emuClient) device(jid string) (d emuDevice, found bool, err error) {
	status, err := c.call("GET", "/devices/"+url.PathEscape(jid), nil, &d, http.StatusOK)
	if status == http.StatusNotFound {
		return d, false, nil
	}
	return d, err == nil, err
}

func (c *emuClient) unlink(jid string) error {
	_, err := c.call("POST", "/devices/"+url.PathEscape(jid)+"/unlink", nil, nil, http.StatusOK)
	return err
}

// drop closes the device's socket; it reports whether one was open.
func (c *emuClient) drop(jid string) (bool, error) {
	var r struct {
		Dropped bool `json:"dropped"`
	}
	_, err := c.call("POST", "/devices/"+url.PathEscape(jid)+"/drop", nil, &r, http.StatusOK)
	return r.Dropped, err
}

// refuseLogins makes logins of known devices fail for d (0 stops it).
func (c *emuClient) refuseLogins(d time.Duration) error {
	_, err := c.call("POST", "/refuse-logins", map[string]float64{"seconds": d.Seconds()}, nil, http.StatusOK)
	return err
}

// connectedDevices counts the devices with a live connection.
func (c *emuClient) connectedDevices() (int, error) {
	ds, err := c.devices()
	n := 0
	for _, d := range ds {
		if d.Connected {
			n++
		}
	}
	return n, err
}
