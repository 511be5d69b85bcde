// Package console is pennon's web console: a single-page application,
// embedded in the binary, that the control plane serves at "/" next to the
// admin API it calls.
//
// The console is hand-written JavaScript (ES modules), HTML and CSS with no
// build step and no third-party code: `go run ./cmd/pennon dev` serves it
// without Node, it works offline, and there is no toolchain to keep patched.
// It holds no authority of its own: every view is a call to /api/v1 with the
// user's bearer token, so roles are enforced by the API, exactly as for the
// CLI.
package console

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
)

//go:embed web
var files embed.FS

// Prefix is where the console's assets are served; "/" serves its page.
const Prefix = "/console/"

// ContentSecurityPolicy allows only the console's own scripts, styles and
// images and API calls to its own origin. No inline script or style runs,
// so an injected string (a flag description, a reason) cannot execute, and
// the console cannot be framed (clickjacking an approve button).
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// asset is one embedded file with what its response needs.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// contentTypes names the types the console ships; a file with another
// extension is not served (it would have no safe type).
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
}

// Handler serves the console page at "/" (and at /console/, for a bookmark
// of it) and its assets under /console/. Views are addressed by the URL
// fragment (#/envs/dev/flags), which never reaches the server, so no other
// paths are needed and unknown ones are 404.
func Handler() http.Handler {
	assets := loadAssets()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "the console is read with GET; the API lives under /api/v1", http.StatusMethodNotAllowed)
			return
		}
		name := "index.html"
		if p := r.URL.Path; p != "/" && p != Prefix {
			name = strings.TrimPrefix(p, Prefix)
			if name == p {
				http.NotFound(w, r)
				return
			}
		}
		a, ok := assets[name]
		if !ok {
			http.Error(w, "no console asset "+r.URL.Path+"; the API lives under /api/v1", http.StatusNotFound)
			return
		}
		h.Set("Content-Type", a.contentType)
		h.Set("ETag", a.etag)
		// Names carry no content hash, so browsers revalidate every time:
		// a 304 costs one round trip and an upgrade is seen at once.
		h.Set("Cache-Control", "no-cache")
		if match := r.Header.Get("If-None-Match"); match != "" && etagListed(match, a.etag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		h.Set("Content-Length", strconv.Itoa(len(a.body)))
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(a.body)
	})
}

// etagListed reports whether an If-None-Match header names etag (or *).
func etagListed(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}

// loadAssets reads the embedded files once: they cannot change while the
// process runs, and hashing them per request would be waste.
var loadAssets = sync.OnceValue(func() map[string]asset {
	assets := map[string]asset{}
	sub, err := fs.Sub(files, "web")
	if err != nil {
		return assets // impossible for the literal embed pattern above
	}
	_ = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			return nil
		}
		b, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		assets[p] = asset{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	return assets
})
