package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/experiment"
	"github.com/pennon-dev/pennon/incident/ledger"
	"github.com/pennon-dev/pennon/notify"
	"github.com/pennon-dev/pennon/telemetry"
	"github.com/pennon-dev/pennon/usage"
)

// The OpenAPI document (control/openapi.json) is the admin API's contract.
// The tests here hold the code to it: every route registered is documented
// and every documented route is registered; real requests against a real
// control plane (embedded NATS) get only statuses the document declares for
// their operation, with bodies valid against the declared schema (JSON
// Schema 2020-12, validated by santhosh-tekuri/jsonschema); and every status
// the document declares (but 500) is actually produced by some request, so
// the document promises nothing the code cannot do.

const docURL = "mem://pennon/openapi.json"

// contract is the loaded document with compiled schemas and a record of
// which (operation, status) pairs real responses have covered.
type contract struct {
	doc      map[string]any
	compiler *jsonschema.Compiler
	mu       sync.Mutex
	cache    map[string]*jsonschema.Schema
	seen     map[string]map[string]bool // "GET /api/v1/envs" → "200" → seen
}

func loadContract(t *testing.T) *contract {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatalf("openapi.json is not JSON: %v", err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(openAPIDoc))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.AssertContent()
	if err := c.AddResource(docURL, inst); err != nil {
		t.Fatal(err)
	}
	return &contract{doc: doc, compiler: c, cache: map[string]*jsonschema.Schema{}, seen: map[string]map[string]bool{}}
}

// pointerEscape escapes one JSON-pointer token (RFC 6901) for use in a URL
// fragment.
func pointerEscape(s string) string {
	s = strings.ReplaceAll(s, "~", "~0")
	s = strings.ReplaceAll(s, "/", "~1")
	return strings.NewReplacer("{", "%7B", "}", "%7D").Replace(s)
}

func (c *contract) schemaAt(t *testing.T, ptr string) *jsonschema.Schema {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.cache[ptr]; ok {
		return s
	}
	s, err := c.compiler.Compile(docURL + "#" + ptr)
	if err != nil {
		t.Fatalf("compile %s: %v", ptr, err)
	}
	c.cache[ptr] = s
	return s
}

// operations lists "METHOD /path" for every operation in the document.
func (c *contract) operations() []string {
	var out []string
	paths, _ := c.doc["paths"].(map[string]any)
	for p, item := range paths {
		for m := range item.(map[string]any) {
			switch m {
			case "get", "put", "post", "delete", "patch", "head", "options":
				out = append(out, strings.ToUpper(m)+" "+p)
			}
		}
	}
	sort.Strings(out)
	return out
}

func (c *contract) operation(opKey string) (map[string]any, string, bool) {
	method, path, _ := strings.Cut(opKey, " ")
	paths, _ := c.doc["paths"].(map[string]any)
	item, _ := paths[path].(map[string]any)
	op, ok := item[strings.ToLower(method)].(map[string]any)
	return op, "/paths/" + pointerEscape(path) + "/" + strings.ToLower(method), ok
}

// response resolves the declared response of opKey for status and returns
// it with its JSON pointer.
func (c *contract) response(opKey string, status int) (map[string]any, string, bool) {
	op, ptr, ok := c.operation(opKey)
	if !ok {
		return nil, "", false
	}
	rs, _ := op["responses"].(map[string]any)
	code := strconv.Itoa(status)
	r, ok := rs[code].(map[string]any)
	if !ok {
		return nil, "", false
	}
	ptr += "/responses/" + code
	if ref, ok := r["$ref"].(string); ok {
		name := strings.TrimPrefix(ref, "#/components/responses/")
		r, _ = c.doc["components"].(map[string]any)["responses"].(map[string]any)[name].(map[string]any)
		ptr = "/components/responses/" + pointerEscape(name)
	}
	return r, ptr, r != nil
}

// check validates one real response against the document and records it.
func (c *contract) check(t *testing.T, opKey string, status int, header http.Header, body []byte) {
	t.Helper()
	resp, ptr, ok := c.response(opKey, status)
	if !ok {
		t.Errorf("%s answered %d, which the document does not declare for it: %s", opKey, status, truncate(string(body), 300))
		return
	}
	c.mu.Lock()
	if c.seen[opKey] == nil {
		c.seen[opKey] = map[string]bool{}
	}
	c.seen[opKey][strconv.Itoa(status)] = true
	c.mu.Unlock()
	content, _ := resp["content"].(map[string]any)
	if len(content) == 0 {
		if len(bytes.TrimSpace(body)) != 0 {
			t.Errorf("%s %d: the document declares no body, got %s", opKey, status, truncate(string(body), 200))
		}
		return
	}
	mt, _, err := mime.ParseMediaType(header.Get("Content-Type"))
	if err != nil || content[mt] == nil {
		t.Errorf("%s %d: Content-Type %q is not declared (declared: %v)", opKey, status, header.Get("Content-Type"), keys(content))
		return
	}
	if mt != "application/json" {
		return // text/plain plans and diffs: any string
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		t.Errorf("%s %d: body is not JSON: %v: %s", opKey, status, err, truncate(string(body), 200))
		return
	}
	if err := c.schemaAt(t, ptr+"/content/application~1json/schema").Validate(inst); err != nil {
		t.Errorf("%s %d: body does not match the document's schema: %v\nbody: %s", opKey, status, err, truncate(string(body), 600))
	}
	if status >= 400 {
		var e struct {
			Error APIError `json:"error"`
		}
		if json.Unmarshal(body, &e) != nil || e.Error.Code.Status() != status {
			t.Errorf("%s %d: error code %q belongs to status %d in the catalogue", opKey, status, e.Error.Code, e.Error.Code.Status())
		}
	}
}

