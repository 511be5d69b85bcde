package flagdgrpc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/evaluator"
	syncv1 "github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/sync/v1"
	"github.com/pennon-dev/pennon/proxy"
)

// checkoutContexts exercise every rule in examples/checkout.json: internal
// users, Nordic countries with the 50/50 split, app versions on both sides
// of 3.0.0 and 3.2.0, plans, CPU headroom, no targeting key, and enough
// targeting keys to land on both sides of the split.
func checkoutContexts() []map[string]any {
	out := []map[string]any{
		{},
		{"targetingKey": "user-1", "email": "ada@pennon.dev", "appVersion": "3.4.0", "plan": "premium", "cpuHeadroom": 50},
		{"targetingKey": "user-2", "country": "SE", "appVersion": "2.9.1", "plan": "free", "cpuHeadroom": 10},
		{"targetingKey": "user-3", "country": "NO", "appVersion": "3.2.0", "plan": "premium", "cpuHeadroom": 30},
		{"country": "DK", "appVersion": "3.3.0", "plan": "premium", "cpuHeadroom": 99},
		{"targetingKey": "", "country": "FI", "appVersion": "3.3.0", "plan": "premium", "cpuHeadroom": 99},
		{"targetingKey": "user-4", "country": "US", "appVersion": "not-a-version", "cpuHeadroom": "high"},
	}
	for i := range 24 {
		out = append(out, map[string]any{"targetingKey": fmt.Sprintf("user-%d", 100+i), "country": "NL",
			"appVersion": "3.5.0", "plan": "premium", "cpuHeadroom": 40})
	}
	return out
}

func loadCheckout(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("../examples/checkout.json")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ofrep posts one OFREP evaluation and returns the status and decoded body.
func ofrep(t *testing.T, addr, key string, ctx map[string]any) (int, map[string]any) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"context": ctx})
	req, err := http.NewRequestWithContext(callCtx(t), "POST", "http://"+addr+"/ofrep/v1/evaluate/flags/"+key, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("OFREP body %q: %v", b, err)
	}
	return resp.StatusCode, out
}

// startOFREP runs the sidecar's OFREP server on src until the test ends.
func startOFREP(t *testing.T, src proxy.Source) string {
	t.Helper()
	s, err := proxy.New(proxy.Options{Addr: "127.0.0.1:0", Source: src, SourceName: "test"})
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
		http.DefaultClient.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("OFREP serve: %v", err)
		}
	})
	return s.Addr()
}

// TestMatchesOFREP asks the gRPC evaluation service and the OFREP endpoint
// of one sidecar the same questions and requires the same answers: value,
// variant, reason and metadata, or the error flagd's mapping gives for
// OFREP's error code.
func TestMatchesOFREP(t *testing.T) {
	for _, doc := range []struct{ name, json string }{{"checkout", loadCheckout(t)}, {"test flags", testFlags}} {
		t.Run(doc.name, func(t *testing.T) {
			h := newDocHolder(t, doc.json)
			c := start(t, Options{Source: h})
			addr := startOFREP(t, h)
			contexts := append(checkoutContexts(), map[string]any{"plan": "premium", "seats": 80, "pick": "zzz"}, map[string]any{"pick": "a"})
			keys := append(append([]string{}, h.Current().Keys()...), "missing-flag")
			for _, key := range keys {
				for i, ctx := range contexts {
					t.Run(fmt.Sprintf("%s/ctx%d", key, i), func(t *testing.T) {
						compareWithOFREP(t, c, addr, key, ctx)
					})
				}
			}
		})
	}
}

