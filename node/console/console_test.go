package console

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"
)

func bundle() fstest.MapFS {
	return fstest.MapFS{
		"index.html":            {Data: []byte(`<!doctype html><script type="module" src="/assets/main-ABC.js"></script>`)},
		"favicon.svg":           {Data: []byte(`<svg/>`)},
		"assets/main-ABC.js":    {Data: []byte(`console.log(1)`)},
		"assets/main-DEF.css":   {Data: []byte(`body{}`)},
		"assets/nested/x-1.txt": {Data: []byte(`x`)},
	}
}

func get(t *testing.T, h http.Handler, method, target string) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec.Result()
}

func body(t *testing.T, r *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestServesBundle(t *testing.T) {
	h := NewFS(bundle())
	if !h.Built() {
		t.Fatal("a bundle with index.html is built")
	}
	cases := []struct {
		target, status, ctype, cache, contains string
	}{
		{"/", "200", "text/html", RevalidateCache, "main-ABC.js"},
		{"/tree/devices/pump-12", "200", "text/html", RevalidateCache, "main-ABC.js"},
		{"/device/peers/eu/devices/x", "200", "text/html", RevalidateCache, "main-ABC.js"},
		{"/index.html", "200", "text/html", RevalidateCache, "main-ABC.js"},
		{"/releases/agent/1.4.2?tenant=acme", "200", "text/html", RevalidateCache, "main-ABC.js"},
		{"/cache", "200", "text/html", RevalidateCache, "main-ABC.js"},
		{"/assets/main-ABC.js", "200", "text/javascript", AssetCache, "console.log"},
		{"/assets/main-DEF.css", "200", "text/css", AssetCache, "body{}"},
		{"/favicon.svg", "200", "image/svg+xml", RevalidateCache, "<svg/>"},
		// A stale or wrong asset is a 404, never index.html.
		{"/assets/main-OLD.js", "404", "text/plain", "", "not found"},
		{"/assets/", "404", "text/plain", "", "not found"},
		// The API's space is never the console's.
		{"/api/v1/nothing", "404", "text/plain", "", "not found"},
		{"/api/v1/software/cache", "404", "text/plain", "", "not found"},
		{"/api", "404", "text/plain", "", "not found"},
	}
	for _, c := range cases {
		r := get(t, h, http.MethodGet, c.target)
		b := body(t, r)
		if got := r.Status[:3]; got != c.status {
			t.Errorf("%s: status %s, want %s", c.target, r.Status, c.status)
		}
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, c.ctype) {
			t.Errorf("%s: content type %q, want %s", c.target, ct, c.ctype)
		}
		if c.cache != "" && r.Header.Get("Cache-Control") != c.cache {
			t.Errorf("%s: cache-control %q, want %q", c.target, r.Header.Get("Cache-Control"), c.cache)
		}
		if !strings.Contains(b, c.contains) {
			t.Errorf("%s: body %q lacks %q", c.target, b, c.contains)
		}
		if r.Header.Get("Content-Security-Policy") != CSP || r.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: security headers %v", c.target, r.Header)
		}
	}
}

func TestCSPAllowsNothingFromOutside(t *testing.T) {
	for _, dir := range strings.Split(CSP, ";") {
		dir = strings.TrimSpace(dir)
		name, srcs, _ := strings.Cut(dir, " ")
		for _, s := range strings.Fields(srcs) {
			switch s {
			case "'self'", "'none'", "data:":
			default:
				t.Errorf("%s allows %s", name, s)
			}
		}
		if name == "script-src" && srcs != "'self'" {
			t.Errorf("script-src %q, want 'self' only", srcs)
		}
	}
}

func TestMethods(t *testing.T) {
	h := NewFS(bundle())
	if r := get(t, h, http.MethodHead, "/tree"); r.StatusCode != 200 || body(t, r) != "" {
		t.Fatalf("HEAD: %s", r.Status)
	}
	r := get(t, h, http.MethodPost, "/tree")
	if r.StatusCode != http.StatusMethodNotAllowed || r.Header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST: %s %v", r.Status, r.Header)
	}
}

func TestNotBuilt(t *testing.T) {
	h := NewFS(fstest.MapFS{})
	if h.Built() {
		t.Fatal("an empty bundle is not built")
	}
	for _, p := range []string{"/", "/tree", "/assets/main-ABC.js"} {
		r := get(t, h, http.MethodGet, p)
		if b := body(t, r); r.StatusCode != http.StatusNotImplemented || !strings.Contains(b, "make build") || !strings.Contains(b, "npm ci") {
			t.Errorf("%s: %s %q", p, r.Status, b)
		}
	}
}

// The embedded console is whatever the last web build left in build/app:
// either a bundle whose index.html names assets that exist, or nothing.
func TestEmbedded(t *testing.T) {
	h := New()
	if !h.Built() {
		t.Skip("console not built (npm run build in node/console/web); the not-built page is tested above")
	}
	idx := body(t, get(t, h, http.MethodGet, "/"))
	for _, part := range strings.Split(idx, `"`) {
		if !strings.HasPrefix(part, "/assets/") && part != "/favicon.svg" {
			continue
		}
		if r := get(t, h, http.MethodGet, part); r.StatusCode != 200 {
			t.Errorf("index.html names %s: %s", part, r.Status)
		}
	}
	if strings.Contains(idx, "http://") || strings.Contains(idx, "https://") || strings.Contains(idx, "<style") {
		t.Errorf("index.html refers outside or inlines style: %s", idx)
	}
}
