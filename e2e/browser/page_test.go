package browser

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"wasessions/e2e/harness"
	"wasessions/internal/testfactory"
)

// chromiumPath is Debian's Chromium, which scripts/chromium.sh installs.
const chromiumPath = "/usr/bin/chromium"

// Phone-sized viewport (an iPhone SE's CSS pixels), at device scale 2.
const (
	viewportW = 375
	viewportH = 667
	dpr       = 2
)

// artifactsDir is where the screenshots go: artifacts/browser at the
// repository root (git-ignored), or sub under it; its files are deleted at
// the start of each run (not its subfolders: another test's).
func artifactsDir(t *testing.T, sub ...string) string {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(append([]string{root, "artifacts", "browser"}, sub...)...)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range old {
		if !e.IsDir() {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("screenshots of each state go to %s", dir)
	return dir
}

// newBrowser starts headless Chromium for the test and returns its
// context; it is closed when the test ends.
func newBrowser(t *testing.T, s *stack) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s is missing (%v): run `make test`, which installs Debian's chromium (scripts/chromium.sh)", chromiumPath, err)
	}
	logPath := filepath.Join(s.Dir, "chromium.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logFile.Close() })
	s.ShowOnFailure(logPath)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		// The machine's network is closed: no background connections.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.CombinedOutput(logFile),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	start := time.Now()
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	t.Logf("chromium started in %s", time.Since(start).Round(time.Millisecond))
	return ctx
}

// page is one tab, in a browser context of its own (its own
// sessionStorage), at the phone-sized viewport.
type page struct {
	t      *testing.T
	ctx    context.Context
	s      *stack
	prefix string // of its screenshots' names
	shots  string // the screenshots' folder

	mu         sync.Mutex
	exceptions []string
}

func newPage(t *testing.T, browser context.Context, s *stack, prefix, shots string) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	p := &page{t: t, ctx: ctx, s: s, prefix: prefix, shots: shots}
	err := chromedp.Do(ctx, chromedp.EmulateViewport(viewportW, viewportH, chromedp.EmulateScale(dpr), chromedp.EmulateMobile))
	if err != nil {
		t.Fatalf("%s: viewport: %v", prefix, err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.IsException() {
				p.mu.Lock()
				p.exceptions = append(p.exceptions, m.Text)
				p.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, e := range p.exceptions {
			t.Errorf("%s: uncaught JavaScript exception: %s", prefix, e)
		}
	})
	return p
}

// observe is installed in the page once it has loaded: it records, with
// the browser's high-resolution wall clock, when each new QR image has been
// decoded and a frame is about to be painted with it, and each change of
// the page's state. Reading the DOM from the test at intervals would add
// the polling interval to every figure.
const observe = `(() => {
  const now = () => performance.timeOrigin + performance.now();
  window.__qr = []; window.__states = [];
  const img = document.getElementById('qr'), app = document.getElementById('app');
  new MutationObserver(() => {
    const src = img.getAttribute('src') || '', set = now();
    img.decode().then(() => requestAnimationFrame(() => window.__qr.push({src, set, shown: now()})), () => {});
  }).observe(img, {attributes: true, attributeFilter: ['src']});
  const rec = () => window.__states.push({state: app.dataset.state, text: document.getElementById('status').textContent, t: now()});
  new MutationObserver(rec).observe(app, {attributes: true, attributeFilter: ['data-state']});
  rec();
})()`

// shownQR is one QR image the page showed, times in Unix milliseconds.
type shownQR struct {
	Src   string  `json:"src"`
	Set   float64 `json:"set"`
	Shown float64 `json:"shown"`
}

// stateAt is one state the page entered.
type stateAt struct {
	State string  `json:"state"`
	Text  string  `json:"text"`
	T     float64 `json:"t"`
}

// view is what the page shows now.
type view struct {
	State  string `json:"state"`
	Status string `json:"status"`
	Error  string `json:"error"`
	Note   string `json:"note"`
	Hash   string `json:"hash"`
	URL    string `json:"url"`
}

func (v view) String() string {
	return fmt.Sprintf("state %q, status %q, error %q, note %q", v.State, v.Status, v.Error, v.Note)
}

const readView = `({
  state: document.getElementById('app').dataset.state,
  status: document.getElementById('status').textContent,
  error: document.getElementById('error').hidden ? '' : document.getElementById('error').textContent,
  note: document.getElementById('note').hidden ? '' : document.getElementById('note').textContent,
  hash: location.hash, url: location.href,
})`

// do runs actions with a bound on how long they may take.
func (p *page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %s: %v (page: %s)", p.prefix, what, err, p.viewNow())
	}
}

