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

// Headers are the HTTP headers to serve the page's files with:
//   - Content-Security-Policy: scripts, styles, fetches and frames only from
//     the page's own origin (the page has no inline script or style, and the
//     QR image is a data: URL); no framing (clickjacking a "Connect" click),
//     no <base> rewriting of the relative script path.
//   - X-Content-Type-Options: browsers do not guess types (an uploaded or
//     mislabelled file is never run as a script).
//   - Referrer-Policy: the page's address never leaves in a Referer header
//     (the <meta name="referrer"> does the same for browsers that read it).
func Headers() map[string]string {
	return map[string]string{
		"Content-Security-Policy": CSP,
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "no-referrer",
	}
}

// CSP is the page's Content-Security-Policy.
const CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"

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
