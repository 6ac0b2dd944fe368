package httpapi_test

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"runtime"
	"testing"
)

// bombExpansion is what the compression bomb below expands to once both
// gzip layers are undone: far more than the 1 MiB body limit, which
// counts only the bytes on the wire.
const bombExpansion = 2 << 30 // 2 GiB

// gzipBomb returns a body of a few KiB that decompresses, through two
// gzip layers, to expanded zero bytes. The inner layer is one gzip member
// of 8 MiB of zeros repeated (a gzip stream may hold many members, and
// readers concatenate them); the outer layer compresses those repeats.
func gzipBomb(t testing.TB, expanded int64) []byte {
	t.Helper()
	const member = 8 << 20
	var one bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&one, gzip.BestCompression)
	if _, err := zw.Write(make([]byte, member)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	var outer bytes.Buffer
	ow, _ := gzip.NewWriterLevel(&outer, gzip.BestCompression)
	for n := int64(0); n < expanded; n += member {
		if _, err := ow.Write(one.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	if err := ow.Close(); err != nil {
		t.Fatal(err)
	}
	return outer.Bytes()
}

// TestCompressedBodyRefused sends a double-gzipped body, far under the
// body limit on the wire, that expands to gigabytes. fiber's c.Body()
// undoes every Content-Encoding layer without a size cap; the API must
// refuse any encoded body (415) without decompressing it, so the request
// allocates next to nothing. The test is not parallel: it reads the
// process's allocation counter, which other tests would move.
func TestCompressedBodyRefused(t *testing.T) {
	e := newEnv(t)
	tok := e.token(newUser(), false)
	bomb := gzipBomb(t, bombExpansion)
	if len(bomb) > 1<<20 {
		t.Fatalf("the bomb is %d bytes, over the body limit: it would not test decompression", len(bomb))
	}
	t.Logf("bomb: %d bytes on the wire, %d bytes expanded", len(bomb), int64(bombExpansion))

	for _, enc := range []string{"gzip, gzip", "gzip", "deflate", "br", "GZIP"} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		r := e.do(req{method: "POST", path: sessionPath, token: tok, body: bomb,
			header: map[string]string{"Content-Encoding": enc}})
		runtime.ReadMemStats(&after)
		// The request's own work (routing, auth, the envelope) is a few
		// KiB; decompressing even one layer would be megabytes.
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
			t.Fatalf("Content-Encoding %q: the request allocated %d MiB (answer %d); the body was decompressed", enc, grew>>20, r.Status)
		}
		r.wantError(t, http.StatusUnsupportedMediaType, "unsupported_content_encoding")
	}
	// Nothing was created for the refused requests.
	e.do(req{method: "GET", path: statusPath, token: tok}).wantError(t, http.StatusNotFound, "session_not_found")
	// Every route with a body refuses the same way.
	for _, p := range []string{disconnectPath, cleanupPath} {
		e.do(req{method: "POST", path: p, token: e.token(newUser(), true), body: bomb,
			header: map[string]string{"Content-Encoding": "gzip"}}).wantError(t, http.StatusUnsupportedMediaType, "unsupported_content_encoding")
	}
	// identity means "not encoded": an ordinary body.
	if r := e.do(req{method: "POST", path: sessionPath, token: tok, body: []byte(`{}`),
		header: map[string]string{"Content-Encoding": "identity"}}); r.Status != http.StatusCreated {
		t.Fatalf("identity-encoded body: %d %s", r.Status, r.Body)
	}
}