func eval[T any](p *page, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("%s: evaluate %.60q: %v", p.prefix, expr, err)
	}
	return v
}

func (p *page) viewNow() view {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[view](readView))
	if err != nil {
		return view{State: "(unreadable: " + err.Error() + ")"}
	}
	return v
}

// open loads the page with token in the URL fragment and installs the
// observer.
func (p *page) open(token string) {
	p.t.Helper()
	p.do("open the page", chromedp.Navigate(p.s.APIBase+"/#token="+token))
	eval[chromedp.Void](p, observe)
}

// waitState waits until the page's state is want and returns the view.
func (p *page) waitState(want string, within time.Duration) view {
	p.t.Helper()
	var v view
	err := testfactory.Poll(within, 50*time.Millisecond, func() (bool, string) {
		v = p.viewNow()
		return v.State == want, "it shows " + v.String()
	})
	if err != nil {
		p.shot("timeout-waiting-for-" + want)
		p.t.Fatalf("%s: the page did not reach state %q: %v", p.prefix, want, err)
	}
	return v
}

// visibleText is the text of the element with data-testid id, failing if
// it is not visible.
func (p *page) visibleText(id string) string {
	p.t.Helper()
	visible, text := p.element(id)
	if !visible {
		p.t.Fatalf("%s: [data-testid=%s] is not visible; the page shows %s", p.prefix, id, p.viewNow())
	}
	return text
}

// element reports whether the element with data-testid id is visible, and
// its text.
func (p *page) element(id string) (visible bool, text string) {
	r := eval[struct {
		Visible bool   `json:"visible"`
		Text    string `json:"text"`
	}](p, fmt.Sprintf(`(() => { const e = document.querySelector('[data-testid=%q]');
	  return e ? {visible: e.checkVisibility(), text: e.textContent.trim()} : {visible: false, text: ''}; })()`, id))
	return r.Visible, r.Text
}

// waitVisible waits until the element with data-testid id is visible and
// returns its text.
func (p *page) waitVisible(id string, within time.Duration) string {
	p.t.Helper()
	var text string
	err := testfactory.Poll(within, 50*time.Millisecond, func() (bool, string) {
		visible, t := p.element(id)
		text = t
		return visible, ""
	})
	if err != nil {
		p.shot("timeout-waiting-for-" + id)
		p.t.Fatalf("%s: [data-testid=%s] not visible: %v; the page shows %s", p.prefix, id, err, p.viewNow())
	}
	return text
}

func (p *page) click(id string) {
	p.t.Helper()
	p.do("click "+id, chromedp.Click(chromedp.CSS(`[data-testid="`+id+`"]`)))
}

func (p *page) typeInto(id, text string) {
	p.t.Helper()
	p.do("type into "+id, chromedp.SendKeys(chromedp.CSS(`[data-testid="`+id+`"]`), text))
}

// shot saves a full-page PNG screenshot as <prefix>-<name>.png.
func (p *page) shot(name string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	b, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Errorf("%s: screenshot %s: %v", p.prefix, name, err)
		return
	}
	path := filepath.Join(p.shots, p.prefix+"-"+name+".png")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		p.t.Errorf("%s: %v", p.prefix, err)
	}
}

// scanQR reads the QR code the page shows as a phone's camera would: from
// a screenshot of the image element, with harness.ScanQR.
func (p *page) scanQR() (string, error) {
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	b, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS(`[data-testid="qr-image"]`)))
	if err != nil {
		return "", fmt.Errorf("screenshot of the QR image: %w", err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		return "", fmt.Errorf("screenshot: %w", err)
	}
	return harness.ScanQR(img) // its error names the image's size and each look
}

// imgSrc is the QR image's current src.
func (p *page) imgSrc() string {
	return eval[string](p, `document.getElementById('qr').getAttribute('src') || ''`)
}

func (p *page) shownQRs() []shownQR   { return eval[[]shownQR](p, `window.__qr`) }
func (p *page) states() []stateAt     { return eval[[]stateAt](p, `window.__states`) }
func unixMilli(t time.Time) float64   { return float64(t.UnixNano()) / 1e6 }
func millis(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

// firstState is when the page first entered state want at or after since
// (Unix ms), or false.
func firstState(states []stateAt, want string, since float64) (stateAt, bool) {
	for _, s := range states {
		if s.State == want && s.T >= since {
			return s, true
		}
	}
	return stateAt{}, false
}