func compareWithOFREP(t *testing.T, c *clients, addr, key string, ctx map[string]any) {
	st := ctxStruct(t, ctx)
	code, body := ofrep(t, addr, key, ctx)
	value, hasValue := body["value"]
	if body["errorCode"] == nil && !hasValue {
		// Disabled, or no default variant: every resolver answers with no
		// value (the caller's code default), OFREP's reason and metadata.
		for _, kind := range []string{"bool", "string", "int", "float", "object"} {
			got := resolve(t, c, kind, key, st)
			if got.code != codes.OK || got.value != nil || got.variant != "" || got.reason != body["reason"] || !equalJSON(got.meta, body["metadata"]) {
				t.Fatalf("%s: OFREP %d %v; gRPC %+v", kind, code, body, got)
			}
		}
		return
	}
	var wantCode codes.Code
	if body["errorCode"] != nil {
		wantCode = codeFor(evaluator.ErrorCode(body["errorCode"].(string)))
	}
	if wantCode != codes.OK {
		// Every typed resolver fails the same way.
		for _, kind := range []string{"bool", "string", "int", "float", "object"} {
			got := resolve(t, c, kind, key, st)
			if got.code != wantCode {
				t.Fatalf("%s: OFREP %d %v; gRPC %v %q, want %v", kind, code, body, got.code, got.msg, wantCode)
			}
		}
		return
	}
	var kinds []string
	switch v := value.(type) {
	case bool:
		kinds = []string{"bool"}
	case string:
		kinds = []string{"string"}
	case float64:
		kinds = []string{"float"}
		if v == float64(int64(v)) {
			kinds = append(kinds, "int")
		}
	case map[string]any:
		kinds = []string{"object"}
	default:
		t.Skipf("OFREP value %T has no typed gRPC resolver", value)
	}
	for _, kind := range kinds {
		got := resolve(t, c, kind, key, st)
		if got.code != codes.OK {
			t.Fatalf("%s: OFREP %v; gRPC %v %q", kind, body, got.code, got.msg)
		}
		if !equalJSON(got.value, value) || got.reason != body["reason"] || got.variant != body["variant"] || !equalJSON(got.meta, body["metadata"]) {
			t.Fatalf("%s: OFREP %v; gRPC %+v", kind, body, got)
		}
	}
	// A resolver of another type reports TYPE_MISMATCH, as flagd does.
	other := "string"
	if kinds[0] == "string" {
		other = "bool"
	}
	if got := resolve(t, c, other, key, st); got.code != codes.InvalidArgument {
		t.Fatalf("%s on a %s flag: %v %q, want InvalidArgument", other, kinds[0], got.code, got.msg)
	}
}

// TestInProcessMatchesSidecar loads the set the sync service sends, as an
// in-process provider would, and requires it to answer as the sidecar does
// for every flag of examples/checkout.json, including those with
// prerequisites, which the synced set carries as targeting.
func TestInProcessMatchesSidecar(t *testing.T) {
	h := newDocHolder(t, loadCheckout(t))
	c := start(t, Options{Source: h})
	resp, err := c.sync.FetchAllFlags(callCtx(t), &syncv1.FetchAllFlagsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	synced, err := config.Parse([]byte(resp.GetFlagConfiguration()))
	if err != nil {
		t.Fatalf("synced set: %v\n%s", err, resp.GetFlagConfiguration())
	}
	inproc, err := synced.Compile(1)
	if err != nil {
		t.Fatalf("synced set does not compile: %v\n%s", err, resp.GetFlagConfiguration())
	}
	sidecar := h.Current()
	for _, key := range sidecar.Keys() {
		for i, m := range checkoutContexts() {
			ctx := evaluator.ContextFromMap(m)
			want := sidecar.Evaluate(key, ctx)
			got := inproc.Evaluate(key, evaluator.ContextFromMap(m))
			if got.Variant != want.Variant || got.HasValue != want.HasValue || string(got.ValueJSON) != string(want.ValueJSON) || got.ErrorCode != want.ErrorCode {
				t.Errorf("%s ctx%d %v: in-process %s=%s (%s %s), sidecar %s=%s (%s %s)", key, i, m,
					got.Variant, got.ValueJSON, got.Reason, got.ErrorCode, want.Variant, want.ValueJSON, want.Reason, want.ErrorCode)
				continue
			}
			// The one documented difference: a flag without targeting whose
			// prerequisites hold is STATIC in the sidecar and a targeting
			// match in-process.
			if got.Reason != want.Reason && (want.Reason != evaluator.ReasonStatic || got.Reason != evaluator.ReasonTargetingMatch) {
				t.Errorf("%s ctx%d: in-process reason %s, sidecar %s", key, i, got.Reason, want.Reason)
			}
		}
	}
	// The contexts must reach both outcomes of every prerequisite, or the
	// comparison above proves little.
	for _, key := range []string{"legacy-payment", "new-checkout-ui", "express-checkout"} {
		seen := map[string]bool{}
		for _, m := range checkoutContexts() {
			seen[sidecar.Evaluate(key, evaluator.ContextFromMap(m)).Variant] = true
		}
		if !seen["on"] || !seen["off"] {
			t.Errorf("%s: contexts give only %v", key, seen)
		}
	}
}
