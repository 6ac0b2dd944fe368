package wa_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	wastore "go.mau.fi/whatsmeow/store"

	"wasessions/internal/wa"
)

// A version page on loopback that a test can change, break and count.
type versionPage struct {
	srv      *httptest.Server
	revision atomic.Int64
	broken   atomic.Bool
	hits     atomic.Int64
}

func newVersionPage(t *testing.T, revision int64) *versionPage {
	p := &versionPage{}
	p.revision.Store(revision)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		p.hits.Add(1)
		if p.broken.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		fmt.Fprintf(w, `<script>{"client_revision":%d,"x":1}</script>`, p.revision.Load())
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func TestVersions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	compiled := wastore.GetWAVersion()

	t.Run("fetch adopts a newer version, a failure keeps it", func(t *testing.T) {
		page := newVersionPage(t, 2000000001)
		var outcomes []string
		v := wa.NewVersions(wa.VersionOptions{Fetch: true, URL: page.srv.URL, Timeout: 5 * time.Second,
			Observe: func(o string, _ wastore.WAVersionContainer) { outcomes = append(outcomes, o) }})
		if v.Current() != compiled {
			t.Fatalf("starts at %s, want the compiled %s", v.Current(), compiled)
		}
		changed, err := v.Refresh(ctx, compiled, 0)
		want := wastore.WAVersionContainer{2, 3000, 2000000001}
		if err != nil || !changed || v.Current() != want {
			t.Fatalf("changed=%v err=%v current=%s, want %s", changed, err, v.Current(), want)
		}
		page.broken.Store(true)
		if changed, err := v.Refresh(ctx, want, 0); err == nil || changed || v.Current() != want {
			t.Fatalf("after a failed fetch: changed=%v err=%v current=%s, want %s kept", changed, err, v.Current(), want)
		}
		if strings.Join(outcomes, ",") != "changed,error" {
			t.Fatalf("outcomes %v", outcomes)
		}
	})

	t.Run("callers behind a recent fetch get its answer", func(t *testing.T) {
		page := newVersionPage(t, int64(compiled[2]))
		v := wa.NewVersions(wa.VersionOptions{Fetch: true, URL: page.srv.URL})
		for range 5 {
			if changed, err := v.Refresh(ctx, compiled, time.Minute); err != nil || changed {
				t.Fatalf("changed=%v err=%v", changed, err)
			}
		}
		if page.hits.Load() != 1 {
			t.Fatalf("%d fetches for 5 refreshes within a minute, want 1", page.hits.Load())
		}
	})

	t.Run("pinned never fetches", func(t *testing.T) {
		page := newVersionPage(t, 2000000001)
		pin := wastore.WAVersionContainer{2, 3000, 7}
		v := wa.NewVersions(wa.VersionOptions{Fetch: true, URL: page.srv.URL, Pinned: pin})
		if changed, _ := v.Refresh(ctx, pin, 0); changed || v.Current() != pin || page.hits.Load() != 0 {
			t.Fatalf("changed=%v current=%s hits=%d", changed, v.Current(), page.hits.Load())
		}
	})
}

func TestProxyURLs(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		raw, shown string
		ok         bool
	}{
		{"socks5://127.0.0.1:1080", "socks5://127.0.0.1:1080", true},
		{"socks5://u:hunter2@127.0.0.1:1080", "socks5://u:xxxxx@127.0.0.1:1080", true},
		{"http://127.0.0.1:3128", "http://127.0.0.1:3128", true},
		{"https://u:hunter2@127.0.0.1:443", "https://u:xxxxx@127.0.0.1:443", true},
		{"ftp://127.0.0.1:21", "ftp://127.0.0.1:21", false},
		{"socks5://127.0.0.1", "socks5://127.0.0.1", false},
		{"socks5://127.0.0.1:1080/path", "socks5://127.0.0.1:1080/path", false},
	} {
		_, err := wa.ParseProxy(c.raw)
		if (err == nil) != c.ok {
			t.Errorf("%s: err %v, want ok=%v", c.raw, err, c.ok)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: error shows the password", c.raw)
		}
		if got := wa.RedactProxy(c.raw); got != c.shown {
			t.Errorf("%s: shown as %s, want %s", c.raw, got, c.shown)
		}
		if _, err := wa.ProxyTransport(c.raw); (err == nil) != c.ok {
			t.Errorf("%s: transport err %v", c.raw, err)
		}
	}
}
