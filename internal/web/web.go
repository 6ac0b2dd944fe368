// Package web is the session page: a small static page (plain HTML, CSS and
// JavaScript, no framework and no build step) that lets a user link their
// WhatsApp account by QR code or pairing code and watch the session live.
//
// The files are embedded in the binary, so the API serves the page with no
// files to deploy beside it and no toolchain beyond Go to build it.
package web

import (
	"embed"
	"io/fs"
)

//go:embed static
var static embed.FS

// FS returns the page's files with index.html at the root, ready for
// httpapi.Options.Static. The API serves them at / without authentication:
// the page holds no secret, it asks for the user's token and sends it only
// in the Authorization header of its API calls.
func FS() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic("web: embedded static directory missing: " + err.Error()) // cannot happen: checked at build time by go:embed
	}
	return sub
}
