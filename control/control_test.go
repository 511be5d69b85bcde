package control

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/internal/sign"
)

type fixture struct {
	base   string
	tokens map[string]string // role → secret
	admin  string
	logs   *observer.ObservedLogs
	nats   *natsrun.Server
	srv    *Server
	js     jetstream.JetStream
	store  *config.Store
	toks   *Tokens
	data   string // the control plane's data dir (audit checkpoint)
	key    *sign.Key
	all    []string // every secret handed out
}

func setup(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	srv := natsrun.StartTest(t)
	nc := natsrun.ConnectTest(t, srv)
	js, _ := jetstream.New(nc)
	key, err := sign.Generate()
	if err != nil {
		t.Fatal(err)
	}
	store, err := config.OpenStore(ctx, js, config.StoreOptions{Signer: key, Trust: sign.NewTrust(key.Public())})
	if err != nil {
		t.Fatal(err)
	}
	toks, err := OpenTokens(ctx, js, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	dataDir := t.TempDir()
	s, err := New(Options{Addr: "127.0.0.1:0", Store: store, Tokens: toks, Logger: zap.New(core), JetStream: js, DataDir: dataDir, Signer: key, NATS: srv.Keys})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Serve(sctx) }()
	t.Cleanup(func() { cancel(); <-done })
	f := &fixture{base: "http://" + s.Addr(), tokens: map[string]string{}, logs: logs, nats: srv, srv: s, js: js, store: store, toks: toks, data: dataDir, key: key}
	admin, _, err := toks.Create(ctx, "root", map[string]string{"*": "admin"}, 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	f.admin = admin
	f.all = append(f.all, admin)
	for _, env := range []config.EnvSettings{{Name: "dev"}, {Name: "prod", Protected: true}} {
		if err := store.CreateEnv(ctx, env); err != nil {
			t.Fatal(err)
		}
	}
	for _, role := range []string{"viewer", "editor", "approver", "admin"} {
		sec, _, err := toks.Create(ctx, role+"-bot", map[string]string{"dev": role, "prod": role}, 0, "test")
		if err != nil {
			t.Fatal(err)
		}
		f.tokens[role] = sec
		f.all = append(f.all, sec)
	}
	return f
}

// second starts another control plane on the same NATS, store and key (a
// restart, or a second replica) and returns it with its logs.
func (f *fixture) second(t *testing.T) (*Server, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	s, err := New(Options{Addr: "127.0.0.1:0", Store: f.store, Tokens: f.toks, Logger: zap.New(core), JetStream: f.js, DataDir: t.TempDir(), Signer: f.key})
	if err != nil {
		t.Fatal(err)
	}
	return s, logs
}

func (f *fixture) do(t *testing.T, token, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, f.base+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const flagDef = `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}`

// TestRBACMatrix checks every role against every endpoint in an unprotected
// and a protected environment.
func TestRBACMatrix(t *testing.T) {
	f := setup(t)
	kp, _ := nkeys.CreateUser()
	userPub, _ := kp.PublicKey()
	type ep struct {
		name, method, path, body string
		need                     string // weakest role allowed
		protectedNeed            string // in prod, if different ("" = same; "never" = refused for all roles)
	}
	eps := []ep{
		{"env", "GET", "/api/v1/envs/%s", "", "viewer", ""},
		{"snapshot", "GET", "/api/v1/envs/%s/snapshot", "", "viewer", ""},
		{"changesets", "GET", "/api/v1/envs/%s/changesets", "", "viewer", ""},
		{"flags", "GET", "/api/v1/envs/%s/flags", "", "viewer", ""},
		{"history", "GET", "/api/v1/envs/%s/history", "", "viewer", ""},
		{"sidecars", "GET", "/api/v1/envs/%s/sidecars", "", "viewer", ""},
		{"commit (protected: a change request)", "POST", "/api/v1/envs/%s/changesets", `{"reason":"r","changes":[{"flag":"f-ROLE","op":"put","definition":` + flagDef + `}]}`, "editor", ""},
		{"emergency", "POST", "/api/v1/envs/%s/changesets", `{"reason":"outage","emergency":true,"changes":[{"flag":"e-ROLE","op":"put","definition":` + flagDef + `}]}`, "approver", ""},
		{"put", "PUT", "/api/v1/envs/%s/flags/p-ROLE", `{"definition":` + flagDef + `,"reason":"r"}`, "editor", ""},
		{"diff", "GET", "/api/v1/envs/%s/diff?from=0", "", "viewer", ""},
		{"change requests", "GET", "/api/v1/envs/%s/change-requests", "", "viewer", ""},
		{"emergencies", "GET", "/api/v1/emergencies", "", "viewer", ""},
		{"audit", "GET", "/api/v1/audit/verify", "", "admin-star", ""},
		{"tokens", "GET", "/api/v1/tokens", "", "admin-star", ""},
		{"envs.create", "POST", "/api/v1/envs", `{"name":"new-ROLE-ENV"}`, "admin-star", ""},
		{"export", "GET", "/api/v1/envs/%s/export", "", "viewer", ""},
		{"apply dry run", "POST", "/api/v1/envs/%s/apply", `{"document":{"flags":{}},"dryRun":true}`, "viewer", ""},
		{"check", "GET", "/api/v1/envs/%s/check", "", "viewer", ""},
		{"signed changesets", "GET", "/api/v1/envs/%s/signed-changesets?after=0", "", "viewer", ""},
		{"nats credentials", "POST", "/api/v1/envs/%s/nats-credentials", `{"id":"pod-ROLE","publicKey":"` + userPub + `"}`, "viewer", ""},
		{"signing keys", "GET", "/api/v1/signing-keys", "", "viewer", ""},
	}
	rank := map[string]int{"": 0, "viewer": 1, "editor": 2, "approver": 3, "admin": 4, "admin-star": 5, "never": 6}
	for _, env := range []string{"dev", "prod"} {
		for _, e := range eps {
			for _, role := range []string{"", "viewer", "editor", "approver", "admin"} {
				t.Run(fmt.Sprintf("%s/%s/%s", env, e.name, role), func(t *testing.T) {
					need := e.need
					if env == "prod" && e.protectedNeed != "" {
						need = e.protectedNeed
					}
					path := e.path
					if strings.Contains(path, "%s") {
						path = fmt.Sprintf(path, env)
					}
					path = strings.ReplaceAll(path, "ROLE", role+"x")
					body := strings.ReplaceAll(strings.ReplaceAll(e.body, "ROLE", role+"x"), "ENV", env)
					code, resp := f.do(t, f.tokens[role], e.method, path, body)
					switch {
					case role == "":
						if code != 401 {
							t.Fatalf("no token: %d %s", code, resp)
						}
					case rank[role] >= rank[need]:
						if code >= 300 {
							t.Fatalf("%s should be allowed, got %d %s", role, code, resp)
						}
					default:
						if code != 403 {
							t.Fatalf("%s should be refused, got %d %s", role, code, resp)
						}
					}
				})
			}
		}
	}
	// Token secrets and hashes never appear in logs or list responses.
	_, list := f.do(t, f.admin, "GET", "/api/v1/tokens", "")
	for _, entry := range f.logs.All() {
		line := entry.Message + fmt.Sprint(entry.ContextMap())
		for _, sec := range f.all {
			_, secret, _ := splitToken(sec)
			if strings.Contains(line, secret) || strings.Contains(line, hashSecret(secret)) {
				t.Fatalf("secret leaked into log: %s", line)
			}
		}
	}
	for _, sec := range f.all {
		_, secret, _ := splitToken(sec)
		if strings.Contains(list, hashSecret(secret)) || strings.Contains(list, secret) {
			t.Fatal("token list exposes a hash or secret")
		}
	}
}

func TestWritesConflictsAndValidation(t *testing.T) {
	f := setup(t)
	ed := f.tokens["editor"]
	code, body := f.do(t, ed, "PUT", "/api/v1/envs/dev/flags/checkout", `{"definition":`+flagDef+`}`)
	if code != 201 {
		t.Fatalf("%d %s", code, body)
	}
	var cs config.Changeset
	json.Unmarshal([]byte(body), &cs)
	// Someone else changes it; our stale write (base 0) conflicts with details.
	if code, body := f.do(t, f.tokens["admin"], "PUT", "/api/v1/envs/dev/flags/checkout", fmt.Sprintf(`{"definition":%s,"baseVersion":%d}`, strings.Replace(flagDef, `"on"}`, `"off"}`, 1), cs.Version)); code != 201 {
		t.Fatalf("%d %s", code, body)
	}
	code, body = f.do(t, ed, "PUT", "/api/v1/envs/dev/flags/checkout", fmt.Sprintf(`{"definition":%s,"baseVersion":%d}`, flagDef, cs.Version))
	if code != 409 || !strings.Contains(body, `"currentVersion": 2`) || !strings.Contains(body, "admin-bot") || !strings.Contains(body, `"proposed"`) {
		t.Fatalf("conflict: %d %s", code, body)
	}
	code, body = f.do(t, ed, "PUT", "/api/v1/envs/dev/flags/bad", `{"definition":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"blue"}}`)
	if code != 422 || !strings.Contains(body, `"path": "flags.bad.defaultVariant"`) {
		t.Fatalf("validation: %d %s", code, body)
	}
	code, body = f.do(t, ed, "POST", "/api/v1/envs/dev/changesets", `{"changes":[],"bogus":1}`)
	if code != 400 || !strings.Contains(body, `unknown field \"bogus\"`) {
		t.Fatalf("unknown field: %d %s", code, body)
	}
	code, _ = f.do(t, f.admin, "GET", "/api/v1/envs/nope/flags", "")
	if code != 404 {
		t.Fatalf("unknown env: %d", code)
	}
	// Snapshot ETag (the flag set's identity, version and hash): unchanged → 304.
	snap := func(inm string) *http.Response {
		req, _ := http.NewRequest("GET", f.base+"/api/v1/envs/dev/snapshot", nil)
		req.Header.Set("Authorization", "Bearer "+ed)
		if inm != "" {
			req.Header.Set("If-None-Match", inm)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	etag := snap("").Header.Get("ETag")
	if !strings.HasPrefix(etag, `"2`) {
		t.Fatalf("snapshot ETag %q does not name version 2", etag)
	}
	if resp := snap(etag); resp.StatusCode != 304 {
		t.Fatalf("snapshot If-None-Match: %d", resp.StatusCode)
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestImportedOpaqueToken(t *testing.T) {
	ctx := context.Background()
	srv := natsrun.StartTest(t)
	nc := natsrun.ConnectTest(t, srv)
	js, _ := jetstream.New(nc)
	toks, err := OpenTokens(ctx, js, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	opaque := strings.Repeat("ab12", 16) // like openssl rand -hex 32
	if err := toks.Import(ctx, opaque, "admin", map[string]string{"*": "admin"}); err != nil {
		t.Fatal(err)
	}
	rec, err := toks.Authenticate(ctx, opaque)
	if err != nil || rec.RoleIn("prod") != RoleAdmin {
		t.Fatalf("opaque token: %v %v", rec, err)
	}
	if _, err := toks.Authenticate(ctx, opaque[:63]+"x"); err == nil {
		t.Fatal("a different opaque token authenticated")
	}
	if err := toks.Import(ctx, "short", "admin", nil); err == nil {
		t.Fatal("short token imported")
	}
}
