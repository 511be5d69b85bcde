package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/internal/checkfor"
	flagsync "github.com/pennon-dev/pennon/sync"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"), goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"), goleak.IgnoreTopFunction("github.com/dgraph-io/ristretto/v2.(*defaultPolicy[...]).processItems"),
		goleak.IgnoreTopFunction("github.com/dgraph-io/ristretto/v2.(*Cache[...]).processItems"))
}

const testFlags = `{
  "metadata": {"team": "web"},
  "flags": {
    "static-on": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
    "no-default": {"state": "ENABLED", "variants": {"on": true, "off": false}},
    "disabled": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
    "color": {"state": "ENABLED", "variants": {"red": "red", "blue": "blue"}, "defaultVariant": "blue",
      "targeting": {"if": [{"==": [{"var": "plan"}, "premium"]}, "red", "blue"]}},
    "broken": {"state": "ENABLED", "variants": {"a": "a"}, "defaultVariant": "a", "targeting": {"var": "pick"}},
    "ratio": {"state": "ENABLED", "variants": {"low": 0.5, "high": 1.5}, "defaultVariant": "low"}
  }
}`

func mustSnapshot(t testing.TB, doc string, version uint64) *evaluator.Snapshot {
	t.Helper()
	d, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	s, err := d.Compile(version)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startServer runs a server on a random loopback port until the test ends.
func startServer(t *testing.T, src Source, mutate ...func(*Options)) *Server {
	t.Helper()
	o := Options{Addr: "127.0.0.1:0", Source: src, SourceName: "test", KeepAlive: 50 * time.Millisecond}
	for _, m := range mutate {
		m(&o)
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		http.DefaultClient.CloseIdleConnections()
	})
	return s
}

