package flagdgrpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/pennon-dev/pennon/evaluator"
	evalv1 "github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/evaluation/v1"
)

// freshHolder is a docHolder that answers FreshSource as the sync client
// does when the control plane is unreachable (an error) or the lease is
// valid (nil: serve the local snapshot). It stands in for sync.Remote only
// to put both servers into the same freshness state; the code under test is
// what each server does with that state.
type freshHolder struct {
	*docHolder
	fail  atomic.Bool
	calls atomic.Int64
}

func (h *freshHolder) Fresh(_ context.Context, _ *evaluator.Flag) (*evaluator.Snapshot, error) {
	h.calls.Add(1)
	if h.fail.Load() {
		return nil, errors.New("control plane unreachable: connection refused")
	}
	return nil, nil
}

// failFlags adds an always-fresh flag with failMode open to checkout's
// always-fresh failMode closed (payment-api-v2) and background-refresh
// (performance-mode) flags.
func failFlags(t *testing.T) string {
	return strings.Replace(loadCheckout(t), `"flags": {`, `"flags": {
    "open-fresh": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
      "targeting": {"if": [{"==": [{"var": "plan"}, "premium"]}, "b", "a"]}, "propagation": "always-fresh", "failMode": "open"},`, 1)
}

// TestFailModesMatchOFREP: with freshness established and with the control
// plane unreachable, every resolver and ResolveAll answer as OFREP's single
// and bulk endpoints do (fail modes serve values with reason STALE), and
// ResolveAll asks for freshness once, as the bulk endpoint does.
func TestFailModesMatchOFREP(t *testing.T) {
	h := &freshHolder{docHolder: newDocHolder(t, failFlags(t))}
	c := start(t, Options{Source: h})
	addr := startOFREP(t, h)
	contexts := []map[string]any{
		{"targetingKey": "user-1", "plan": "premium", "country": "SE", "cpuHeadroom": 50},
		{"targetingKey": "user-7", "plan": "free", "email": "x@pennon.dev"},
	}
	for _, failing := range []bool{false, true} {
		h.fail.Store(failing)
		for _, key := range h.Current().Keys() {
			for i, ctx := range contexts {
				t.Run(fmt.Sprintf("failing=%v/%s/ctx%d", failing, key, i), func(t *testing.T) {
					compareWithOFREP(t, c, addr, key, ctx)
				})
			}
		}
		for i, ctx := range contexts {
			t.Run(fmt.Sprintf("failing=%v/ResolveAll/ctx%d", failing, i), func(t *testing.T) {
				if n := compareResolveAll(t, c, addr, ctx, &h.calls); n != 2 {
					t.Errorf("ResolveAll asked for freshness %d times, want 2 (one per strategy)", n)
				}
			})
		}
	}
	// The fail modes were really exercised.
	h.fail.Store(true)
	r := resolve(t, c, "bool", "payment-api-v2", ctxStruct(t, contexts[0]))
	if r.code != codes.OK || r.reason != "STALE" || r.variant != "off" || r.meta["pennonFailMode"] != "closed" {
		t.Fatalf("failMode closed: %+v", r)
	}
	r = resolve(t, c, "string", "open-fresh", ctxStruct(t, contexts[0]))
	if r.code != codes.OK || r.reason != "STALE" || r.value != "b" || r.meta["pennonStale"] != true {
		t.Fatalf("failMode open: %+v", r)
	}
}

// compareResolveAll requires every flag ResolveAll returns to equal OFREP
// bulk's entry, and every flag it leaves out to be one AnyFlag cannot
// carry (an error, disabled, no value, or an array). It returns how much
// calls grew during the ResolveAll call alone.
func compareResolveAll(t *testing.T, c *clients, addr string, ctx map[string]any, calls *atomic.Int64) int64 {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"context": ctx})
	req, err := http.NewRequestWithContext(callCtx(t), "POST", "http://"+addr+"/ofrep/v1/evaluate/flags", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var bulk struct {
		Flags []map[string]any `json:"flags"`
	}
	if err := json.Unmarshal(b, &bulk); err != nil {
		t.Fatalf("OFREP bulk %s: %v", b, err)
	}
	before := calls.Load()
	all, err := c.eval.ResolveAll(callCtx(t), &evalv1.ResolveAllRequest{Context: ctxStruct(t, ctx)})
	if err != nil {
		t.Fatal(err)
	}
	asked := calls.Load() - before
	for _, want := range bulk.Flags {
		key := want["key"].(string)
		got := all.GetFlags()[key]
		_, hasValue := want["value"]
		_, isArray := want["value"].([]any)
		carried := want["errorCode"] == nil && want["reason"] != "DISABLED" && hasValue && !isArray
		if got == nil {
			if carried {
				t.Errorf("%s: missing from ResolveAll; OFREP bulk %v", key, want)
			}
			continue
		}
		if !carried {
			t.Errorf("%s: in ResolveAll, but OFREP bulk says %v", key, want)
			continue
		}
		var v any
		switch x := got.GetValue().(type) {
		case *evalv1.AnyFlag_BoolValue:
			v = x.BoolValue
		case *evalv1.AnyFlag_StringValue:
			v = x.StringValue
		case *evalv1.AnyFlag_DoubleValue:
			v = x.DoubleValue
		case *evalv1.AnyFlag_ObjectValue:
			v = x.ObjectValue.AsMap()
		}
		if !equalJSON(v, want["value"]) || got.GetReason() != want["reason"] || got.GetVariant() != want["variant"] || !equalJSON(got.GetMetadata().AsMap(), want["metadata"]) {
			t.Errorf("%s: ResolveAll %v %s %s %v; OFREP bulk %v", key, v, got.GetReason(), got.GetVariant(), got.GetMetadata().AsMap(), want)
		}
	}
	return asked
}
