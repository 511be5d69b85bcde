package console_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/control"
	"github.com/pennon-dev/pennon/examples"
	"github.com/pennon-dev/pennon/experiment"
	"github.com/pennon-dev/pennon/incident/ledger"
	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/internal/sign"
	"github.com/pennon-dev/pennon/lifecycle"
	"github.com/pennon-dev/pennon/notify"
	flagsync "github.com/pennon-dev/pennon/sync"
	"github.com/pennon-dev/pennon/telemetry"
	"github.com/pennon-dev/pennon/usage"
)

// system is a real control plane (embedded NATS JetStream, store, tokens,
// sidecar registry) with the checkout example in "dev" and an empty,
// protected "prod".
type system struct {
	base                     string
	admin, editor, approver  string
	sidecar                  string // viewer token a polling sidecar would use
	store                    *config.Store
	experiments              *experiment.Aggregator
	editorName, approverName string
}

func start(t *testing.T) *system {
	t.Helper()
	ctx := context.Background()
	ns := natsrun.StartTest(t)
	nc := natsrun.ConnectTest(t, ns)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	key, err := sign.Generate()
	if err != nil {
		t.Fatal(err)
	}
	store, err := config.OpenStore(ctx, js, config.StoreOptions{Signer: key, Trust: sign.NewTrust(key.Public())})
	if err != nil {
		t.Fatal(err)
	}
	toks, err := control.OpenTokens(ctx, js, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A sidecar silent for 4 s is lost: long enough for a view to load
	// after a report, short enough for the test to see one go missing.
	reg, err := flagsync.NewRegistry(nil, flagsync.RegistryOptions{Envs: store.EnvNames, Verifier: ns.Keys, LostAfter: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// Telemetry, events, incidents, experiments and usage are wired as
	// cmd/pennon/server.go wires them, so the console's views read what a
	// real control plane answers.
	ing, err := telemetry.OpenIngest(ctx, js, telemetry.IngestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	events, err := notify.New(ctx, notify.Options{JetStream: js, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	led, err := ledger.Open(ctx, ledger.Options{Ingest: ing, JetStream: js, Notify: events, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	exps, err := experiment.OpenAggregator(ctx, js, ing, experiment.AggregatorOptions{Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	use, err := usage.Open(ctx, usage.Options{JetStream: js, Ingest: ing, Changes: store, Emitter: events, FlushEvery: 50 * time.Millisecond, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	life, err := lifecycle.New(lifecycle.Options{Store: store, Usage: use, Notify: events, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := control.New(control.Options{Addr: "127.0.0.1:0", Store: store, Tokens: toks, Logger: zap.NewNop(), JetStream: js,
		DataDir: t.TempDir(), Signer: key, Sidecars: reg, Telemetry: ing, Notify: events, Incidents: led, Experiments: exps, Usage: use, Lifecycle: life})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 3)
	go func() { done <- srv.Serve(sctx) }()
	go func() { done <- exps.Run(sctx) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("control plane: %v", err)
			}
		}
		_ = use.Close()
		led.Close()
		sd, sdCancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer sdCancel()
		_ = events.Close(sd)
		_ = ing.Close()
	})
	for _, env := range []config.EnvSettings{{Name: "dev"}, {Name: "prod", Protected: true}} {
		if err := store.CreateEnv(ctx, env); err != nil {
			t.Fatal(err)
		}
	}
	s := &system{base: "http://" + srv.Addr(), store: store, experiments: exps, editorName: "alice", approverName: "bob"}
	mk := func(name string, roles map[string]string) string {
		sec, _, err := toks.Create(ctx, name, roles, 0, "test")
		if err != nil {
			t.Fatal(err)
		}
		return sec
	}
	s.admin = mk("root", map[string]string{"*": "admin"})
	s.editor = mk(s.editorName, map[string]string{"dev": "editor", "prod": "editor"})
	s.approver = mk(s.approverName, map[string]string{"dev": "approver", "prod": "approver"})
	s.sidecar = mk("dev-sidecar", map[string]string{"dev": "viewer"})
	s.must(t, s.admin, "POST", "/api/v1/envs/dev/apply", map[string]any{"document": json.RawMessage(examples.Checkout), "reason": "load the checkout example"}, 201)
	return s
}

// call sends a JSON request and returns the status and decoded body.
func (s *system) call(t *testing.T, token, method, path string, body any, header ...string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

func (s *system) must(t *testing.T, token, method, path string, body any, want int) map[string]any {
	t.Helper()
	code, out := s.call(t, token, method, path, body)
	if code != want {
		t.Fatalf("%s %s: %d %v, want %d", method, path, code, out, want)
	}
	return out
}

// flag returns a flag's version and definition in dev.
func (s *system) flag(t *testing.T, env, key string) (uint64, map[string]any) {
	t.Helper()
	out := s.must(t, s.admin, "GET", "/api/v1/envs/"+env+"/flags/"+key, nil, 200)
	def, _ := out["definition"].(map[string]any)
	v, _ := out["version"].(float64)
	return uint64(v), def
}

// TestConsoleServed checks what the control plane answers for the console's
// paths: the page and assets with their types and security headers, and a
// JSON 404 for everything else, including unknown /api/ paths.
func TestConsoleServed(t *testing.T) {
	s := start(t)
	csp := "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
	for _, tc := range []struct {
		method, path, ifNoneMatch string
		status                    int
		ctype, body, csp          string
	}{
		{"GET", "/", "", 200, "text/html; charset=utf-8", `<script type="module" src="/console/app.js"></script>`, csp},
		{"HEAD", "/", "", 200, "text/html; charset=utf-8", "", csp},
		{"GET", "/console/", "", 200, "text/html; charset=utf-8", "<title>pennon console</title>", csp},
		{"GET", "/console/app.js", "", 200, "text/javascript; charset=utf-8", `import * as api from "./api.js";`, csp},
		{"GET", "/console/style.css", "", 200, "text/css; charset=utf-8", "--accent", csp},
		{"GET", "/console/icon.svg", "", 200, "image/svg+xml", "<svg", csp},
		{"GET", "/console/app.js", "*", 304, "", "", csp}, // net/http drops Content-Type on a 304
		{"GET", "/console/missing.js", "", 404, "text/plain; charset=utf-8", "no console asset /console/missing.js", csp},
		{"GET", "/nope", "", 404, "application/json", `"no route GET /nope`, ""},
		{"GET", "/api/v1/nope", "", 404, "application/json", `"no route GET /api/v1/nope`, ""},
		{"POST", "/", "", 404, "application/json", `"no route POST /`, ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, s.base+tc.path, nil)
			if tc.ifNoneMatch != "" {
				req.Header.Set("If-None-Match", tc.ifNoneMatch)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != tc.ctype || !strings.Contains(string(b), tc.body) {
				t.Fatalf("%d %q %.200q; want %d %q containing %q", resp.StatusCode, resp.Header.Get("Content-Type"), b, tc.status, tc.ctype, tc.body)
			}
			if got := resp.Header.Get("Content-Security-Policy"); got != tc.csp {
				t.Errorf("CSP %q, want %q", got, tc.csp)
			}
			if tc.csp != "" {
				if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("X-Frame-Options") != "DENY" || (tc.status == 200 && resp.Header.Get("Cache-Control") != "no-cache") {
					t.Errorf("headers %v", resp.Header)
				}
			}
		})
	}
}

// TestValidateRoute checks POST /api/v1/envs/{env}/validate, which the
// flag editor calls as the user types: the API's verdict at paths relative
// to the request.
func TestValidateRoute(t *testing.T) {
	s := start(t)
	_, def := s.flag(t, "dev", "express-checkout")
	with := func(k string, v any) map[string]any {
		d := map[string]any{}
		for kk, vv := range def {
			d[kk] = vv
		}
		if v == nil {
			delete(d, k)
		} else {
			d[k] = v
		}
		return d
	}
	for _, tc := range []struct {
		name  string
		token string
		body  any
		code  int
		valid bool
		paths []string
	}{
		{"unchanged definition", s.editor, map[string]any{"flag": "express-checkout", "definition": def}, 200, true, nil},
		{"viewer may validate", s.sidecar, map[string]any{"flag": "express-checkout", "definition": def}, 200, true, nil},
		{"unknown default variant", s.editor, map[string]any{"flag": "express-checkout", "definition": with("defaultVariant", "maybe")}, 200, false, []string{"definition.defaultVariant"}},
		{"prerequisite on a missing flag", s.editor, map[string]any{"flag": "express-checkout", "definition": with("prerequisites", map[string]any{"no-such-flag": "on"})}, 200, false, []string{"definition.prerequisites.no-such-flag"}},
		{"no flag key", s.editor, map[string]any{"definition": def}, 200, false, []string{"flag"}},
		{"no definition", s.editor, map[string]any{"flag": "x"}, 200, false, []string{"definition"}},
		{"unknown envelope field", s.editor, map[string]any{"flag": "x", "definition": def, "dryRun": true}, 400, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := s.call(t, tc.token, "POST", "/api/v1/envs/dev/validate", tc.body)
			if code != tc.code {
				t.Fatalf("status %d %v, want %d", code, out, tc.code)
			}
			if code != 200 {
				return
			}
			if out["valid"] != tc.valid {
				t.Fatalf("valid %v, want %v: %v", out["valid"], tc.valid, out)
			}
			var paths []string
			for _, p := range out["problems"].([]any) {
				paths = append(paths, p.(map[string]any)["path"].(string))
			}
			if strings.Join(paths, ",") != strings.Join(tc.paths, ",") {
				t.Fatalf("problem paths %v, want %v (%v)", paths, tc.paths, out["problems"])
			}
		})
	}
}

// browser finds Debian's chromium (or PENNON_CHROMIUM). Absent, the test
// skips — unless PENNON_BROWSER_TESTS=required (CI), where it fails.
func browser(t *testing.T) string {
	t.Helper()
	candidates := []string{os.Getenv("PENNON_CHROMIUM"), "chromium", "/usr/bin/chromium", "chromium-browser", "google-chrome"}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	msg := "no chromium found (install Debian's chromium package, or set PENNON_CHROMIUM to a Chrome binary)"
	if os.Getenv("PENNON_BROWSER_TESTS") == "required" {
		t.Fatal(msg + "; PENNON_BROWSER_TESTS=required")
	}
	t.Skip(msg + "; set PENNON_BROWSER_TESTS=required to make this a failure")
	return ""
}

// page drives one headless tab with per-step timeouts.
type page struct {
	t         *testing.T
	ctx       context.Context
	base      string
	artifacts string
	mu        sync.Mutex
	problems  []string // uncaught exceptions and CSP violations
}

func (p *page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %v\npage shows:\n%s", what, err, p.text())
	}
}

// text is what the page shows (main and the alert/status bars).
func (p *page) text() string {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`[document.getElementById("alert").innerText, document.getElementById("status").innerText, document.getElementById("main").innerText].join("\n")`))
	return s
}

// waitText waits until the element matching css shows text containing want.
func (p *page) waitText(css, want string) {
	p.t.Helper()
	expr := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return !!e && e.innerText.includes(%q); })()`, css, want)
	ctx, cancel := context.WithTimeout(p.ctx, 15*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(12*time.Second))); err != nil {
		p.t.Fatalf("waiting for %q in %s: %v\npage shows:\n%s", want, css, err, p.text())
	}
}

// eval runs JavaScript in the page and returns its result.
func eval[T any](p *page, js string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		p.t.Fatalf("eval %s: %v", js, err)
	}
	return v
}

// setValue sets a field's value as typing would, firing "input".
func (p *page) setValue(css, value string) {
	p.t.Helper()
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.value = %q; e.dispatchEvent(new Event("input", {bubbles: true})); return true; })()`, css, value)
	eval[bool](p, js)
}

func (p *page) go_(hash string) {
	p.t.Helper()
	p.do("open "+hash, chromedp.Navigate(p.base+"/"+hash))
}

// shot writes a screenshot of the page to the artifacts directory, after
// checking what every view owes its users: each form control has a label
// (or aria-label) a screen reader announces, and nothing is wider than the
// 1366 px laptop screen.
func (p *page) shot(name string) {
	p.t.Helper()
	unlabelled := eval[[]string](p, `[...document.querySelectorAll("input, select, textarea, button")]
		.filter((e) => e.type !== "hidden" && !(e.labels && e.labels.length) && !e.getAttribute("aria-label") && !(e.tagName === "BUTTON" && e.innerText.trim()))
		.map((e) => e.outerHTML.slice(0, 120))`)
	if len(unlabelled) > 0 {
		p.t.Errorf("%s: controls without a label: %v", name, unlabelled)
	}
	if w := eval[int](p, `document.documentElement.scrollWidth`); w > 1366 {
		p.t.Errorf("%s: the page is %d px wide on a 1366 px screen", name, w)
	}
	ctx, cancel := context.WithTimeout(p.ctx, 15*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(p.artifacts, name+".png"), png, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

func (p *page) signIn(token, name string) {
	p.t.Helper()
	p.go_("#/signin")
	p.do("sign-in form", chromedp.WaitVisible(chromedp.CSS(`input[name="token"]`)))
	p.setValue(`input[name="token"]`, token)
	p.do("submit", chromedp.Click(chromedp.CSS(`form.signin button[type="submit"]`)))
	p.waitText("#who-name", name)
}

func (p *page) signOut() {
	p.t.Helper()
	p.do("sign out", chromedp.Click(chromedp.CSS("#signout")))
	p.waitText("#main", "Sign in to pennon")
}

// openBrowser starts headless Chromium at 1366x768 on the system's
// console. Any uncaught exception or CSP violation the page reports fails
// the test when it ends.
func openBrowser(t *testing.T, bin string, s *system) *page {
	t.Helper()
	artifacts := os.Getenv("PENNON_ARTIFACTS")
	if artifacts == "" {
		artifacts = t.TempDir()
	} else if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 110*time.Second)
	actx, acancel := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.WindowSize(1366, 768))...)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(func() { bcancel(); acancel(); cancel() })
	p := &page{t: t, ctx: bctx, base: s.base, artifacts: artifacts}
	// The first action starts the browser, which lives as long as the
	// context of that call: it must be bctx, not a per-step timeout.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium %s: %v", bin, err)
	}
	p.do("viewport", chromedp.EmulateViewport(1366, 768))
	go func() {
		for m, err := range chromedp.Console(bctx) {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleException || strings.Contains(m.Text, "Content Security Policy") {
				p.mu.Lock()
				p.problems = append(p.problems, string(m.Type)+": "+m.Text)
				p.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, m := range p.problems {
			t.Errorf("browser console: %s", m)
		}
		t.Logf("screenshots in %s", artifacts)
	})
	return p
}

// TestConsoleInBrowser drives the console in headless Chromium the way its
// users would: sign in, find and change a flag, see it in history, hit a
// stale-edit conflict and rebase, preview a rollback, approve a change
// request as a second user, and spot a lagging sidecar.
func TestConsoleInBrowser(t *testing.T) {
	bin := browser(t)
	s := start(t)
	p := openBrowser(t, bin, s)

	// Sign in: a wrong token is refused with the API's reason.
	p.go_("")
	p.do("sign-in page", chromedp.WaitVisible(chromedp.CSS(`input[name="token"]`)))
	if shown := eval[bool](p, `document.getElementById("nav").offsetParent !== null || document.getElementById("signout").offsetParent !== null`); shown {
		t.Error("the navigation and Sign out show before anyone signed in")
	}
	p.shot("signin")
	p.setValue(`input[name="token"]`, "pnn_wrong")
	p.do("submit wrong token", chromedp.Click(chromedp.CSS(`form.signin button[type="submit"]`)))
	p.waitText("form.signin .problems", "The API does not accept this token")
	p.signIn(s.editor, "alice")
	p.waitText("#main h1", "Environments")
	p.waitText("#main table", "prod")
	p.waitText("#main table", "protected: changes need approval")
	if got := eval[string](p, `sessionStorage.getItem("pennon.token") === null ? "" : location.href`); strings.Contains(got, s.editor) || got == "" {
		t.Fatalf("token kept in sessionStorage and out of the URL; href %q", got)
	}
	p.shot("environments")

	// Find a flag: search with the keyboard ("/" focuses the search box).
	p.go_("#/envs/dev/flags")
	p.waitText("#main table", "payment-api-v2")
	p.do("type a search", chromedp.KeyEvent("/"), chromedp.KeyEvent("express"))
	if v := eval[string](p, `document.activeElement.value + "|" + document.activeElement.tagName`); v != "express|INPUT" {
		t.Fatalf("after / and typing, the focused element holds %q", v)
	}
	p.waitText("#main", "1 of 6 flags")
	if rows := eval[int](p, `document.querySelectorAll("#main tbody tr").length`); rows != 1 {
		t.Fatalf("search shows %d rows, want 1:\n%s", rows, p.text())
	}
	p.setValue("input[data-search]", "")
	eval[bool](p, `(() => { const s = [...document.querySelectorAll("#main select")][0]; s.value = "web-team"; s.dispatchEvent(new Event("input")); return true; })()`)
	p.waitText("#main", "2 of 6 flags")
	p.shot("flags")

	// Change it: the structured editor, validation as you type, then save.
	v0, _ := s.flag(t, "dev", "express-checkout")
	p.go_("#/envs/dev/flags/express-checkout")
	p.waitText("#problems", "valid: the API would accept")
	p.setValue("#field-defaultVariant", "")
	p.setValue("#flag-json", strings.Replace(eval[string](p, `document.getElementById("flag-json").value`), `"defaultVariant": null`, `"defaultVariant": "maybe"`, 1))
	p.waitText("#problems", "definition.defaultVariant")
	if inv := eval[string](p, `document.getElementById("field-defaultVariant").getAttribute("aria-invalid") || ""`); inv != "true" {
		t.Errorf("the default variant field is not marked invalid (%q)", inv)
	}
	p.setValue("#field-defaultVariant", "on")
	// Broken JSON in a field is reported at its path and blocks saving.
	targeting := eval[string](p, `document.getElementById("field-targeting").value`)
	p.setValue("#field-targeting", "{\"if\": [")
	p.waitText("#problems", "definition.targeting: not valid JSON")
	p.do("save broken", chromedp.Click(chromedp.CSS("#main button.primary")))
	p.waitText("#alert", "the targeting field does not hold valid JSON yet")
	p.setValue("#field-targeting", targeting)
	p.setValue("#field-description", "One-click checkout for premium and business customers.")
	p.waitText("#problems", "valid: the API would accept")
	if js := eval[string](p, `document.getElementById("flag-json").value`); !strings.Contains(js, "premium and business") {
		t.Fatalf("the JSON editor did not follow the structured one:\n%s", js)
	}
	p.setValue("#main input.wide", "open express checkout to business plans")
	p.do("save", chromedp.Click(chromedp.CSS("#main button.primary")))
	p.waitText("#status", "Saved express-checkout")
	v1, def := s.flag(t, "dev", "express-checkout")
	if v1 <= v0 || def["defaultVariant"] != "on" || def["description"] != "One-click checkout for premium and business customers." {
		t.Fatalf("after save: version %d (was %d), %v", v1, v0, def)
	}
	p.waitText(fmt.Sprintf(`li[data-version="%d"]`, v1), "open express checkout to business plans")
	p.waitText(fmt.Sprintf(`li[data-version="%d"]`, v1), "alice")
	p.shot("flag")

	// A stale edit: someone else changes the flag while alice edits it.
	p.setValue("#field-owner", "checkout-team")
	p.setValue("#main input.wide", "checkout owns it now")
	other := map[string]any{}
	for k, v := range def {
		other[k] = v
	}
	other["systems"] = []string{"web-checkout", "billing"}
	s.must(t, s.admin, "PUT", "/api/v1/envs/dev/flags/express-checkout", map[string]any{"definition": other, "baseVersion": v1, "reason": "billing reads it too"}, 201)
	v2, _ := s.flag(t, "dev", "express-checkout")
	p.do("save stale", chromedp.Click(chromedp.CSS("#main button.primary")))
	p.waitText("#conflict-title", fmt.Sprintf("Conflict: express-checkout changed since version %d", v1))
	p.waitText("#alert", "HTTP 409")
	p.waitText(`section[aria-labelledby="conflict-title"]`, "root")
	p.waitText(`section[aria-labelledby="conflict-title"]`, `"billing"`)
	p.shot("conflict")
	p.do("rebase", chromedp.Click(chromedp.CSS(`section[aria-labelledby="conflict-title"] .actions button.primary`)))
	p.waitText("#main", fmt.Sprintf("Your edit now applies on top of version %d", v2))
	p.do("save rebased", chromedp.Click(chromedp.CSS("#main button.primary")))
	p.waitText("#status", "Saved express-checkout")
	v3, merged := s.flag(t, "dev", "express-checkout")
	systems, _ := json.Marshal(merged["systems"])
	if v3 <= v2 || merged["owner"] != "checkout-team" || string(systems) != `["web-checkout","billing"]` {
		t.Fatalf("rebased save: version %d (conflict at %d), owner %v, systems %s; want alice's owner and root's systems", v3, v2, merged["owner"], systems)
	}
	p.go_("#/envs/dev/history")
	p.waitText(fmt.Sprintf(`li[data-version="%d"]`, v3), "checkout owns it now")
	p.waitText(fmt.Sprintf(`li[data-version="%d"]`, v2), "billing reads it too")
	p.shot("history")

	// Diff of two versions.
	p.go_(fmt.Sprintf("#/envs/dev/diff?from=%d&to=%d", v0, v3))
	p.waitText("#main", fmt.Sprintf("1 flag differs between version %d and version %d", v0, v3))
	p.waitText("#main section.card", "checkout-team")

	// Rollback preview of payment-api-v2: new-checkout-ui depends on it.
	pv, pdef := s.flag(t, "dev", "payment-api-v2")
	pdef["defaultVariant"] = "on"
	s.must(t, s.admin, "PUT", "/api/v1/envs/dev/flags/payment-api-v2", map[string]any{"definition": pdef, "baseVersion": pv, "reason": "v2 for everyone"}, 201)
	p.go_(fmt.Sprintf("#/envs/dev/rollback?to=%d&flags=payment-api-v2", pv))
	p.waitText("#plan-title", "Rolling back 1 flag from")
	p.waitText("#main", "new-checkout-ui — depends on")
	p.waitText("#main", "Systems touched: billing mobile-app payments web-checkout")
	p.waitText("#main", "Share of recent traffic that would change: not measured")
	if n := eval[int](p, `document.querySelectorAll('.graph svg g.node[data-flag]').length`); n < 2 {
		t.Fatalf("dependency graph has %d nodes", n)
	}
	if cls := eval[string](p, `document.querySelector('.graph svg g.node[data-flag="new-checkout-ui"]').getAttribute("class")`); cls != "node affected" {
		t.Fatalf("new-checkout-ui drawn as %q, want affected", cls)
	}
	p.shot("rollback")

	// The fleet: one sidecar goes silent (lost), one polls at an old
	// version (lagging), one is current.
	head := s.must(t, s.sidecar, "GET", "/api/v1/envs/dev", nil, 200)["version"].(float64)
	report := func(id string, version uint64) {
		b, _ := json.Marshal(config.SidecarReport{ID: id, Version: version, Hash: "h-" + id, State: "polling", AppliedAt: time.Now().UTC()})
		if code, _ := s.call(t, s.sidecar, "GET", "/api/v1/envs/dev/snapshot", nil, config.SidecarReportHeader, string(b)); code != 200 {
			t.Fatalf("snapshot poll as %s: %d", id, code)
		}
	}
	report("pod-gone", uint64(head))
	for deadline := time.Now().Add(15 * time.Second); ; {
		list := s.must(t, s.sidecar, "GET", "/api/v1/envs/dev/sidecars", nil, 200)["sidecars"].([]any)
		if len(list) == 1 && list[0].(map[string]any)["lost"] == true {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod-gone never listed as lost: %v", list)
		}
		ctxWait, c := context.WithTimeout(p.ctx, 200*time.Millisecond)
		<-ctxWait.Done() // poll interval, not a wait for the condition
		c()
	}
	report("pod-old", 1)
	report("pod-new", uint64(head))
	p.go_("#/envs/dev/fleet")
	p.waitText("#main", "1 behind")
	p.waitText("#main", "1 lost")
	p.waitText("#main tr.lost", "pod-gone")
	p.waitText("#main tr.behind", "pod-old")
	p.waitText("#main tr.behind", fmt.Sprintf("%d versions behind", int(head)-1))
	p.waitText("#main table", "pod-new")
	p.shot("fleet")

	// Approvals: alice asks for a new flag in protected prod; bob approves.
	newFlag := map[string]any{"state": "ENABLED", "variants": map[string]any{"on": true, "off": false}, "defaultVariant": "off", "owner": "web-team"}
	cr := s.must(t, s.editor, "PUT", "/api/v1/envs/prod/flags/holiday-banner", map[string]any{"definition": newFlag, "baseVersion": 0, "reason": "banner for the holidays"}, 202)
	crID := cr["changeRequest"].(map[string]any)["id"].(string)
	p.signOut()
	p.signIn(s.approver, "bob")
	p.go_("#/approvals")
	card := fmt.Sprintf(`section[data-cr=%q]`, crID)
	p.waitText(card, "holiday-banner")
	p.waitText(card, "banner for the holidays")
	p.waitText(card, "alice")
	p.shot("approvals")
	p.setValue(card+" input", "looks right")
	p.do("approve", chromedp.Click(chromedp.CSS(card+" button.primary")))
	p.waitText("#status", "Approved "+crID+": prod is now at version 1")
	if v, def := s.flag(t, "prod", "holiday-banner"); v != 1 || def["owner"] != "web-team" {
		t.Fatalf("prod after approval: version %d %v", v, def)
	}

	// Create a flag from the flags page (an admin now).
	p.signOut()
	p.signIn(s.admin, "root")
	p.go_("#/envs/dev/flags")
	p.waitText("#main table", "express-checkout")
	p.setValue(`form[aria-label="New flag"] input`, "gift-cards")
	p.do("create", chromedp.Click(chromedp.CSS(`form[aria-label="New flag"] button`)))
	p.waitText("#main p.muted", "new flag: not in dev yet")
	p.setValue("#field-owner", "growth-team")
	p.setValue("#field-systems", "web-checkout, payments")
	p.do("add a prerequisite", chromedp.Click(chromedp.CSS(`#field-prerequisites > button`)))
	p.setValue(`#field-prerequisites input[aria-label="Prerequisite flag 1"]`, "payment-api-v2")
	p.setValue(`#field-prerequisites input[aria-label="Required variant 1"]`, "maybe")
	p.waitText("#problems", "definition.prerequisites")
	p.setValue(`#field-prerequisites input[aria-label="Required variant 1"]`, "on")
	p.waitText("#problems", "valid: the API would accept")
	p.setValue("#main input.wide", "gift cards at checkout")
	p.do("save new", chromedp.Click(chromedp.CSS("#main button.primary")))
	p.waitText("#status", "Saved gift-cards")
	p.waitText("#main p.muted", "last changed by root")
	if v, def := s.flag(t, "dev", "gift-cards"); v == 0 || def["owner"] != "growth-team" || fmt.Sprint(def["systems"]) != "[web-checkout payments]" || def["defaultVariant"] != "off" ||
		fmt.Sprint(def["prerequisites"]) != "map[payment-api-v2:on]" {
		t.Fatalf("created flag: version %d %v", v, def)
	}

	// An emergency change in prod waits for review.
	_, banner := s.flag(t, "prod", "holiday-banner")
	banner["defaultVariant"] = "on"
	s.must(t, s.admin, "PUT", "/api/v1/envs/prod/flags/holiday-banner", map[string]any{"definition": banner, "baseVersion": 1, "reason": "banner now, the sale started early", "emergency": true}, 201)
	p.go_("#/emergencies")
	p.waitText("#main section.card", "prod v2")
	p.waitText("#main section.card", "banner now, the sale started early")
	p.waitText("#main section.card", "holiday-banner")
	// The API, not the page, decides who may review: root applied it.
	p.setValue("#main section.card input", "checked the banner")
	p.do("review own emergency", chromedp.Click(chromedp.CSS("#main section.card button.primary")))
	p.waitText("#alert", "another approver must review it")
	p.waitText("#alert", "HTTP 403")

	// Audit with verify (admin only).
	p.go_("#/audit")
	p.waitText("#main table", "approve")
	p.do("verify", chromedp.Click(chromedp.CSS("#main button.primary")))
	p.waitText("#main", "audit chain intact")
	p.shot("audit")
}