func do(t *testing.T, method, url, ctype, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestEndpoints(t *testing.T) {
	var h evaluator.Holder
	h.Store(mustSnapshot(t, testFlags, 3))
	s := startServer(t, &h, func(o *Options) { o.MaxBodyBytes = 1024 })
	base := "http://" + s.Addr()
	js := "application/json"
	tests := []struct {
		name, method, path, ctype, body string
		status                          int
		want                            string
	}{
		{"static", "POST", "/ofrep/v1/evaluate/flags/static-on", js, `{"context":{}}`, 200, `{"key":"static-on","reason":"STATIC","variant":"on","value":true,"metadata":{"team":"web"}}`},
		{"targeting match", "POST", "/ofrep/v1/evaluate/flags/color", js, `{"context":{"targetingKey":"u1","plan":"premium"}}`, 200, `{"key":"color","reason":"TARGETING_MATCH","variant":"red","value":"red","metadata":{"team":"web"}}`},
		{"targeting other", "POST", "/ofrep/v1/evaluate/flags/color", js, `{"context":{"plan":"free"}}`, 200, `"variant":"blue"`},
		{"float value", "POST", "/ofrep/v1/evaluate/flags/ratio", js, `{"context":{}}`, 200, `"value":0.5`},
		{"code default has no value", "POST", "/ofrep/v1/evaluate/flags/no-default", js, `{"context":{}}`, 200, `{"key":"no-default","reason":"DEFAULT","metadata":{"team":"web"}}`},
		{"disabled", "POST", "/ofrep/v1/evaluate/flags/disabled", js, `{"context":{}}`, 200, `{"key":"disabled","reason":"DISABLED","metadata":{"team":"web"}}`},
		{"empty body is empty context", "POST", "/ofrep/v1/evaluate/flags/static-on", "", ``, 200, `"value":true`},
		{"not found", "POST", "/ofrep/v1/evaluate/flags/nope", js, `{"context":{}}`, 404, `{"key":"nope","errorCode":"FLAG_NOT_FOUND","errorDetails":"flag 'nope' was not found"}`},
		{"targeting names no variant", "POST", "/ofrep/v1/evaluate/flags/broken", js, `{"context":{"pick":"zzz"}}`, 400, `"errorCode":"GENERAL"`},
		{"malformed json", "POST", "/ofrep/v1/evaluate/flags/static-on", js, `{"context":`, 400, `"errorCode":"INVALID_CONTEXT"`},
		{"context not object (ignored, as flagd does)", "POST", "/ofrep/v1/evaluate/flags/static-on", js, `{"context":[1]}`, 200, `"value":true`},
		{"too deep", "POST", "/ofrep/v1/evaluate/flags/static-on", js, `{"context":` + strings.Repeat(`{"a":`, 30) + `1` + strings.Repeat(`}`, 31), 400, `"errorCode":"INVALID_CONTEXT"`},
		{"wrong content type", "POST", "/ofrep/v1/evaluate/flags/static-on", "text/plain", `{}`, 415, `"errorCode":"PARSE_ERROR"`},
		{"body too large", "POST", "/ofrep/v1/evaluate/flags/static-on", js, `{"context":{"x":"` + strings.Repeat("a", 2000) + `"}}`, 413, `exceeds 1024 bytes`},
		{"wrong method", "GET", "/ofrep/v1/evaluate/flags/static-on", "", ``, 405, `use POST`},
		{"unknown path", "GET", "/nope", "", ``, 404, `no such endpoint`},
		{"bulk", "POST", "/ofrep/v1/evaluate/flags", js, `{"context":{"plan":"premium"}}`, 200, `"eventStreams":[{"type":"sse","endpoint":{"requestUri":"/v1/stream"}`},
		{"bulk malformed", "POST", "/ofrep/v1/evaluate/flags", js, `{`, 400, `{"errorCode":"INVALID_CONTEXT"`},
		{"healthz", "GET", "/healthz", "", ``, 200, `{"status":"ok"}`},
		{"readyz", "GET", "/readyz", "", ``, 200, `{"ready":true`},
		{"status", "GET", "/v1/status", "", ``, 200, `"version": 3`},
		{"track", "POST", "/v1/track", js, `{"key":"checkout-completed","context":{"targetingKey":"u1"},"details":{"value":9.5}}`, 202, `{"accepted":true,"joined":false}`},
		{"track bad value", "POST", "/v1/track", js, `{"key":"buy","context":{"targetingKey":"u1"},"details":{"value":"12"}}`, 400, `details.value must be a number`},
		{"track invalid", "POST", "/v1/track", js, `{"context":{}}`, 400, `needs a \"key\" of 1-256 bytes`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, hdr, body := do(t, tc.method, base+tc.path, tc.ctype, tc.body)
			if code != tc.status || !strings.Contains(body, tc.want) {
				t.Fatalf("got %d %s\nwant %d containing %s", code, body, tc.status, tc.want)
			}
			if tc.path != "/metrics" && !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
				t.Fatalf("content type %q", hdr.Get("Content-Type"))
			}
			if tc.status >= 400 && !json.Valid([]byte(body)) {
				t.Fatalf("error body is not JSON: %s", body)
			}
		})
	}
	code, _, body := do(t, "GET", base+"/metrics", "", "")
	for _, want := range []string{`pennon_evaluations_total{flag="color",reason="TARGETING_MATCH",variant="red"}`, `pennon_evaluation_errors_total{code="FLAG_NOT_FOUND"}`, `pennon_snapshot_version 3`, "pennon_evaluation_duration_seconds_bucket", "pennon_http_in_flight_requests"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("metrics missing %s", want)
		}
	}
}

func TestBulkETagDependsOnContext(t *testing.T) {
	var h evaluator.Holder
	h.Store(mustSnapshot(t, testFlags, 1))
	base := "http://" + startServer(t, &h).Addr() + "/ofrep/v1/evaluate/flags"
	js := "application/json"
	_, hdr, _ := do(t, "POST", base, js, `{"context":{"plan":"premium"}}`)
	etag := hdr.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	if code, _, _ := do(t, "POST", base, js, `{"context":{"plan":"premium"}}`, "If-None-Match", etag); code != 304 {
		t.Fatalf("same context: %d, want 304", code)
	}
	if code, _, body := do(t, "POST", base, js, `{"context":{"plan":"free"}}`, "If-None-Match", etag); code != 200 || !strings.Contains(body, `"variant":"blue"`) {
		t.Fatalf("other context with the old ETag must get fresh answers, got %d %s", code, body)
	}
	h.Store(mustSnapshot(t, testFlags, 2))
	if code, _, _ := do(t, "POST", base, js, `{"context":{"plan":"premium"}}`, "If-None-Match", etag); code != 200 {
		t.Fatalf("new version: %d, want 200", code)
	}
}

