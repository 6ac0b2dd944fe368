package qrpng

import (
	"bytes"
	"encoding/base64"
	"image/png"
	"strings"
	"testing"

	"github.com/makiuchi-d/gozxing"
	gzqr "github.com/makiuchi-d/gozxing/qrcode"
)

// The PNG must decode, with an independent QR decoder, back to exactly the
// string whatsmeow produced: that is what the phone's camera will do.
func TestDataURLDecodesToContent(t *testing.T) {
	tests := []string{
		"2@abc,def,ghi,jkl",
		"2@" + strings.Repeat("A", 60) + "," + strings.Repeat("b/+=", 11) + "," + strings.Repeat("c", 44) + "," + strings.Repeat("d", 44),
	}
	for _, content := range tests {
		url, err := DataURL(content)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(url, "data:image/png;base64,") {
			t.Fatalf("not a PNG data URL: %.40s", url)
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(url, "data:image/png;base64,"))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		bmp, err := gozxing.NewBinaryBitmapFromImage(img)
		if err != nil {
			t.Fatal(err)
		}
		res, err := gzqr.NewQRCodeReader().Decode(bmp, nil)
		if err != nil {
			t.Fatalf("decode QR: %v", err)
		}
		if res.GetText() != content {
			t.Fatalf("decoded %q, want %q", res.GetText(), content)
		}
	}
}

func BenchmarkDataURL(b *testing.B) {
	content := "2@" + strings.Repeat("A", 60) + "," + strings.Repeat("b", 44) + "," + strings.Repeat("c", 44) + "," + strings.Repeat("d", 44)
	for b.Loop() {
		if _, err := DataURL(content); err != nil {
			b.Fatal(err)
		}
	}
}
