package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pennon-dev/pennon/internal/checkfor"
	flagsync "github.com/pennon-dev/pennon/sync"
)

// failModeFlags: one always-fresh flag per fail mode and a cache-first one.
const failModeFlags = `{"metadata":{"team":"pay"},"flags":{
 "pay-v2": {"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on",
   "propagation":"always-fresh","failMode":"closed","safeVariant":"off"},
 "theme": {"state":"ENABLED","variants":{"red":"red","blue":"blue"},"defaultVariant":"blue",
   "targeting":{"if":[{"==":[{"var":"plan"},"premium"]},"red","blue"]},"propagation":"always-fresh","failMode":"open"},
 "limit": {"state":"ENABLED","variants":{"low":10,"high":100},"defaultVariant":"low"}
}}`

// TestFailModesAnswerWithValues: the real sync client, serving its secure
// defaults, with no freshness lease and a control plane that refuses
// connections. Always-fresh flags answer 200 with a value — closed the
// safeVariant, open the last known (targeted) answer — reason STALE and
// metadata saying why; cache-first flags are untouched. Single and bulk.
func TestFailModesAnswerWithValues(t *testing.T) {
	dir := t.TempDir()
	defaults := filepath.Join(dir, "defaults.json")
	if err := os.WriteFile(defaults, []byte(failModeFlags), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := flagsync.NewRemote(flagsync.RemoteOptions{Env: "dev", ServerURL: "http://127.0.0.1:1", Token: "t", Defaults: defaults,
		LeaseFor: 50 * time.Millisecond, HTTPTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(rctx) }()
	t.Cleanup(func() { stop(); <-done })
	// The control plane is unreachable, so the sidecar falls to its defaults.
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if r.Current() == nil {
			return errors.New("no flag set served yet")
		}
		return nil
	})
	s := startServer(t, r)
	base := "http://" + s.Addr()
	ctx := `{"context":{"targetingKey":"u1","plan":"premium"}}`
	// Metadata every answer carries: the flag set's, plus what the defaults
	// file adds.
	common := map[string]any{"team": "pay", "pennonSource": "defaults"}
	tests := []struct {
		key      string
		value    any
		variant  string
		reason   string
		metadata map[string]any // besides common; nil value: must be absent
	}{
		{"pay-v2", false, "off", "STALE", map[string]any{"pennonFailMode": "closed", "pennonStale": nil}},
		{"theme", "red", "red", "STALE", map[string]any{"pennonFailMode": "open", "pennonStale": true}},
		{"limit", float64(10), "low", "STATIC", map[string]any{"pennonFailMode": nil, "pennonFailReason": nil, "pennonStale": nil}},
	}
	check := func(t *testing.T, body []byte, got map[string]any, key string) {
		t.Helper()
		for _, tc := range tests {
			if tc.key != key {
				continue
			}
			if _, has := got["errorCode"]; has || got["key"] != tc.key || got["value"] != tc.value || got["variant"] != tc.variant || got["reason"] != tc.reason {
				t.Fatalf("%s: got %s\nwant value %v variant %s reason %s", key, body, tc.value, tc.variant, tc.reason)
			}
			md, _ := got["metadata"].(map[string]any)
			for k, v := range common {
				if md[k] != v {
					t.Fatalf("%s: metadata %s = %v, want %v (%s)", key, k, md[k], v, body)
				}
			}
			for k, v := range tc.metadata {
				if md[k] != v {
					t.Fatalf("%s: metadata %s = %v, want %v (%s)", key, k, md[k], v, body)
				}
			}
			if tc.reason == "STALE" {
				if why, _ := md["pennonFailReason"].(string); !strings.Contains(why, "control plane") || len(why) > 200+len("…") {
					t.Fatalf("%s: pennonFailReason %q", key, why)
				}
			}
			return
		}
		t.Fatalf("unexpected flag %s", key)
	}
	for _, tc := range tests {
		t.Run("single/"+tc.key, func(t *testing.T) {
			code, _, body := do(t, "POST", base+"/ofrep/v1/evaluate/flags/"+tc.key, "application/json", ctx)
			var got map[string]any
			if err := json.Unmarshal([]byte(body), &got); err != nil || code != 200 {
				t.Fatalf("%d %s (%v)", code, body, err)
			}
			check(t, []byte(body), got, tc.key)
		})
	}
	t.Run("bulk", func(t *testing.T) {
		code, hdr, body := do(t, "POST", base+"/ofrep/v1/evaluate/flags", "application/json", ctx)
		var out struct{ Flags []map[string]any }
		if err := json.Unmarshal([]byte(body), &out); err != nil || code != 200 || len(out.Flags) != len(tests) {
			t.Fatalf("%d %s (%v)", code, body, err)
		}
		for _, f := range out.Flags {
			b, _ := json.Marshal(f)
			check(t, b, f, f["key"].(string))
		}
		// Answers on a fail mode are not the answers for this version and
		// context: no ETag, so no 304 can hand them out later.
		if etag := hdr.Get("ETag"); etag != "" {
			t.Fatalf("degraded bulk answer has ETag %s", etag)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		_, _, body := do(t, "GET", base+"/metrics", "", "")
		for _, want := range []string{`pennon_fail_mode_answers_total{mode="closed"} 2`, `pennon_fail_mode_answers_total{mode="open"} 2`} {
			if !strings.Contains(body, want) {
				t.Fatalf("metrics lack %s", want)
			}
		}
	})
}