func TestNotReady(t *testing.T) {
	var h evaluator.Holder
	base := "http://" + startServer(t, &h).Addr()
	code, hdr, body := do(t, "POST", base+"/ofrep/v1/evaluate/flags/x", "application/json", `{"context":{}}`)
	if code != 503 || !strings.Contains(body, "PROVIDER_NOT_READY") || hdr.Get("Retry-After") == "" {
		t.Fatalf("got %d %s", code, body)
	}
	if code, _, _ := do(t, "GET", base+"/readyz", "", ""); code != 503 {
		t.Fatalf("readyz %d", code)
	}
	h.Store(mustSnapshot(t, testFlags, 1))
	if code, _, _ := do(t, "GET", base+"/readyz", "", ""); code != 200 {
		t.Fatalf("readyz after load %d", code)
	}
}

func TestHealthListener(t *testing.T) {
	var h evaluator.Holder
	h.Store(mustSnapshot(t, `{"flags":{"old":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on","expires":"2020-01-01"}}}`, 1))
	s := startServer(t, &h, func(o *Options) { o.HealthAddr = "127.0.0.1:0" })
	hb := "http://" + s.HealthAddr()
	if code, _, _ := do(t, "GET", hb+"/readyz", "", ""); code != 200 {
		t.Fatalf("readyz on health listener: %d", code)
	}
	if code, _, _ := do(t, "POST", hb+"/ofrep/v1/evaluate/flags/old", "application/json", `{}`); code != 404 {
		t.Fatalf("evaluation must not be served on the health listener: %d", code)
	}
	do(t, "POST", "http://"+s.Addr()+"/ofrep/v1/evaluate/flags/old", "application/json", `{}`)
	if _, _, m := do(t, "GET", hb+"/metrics", "", ""); !strings.Contains(m, `pennon_expired_flag_evaluations_total{flag="old"} 1`) {
		t.Fatalf("expired flag not counted:\n%s", m)
	}
}

func TestRefusesNonLoopback(t *testing.T) {
	var h evaluator.Holder
	if _, err := New(Options{Addr: "0.0.0.0:8016", Source: &h}); err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Fatalf("err = %v", err)
	}
	if _, err := New(Options{Addr: "0.0.0.0:0", Source: &h, AllowRemote: true}); err != nil {
		t.Fatal(err)
	}
}

func TestStreamNotifiesChanges(t *testing.T) {
	var h evaluator.Holder
	h.Store(mustSnapshot(t, testFlags, 1))
	base := "http://" + startServer(t, &h).Addr()
	resp, err := http.Get(base + "/v1/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	waitLine := func(prefix string) string {
		t.Helper()
		timeout := time.After(5 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("stream closed waiting for %q", prefix)
				}
				if strings.HasPrefix(l, prefix) {
					return l
				}
			case <-timeout:
				t.Fatalf("no %q line", prefix)
			}
		}
	}
	waitLine(": connected")
	h.Store(mustSnapshot(t, testFlags, 7))
	data := waitLine("data: ")
	var ev struct{ Type, Etag string }
	if err := json.Unmarshal([]byte(strings.TrimPrefix(data, "data: ")), &ev); err != nil || ev.Type != "refetchEvaluation" || ev.Etag != "7" {
		t.Fatalf("event %s (%v)", data, err)
	}
	waitLine(": keep-alive")
}

func TestFileHotReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "flags.json")
	write := func(s string) {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(testFlags)
	fs, err := flagsync.NewFileSource(flagsync.FileOptions{Path: path, Interval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); fs.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()
	base := "http://" + startServer(t, fs).Addr()
	eval := func() string {
		_, _, body := do(t, "POST", base+"/ofrep/v1/evaluate/flags/static-on", "application/json", `{"context":{}}`)
		return body
	}
	if !strings.Contains(eval(), `"value":true`) {
		t.Fatal(eval())
	}
	write(strings.Replace(testFlags, `"defaultVariant": "on"}`, `"defaultVariant": "off"}`, 1))
	checkfor.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if b := eval(); !strings.Contains(b, `"value":false`) {
			return fmt.Errorf("not reloaded: %s", b)
		}
		return nil
	})
	write(`{"flags": {"static-on": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "blue"}}}`)
	checkfor.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		_, _, st := do(t, "GET", base+"/v1/status", "", "")
		if !strings.Contains(st, `flags.static-on.defaultVariant: \"blue\" is not a variant`) {
			return fmt.Errorf("rejection not reported: %s", st)
		}
		return nil
	})
	if b := eval(); !strings.Contains(b, `"value":false`) {
		t.Fatalf("old flags must keep serving after a rejected file: %s", b)
	}
	// reload counters are tested in sync (TestFileSourceReloadSequence)
}

