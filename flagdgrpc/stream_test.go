package flagdgrpc

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pennon-dev/pennon/config"
	evalv1 "github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/evaluation/v1"
	syncv1 "github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/sync/v1"
	"github.com/pennon-dev/pennon/internal/checkfor"
	flagsync "github.com/pennon-dev/pennon/sync"
)

// recvTimeout receives one message or fails the test after d.
func recvTimeout[T any](t *testing.T, recv func() (T, error), d time.Duration) T {
	t.Helper()
	type res struct {
		v   T
		err error
	}
	ch := make(chan res, 1)
	go func() { v, err := recv(); ch <- res{v, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("recv: %v", r.err)
		}
		return r.v
	case <-time.After(d):
		t.Fatalf("nothing received within %v", d)
	}
	var zero T
	return zero
}

func TestEventStream(t *testing.T) {
	h := newDocHolder(t, testFlags)
	c := start(t, Options{Source: h, KeepAlive: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := c.eval.EventStream(ctx, &evalv1.EventStreamRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ev := recvTimeout(t, stream.Recv, 5*time.Second)
	if ev.GetType() != "provider_ready" {
		t.Fatalf("first event %q, want provider_ready", ev.GetType())
	}

	type change map[string]string // flag → type
	steps := []struct {
		name string
		doc  string
		want change
	}{
		{"one flag's rule changes",
			strings.Replace(testFlags, `"premium"]}, "red", "blue"]`, `"gold"]}, "red", "blue"]`, 1),
			change{"color": "update"}},
		{"a flag is added and one removed",
			strings.Replace(strings.Replace(testFlags, `"premium"]}, "red", "blue"]`, `"gold"]}, "red", "blue"]`, 1),
				`"list": {"state": "ENABLED", "variants": {"a": [1, 2]}, "defaultVariant": "a"}`,
				`"fresh": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a"}`, 1),
			change{"list": "delete", "fresh": "write"}},
		{"flag-set metadata changes every flag",
			strings.Replace(strings.Replace(strings.Replace(testFlags, `"premium"]}, "red", "blue"]`, `"gold"]}, "red", "blue"]`, 1),
				`"list": {"state": "ENABLED", "variants": {"a": [1, 2]}, "defaultVariant": "a"}`,
				`"fresh": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a"}`, 1), `"team": "web"`, `"team": "mobile"`, 1),
			change{"static-on": "update", "static-off": "update", "no-default": "update", "disabled": "update", "color": "update", "broken": "update",
				"ratio": "update", "limit": "update", "theme": "update", "fresh": "update"}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			h.load(t, st.doc)
			ev := recvTimeout(t, stream.Recv, 5*time.Second)
			if ev.GetType() != "configuration_change" {
				t.Fatalf("event %q, want configuration_change", ev.GetType())
			}
			flags, _ := ev.GetData().AsMap()["flags"].(map[string]any)
			got := change{}
			for k, v := range flags {
				m, _ := v.(map[string]any)
				typ, _ := m["type"].(string)
				got[k] = typ
				if m["source"] != "test" || m["flagKey"] != k {
					t.Errorf("%s: event data %v", k, m)
				}
			}
			if !equalJSON(got, st.want) {
				t.Fatalf("changed flags %v, want %v", got, st.want)
			}
		})
	}
}

func TestEventStreamKeepAlive(t *testing.T) {
	c := start(t, Options{Source: newDocHolder(t, testFlags), KeepAlive: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := c.eval.EventStream(ctx, &evalv1.EventStreamRequest{})
	if err != nil {
		t.Fatal(err)
	}
	recvTimeout(t, stream.Recv, 5*time.Second) // provider_ready
	if ev := recvTimeout(t, stream.Recv, 5*time.Second); ev.GetType() != "keep_alive" {
		t.Fatalf("event %q, want keep_alive", ev.GetType())
	}
}

func checkFlagdShape(t *testing.T, js string) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal([]byte(js), &doc); err != nil {
		t.Fatalf("synced set is not JSON: %v", err)
	}
	for k := range doc {
		switch k {
		case "$schema", "$evaluators", "metadata", "flags":
		default:
			t.Errorf("top-level member %q is not in flagd's schema", k)
		}
	}
	flags, _ := doc["flags"].(map[string]any)
	for key, f := range flags {
		for field := range f.(map[string]any) {
			switch field {
			case "state", "variants", "defaultVariant", "targeting", "metadata":
			default:
				t.Errorf("flags.%s.%s is not in flagd's schema", key, field)
			}
		}
	}
	// It must load as a flag document again (config validates flagd's format).
	if _, err := config.Parse([]byte(js)); err != nil {
		t.Fatalf("synced set does not parse: %v", err)
	}
	return doc
}

func TestSyncFlagsFollowsFileChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flags.json")
	checkout, err := os.ReadFile("../examples/checkout.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, checkout, 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := flagsync.NewFileSource(flagsync.FileOptions{Path: path, Interval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { defer close(runDone); src.Run(runCtx) }()
	t.Cleanup(func() { stopRun(); <-runDone })
	docs, err := NewFileDocuments(src, path)
	if err != nil {
		t.Fatal(err)
	}
	c := start(t, Options{Source: src, Documents: docs})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := c.sync.SyncFlags(ctx, &syncv1.SyncFlagsRequest{ProviderId: "test"})
	if err != nil {
		t.Fatal(err)
	}
	first := recvTimeout(t, stream.Recv, 5*time.Second)
	doc := checkFlagdShape(t, first.GetFlagConfiguration())
	if n := len(doc["flags"].(map[string]any)); n != 6 {
		t.Fatalf("synced %d flags, want checkout's 6", n)
	}
	if md := first.GetSyncContext().AsMap(); md["flagSet"] != "checkout" || md["team"] != "commerce" {
		t.Errorf("sync_context %v, want the flag-set metadata", md)
	}
	if !strings.Contains(first.GetFlagConfiguration(), `"$evaluators":{"internalUser"`) {
		t.Errorf("$evaluators not synced: %s", first.GetFlagConfiguration())
	}
	fetched, err := c.sync.FetchAllFlags(callCtx(t), &syncv1.FetchAllFlagsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if fetched.GetFlagConfiguration() != first.GetFlagConfiguration() {
		t.Errorf("FetchAllFlags differs from the stream's set")
	}
	md, err := c.sync.GetMetadata(callCtx(t), &syncv1.GetMetadataRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if m := md.GetMetadata().AsMap(); m["pennonVersion"] != "1" || m["flagSet"] != "checkout" || m["pennonSource"] != "test" {
		t.Errorf("GetMetadata %v", m)
	}

	// Turn performance-mode off for everyone: the stream sends the new set.
	changed := strings.Replace(string(checkout), `"defaultVariant": "balanced"`, `"defaultVariant": "safe"`, 1)
	if err := os.WriteFile(path, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	next := recvTimeout(t, stream.Recv, 5*time.Second)
	doc = checkFlagdShape(t, next.GetFlagConfiguration())
	pm := doc["flags"].(map[string]any)["performance-mode"].(map[string]any)
	if pm["defaultVariant"] != "safe" {
		t.Fatalf("performance-mode after the change: %v", pm)
	}

	// A file that fails validation is rejected by the source; the stream
	// sends nothing and FetchAllFlags still returns the last good set.
	if err := os.WriteFile(path, []byte(`{"flags": {"x": {"state": "MAYBE"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	waitForStatus(t, src)
	fetched, err = c.sync.FetchAllFlags(callCtx(t), &syncv1.FetchAllFlagsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if fetched.GetFlagConfiguration() != next.GetFlagConfiguration() {
		t.Errorf("after a rejected file the set changed")
	}
}

// waitForStatus waits until the file source reports a rejected load.
func waitForStatus(t *testing.T, src *flagsync.FileSource) {
	t.Helper()
	checkfor.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		b, _ := json.Marshal(src.Status())
		if !strings.Contains(string(b), "invalid") {
			return fmt.Errorf("source has not rejected the file: %s", b)
		}
		return nil
	})
}

// TestNotReadyUntilLoaded: before the first flag set, calls answer
// Unavailable (PROVIDER_NOT_READY) and provider_ready waits for the set.
func TestNotReadyUntilLoaded(t *testing.T) {
	h := &docHolder{}
	c := start(t, Options{Source: h})
	_, err := c.eval.ResolveBoolean(callCtx(t), &evalv1.ResolveBooleanRequest{FlagKey: "static-on"})
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "PROVIDER_NOT_READY") {
		t.Fatalf("before load: %v", err)
	}
	if _, err := c.eval.ResolveAll(callCtx(t), &evalv1.ResolveAllRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("ResolveAll before load: %v", err)
	}
	if _, err := c.sync.FetchAllFlags(callCtx(t), &syncv1.FetchAllFlagsRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("FetchAllFlags before load: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := c.eval.EventStream(ctx, &evalv1.EventStreamRequest{})
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan string, 4)
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				close(events)
				return
			}
			events <- ev.GetType()
		}
	}()
	flagStream, err := c.sync.SyncFlags(ctx, &syncv1.SyncFlagsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// Nothing may arrive before the load; a short wait shows none did.
	select {
	case ev := <-events:
		t.Fatalf("event %q before any flag set was loaded", ev)
	case <-time.After(100 * time.Millisecond):
	}
	h.load(t, testFlags)
	select {
	case ev := <-events:
		if ev != "provider_ready" {
			t.Fatalf("first event %q, want provider_ready", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no provider_ready after the load")
	}
	if first := recvTimeout(t, flagStream.Recv, 5*time.Second); !strings.Contains(first.GetFlagConfiguration(), `"static-on"`) {
		t.Fatalf("SyncFlags after the load: %s", first.GetFlagConfiguration())
	}
	if r, err := c.eval.ResolveBoolean(callCtx(t), &evalv1.ResolveBooleanRequest{FlagKey: "static-on"}); err != nil || !r.GetValue() {
		t.Fatalf("after load: %v %v", r, err)
	}
}
