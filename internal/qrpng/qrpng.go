// Package qrpng renders a WhatsApp QR string as the PNG data URL the API
// returns in qrCode (kept for compatibility, docs/ARCHITECTURE.md), so a
// frontend can put it straight into an <img>.
package qrpng

import (
	"encoding/base64"
	"fmt"

	qrcode "github.com/skip2/go-qrcode"
)

// Size is the image's width and height in pixels: large enough for a phone
// camera at arm's length, small enough (~1-2 KiB) to store in the row.
const Size = 256

const prefix = "data:image/png;base64,"

// DataURL encodes content as a QR code (medium error correction, as WhatsApp
// Web uses) and returns it as a data:image/png;base64 URL.
func DataURL(content string) (string, error) {
	png, err := qrcode.Encode(content, qrcode.Medium, Size)
	if err != nil {
		return "", fmt.Errorf("qrpng: encode: %w", err)
	}
	return prefix + base64.StdEncoding.EncodeToString(png), nil
}
