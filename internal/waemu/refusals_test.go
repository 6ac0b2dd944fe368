package waemu_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.mau.fi/whatsmeow"
	wastore "go.mau.fi/whatsmeow/store"

	"wasessions/internal/waemu"
)

// The refusal switches of the control API: bad input gets a 4xx with a
// JSON error, good input is echoed, and the version document is what
// whatsmeow's own GetLatestVersion parses.
func TestRefusalControls(t *testing.T) {
	t.Parallel()
	emu := startEmu(t, waemu.Options{})
	srv := httptest.NewServer(emu.Handler())
	defer srv.Close()

	for _, c := range []struct {
		name, method, path, body string
		want                     int
	}{
		{"min version not a version", "PUT", "/refusals/min-version", `{"version":"2.x.1"}`, 400},
		{"min version two parts", "PUT", "/refusals/min-version", `{"version":"2.3000"}`, 400},
		{"min version", "PUT", "/refusals/min-version", `{"version":"2.3000.5"}`, 200},
		{"min version cleared", "PUT", "/refusals/min-version", `{"version":""}`, 200},
		{"served version", "PUT", "/refusals/served-version", `{"version":"2.3000.1999999999"}`, 200},
		{"ban without seconds", "POST", "/refusals/ban", `{"jid":"1:1@s.whatsapp.net"}`, 400},
		{"ban of unknown device", "POST", "/refusals/ban", `{"jid":"1:1@s.whatsapp.net","seconds":5}`, 404},
		{"negative burst", "POST", "/refusals/unavailable", `{"count":-1}`, 400},
		{"burst", "POST", "/refusals/unavailable", `{"count":2}`, 200},
		{"not JSON", "POST", "/refusals/unavailable", `count=2`, 400},
	} {
		if got := call(t, srv.URL, c.method, c.path, c.body, nil); got != c.want {
			t.Errorf("%s: status %d, want %d", c.name, got, c.want)
		}
	}

	// whatsmeow reads the document at its fixed URL; send that request here.
	client := &http.Client{Transport: roundTripTo(srv.URL + "/web")}
	got, err := whatsmeow.GetLatestVersion(context.Background(), client)
	if err != nil {
		t.Fatal(err)
	}
	if want := (wastore.WAVersionContainer{2, 3000, 1999999999}); *got != want {
		t.Fatalf("version document says %s, want %s", got, want)
	}
}

// roundTripTo sends every request to one URL.
type roundTripTo string

func (u roundTripTo) RoundTrip(r *http.Request) (*http.Response, error) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, string(u), nil)
	if err != nil {
		return nil, err
	}
	return http.DefaultTransport.RoundTrip(req)
}
