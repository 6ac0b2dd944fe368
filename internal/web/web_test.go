package web_test

import (
	"io"
	"io/fs"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"wasessions/docs"
	"wasessions/internal/httpapi"
	"wasessions/internal/web"
)

func read(t *testing.T, name string) string {
	t.Helper()
	b, err := fs.ReadFile(web.FS(), name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return string(b)
}

// The page is four files at the root of FS (common.js is shared with the
// dashboard), and index.html loads the others by relative paths (so the
// page works under any prefix), common.js before app.js.
func TestFSHoldsThePage(t *testing.T) {
	index := read(t, "index.html")
	for _, name := range []string{"common.js", "app.js", "style.css"} {
		if read(t, name) == "" {
			t.Errorf("%s is empty", name)
		}
	}
	if c, a := strings.Index(index, `src="common.js"`), strings.Index(index, `src="app.js"`); c < 0 || a < c {
		t.Errorf("index.html must load common.js, then app.js")
	}
	for _, ref := range []string{`src="app.js"`, `href="style.css"`, `name="viewport"`} {
		if !strings.Contains(index, ref) {
			t.Errorf("index.html lacks %s", ref)
		}
	}
}

// Every element app.js looks up by id exists in index.html: a renamed id
// would otherwise only show as a broken page.
func TestScriptFindsEveryElement(t *testing.T) {
	index, js := read(t, "index.html"), read(t, "app.js")
	ids := map[string]bool{}
	for _, m := range regexp.MustCompile(`\bid="([^"]+)"`).FindAllStringSubmatch(index, -1) {
		ids[m[1]] = true
	}
	var used []string
	for _, m := range regexp.MustCompile(`\$\('([^']+)'\)`).FindAllStringSubmatch(js, -1) {
		used = append(used, m[1])
	}
	views := regexp.MustCompile(`const views = \[([^\]]*)\]`).FindStringSubmatch(js)
	if views == nil {
		t.Fatal("app.js: no views list")
	}
	for _, m := range regexp.MustCompile(`'([^']+)'`).FindAllStringSubmatch(views[1], -1) {
		used = append(used, m[1])
	}
	if len(used) < 10 {
		t.Fatalf("found only %d id lookups in app.js: the pattern no longer matches", len(used))
	}
	for _, id := range used {
		if !ids[id] {
			t.Errorf("app.js uses #%s, which index.html does not have", id)
		}
	}
}

// The fields app.js reads from API answers (d.*) and from stream events
// (u.*, s.*: merged events) are the ones docs/openapi.yaml defines.
func TestScriptReadsDocumentedFields(t *testing.T) {
	js := read(t, "app.js")
	doc, err := openapi3.NewLoader().LoadFromData(docs.OpenAPI)
	if err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	props := func(schema string) []string {
		ref := doc.Components.Schemas[schema]
		if ref == nil || ref.Value == nil {
			t.Fatalf("docs/openapi.yaml has no schema %s", schema)
		}
		var names []string
		for n := range ref.Value.Properties {
			names = append(names, n)
		}
		return names
	}
	// Fields of the page's own making, kept beside the session's.
	local := []string{"gone", "byPhone", "pairPhone", "type"}
	tests := []struct {
		name, variable, schema string
	}{
		{"API session (create, disconnect)", "d", "CreatedSession"},
		{"stream event", "u", "SessionEvent"},
		{"rendered state", "s", "SessionEvent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			known := props(tt.schema)
			seen := 0
			pattern := `\b` + tt.variable + `\.([a-zA-Z]+)`
			for _, m := range regexp.MustCompile(pattern).FindAllStringSubmatch(js, -1) {
				seen++
				if !slices.Contains(known, m[1]) && !slices.Contains(local, m[1]) {
					t.Errorf("app.js reads %s.%s, which schema %s does not define (it has %v)", tt.variable, m[1], tt.schema, known)
				}
			}
			if seen == 0 {
				t.Errorf("no field reads of %s. in app.js: the pattern no longer matches", tt.variable)
			}
		})
	}
}

// Mounted as httpapi.Options.Static, the page is served at / without a
// token, with content types a browser accepts.
func TestServedByTheAPI(t *testing.T) {
	app := httpapi.New(httpapi.Deps{}, httpapi.Options{Static: web.FS(), StaticHeaders: web.Headers()})
	tests := []struct {
		path, contentType, contains string
	}{
		{"/", "text/html", `data-testid="connect"`},
		{"/app.js", "javascript", "/api/integrations/whatsapp"},
		{"/common.js", "javascript", "text/event-stream"},
		{"/style.css", "text/css", ".qr"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, err := app.Test(httptest.NewRequest("GET", tt.path, nil))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 {
				t.Fatalf("GET %s: %d %s", tt.path, resp.StatusCode, body)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, tt.contentType) {
				t.Errorf("GET %s: Content-Type %q, want %s", tt.path, ct, tt.contentType)
			}
			if !strings.Contains(string(body), tt.contains) {
				t.Errorf("GET %s: body lacks %q", tt.path, tt.contains)
			}
			for k, want := range map[string]string{
				"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
				"X-Content-Type-Options":  "nosniff",
				"Referrer-Policy":         "no-referrer",
			} {
				if got := resp.Header.Get(k); got != want {
					t.Errorf("GET %s: %s = %q, want %q", tt.path, k, got, want)
				}
			}
		})
	}
}

