// Package browser tests the session page (internal/web) the way a person
// uses it: Debian's Chromium, headless at a phone-sized viewport and driven
// with chromedp, against the real programs (cmd/api, cmd/worker,
// cmd/scheduler) and the WhatsApp protocol emulator (cmd/waemu) standing in
// for WhatsApp and the user's phone.
//
// The test opens the page with a token in the URL fragment, links by QR
// code (the QR decoded from a screenshot of the image on the page, as a
// phone's camera would read it) and by pairing code, watches the QR
// refresh and expire, and disconnects. It saves a full-page screenshot of
// each state under artifacts/browser/ at the repository root, and logs two
// figures (lines starting with FIGURE): how long a published qr event takes
// to show as an image on the page, and how long after a scan the page shows
// the session connected.
//
// TestAdminPage does the same for the operators' dashboard (/admin) with
// thousands of seeded sessions: filters, paging, a session appearing and
// connecting live, its detail and history, a confirmed disconnect, a user's
// token refused; it logs FIGURE admin_first_paint and saves its screenshots
// under artifacts/browser/admin/.
//
// The stack is e2e/harness's, as in the e2e suite: the programs are built
// with -race (E2E_RACE=0 for the figures), and every test ends with the
// same checks (no conflict at the emulator, no data race, no program that
// exited on its own or uncleanly).
//
// Chromium must be at /usr/bin/chromium: `make test` installs it
// (scripts/chromium.sh). Without it the test fails, never skips.
package browser
