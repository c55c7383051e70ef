// Package console serves the operator web console: a single-page
// application built from web/ (Preact and TypeScript, bundled by esbuild;
// see docs/console.md) into build/app and embedded in the binary.
//
// The console is a client of the public API only; this package serves its
// static files and nothing else. It imports nothing of the project: the
// node mounts Handler behind the API (node/api routes every path it does
// not serve itself, except /api/..., to it).
//
// What it answers, for GET and HEAD:
//
//   - /assets/<name>-<hash>.<ext>: the bundle's content-addressed files,
//     cacheable for a year (immutable); a missing one is 404, never
//     index.html, so a stale page fails visibly instead of parsing HTML as
//     script.
//   - a file at the top of the bundle (favicon.svg): served, revalidated.
//   - anything else: index.html (client-side routes such as /tree/devices),
//     revalidated on every load so that a new binary's bundle is picked up.
//   - every answer carries a strict Content-Security-Policy (scripts,
//     styles, images and connections from this origin only; no inline
//     script or style; no framing) and nosniff/no-referrer headers, so
//     nothing is fetched from outside at run time.
//
// A binary built without running the web build (go install alone) embeds
// only build/README.md: it answers every console path with 501 and a page
// saying how to build the console. The API is unaffected.
package console

import (
	"bytes"
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed all:build
var embedded embed.FS

// CSP is the Content-Security-Policy of every console answer.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// AssetCache is the Cache-Control of hashed assets; RevalidateCache that of
// index.html and the other unhashed files.
const (
	AssetCache      = "public, max-age=31536000, immutable"
	RevalidateCache = "no-cache"
)

// Handler serves a built console (or the not-built page).
type Handler struct {
	files fs.FS  // rooted at the bundle (index.html, assets/...)
	index []byte // nil when the console was not built
}

// New returns the handler of the console embedded in this binary.
func New() *Handler {
	sub, err := fs.Sub(embedded, "build/app")
	if err != nil {
		// fs.Sub fails only on an invalid path, which "build/app" is not.
		panic(err)
	}
	return NewFS(sub)
}

// NewFS returns a handler serving the bundle in files (index.html at its
// root). Tests use it with a bundle of their own.
func NewFS(files fs.FS) *Handler {
	h := &Handler{files: files}
	if b, err := fs.ReadFile(files, "index.html"); err == nil {
		h.index = b
	}
	return h
}

// Built reports whether the handler has a console to serve.
func (h *Handler) Built() bool { return h.index != nil }

// modTime is what Last-Modified would say; embedded files have none, and
// the cache headers above decide freshness.
var modTime time.Time

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", CSP)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	if p == "/api" || strings.HasPrefix(p, "/api/") {
		// The API answers its own paths; the node never routes them here.
		http.NotFound(w, r)
		return
	}
	if !h.Built() {
		hd.Set("Cache-Control", RevalidateCache)
		hd.Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusNotImplemented)
		if r.Method == http.MethodGet {
			w.Write([]byte(notBuiltPage))
		}
		return
	}
	name := strings.TrimPrefix(path.Clean(p), "/")
	if name == "assets" || strings.HasPrefix(name, "assets/") {
		if !h.serveFile(w, r, name, AssetCache) {
			http.NotFound(w, r)
		}
		return
	}
	if name != "" && name != "index.html" && !strings.Contains(name, "/") && h.serveFile(w, r, name, RevalidateCache) {
		return
	}
	hd.Set("Cache-Control", RevalidateCache)
	hd.Set("Content-Type", "text/html; charset=utf-8")
	http.ServeContent(w, r, "index.html", modTime, bytes.NewReader(h.index))
}

// serveFile serves the regular file name of the bundle, reporting false
// when there is none.
func (h *Handler) serveFile(w http.ResponseWriter, r *http.Request, name, cache string) bool {
	b, err := fs.ReadFile(h.files, name)
	if err != nil {
		return false
	}
	w.Header().Set("Cache-Control", cache)
	// ServeContent sets Content-Type from the extension.
	http.ServeContent(w, r, name, modTime, bytes.NewReader(b))
	return true
}

const notBuiltPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Strata: console not built</title></head>
<body>
<h1>The console was not built into this binary</h1>
<p>This node serves its API (<code>/api/v1/...</code>), <code>/metrics</code>,
<code>/healthz</code> and <code>/readyz</code> as usual, but the operator
console was not built when the binary was compiled (a plain
<code>go install</code> or <code>go build</code> does not build it).</p>
<p>To build a binary with the console, from a clone of the repository
(Node.js and npm needed):</p>
<pre>make build        # runs npm ci &amp;&amp; npm run build in node/console/web, then go build</pre>
<p>or by hand:</p>
<pre>cd node/console/web &amp;&amp; npm ci &amp;&amp; npm run build &amp;&amp; cd - &amp;&amp; go build ./node/cmd/strata</pre>
<p>See docs/console.md.</p>
</body></html>
`