// The page's Content-Security-Policy allows no inline script or style and
// no event-handler attributes: the page must not rely on any, or the
// policy would break it in every browser.
func TestNoInlineCode(t *testing.T) {
	index := read(t, "index.html")
	scripts := regexp.MustCompile(`(?is)<script([^>]*)>(.*?)</script>`).FindAllStringSubmatch(index, -1)
	if len(scripts) == 0 {
		t.Fatal("index.html loads no script: the pattern no longer matches")
	}
	for _, m := range scripts {
		if !strings.Contains(m[1], "src=") || strings.TrimSpace(m[2]) != "" {
			t.Errorf("index.html has an inline script: %q", m[0])
		}
	}
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`(?i)<style`),
		regexp.MustCompile(`(?i)\sstyle=`),
		regexp.MustCompile(`(?i)\son[a-z]+=`),
		regexp.MustCompile(`(?i)javascript:`),
	} {
		if m := bad.FindString(index); m != "" {
			t.Errorf("index.html has inline code the CSP blocks: %q", m)
		}
	}
	for _, name := range []string{"common.js", "app.js"} {
		js := read(t, name)
		for _, bad := range []string{"innerHTML", "setAttribute('style'", "eval(", "new Function"} {
			if strings.Contains(js, bad) {
				t.Errorf("%s uses %s", name, bad)
			}
		}
	}
	if !strings.Contains(web.CSP, "default-src 'self'") || strings.Contains(web.CSP, "unsafe-inline") {
		t.Errorf("CSP %q", web.CSP)
	}
}

// The operators' dashboard is served at /admin from the same files, with
// the same headers, and loads its script and styles by absolute paths
// (it is reached as /admin and /admin/ alike).
func TestAdminPageServed(t *testing.T) {
	app := httpapi.New(httpapi.Deps{}, httpapi.Options{Static: web.FS(), StaticHeaders: web.Headers()})
	tests := []struct {
		path, contentType, contains string
	}{
		{"/admin", "text/html", `data-testid="sessions"`},
		{"/admin/", "text/html", `src="/admin/admin.js"`},
		{"/admin/admin.js", "javascript", "/api/integrations/admin"},
		{"/admin/admin.css", "text/css", ".sessions"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, err := app.Test(httptest.NewRequest("GET", tt.path, nil))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 {
				t.Fatalf("GET %s: %d %s", tt.path, resp.StatusCode, body)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, tt.contentType) {
				t.Errorf("GET %s: Content-Type %q, want %s", tt.path, ct, tt.contentType)
			}
			if !strings.Contains(string(body), tt.contains) {
				t.Errorf("GET %s: body lacks %q", tt.path, tt.contains)
			}
			if got := resp.Header.Get("Content-Security-Policy"); got != web.CSP {
				t.Errorf("GET %s: Content-Security-Policy %q, want %q", tt.path, got, web.CSP)
			}
		})
	}
}

// The dashboard relies on no inline code the CSP would block, every
// element admin.js looks up exists, and every field it reads from the
// admin API's answers is one docs/openapi.yaml defines: s. is an
// AdminSession, h. a StatusChange, w. a Worker, q. a QueueLoad.
func TestAdminPageScript(t *testing.T) {
	index, js := read(t, "admin/index.html"), read(t, "admin/admin.js")
	scripts := regexp.MustCompile(`(?is)<script([^>]*)>(.*?)</script>`).FindAllStringSubmatch(index, -1)
	if len(scripts) != 2 || !strings.Contains(scripts[0][1], `src="/common.js"`) || !strings.Contains(scripts[1][1], `src="/admin/admin.js"`) ||
		strings.TrimSpace(scripts[0][2]+scripts[1][2]) != "" {
		t.Errorf("admin/index.html must load /common.js, then admin.js, and nothing inline: %q", scripts)
	}
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`(?i)<style`), regexp.MustCompile(`(?i)\sstyle=`),
		regexp.MustCompile(`(?i)\son[a-z]+=`), regexp.MustCompile(`(?i)javascript:`),
	} {
		if m := bad.FindString(index); m != "" {
			t.Errorf("admin/index.html has inline code the CSP blocks: %q", m)
		}
	}
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "setAttribute('style'", "eval(", "new Function", "document.write"} {
		if strings.Contains(js, bad) {
			t.Errorf("admin.js uses %s", bad)
		}
	}

	ids := map[string]bool{}
	for _, m := range regexp.MustCompile(`\bid="([^"]+)"`).FindAllStringSubmatch(index, -1) {
		ids[m[1]] = true
	}
	used := regexp.MustCompile(`\$\('([^']+)'\)`).FindAllStringSubmatch(js, -1)
	if len(used) < 20 {
		t.Fatalf("found only %d id lookups in admin.js: the pattern no longer matches", len(used))
	}
	for _, m := range used {
		if !ids[m[1]] {
			t.Errorf("admin.js uses #%s, which admin/index.html does not have", m[1])
		}
	}

	doc, err := openapi3.NewLoader().LoadFromData(docs.OpenAPI)
	if err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	for _, tt := range []struct{ variable, schema string }{
		{"s", "AdminSession"}, {"h", "StatusChange"}, {"w", "Worker"}, {"q", "QueueLoad"},
	} {
		ref := doc.Components.Schemas[tt.schema]
		if ref == nil || ref.Value == nil {
			t.Fatalf("docs/openapi.yaml has no schema %s", tt.schema)
		}
		seen := 0
		for _, m := range regexp.MustCompile(`\b`+tt.variable+`\.([a-zA-Z]+)`).FindAllStringSubmatch(js, -1) {
			seen++
			if _, ok := ref.Value.Properties[m[1]]; !ok {
				t.Errorf("admin.js reads %s.%s, which schema %s does not define", tt.variable, m[1], tt.schema)
			}
		}
		if seen == 0 {
			t.Errorf("no field reads of %s. in admin.js: the pattern no longer matches", tt.variable)
		}
	}
}
