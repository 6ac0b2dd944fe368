package harness

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"image"
	"image/png"
	"strings"

	"github.com/makiuchi-d/gozxing"
	gzqr "github.com/makiuchi-d/gozxing/qrcode"
)

// ScanQR reads the string a QR code image encodes, as a phone's camera
// would: with a QR decoder (gozxing), not by trusting any field beside it.
// Both suites read codes through it: the e2e suite from the API's PNG data
// URLs (DecodeQRDataURL), the browser suite from screenshots of the page.
//
// gozxing's finder-pattern detector misses about 2.5% of the codes the API
// renders (valid version-9 symbols that zbar reads, and that gozxing
// itself decodes once it has found them): a data module next to a finder
// pattern looks like another candidate. Looking again at the same pixels
// misses again. A phone sees the code at whatever angle it is held, so the
// image is tried at 0°, 90°, 180° and 270°; in 3,000 random WhatsApp-shaped
// codes every one decoded at one of these.
func ScanQR(img image.Image) (string, error) {
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
	return "", fmt.Errorf("no QR code in the image (%dx%d): %w", img.Bounds().Dx(), img.Bounds().Dy(), errors.Join(errs...))
}

// DecodeQRDataURL scans the QR code in a PNG data URL (the API's qrCode).
func DecodeQRDataURL(dataURL string) (string, error) {
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
	return ScanQR(img)
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