// checkRequest validates a request body the test sends for a success
// against the operation's requestBody schema (so the documented request
// shapes are ones the server accepts).
func (c *contract) checkRequest(t *testing.T, opKey, contentType string, body []byte) {
	t.Helper()
	op, ptr, ok := c.operation(opKey)
	if !ok || len(body) == 0 {
		return
	}
	rb, _ := op["requestBody"].(map[string]any)
	content, _ := rb["content"].(map[string]any)
	mt, _, _ := mime.ParseMediaType(contentType)
	if content[mt] == nil {
		t.Errorf("%s: request Content-Type %q is not declared (declared: %v)", opKey, contentType, keys(content))
		return
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return
	}
	if err := c.schemaAt(t, ptr+"/requestBody/content/"+pointerEscape(mt)+"/schema").Validate(inst); err != nil {
		t.Errorf("%s: a request the server accepted does not match the document's requestBody: %v", opKey, err)
	}
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestOpenAPIDocumentIsValid: the document is OpenAPI 3.1, every schema in
// it compiles, operation IDs are unique, path parameters are declared, and
// its Error schema lists exactly the catalogue's codes. (kin-openapi's
// validator also accepts the document; it is not a dependency, so this test
// checks what a hand edit is most likely to break.)
func TestOpenAPIDocumentIsValid(t *testing.T) {
	c := loadContract(t)
	if v, _ := c.doc["openapi"].(string); !strings.HasPrefix(v, "3.1.") {
		t.Fatalf("openapi %q, want 3.1.x", v)
	}
	comps := c.doc["components"].(map[string]any)
	for name := range comps["schemas"].(map[string]any) {
		c.schemaAt(t, "/components/schemas/"+pointerEscape(name))
	}
	ids := map[string]string{}
	pathParam := regexp.MustCompile(`\{([^}]+)\}`)
	for _, opKey := range c.operations() {
		op, _, _ := c.operation(opKey)
		id, _ := op["operationId"].(string)
		if id == "" {
			t.Errorf("%s: no operationId", opKey)
		} else if other, dup := ids[id]; dup {
			t.Errorf("%s: operationId %q is also %s's", opKey, id, other)
		}
		ids[id] = opKey
		// Every {name} in the path is a declared path parameter, and every
		// parameter reference resolves.
		declared := map[string]bool{}
		params, _ := op["parameters"].([]any)
		for _, p := range params {
			pm, _ := p.(map[string]any)
			if ref, ok := pm["$ref"].(string); ok {
				name := strings.TrimPrefix(ref, "#/components/parameters/")
				pm, _ = comps["parameters"].(map[string]any)[name].(map[string]any)
				if pm == nil {
					t.Errorf("%s: parameter %s does not resolve", opKey, ref)
					continue
				}
			}
			if pm["in"] == "path" {
				declared[fmt.Sprint(pm["name"])] = true
			}
		}
		for _, m := range pathParam.FindAllStringSubmatch(opKey, -1) {
			if !declared[m[1]] {
				t.Errorf("%s: path parameter {%s} is not declared", opKey, m[1])
			}
			delete(declared, m[1])
		}
		for name := range declared {
			t.Errorf("%s: path parameter %q is not in the path", opKey, name)
		}
		if role, _ := op["x-pennon-role"].(string); role == "" {
			t.Errorf("%s: no x-pennon-role (the role the token needs)", opKey)
		}
		for code := range op["responses"].(map[string]any) {
			st, _ := strconv.Atoi(code)
			r, ptr, ok := c.response(opKey, st)
			if !ok {
				t.Errorf("%s %s: unresolvable response", opKey, code)
				continue
			}
			content, _ := r["content"].(map[string]any)
			if ct, ok := content["application/json"].(map[string]any); ok && ct["schema"] != nil {
				c.schemaAt(t, ptr+"/content/application~1json/schema")
			}
		}
	}
	enum := comps["schemas"].(map[string]any)["Error"].(map[string]any)["properties"].(map[string]any)["error"].(map[string]any)["properties"].(map[string]any)["code"].(map[string]any)["enum"].([]any)
	var documented, catalogued []string
	for _, e := range enum {
		documented = append(documented, e.(string))
	}
	for _, e := range Catalogue() {
		catalogued = append(catalogued, string(e.Code))
	}
	sort.Strings(documented)
	sort.Strings(catalogued)
	if strings.Join(documented, ",") != strings.Join(catalogued, ",") {
		t.Errorf("Error.code enum %v, catalogue %v: add new codes to both (control/errors.go, control/openapi.json)", documented, catalogued)
	}
}

// TestOpenAPIRoutesMatchDocument: every /api/v1 route the server registers
// is in the document, and every operation in the document is registered. A
// route added without documenting it fails here.
func TestOpenAPIRoutesMatchDocument(t *testing.T) {
	f := setup(t)
	c := loadContract(t)
	registered := map[string]bool{}
	for _, p := range f.srv.patterns {
		method, path, ok := strings.Cut(p, " ")
		if !ok || !strings.HasPrefix(path, "/api/v1/") {
			continue
		}
		registered[method+" "+path] = true
	}
	documented := map[string]bool{}
	for _, op := range c.operations() {
		documented[op] = true
		if !registered[op] {
			t.Errorf("%s is in control/openapi.json but no route serves it", op)
		}
	}
	for op := range registered {
		if !documented[op] {
			t.Errorf("route %s is not in control/openapi.json: document it (request, responses, x-pennon-role)", op)
		}
	}
}

// TestOpenAPIServed: GET /api/v1/openapi.json needs no token and answers
// the embedded document.
func TestOpenAPIServed(t *testing.T) {
	f := setup(t)
	resp, err := http.Get(f.base + "/api/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !bytes.Equal(body, openAPIDoc) || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %q: %d bytes, want the embedded %d", resp.StatusCode, resp.Header.Get("Content-Type"), len(body), len(openAPIDoc))
	}
}

// exchange is one real request and what it must get.
type exchange struct {
	name   string
	op     string            // the document's "METHOD /path"
	path   string            // the request path; {{var}} is replaced by a saved value
	token  string            // a fixture role, "root", "outsider", or "" for none
	ct     string            // Content-Type (default application/json when there is a body)
	header map[string]string // extra request headers
	body   string
	status int
	code   ErrorCode         // for errors: the catalogue code
	want   map[string]any    // dotted JSON path ("flags.0.key", "flags.#" = length) → value
	save   map[string]string // variable → dotted JSON path, for later paths and bodies
	text   string            // a text/plain answer must contain this
	// bare sends the request to the second control plane, whose store has
	// no signing key, which has no NATS account key, and which has the
	// optional parts (telemetry, incidents, usage, experiments,
	// notifications).
	bare bool
}

// conformanceRun holds the fixture, the contract and saved values.
type conformanceRun struct {
	f      *fixture
	c      *contract
	tokens map[string]string
	vars   map[string]string
	// bare is the second control plane's address.
	bare string
}

func (r *conformanceRun) expand(s string) string {
	for k, v := range r.vars {
		s = strings.ReplaceAll(s, "{{"+k+"}}", v)
	}
	return s
}

