package harness

import (
	"crypto/rand"
	"encoding/base64"
	"testing"

	"wasessions/internal/qrpng"
)

// The scanner reads every code the API renders: 500 random strings shaped
// like whatsmeow's QR content, through internal/qrpng. About a dozen of
// them defeat one look at 0°.
func TestScanQRReadsRenderedCodes(t *testing.T) {
	for i := range 500 {
		content := "2@" + randomB64(t, 18) + "," + randomB64(t, 32) + "," + randomB64(t, 32) + "," + randomB64(t, 32)
		url, err := qrpng.DataURL(content)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeQRDataURL(url)
		if err != nil || got != content {
			t.Fatalf("code %d: decoded %q, %v; want %q", i, got, err, content)
		}
	}
}

func randomB64(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}