// TestReloadNeverTears swaps between two flag sets while clients evaluate in
// bulk: every answer must come wholly from one set.
func TestReloadNeverTears(t *testing.T) {
	docA := `{"flags":{"a":{"state":"ENABLED","variants":{"x":"A","y":"B"},"defaultVariant":"x"},"b":{"state":"ENABLED","variants":{"x":"A","y":"B"},"defaultVariant":"x"}}}`
	docB := strings.ReplaceAll(docA, `"defaultVariant":"x"`, `"defaultVariant":"y"`)
	snaps := []*evaluator.Snapshot{mustSnapshot(t, docA, 1), mustSnapshot(t, docB, 2)}
	var h evaluator.Holder
	h.Store(snaps[0])
	base := "http://" + startServer(t, &h).Addr()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
				h.Store(snaps[i%2])
			}
		}
	}()
	client := &http.Client{}
	for i := 0; i < 300; i++ {
		resp, err := client.Post(base+"/ofrep/v1/evaluate/flags", "application/json", strings.NewReader(`{"context":{}}`))
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			Flags []struct{ Value string }
		}
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err != nil || len(out.Flags) != 2 || out.Flags[0].Value != out.Flags[1].Value {
			t.Fatalf("torn answer: %+v %v", out, err)
		}
	}
	close(stop)
	wg.Wait()
	client.CloseIdleConnections()
}

func TestResponseCache(t *testing.T) {
	var h evaluator.Holder
	h.Store(mustSnapshot(t, testFlags, 1))
	s := startServer(t, &h, func(o *Options) { o.CacheMinCost = -1 })
	base := "http://" + s.Addr() + "/ofrep/v1/evaluate/flags/color"
	for i := 0; i < 3; i++ {
		_, _, body := do(t, "POST", base, "application/json", `{"context":{"plan":"premium","other":`+fmt.Sprint(i)+`}}`)
		if !strings.Contains(body, `"variant":"red"`) {
			t.Fatal(body)
		}
	}
	checkfor.CheckFor(t, 2*time.Second, 10*time.Millisecond, func() error {
		// ristretto applies Sets asynchronously: the 2nd request may still miss.
		_, _, body := do(t, "POST", base, "application/json", `{"context":{"plan":"premium","other":99}}`)
		if !strings.Contains(body, `"variant":"red"`) {
			t.Fatal(body)
		}
		if st := s.cacheStats(); st.Hits == 0 {
			return fmt.Errorf("no cache hit yet: %+v", st)
		}
		return nil
	})
	// A different value of an attribute the flag reads is a different entry.
	if _, _, body := do(t, "POST", base, "application/json", `{"context":{"plan":"free"}}`); !strings.Contains(body, `"variant":"blue"`) {
		t.Fatal(body)
	}
}

func TestGracefulShutdownDrains(t *testing.T) {
	var h evaluator.Holder
	h.Store(mustSnapshot(t, testFlags, 1))
	s, err := New(Options{Addr: "127.0.0.1:0", Source: &h})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	resp, err := http.Post("http://"+s.Addr()+"/ofrep/v1/evaluate/flags/static-on", "application/json", bytes.NewReader([]byte(`{}`)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// A new connection, not the first request's kept-alive one (which the
	// shutdown may still be closing): the question is whether the server
	// still accepts.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if _, err := fresh.Post("http://"+s.Addr()+"/healthz", "", nil); err == nil {
		t.Fatal("server still accepting after shutdown")
	}
	http.DefaultClient.CloseIdleConnections()
}

// TestServeStopsWhenCancelledAtOnce: a server whose context ends right
// after Serve starts must return. fasthttp's Shutdown closes only the
// listeners its Serve goroutine has registered, so a Shutdown that ran
// first left that goroutine accepting forever and Serve waiting on it (a
// hang seen in cmd/pennon's dev-system tests). Each round cancels before
// or while Serve starts, with and without a health listener.
func TestServeStopsWhenCancelledAtOnce(t *testing.T) {
	var h evaluator.Holder
	h.Store(mustSnapshot(t, testFlags, 1))
	for i := range 200 {
		o := Options{Addr: "127.0.0.1:0", Source: &h}
		if i%2 == 1 {
			o.HealthAddr = "127.0.0.1:0"
		}
		s, err := New(o)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		if i%4 < 2 {
			cancel() // before Serve
		}
		done := make(chan error, 1)
		go func() { done <- s.Serve(ctx) }()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: Serve did not return 10 s after its context ended", i)
		}
	}
}