func (r *conformanceRun) send(t *testing.T, x exchange) (int, http.Header, []byte) {
	t.Helper()
	base := r.f.base
	if x.bare {
		base = r.bare
	}
	body := r.expand(x.body)
	req, err := http.NewRequest(strings.SplitN(x.op, " ", 2)[0], base+r.expand(x.path), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if x.token != "" {
		tok, ok := r.tokens[x.token]
		if !ok {
			t.Fatalf("no token %q", x.token)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	ct := x.ct
	if ct == "" && body != "" {
		ct = "application/json"
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	for k, v := range x.header {
		req.Header.Set(k, r.expand(v))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if x.status >= 200 && x.status < 300 && resp.StatusCode == x.status {
		r.c.checkRequest(t, x.op, ct, []byte(body))
	}
	return resp.StatusCode, resp.Header, b
}

// run sends x, checks it against the document and against x's own
// expectations, and saves the values x asks for.
func (r *conformanceRun) run(t *testing.T, x exchange) {
	t.Helper()
	status, header, body := r.send(t, x)
	r.c.check(t, x.op, status, header, body)
	if status != x.status {
		t.Fatalf("%s: status %d, want %d: %s", x.name, status, x.status, truncate(string(body), 400))
	}
	if x.text != "" && !strings.Contains(string(body), x.text) {
		t.Errorf("%s: body does not contain %q: %s", x.name, x.text, truncate(string(body), 400))
	}
	if x.code == "" && len(x.want) == 0 && len(x.save) == 0 {
		return
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%s: %v: %s", x.name, err, truncate(string(body), 200))
	}
	if x.code != "" {
		if got := fmt.Sprint(jsonAt(v, "error.code")); got != string(x.code) {
			t.Errorf("%s: error code %s, want %s: %s", x.name, got, x.code, truncate(string(body), 300))
		}
	}
	for path, want := range x.want {
		if got := fmt.Sprint(jsonAt(v, r.expand(path))); got != r.expand(fmt.Sprint(want)) {
			t.Errorf("%s: %s = %s, want %v\nbody: %s", x.name, path, got, want, truncate(string(body), 600))
		}
	}
	for name, path := range x.save {
		r.vars[name] = fmt.Sprint(jsonAt(v, path))
	}
}

// jsonAt reads a dotted path from decoded JSON; "#" is the length of an
// array or object; a missing value is "<missing>".
func jsonAt(v any, path string) any {
	for _, part := range strings.Split(path, ".") {
		switch cur := v.(type) {
		case map[string]any:
			if part == "#" {
				return len(cur)
			}
			next, ok := cur[part]
			if !ok {
				return "<missing>"
			}
			v = next
		case []any:
			if part == "#" {
				return len(cur)
			}
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(cur) {
				return "<missing>"
			}
			v = cur[i]
		default:
			return "<missing>"
		}
	}
	return v
}

// TestOpenAPIConformance exercises every operation in the document against
// a real control plane: its successes and the errors it documents, each
// response validated against the document. Then every authenticated route
// is called without a token (401), with a token lacking its role (403),
// with a body over the limit (413) and of the wrong type (415) where it
// takes one, and once more with NATS gone (503). Finally every status the
// document declares (except 500) must have been seen.
func TestOpenAPIConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	f := setup(t)
	c := loadContract(t)
	ctx := context.Background()
	outsider, _, err := f.toks.Create(ctx, "outsider", map[string]string{"elsewhere": "viewer"}, 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	r := &conformanceRun{f: f, c: c, vars: map[string]string{}, tokens: map[string]string{
		"viewer": f.tokens["viewer"], "editor": f.tokens["editor"], "approver": f.tokens["approver"],
		"admin": f.tokens["admin"], "root": f.admin, "outsider": outsider}}
	r.vars["def"] = flagDef
	r.vars["bigdoc"] = `{"flags":{"a":` + flagDef + `,"b":` + flagDef + `}}`
	r.vars["editorID"] = f.tokenID(t, "editor")
	r.vars["batch"] = `{"kind":"usage","env":"dev","sidecar":"pod-1","boot":"deadbeef","seq":1,"from":"2026-01-01T00:00:00Z","to":"2026-01-01T00:00:10Z","data":{}}`
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	if r.vars["userKey"], err = kp.PublicKey(); err != nil {
		t.Fatal(err)
	}

	// A second control plane on the same NATS, without a signing key in
	// its store and without the NATS account key, but collecting telemetry,
	// keeping incident records, aggregating usage and experiments, and
	// sending notifications: repair is 409 no_signing_key, NATS credentials 501
	// not_configured, and the optional parts answer (the first plane, which
	// has none of them, answers 501).
	bare, err := config.OpenStore(ctx, f.js, config.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ingest, err := telemetry.OpenIngest(ctx, f.js, telemetry.IngestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	incidents, err := ledger.Open(ctx, ledger.Options{JetStream: f.js, Ingest: ingest})
	if err != nil {
		t.Fatal(err)
	}
	notifier, err := notify.New(ctx, notify.Options{JetStream: f.js})
	if err != nil {
		t.Fatal(err)
	}
	agg, err := usage.Open(ctx, usage.Options{JetStream: f.js, Ingest: ingest})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = notifier.Close(cctx)
		_ = agg.Close()
	})
	exps, err := experiment.OpenAggregator(ctx, f.js, ingest, experiment.AggregatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := New(Options{Store: bare, Tokens: f.toks, Logger: zap.NewNop(), JetStream: f.js, DataDir: t.TempDir(), Signer: f.key,
		Registry: prometheus.NewRegistry(), Telemetry: ingest, Incidents: incidents, Notify: notifier, Usage: agg, Experiments: exps})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s2.Handler())
	defer hs.Close()
	r.bare = hs.URL

	// ok remembers, per operation, a request that succeeded, to replay it
	// with a missing token, a foreign token, a huge or mistyped body.
	ok := map[string]exchange{}
	for _, x := range conformanceScript() {
		t.Run(x.op+"/"+x.name, func(t *testing.T) { r.run(t, x) })
		if x.status < 300 {
			if _, seen := ok[x.op]; !seen {
				ok[x.op] = x
			}
		}
	}

	ops := c.operations()
	declares := func(opKey string, status int) bool { _, _, ok := c.response(opKey, status); return ok }
	replay := func(t *testing.T, opKey string, status int, code ErrorCode, edit func(*exchange)) {
		x, found := ok[opKey]
		if !found {
			t.Fatalf("%s: no successful request to replay (add one to conformanceScript)", opKey)
		}
		x.status, x.code, x.want, x.save, x.text = status, code, nil, nil, ""
		edit(&x)
		r.run(t, x)
	}
	huge := `{"reason":"` + strings.Repeat("x", 1<<20) + `"}`
	for _, opKey := range ops {
		if declares(opKey, 413) {
			t.Run(opKey+"/413", func(t *testing.T) {
				replay(t, opKey, 413, CodeTooLarge, func(x *exchange) {
					x.body = huge
					if strings.HasPrefix(opKey, "PATCH ") {
						x.body = `{"a":"` + strings.Repeat("x", 1<<20) + `"}`
					}
				})
			})
		}
		if declares(opKey, 415) {
			t.Run(opKey+"/415", func(t *testing.T) {
				replay(t, opKey, 415, CodeUnsupportedMedia, func(x *exchange) {
					x.ct = "text/plain"
					if strings.HasPrefix(opKey, "PATCH ") {
						x.ct = "application/json"
					}
					if x.body == "" {
						x.body = "{}"
					}
				})
			})
		}
		if declares(opKey, 401) {
			t.Run(opKey+"/401", func(t *testing.T) {
				replay(t, opKey, 401, CodeUnauthorized, func(x *exchange) { x.token = "" })
			})
		}
		if declares(opKey, 403) {
			t.Run(opKey+"/403", func(t *testing.T) {
				replay(t, opKey, 403, CodeForbidden, func(x *exchange) {
					x.token = "outsider" // no role in dev or prod
					if !strings.Contains(opKey, "{env}") {
						x.token = "editor" // admin routes
					}
				})
			})
		}
	}
	// NATS goes away: every authenticated route answers 503, not a 4xx.
	f.js.Conn().Close()
	for _, opKey := range ops {
		if declares(opKey, 503) {
			t.Run(opKey+"/503", func(t *testing.T) {
				replay(t, opKey, 503, CodeUnavailable, func(*exchange) {})
			})
		}
	}

	for _, opKey := range ops {
		op, _, _ := c.operation(opKey)
		var missing []string
		for code := range op["responses"].(map[string]any) {
			if code != "500" && !c.seen[opKey][code] {
				missing = append(missing, code)
			}
		}
		sort.Strings(missing)
		if len(missing) > 0 {
			t.Errorf("%s: documented statuses %v were never produced: exercise them or remove them from the document", opKey, missing)
		}
	}
}

// conformanceScript is the sequence of real requests, in order (later ones
// depend on the state earlier ones leave). The fixture starts with dev
// (unprotected) and prod (protected), both at version 0.
func conformanceScript() []exchange {
	dev := "/api/v1/envs/dev"
	prod := "/api/v1/envs/prod"
	return []exchange{
		{name: "served without a token", op: "GET /api/v1/openapi.json", path: "/api/v1/openapi.json", status: 200, want: map[string]any{"openapi": "3.1.0"}},
		{name: "the caller", op: "GET /api/v1/whoami", path: "/api/v1/whoami", token: "viewer", status: 200, want: map[string]any{"name": "viewer-bot", "roles.dev": "viewer", "revoked": false}},

		// Environments.
		{name: "list", op: "GET /api/v1/envs", path: "/api/v1/envs", token: "viewer", status: 200, want: map[string]any{"envs.#": 2, "envs.0.name": "dev", "envs.1.protected": true}},
		{name: "create", op: "POST /api/v1/envs", path: "/api/v1/envs", token: "root", body: `{"name":"qa","requireOwner":true,"maxLifetime":"720h"}`, status: 201,
			want: map[string]any{"name": "qa", "requireOwner": true, "protected": false}},
		{name: "exists", op: "POST /api/v1/envs", path: "/api/v1/envs", token: "root", body: `{"name":"qa"}`, status: 409, code: CodeExists, want: map[string]any{"error.field": "name"}},
		{name: "bad name", op: "POST /api/v1/envs", path: "/api/v1/envs", token: "root", body: `{"name":"QA!"}`, status: 422, code: CodeValidation, want: map[string]any{"error.field": "name"}},
		{name: "bad lifetime", op: "POST /api/v1/envs", path: "/api/v1/envs", token: "root", body: `{"name":"qa2","maxLifetime":"forever"}`, status: 422, code: CodeValidation, want: map[string]any{"error.field": "maxLifetime"}},
		{name: "unknown field", op: "POST /api/v1/envs", path: "/api/v1/envs", token: "root", body: `{"name":"qa3","protect":true}`, status: 400, code: CodeBadRequest, want: map[string]any{"error.field": "protect"}},
		{name: "one env", op: "GET /api/v1/envs/{env}", path: dev, token: "viewer", status: 200, want: map[string]any{"name": "dev", "version": 0, "flags": 0}},
		{name: "no such env", op: "GET /api/v1/envs/{env}", path: "/api/v1/envs/nope", token: "root", status: 404, code: CodeNotFound},

		// Writes.
		{name: "create a flag", op: "PUT /api/v1/envs/{env}/flags/{key}", path: dev + "/flags/a", token: "editor", body: `{"definition":{{def}},"reason":"new"}`, status: 201,
			want: map[string]any{"version": 1, "prevVersion": 0, "changes.0.flag": "a", "changes.0.op": "put", "reason": "new"}},
		{name: "stale baseVersion", op: "PUT /api/v1/envs/{env}/flags/{key}", path: dev + "/flags/a", token: "editor", body: `{"definition":{{def}},"baseVersion":0}`, status: 409, code: CodeConflict,
			want: map[string]any{"error.conflicts.0.flag": "a", "error.conflicts.0.currentVersion": 1, "error.conflicts.0.baseVersion": 0}},
		{name: "invalid flag", op: "PUT /api/v1/envs/{env}/flags/{key}", path: dev + "/flags/b", token: "editor", body: `{"definition":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"off"}}`, status: 422, code: CodeValidation,
			want: map[string]any{"error.problems.#": 1}},
		{name: "missing definition", op: "PUT /api/v1/envs/{env}/flags/{key}", path: dev + "/flags/b", token: "editor", body: `{"reason":"x"}`, status: 422, code: CodeValidation, want: map[string]any{"error.field": "definition"}},
		{name: "wrong type", op: "PUT /api/v1/envs/{env}/flags/{key}", path: dev + "/flags/b", token: "editor", body: `{"definition":{{def}},"baseVersion":"one"}`, status: 400, code: CodeBadRequest, want: map[string]any{"error.field": "baseVersion"}},
		{name: "no such env", op: "PUT /api/v1/envs/{env}/flags/{key}", path: "/api/v1/envs/nope/flags/a", token: "root", body: `{"definition":{{def}}}`, status: 404, code: CodeNotFound},
		{name: "protected: a change request", op: "PUT /api/v1/envs/{env}/flags/{key}", path: prod + "/flags/a", token: "editor", body: `{"definition":{{def}},"reason":"ship a"}`, status: 202,
			want: map[string]any{"changeRequest.state": "open", "changeRequest.env": "prod"}, save: map[string]string{"cr1": "changeRequest.id"}},
		{name: "emergency needs approver", op: "PUT /api/v1/envs/{env}/flags/{key}", path: prod + "/flags/a", token: "editor", body: `{"definition":{{def}},"reason":"now","emergency":true}`, status: 403, code: CodeForbidden},

		{name: "commit several", op: "POST /api/v1/envs/{env}/changesets", path: dev + "/changesets", token: "editor",
			body: `{"reason":"two","changes":[{"flag":"b","op":"put","definition":{{def}}},{"flag":"c","op":"put","definition":{{def}}}]}`, status: 201,
			want: map[string]any{"version": 2, "changes.#": 2}},
		{name: "stale", op: "POST /api/v1/envs/{env}/changesets", path: dev + "/changesets", token: "editor",
			body: `{"changes":[{"flag":"b","op":"delete","baseVersion":1}]}`, status: 409, code: CodeConflict, want: map[string]any{"error.conflicts.0.currentVersion": 2}},
		{name: "duplicate key", op: "POST /api/v1/envs/{env}/changesets", path: dev + "/changesets", token: "editor", body: `{"reason":"a","reason":"b"}`, status: 400, code: CodeBadRequest, want: map[string]any{"error.field": "reason"}},
		{name: "bad op", op: "POST /api/v1/envs/{env}/changesets", path: dev + "/changesets", token: "editor", body: `{"changes":[{"flag":"x","op":"upsert"}]}`, status: 422, code: CodeValidation},
		{name: "no such env", op: "POST /api/v1/envs/{env}/changesets", path: "/api/v1/envs/nope/changesets", token: "root", body: `{"changes":[]}`, status: 404, code: CodeNotFound},
		{name: "protected: a change request", op: "POST /api/v1/envs/{env}/changesets", path: prod + "/changesets", token: "editor",
			body: `{"reason":"ship b","changes":[{"flag":"b","op":"put","definition":{{def}}}]}`, status: 202, save: map[string]string{"cr2": "changeRequest.id"}},
		{name: "emergency by an approver", op: "POST /api/v1/envs/{env}/changesets", path: prod + "/changesets", token: "approver",
			body: `{"reason":"incident","emergency":true,"changes":[{"flag":"e","op":"put","definition":{{def}}}]}`, status: 201,
			want: map[string]any{"version": 1, "emergency": true}},

		{name: "merge patch", op: "PATCH /api/v1/envs/{env}/flags/{key}", path: dev + "/flags/a?baseVersion=1&reason=off", token: "editor", ct: MergePatchType, body: `{"state":"DISABLED"}`, status: 201,
			want: map[string]any{"version": 3, "changes.0.definition.state": "DISABLED", "changes.0.definition.defaultVariant": "on"}},
		{name: "no baseVersion", op: "PATCH /api/v1/envs/{env}/flags/{key}", path: dev + "/flags/a", token: "editor", ct: MergePatchType, body: `{"state":"ENABLED"}`, status: 422, code: CodeValidation, want: map[string]any{"error.field": "baseVersion"}},
		{name: "not an object", op: "PATCH /api/v1/envs/{env}/flags/{key}", path: dev + "/flags/a?baseVersion=3", token: "editor", ct: MergePatchType, body: `[1]`, status: 400, code: CodeBadRequest},
		{name: "stale", op: "PATCH /api/v1/envs/{env}/flags/{key}", path: dev + "/flags/a?baseVersion=1", token: "editor", ct: MergePatchType, body: `{"state":"ENABLED"}`, status: 409, code: CodeConflict},
		{name: "no such flag", op: "PATCH /api/v1/envs/{env}/flags/{key}", path: dev + "/flags/zz?baseVersion=0", token: "editor", ct: MergePatchType, body: `{"state":"ENABLED"}`, status: 404, code: CodeNotFound},
		{name: "protected: a change request", op: "PATCH /api/v1/envs/{env}/flags/{key}", path: prod + "/flags/e?baseVersion=1&reason=tidy", token: "editor", ct: MergePatchType, body: `{"state":"DISABLED"}`, status: 202},

		{name: "delete", op: "DELETE /api/v1/envs/{env}/flags/{key}", path: dev + "/flags/c?baseVersion=2&reason=unused", token: "editor", status: 201, want: map[string]any{"version": 4, "changes.0.op": "delete"}},
		{name: "stale", op: "DELETE /api/v1/envs/{env}/flags/{key}", path: dev + "/flags/b?baseVersion=1", token: "editor", status: 409, code: CodeConflict},
		{name: "bad baseVersion", op: "DELETE /api/v1/envs/{env}/flags/{key}", path: dev + "/flags/b?baseVersion=x", token: "editor", status: 400, code: CodeBadRequest, want: map[string]any{"error.field": "baseVersion"}},
		{name: "protected needs a reason", op: "DELETE /api/v1/envs/{env}/flags/{key}", path: prod + "/flags/e?baseVersion=1", token: "editor", status: 422, code: CodeValidation, want: map[string]any{"error.field": "reason"}},
		{name: "protected: a change request", op: "DELETE /api/v1/envs/{env}/flags/{key}", path: prod + "/flags/e?baseVersion=1&reason=done", token: "editor", status: 202},
		{name: "no such env", op: "DELETE /api/v1/envs/{env}/flags/{key}", path: "/api/v1/envs/nope/flags/b?baseVersion=1", token: "root", status: 404, code: CodeNotFound},

		// Reads.
		{name: "flags", op: "GET /api/v1/envs/{env}/flags", path: dev + "/flags", token: "viewer", status: 200, want: map[string]any{"version": 4, "flags.#": 2, "flags.0.key": "a", "flags.0.version": 3}},
		{name: "no such env", op: "GET /api/v1/envs/{env}/flags", path: "/api/v1/envs/nope/flags", token: "root", status: 404, code: CodeNotFound},
		{name: "a flag", op: "GET /api/v1/envs/{env}/flags/{key}", path: dev + "/flags/b", token: "viewer", status: 200, want: map[string]any{"key": "b", "version": 2, "definition.defaultVariant": "on", "author": "editor-bot ({{editorID}})"}},
		{name: "no such flag", op: "GET /api/v1/envs/{env}/flags/{key}", path: dev + "/flags/zz", token: "viewer", status: 404, code: CodeNotFound},
		{name: "changesets", op: "GET /api/v1/envs/{env}/changesets", path: dev + "/changesets?after=1&limit=2", token: "viewer", status: 200, want: map[string]any{"changesets.#": 2, "changesets.0.version": 2}},
		{name: "bad after", op: "GET /api/v1/envs/{env}/changesets", path: dev + "/changesets?after=-1", token: "viewer", status: 400, code: CodeBadRequest, want: map[string]any{"error.field": "after"}},
		{name: "no such env", op: "GET /api/v1/envs/{env}/changesets", path: "/api/v1/envs/nope/changesets", token: "root", status: 404, code: CodeNotFound},
		{name: "a changeset", op: "GET /api/v1/envs/{env}/changesets/{version}", path: dev + "/changesets/2", token: "viewer", status: 200, want: map[string]any{"version": 2, "reason": "two"}},
		{name: "version 0", op: "GET /api/v1/envs/{env}/changesets/{version}", path: dev + "/changesets/0", token: "viewer", status: 400, code: CodeBadRequest, want: map[string]any{"error.field": "version"}},
		{name: "no such version", op: "GET /api/v1/envs/{env}/changesets/{version}", path: dev + "/changesets/99", token: "viewer", status: 404, code: CodeNotFound},
		{name: "history of a flag", op: "GET /api/v1/envs/{env}/history", path: dev + "/history?flag=a", token: "viewer", status: 200, want: map[string]any{"changesets.#": 2, "changesets.0.version": 3}},
		{name: "bad before", op: "GET /api/v1/envs/{env}/history", path: dev + "/history?before=x", token: "viewer", status: 400, code: CodeBadRequest},
		{name: "no such env", op: "GET /api/v1/envs/{env}/history", path: "/api/v1/envs/nope/history", token: "root", status: 404, code: CodeNotFound},
		{name: "diff", op: "GET /api/v1/envs/{env}/diff", path: dev + "/diff?from=1&to=3", token: "viewer", status: 200,
			want: map[string]any{"from": 1, "to": 3, "flags.#": 3, "flags.0.flag": "a", "flags.0.change": "changed"}},
		{name: "diff as text", op: "GET /api/v1/envs/{env}/diff", path: dev + "/diff?from=1&format=text", token: "viewer", status: 200, text: "a"},
		{name: "bad from", op: "GET /api/v1/envs/{env}/diff", path: dev + "/diff?from=x", token: "viewer", status: 400, code: CodeBadRequest, want: map[string]any{"error.field": "from"}},
		{name: "no such env", op: "GET /api/v1/envs/{env}/diff", path: "/api/v1/envs/nope/diff", token: "root", status: 404, code: CodeNotFound},
		{name: "snapshot", op: "GET /api/v1/envs/{env}/snapshot", path: dev + "/snapshot", token: "viewer", status: 200, want: map[string]any{"env": "dev", "version": 4, "flagVersions.a": 3}, save: map[string]string{"hash": "hash"}},
		{name: "unchanged", op: "GET /api/v1/envs/{env}/snapshot", path: dev + "/snapshot", token: "viewer", header: map[string]string{"If-None-Match": `"4-{{hash}}"`}, status: 304},
		{name: "no such env", op: "GET /api/v1/envs/{env}/snapshot", path: "/api/v1/envs/nope/snapshot", token: "root", status: 404, code: CodeNotFound},
		{name: "keys", op: "GET /api/v1/signing-keys", path: "/api/v1/signing-keys", token: "viewer", status: 200, want: map[string]any{"keys.#": 1, "keys.0.current": true}},
		{name: "signed changesets", op: "GET /api/v1/envs/{env}/signed-changesets", path: dev + "/signed-changesets?after=2", token: "viewer", status: 200, want: map[string]any{"#": 2, "0.version": 3}},
		{name: "bad limit", op: "GET /api/v1/envs/{env}/signed-changesets", path: dev + "/signed-changesets?limit=many", token: "viewer", status: 400, code: CodeBadRequest, want: map[string]any{"error.field": "limit"}},
		{name: "no such env", op: "GET /api/v1/envs/{env}/signed-changesets", path: "/api/v1/envs/nope/signed-changesets", token: "root", status: 404, code: CodeNotFound},
		{name: "check", op: "GET /api/v1/envs/{env}/check", path: dev + "/check", token: "viewer", status: 200, want: map[string]any{"env": "dev", "version": 4, "verified": true, "foreign.#": 0}},
		{name: "no such env", op: "GET /api/v1/envs/{env}/check", path: "/api/v1/envs/nope/check", token: "root", status: 404, code: CodeNotFound},
		{name: "repair", op: "POST /api/v1/envs/{env}/repair", path: dev + "/repair", token: "root", status: 200, want: map[string]any{"env": "dev", "deleted.#": 0, "snapshotVersion": 4}},
		{name: "no such env", op: "POST /api/v1/envs/{env}/repair", path: "/api/v1/envs/nope/repair", token: "root", status: 404, code: CodeNotFound},
		{name: "export", op: "GET /api/v1/envs/{env}/export", path: dev + "/export", token: "viewer", status: 200, want: map[string]any{"flags.#": 2, "flags.b.defaultVariant": "on"}},
		{name: "no such env", op: "GET /api/v1/envs/{env}/export", path: "/api/v1/envs/nope/export", token: "root", status: 404, code: CodeNotFound},
		{name: "fleet", op: "GET /api/v1/envs/{env}/sidecars", path: dev + "/sidecars", token: "viewer", status: 200, want: map[string]any{"version": 4, "sidecars.#": 0, "behind.#": 0}},
		{name: "no such env", op: "GET /api/v1/envs/{env}/sidecars", path: "/api/v1/envs/nope/sidecars", token: "root", status: 404, code: CodeNotFound},

		// Files.
		{name: "dry run", op: "POST /api/v1/envs/{env}/apply", path: dev + "/apply", token: "viewer", body: `{"document":{{bigdoc}},"dryRun":true}`, status: 200,
			want: map[string]any{"plan.env": "dev", "plan.head": 4, "plan.unchanged": 1}},
		{name: "dry run as text", op: "POST /api/v1/envs/{env}/apply", path: dev + "/apply?format=text", token: "viewer", body: `{"document":{{bigdoc}},"dryRun":true}`, status: 200, text: "a"},
		{name: "apply", op: "POST /api/v1/envs/{env}/apply", path: dev + "/apply", token: "editor", body: `{"document":{{bigdoc}},"reason":"file"}`, status: 201,
			want: map[string]any{"changeset.version": 5, "plan.head": 4}},
		{name: "stale plan", op: "POST /api/v1/envs/{env}/apply", path: dev + "/apply", token: "editor", body: `{"document":{"flags":{"a":{{def}}}},"prune":true,"baseVersions":{"a":3,"b":1}}`, status: 409, code: CodeConflict},
		{name: "invalid file", op: "POST /api/v1/envs/{env}/apply", path: dev + "/apply", token: "editor", body: `{"document":{"flags":{"a":{"state":"ON"}}}}`, status: 422, code: CodeValidation},
		{name: "no document", op: "POST /api/v1/envs/{env}/apply", path: dev + "/apply", token: "editor", body: `{"dryRun":true,"dryrun":true}`, status: 400, code: CodeBadRequest},
		{name: "no such env", op: "POST /api/v1/envs/{env}/apply", path: "/api/v1/envs/nope/apply", token: "root", body: `{"document":{{bigdoc}}}`, status: 404, code: CodeNotFound},
		{name: "protected: a change request", op: "POST /api/v1/envs/{env}/apply", path: prod + "/apply", token: "editor", body: `{"document":{{bigdoc}},"reason":"file"}`, status: 202,
			want: map[string]any{"changeRequest.state": "open"}},
		{name: "viewer cannot apply", op: "POST /api/v1/envs/{env}/apply", path: dev + "/apply", token: "viewer", body: `{"document":{"flags":{}},"prune":true}`, status: 403, code: CodeForbidden},

		// Rollback and promotion.
		{name: "dry run", op: "POST /api/v1/envs/{env}/rollback", path: dev + "/rollback", token: "viewer", body: `{"toVersion":3,"dryRun":true}`, status: 200,
			want: map[string]any{"head": 5, "to": 3, "flags.#": 2, "flags.0": "a", "flags.1": "c"}},
		{name: "dry run as text", op: "POST /api/v1/envs/{env}/rollback", path: dev + "/rollback?format=text", token: "viewer", body: `{"toVersion":3,"dryRun":true}`, status: 200, text: "a"},
		{name: "rollback", op: "POST /api/v1/envs/{env}/rollback", path: dev + "/rollback", token: "editor", body: `{"toVersion":3,"flags":["a"],"reason":"undo"}`, status: 201,
			want: map[string]any{"version": 6, "rollbackTo": 3, "changes.0.definition.state": "DISABLED"}},
		{name: "nothing to roll back", op: "POST /api/v1/envs/{env}/rollback", path: dev + "/rollback", token: "editor", body: `{"toVersion":6,"reason":"noop"}`, status: 422, code: CodeValidation},
		{name: "viewer cannot roll back", op: "POST /api/v1/envs/{env}/rollback", path: dev + "/rollback", token: "viewer", body: `{"toVersion":1,"reason":"x"}`, status: 403, code: CodeForbidden},
		{name: "bad version type", op: "POST /api/v1/envs/{env}/rollback", path: dev + "/rollback", token: "editor", body: `{"toVersion":"one"}`, status: 400, code: CodeBadRequest, want: map[string]any{"error.field": "toVersion"}},
		{name: "version ahead of the head", op: "POST /api/v1/envs/{env}/rollback", path: dev + "/rollback", token: "editor", body: `{"toVersion":99,"dryRun":true}`, status: 422, code: CodeValidation, want: map[string]any{"error.field": "toVersion"}},
		{name: "no such env", op: "POST /api/v1/envs/{env}/rollback", path: "/api/v1/envs/nope/rollback", token: "root", body: `{"toVersion":1,"dryRun":true}`, status: 404, code: CodeNotFound},
		{name: "protected: a change request", op: "POST /api/v1/envs/{env}/rollback", path: prod + "/rollback", token: "editor", body: `{"toVersion":0,"flags":["e"],"reason":"undo incident fix"}`, status: 202},
		{name: "target's policy", op: "POST /api/v1/envs/{env}/promote", path: "/api/v1/envs/qa/promote", token: "root", body: `{"from":"dev","flags":["b"],"reason":"ship"}`, status: 422, code: CodeValidation,
			want: map[string]any{"error.field": "changes[0].definition.owner"}},
		{name: "promote", op: "POST /api/v1/envs/{env}/promote", path: prod + "/promote", token: "editor", body: `{"from":"dev","flags":["a"],"reason":"ship"}`, status: 202,
			want: map[string]any{"changeRequest.reason": "promote from dev@6: ship"}},
		{name: "into itself", op: "POST /api/v1/envs/{env}/promote", path: dev + "/promote", token: "editor", body: `{"from":"dev"}`, status: 422, code: CodeValidation, want: map[string]any{"error.field": "from"}},
		{name: "no source", op: "POST /api/v1/envs/{env}/promote", path: dev + "/promote", token: "root", body: `{"from":"nope"}`, status: 404, code: CodeNotFound},
		{name: "no role on the source", op: "POST /api/v1/envs/{env}/promote", path: dev + "/promote", token: "editor", body: `{"from":"qa"}`, status: 403, code: CodeForbidden},
		{name: "unknown field", op: "POST /api/v1/envs/{env}/promote", path: dev + "/promote", token: "editor", body: `{"From":"prod"}`, status: 400, code: CodeBadRequest},
		{name: "to unprotected", op: "POST /api/v1/envs/{env}/promote", path: dev + "/promote", token: "root", body: `{"from":"prod","flags":["e"],"reason":"back-port"}`, status: 201,
			want: map[string]any{"promotedFrom": "prod@1"}},

		// Change requests.
		{name: "open ones", op: "GET /api/v1/envs/{env}/change-requests", path: prod + "/change-requests?state=open", token: "viewer", status: 200, want: map[string]any{"changeRequests.0.id": "{{cr1}}"}},
		{name: "bad state", op: "GET /api/v1/envs/{env}/change-requests", path: prod + "/change-requests?state=done", token: "viewer", status: 400, code: CodeBadRequest, want: map[string]any{"error.field": "state"}},
		{name: "one", op: "GET /api/v1/envs/{env}/change-requests/{id}", path: prod + "/change-requests/{{cr1}}", token: "viewer", status: 200, want: map[string]any{"id": "{{cr1}}", "state": "open", "reason": "ship a"}},
		{name: "in another env", op: "GET /api/v1/envs/{env}/change-requests/{id}", path: dev + "/change-requests/{{cr1}}", token: "viewer", status: 404, code: CodeNotFound, want: map[string]any{"error.field": "id"}},
		{name: "approve by another", op: "POST /api/v1/envs/{env}/change-requests/{id}/approve", path: prod + "/change-requests/{{cr1}}/approve", token: "root", status: 200,
			want: map[string]any{"changeRequest.state": "applied", "changeset.changeRequest": "{{cr1}}"}},
		{name: "already decided", op: "POST /api/v1/envs/{env}/change-requests/{id}/approve", path: prod + "/change-requests/{{cr1}}/approve", token: "approver", status: 409, code: CodeDecided},
		{name: "no such request", op: "POST /api/v1/envs/{env}/change-requests/{id}/approve", path: prod + "/change-requests/nope/approve", token: "approver", status: 404, code: CodeNotFound},
		{name: "bad body", op: "POST /api/v1/envs/{env}/change-requests/{id}/approve", path: prod + "/change-requests/{{cr2}}/approve", token: "approver", body: `{"why":"x"}`, status: 400, code: CodeBadRequest},
		{name: "own request", op: "POST /api/v1/envs/{env}/change-requests/{id}/reject", path: prod + "/change-requests/{{cr2}}/reject", token: "editor", status: 403, code: CodeForbidden},
		{name: "reject", op: "POST /api/v1/envs/{env}/change-requests/{id}/reject", path: prod + "/change-requests/{{cr2}}/reject", token: "approver", body: `{"reason":"not now"}`, status: 200,
			want: map[string]any{"state": "rejected", "note": "not now"}},
		{name: "already decided", op: "POST /api/v1/envs/{env}/change-requests/{id}/reject", path: prod + "/change-requests/{{cr2}}/reject", token: "approver", status: 409, code: CodeDecided},
		{name: "no such request", op: "POST /api/v1/envs/{env}/change-requests/{id}/reject", path: prod + "/change-requests/nope/reject", token: "approver", status: 404, code: CodeNotFound},
		{name: "bad body", op: "POST /api/v1/envs/{env}/change-requests/{id}/reject", path: prod + "/change-requests/nope/reject", token: "approver", body: `[]`, status: 400, code: CodeBadRequest},

		// Emergencies.
		{name: "to review", op: "GET /api/v1/emergencies", path: "/api/v1/emergencies?reviewed=false", token: "viewer", status: 200, want: map[string]any{"emergencies.#": 1, "emergencies.0.env": "prod", "emergencies.0.version": 1}},
		{name: "own change", op: "POST /api/v1/envs/{env}/changesets/{version}/review", path: prod + "/changesets/1/review", token: "approver", status: 403, code: CodeForbidden},
		{name: "review", op: "POST /api/v1/envs/{env}/changesets/{version}/review", path: prod + "/changesets/1/review", token: "root", body: `{"note":"fine"}`, status: 200,
			want: map[string]any{"env": "prod", "version": 1, "note": "fine"}},
		{name: "again", op: "POST /api/v1/envs/{env}/changesets/{version}/review", path: prod + "/changesets/1/review", token: "root", status: 409, code: CodeReviewed},
		{name: "not an emergency", op: "POST /api/v1/envs/{env}/changesets/{version}/review", path: prod + "/changesets/2/review", token: "root", status: 422, code: CodeValidation},
		{name: "bad version", op: "POST /api/v1/envs/{env}/changesets/{version}/review", path: prod + "/changesets/x/review", token: "root", status: 400, code: CodeBadRequest, want: map[string]any{"error.field": "version"}},
		{name: "no such version", op: "POST /api/v1/envs/{env}/changesets/{version}/review", path: prod + "/changesets/99/review", token: "root", status: 404, code: CodeNotFound},

		// Sidecar credentials.
		{name: "credentials", op: "POST /api/v1/envs/{env}/nats-credentials", path: dev + "/nats-credentials", token: "viewer", body: `{"id":"pod-1","publicKey":"{{userKey}}"}`, status: 200,
			want: map[string]any{"env": "dev", "subscribe.0": "pennon.dev.live"}},
		{name: "bad key", op: "POST /api/v1/envs/{env}/nats-credentials", path: dev + "/nats-credentials", token: "viewer", body: `{"id":"pod-1","publicKey":"nope"}`, status: 422, code: CodeValidation, want: map[string]any{"error.field": "publicKey"}},
		{name: "bad id", op: "POST /api/v1/envs/{env}/nats-credentials", path: dev + "/nats-credentials", token: "viewer", body: `{"id":"a pod","publicKey":"{{userKey}}"}`, status: 422, code: CodeValidation, want: map[string]any{"error.field": "id"}},
		{name: "bad body", op: "POST /api/v1/envs/{env}/nats-credentials", path: dev + "/nats-credentials", token: "viewer", body: `{"id":1}`, status: 400, code: CodeBadRequest, want: map[string]any{"error.field": "id"}},
		{name: "no such env", op: "POST /api/v1/envs/{env}/nats-credentials", path: "/api/v1/envs/nope/nats-credentials", token: "root", body: `{"id":"pod-1","publicKey":"{{userKey}}"}`, status: 404, code: CodeNotFound},

		// Audit and tokens.
		{name: "entries", op: "GET /api/v1/audit", path: "/api/v1/audit?limit=2", token: "root", status: 200, want: map[string]any{"entries.#": 2, "entries.0.seq": 1}},
		{name: "bad after", op: "GET /api/v1/audit", path: "/api/v1/audit?after=x", token: "root", status: 400, code: CodeBadRequest, want: map[string]any{"error.field": "after"}},
		{name: "verify", op: "GET /api/v1/audit/verify", path: "/api/v1/audit/verify", token: "root", status: 200, want: map[string]any{"ok": true}},
		{name: "anchors", op: "GET /api/v1/audit/anchors", path: "/api/v1/audit/anchors", token: "root", status: 200, want: map[string]any{"keys.#": 1}},
		{name: "list", op: "GET /api/v1/tokens", path: "/api/v1/tokens", token: "root", status: 200, want: map[string]any{"tokens.0.name": "root", "tokens.#": 6}},
		{name: "create", op: "POST /api/v1/tokens", path: "/api/v1/tokens", token: "root", body: `{"name":"ci","roles":{"dev":"editor"},"expiresIn":"720h"}`, status: 201,
			want: map[string]any{"info.name": "ci", "info.roles.dev": "editor", "info.revoked": false}, save: map[string]string{"ciID": "info.id"}},
		{name: "bad role", op: "POST /api/v1/tokens", path: "/api/v1/tokens", token: "root", body: `{"name":"ci","roles":{"dev":"owner"}}`, status: 422, code: CodeValidation, want: map[string]any{"error.field": "roles.dev"}},
		{name: "no name", op: "POST /api/v1/tokens", path: "/api/v1/tokens", token: "root", body: `{"roles":{"dev":"viewer"}}`, status: 422, code: CodeValidation, want: map[string]any{"error.field": "name"}},
		{name: "bad expiry", op: "POST /api/v1/tokens", path: "/api/v1/tokens", token: "root", body: `{"name":"ci","roles":{"dev":"viewer"},"expiresIn":"soon"}`, status: 422, code: CodeValidation, want: map[string]any{"error.field": "expiresIn"}},
		{name: "bad body", op: "POST /api/v1/tokens", path: "/api/v1/tokens", token: "root", body: `{"name":"ci",}`, status: 400, code: CodeBadRequest},
		{name: "revoke", op: "DELETE /api/v1/tokens/{id}", path: "/api/v1/tokens/{{ciID}}", token: "root", status: 200, want: map[string]any{"revoked": "{{ciID}}"}},
		{name: "no such token", op: "DELETE /api/v1/tokens/{id}", path: "/api/v1/tokens/0000000000000000", token: "root", status: 404, code: CodeNotFound},

		// Lifecycle.
		{name: "report", op: "GET /api/v1/envs/{env}/lifecycle", path: dev + "/lifecycle", token: "viewer", status: 200,
			want: map[string]any{"env": "dev", "usageKnown": false, "flags.0.key": "a"}},
		{name: "takes no parameters", op: "GET /api/v1/envs/{env}/lifecycle", path: dev + "/lifecycle?days=3", token: "viewer", status: 400, code: CodeBadRequest, want: map[string]any{"error.field": "days"}},
		{name: "no such env", op: "GET /api/v1/envs/{env}/lifecycle", path: "/api/v1/envs/nope/lifecycle", token: "root", status: 404, code: CodeNotFound},

		// Validation as the console's editor types.
		{name: "valid", op: "POST /api/v1/envs/{env}/validate", path: dev + "/validate", token: "viewer", body: `{"flag":"n","definition":{{def}}}`, status: 200,
			want: map[string]any{"valid": true, "problems.#": 0}},
		{name: "invalid", op: "POST /api/v1/envs/{env}/validate", path: dev + "/validate", token: "viewer", body: `{"flag":"n","definition":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"off"}}`, status: 200,
			want: map[string]any{"valid": false}},
		{name: "unknown field", op: "POST /api/v1/envs/{env}/validate", path: dev + "/validate", token: "viewer", body: `{"key":"n"}`, status: 400, code: CodeBadRequest, want: map[string]any{"error.field": "key"}},
		{name: "no such env", op: "POST /api/v1/envs/{env}/validate", path: "/api/v1/envs/nope/validate", token: "root", body: `{"flag":"n","definition":{{def}}}`, status: 404, code: CodeNotFound},

		// The second control plane (see TestOpenAPIConformance).
		{name: "no signing key", op: "POST /api/v1/envs/{env}/repair", path: dev + "/repair", token: "root", bare: true, status: 409, code: CodeNoSigningKey},
		{name: "no NATS account key", op: "POST /api/v1/envs/{env}/nats-credentials", path: dev + "/nats-credentials", token: "viewer", bare: true,
			body: `{"id":"pod-1","publicKey":"{{userKey}}"}`, status: 501, code: CodeNotConfigured},
		{name: "batch", op: "POST /api/v1/envs/{env}/telemetry", path: dev + "/telemetry", token: "viewer", bare: true, body: `{{batch}}`, status: 200, want: map[string]any{"seq": 1}},
		{name: "resent", op: "POST /api/v1/envs/{env}/telemetry", path: dev + "/telemetry", token: "viewer", bare: true, body: `{{batch}}`, status: 200, want: map[string]any{"seq": 1}},
		{name: "for another env", op: "POST /api/v1/envs/{env}/telemetry", path: prod + "/telemetry", token: "viewer", bare: true, body: `{{batch}}`, status: 422, code: CodeValidation},
		{name: "refused", op: "POST /api/v1/envs/{env}/telemetry", path: dev + "/telemetry", token: "viewer", bare: true,
			body: `{"kind":"logs","env":"dev","sidecar":"pod-1","boot":"deadbeef","seq":1,"from":"2026-01-01T00:00:00Z","to":"2026-01-01T00:00:10Z","data":{}}`, status: 422, code: CodeValidation},
		{name: "bad body", op: "POST /api/v1/envs/{env}/telemetry", path: dev + "/telemetry", token: "viewer", bare: true, body: `{"seq":-1}`, status: 400, code: CodeBadRequest},
		{name: "no such env", op: "POST /api/v1/envs/{env}/telemetry", path: "/api/v1/envs/nope/telemetry", token: "root", bare: true, body: `{{batch}}`, status: 404, code: CodeNotFound},
		{name: "env's incidents", op: "GET /api/v1/envs/{env}/incidents", path: dev + "/incidents?status=open&limit=10", token: "viewer", bare: true, status: 200, want: map[string]any{"incidents.#": 0}},
		{name: "bad status", op: "GET /api/v1/envs/{env}/incidents", path: dev + "/incidents?status=closed", token: "viewer", bare: true, status: 400, code: CodeBadRequest, want: map[string]any{"error.field": "status"}},
		{name: "no such env", op: "GET /api/v1/envs/{env}/incidents", path: "/api/v1/envs/nope/incidents", token: "root", bare: true, status: 404, code: CodeNotFound},
		{name: "not kept here", op: "GET /api/v1/envs/{env}/incidents", path: dev + "/incidents", token: "viewer", status: 501, code: CodeNotConfigured},
		{name: "all incidents", op: "GET /api/v1/incidents", path: "/api/v1/incidents", token: "root", bare: true, status: 200, want: map[string]any{"incidents.#": 0}},
		{name: "bad limit", op: "GET /api/v1/incidents", path: "/api/v1/incidents?limit=0", token: "root", bare: true, status: 400, code: CodeBadRequest, want: map[string]any{"error.field": "limit"}},
		{name: "not kept here", op: "GET /api/v1/incidents", path: "/api/v1/incidents", token: "root", status: 501, code: CodeNotConfigured},
		{name: "none yet", op: "GET /api/v1/envs/{env}/webhooks", path: dev + "/webhooks", token: "root", bare: true, status: 200, want: map[string]any{"webhooks.#": 0}},
		{name: "add", op: "POST /api/v1/envs/{env}/webhooks", path: dev + "/webhooks", token: "root", bare: true,
			body: `{"url":"https://hooks.example.com/pennon/abc?token=x","types":["change","emergency"],"format":"slack"}`, status: 201,
			want: map[string]any{"webhook.url": "https://hooks.example.com/pennon/…", "webhook.types.#": 2, "webhook.format": "slack"}, save: map[string]string{"hook": "webhook.id"}},
		{name: "one", op: "GET /api/v1/envs/{env}/webhooks", path: dev + "/webhooks", token: "root", bare: true, status: 200, want: map[string]any{"webhooks.#": 1, "webhooks.0.id": "{{hook}}"}},
		{name: "bad scheme", op: "POST /api/v1/envs/{env}/webhooks", path: dev + "/webhooks", token: "root", bare: true, body: `{"url":"ftp://hooks.example.com"}`, status: 422, code: CodeValidation, want: map[string]any{"error.field": "url"}},
		{name: "bad type", op: "POST /api/v1/envs/{env}/webhooks", path: dev + "/webhooks", token: "root", bare: true, body: `{"url":"https://h.example.com","types":["all"]}`, status: 422, code: CodeValidation, want: map[string]any{"error.field": "types[0]"}},
		{name: "unknown field", op: "POST /api/v1/envs/{env}/webhooks", path: dev + "/webhooks", token: "root", bare: true, body: `{"uri":"https://h.example.com"}`, status: 400, code: CodeBadRequest},
		{name: "no such env", op: "POST /api/v1/envs/{env}/webhooks", path: "/api/v1/envs/nope/webhooks", token: "root", bare: true, body: `{"url":"https://h.example.com"}`, status: 404, code: CodeNotFound},
		{name: "not enabled here", op: "POST /api/v1/envs/{env}/webhooks", path: dev + "/webhooks", token: "root", body: `{"url":"https://h.example.com"}`, status: 501, code: CodeNotConfigured},
		{name: "no such env", op: "GET /api/v1/envs/{env}/webhooks", path: "/api/v1/envs/nope/webhooks", token: "root", bare: true, status: 404, code: CodeNotFound},
		{name: "not enabled here", op: "GET /api/v1/envs/{env}/webhooks", path: dev + "/webhooks", token: "root", status: 501, code: CodeNotConfigured},
		{name: "deliveries", op: "GET /api/v1/envs/{env}/webhooks/{id}/deliveries", path: dev + "/webhooks/{{hook}}/deliveries?limit=5", token: "root", bare: true, status: 200,
			want: map[string]any{"webhook": "{{hook}}", "deliveries.#": 0}},
		{name: "limit too high", op: "GET /api/v1/envs/{env}/webhooks/{id}/deliveries", path: dev + "/webhooks/{{hook}}/deliveries?limit=500", token: "root", bare: true, status: 400, code: CodeBadRequest, want: map[string]any{"error.field": "limit"}},
		{name: "no such webhook", op: "GET /api/v1/envs/{env}/webhooks/{id}/deliveries", path: dev + "/webhooks/nope/deliveries", token: "root", bare: true, status: 404, code: CodeNotFound, want: map[string]any{"error.field": "id"}},
		{name: "not enabled here", op: "GET /api/v1/envs/{env}/webhooks/{id}/deliveries", path: dev + "/webhooks/{{hook}}/deliveries", token: "root", status: 501, code: CodeNotConfigured},
		{name: "remove", op: "DELETE /api/v1/envs/{env}/webhooks/{id}", path: dev + "/webhooks/{{hook}}", token: "root", bare: true, status: 200, want: map[string]any{"deleted": "{{hook}}"}},
		{name: "already removed", op: "DELETE /api/v1/envs/{env}/webhooks/{id}", path: dev + "/webhooks/{{hook}}", token: "root", bare: true, status: 404, code: CodeNotFound},
		{name: "not enabled here", op: "DELETE /api/v1/envs/{env}/webhooks/{id}", path: dev + "/webhooks/{{hook}}", token: "root", status: 501, code: CodeNotConfigured},
		{name: "events", op: "GET /api/v1/envs/{env}/events", path: dev + "/events?type=change&limit=10", token: "viewer", bare: true, status: 200},
		{name: "bad type", op: "GET /api/v1/envs/{env}/events", path: dev + "/events?type=all", token: "viewer", bare: true, status: 400, code: CodeBadRequest, want: map[string]any{"error.field": "type"}},
		{name: "no such env", op: "GET /api/v1/envs/{env}/events", path: "/api/v1/envs/nope/events", token: "root", bare: true, status: 404, code: CodeNotFound},
		{name: "not enabled here", op: "GET /api/v1/envs/{env}/events", path: dev + "/events", token: "viewer", status: 501, code: CodeNotConfigured},
		{name: "every flag", op: "GET /api/v1/envs/{env}/usage", path: dev + "/usage", token: "viewer", bare: true, status: 200, want: map[string]any{"env": "dev", "totals24h.evaluations": 0}},
		{name: "one flag's days", op: "GET /api/v1/envs/{env}/usage", path: dev + "/usage?flag=a&days=3", token: "viewer", bare: true, status: 200, want: map[string]any{"flag": "a", "usage.days.#": 3, "usage.last24h": 0}},
		{name: "a series", op: "GET /api/v1/envs/{env}/usage", path: dev + "/usage?flag=a&granularity=hour&since=3h", token: "viewer", bare: true, status: 200, want: map[string]any{"granularity": "hour"}},
		{name: "unknown parameter", op: "GET /api/v1/envs/{env}/usage", path: dev + "/usage?flags=a", token: "viewer", bare: true, status: 400, code: CodeBadRequest, want: map[string]any{"error.field": "flags"}},
		{name: "since without granularity", op: "GET /api/v1/envs/{env}/usage", path: dev + "/usage?since=1h", token: "viewer", bare: true, status: 400, code: CodeBadRequest, want: map[string]any{"error.field": "since"}},
		{name: "no such env", op: "GET /api/v1/envs/{env}/usage", path: "/api/v1/envs/nope/usage", token: "root", bare: true, status: 404, code: CodeNotFound},
		{name: "not aggregated here", op: "GET /api/v1/envs/{env}/usage", path: dev + "/usage", token: "viewer", status: 501, code: CodeNotConfigured},
		{name: "anomalies", op: "GET /api/v1/envs/{env}/anomalies", path: dev + "/anomalies", token: "viewer", bare: true, status: 200},
		{name: "takes no parameters", op: "GET /api/v1/envs/{env}/anomalies", path: dev + "/anomalies?flag=a", token: "viewer", bare: true, status: 400, code: CodeBadRequest, want: map[string]any{"error.field": "flag"}},
		{name: "no such env", op: "GET /api/v1/envs/{env}/anomalies", path: "/api/v1/envs/nope/anomalies", token: "root", bare: true, status: 404, code: CodeNotFound},
		{name: "not aggregated here", op: "GET /api/v1/envs/{env}/anomalies", path: dev + "/anomalies", token: "viewer", status: 501, code: CodeNotConfigured},
		{name: "an experiment", op: "PUT /api/v1/envs/{env}/flags/{key}", path: dev + "/flags/ab", token: "editor", status: 201,
			body: `{"definition":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","experiment":{"control":"off","metrics":[{"key":"purchase"}]}}}`},
		{name: "list", op: "GET /api/v1/envs/{env}/experiments", path: dev + "/experiments", token: "viewer", bare: true, status: 200,
			want: map[string]any{"env": "dev", "experiments.#": 1, "experiments.0.flag": "ab", "experiments.0.defined": true}},
		{name: "no such env", op: "GET /api/v1/envs/{env}/experiments", path: "/api/v1/envs/nope/experiments", token: "root", bare: true, status: 404, code: CodeNotFound},
		{name: "not aggregated here", op: "GET /api/v1/envs/{env}/experiments", path: dev + "/experiments", token: "viewer", status: 501, code: CodeNotConfigured},
		{name: "report", op: "GET /api/v1/envs/{env}/experiments/{flag}", path: dev + "/experiments/ab?metric=purchase", token: "viewer", bare: true, status: 200,
			want: map[string]any{"flag": "ab", "control": "off", "metrics.#": 1, "metrics.0.key": "purchase"}},
		{name: "not an experiment", op: "GET /api/v1/envs/{env}/experiments/{flag}", path: dev + "/experiments/a", token: "viewer", bare: true, status: 422, code: CodeValidation},
		{name: "no such metric", op: "GET /api/v1/envs/{env}/experiments/{flag}", path: dev + "/experiments/ab?metric=clicks", token: "viewer", bare: true, status: 422, code: CodeValidation},
		{name: "no such flag", op: "GET /api/v1/envs/{env}/experiments/{flag}", path: dev + "/experiments/zz", token: "viewer", bare: true, status: 404, code: CodeNotFound},
		{name: "not aggregated here", op: "GET /api/v1/envs/{env}/experiments/{flag}", path: dev + "/experiments/ab", token: "viewer", status: 501, code: CodeNotConfigured},
		{name: "not collected here", op: "POST /api/v1/envs/{env}/telemetry", path: dev + "/telemetry", token: "viewer", body: `{{batch}}`, status: 501, code: CodeNotConfigured},
	}
}
