package flagsync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/internal/checkfor"
	"github.com/pennon-dev/pennon/proxy"
)

// TestFreshGate: concurrent callers share one check; a finished check's
// outcome is reused for the window without a new check; a waiter gives up on
// its own deadline while the check goes on.
func TestFreshGate(t *testing.T) {
	errDown := errors.New("control plane down")
	tests := []struct {
		name    string
		outcome error
	}{
		{"success", nil},
		{"failure", errDown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var g freshGate
			var calls atomic.Int32
			release := make(chan struct{})
			check := func(context.Context) error {
				calls.Add(1)
				<-release
				return tc.outcome
			}
			const window = 150 * time.Millisecond
			var wg sync.WaitGroup
			errs := make([]error, 50)
			for i := range errs {
				wg.Add(1)
				go func() { defer wg.Done(); errs[i] = g.do(context.Background(), window, check) }()
			}
			checkfor.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
				if calls.Load() != 1 {
					return fmt.Errorf("%d checks started", calls.Load())
				}
				return nil
			})
			// A caller whose own deadline ends first gives up without
			// disturbing the check in flight.
			short, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
			if err := g.do(short, window, check); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("waiter past its deadline got %v", err)
			}
			cancel()
			close(release)
			wg.Wait()
			for i, err := range errs {
				if !errors.Is(err, tc.outcome) {
					t.Fatalf("caller %d got %v, want %v", i, err, tc.outcome)
				}
			}
			// Within the window the outcome is reused: no new check.
			if err := g.do(context.Background(), window, check); !errors.Is(err, tc.outcome) || calls.Load() != 1 {
				t.Fatalf("within the window: err %v after %d checks", err, calls.Load())
			}
			// After it, the next caller checks again.
			checkfor.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
				_ = g.do(context.Background(), window, check)
				if calls.Load() != 2 {
					return fmt.Errorf("%d checks", calls.Load())
				}
				return nil
			})
			if got := g.checks.Load(); got != 2 {
				t.Fatalf("gate counted %d checks", got)
			}
		})
	}
}

// countingPlane sits in front of a real control plane's API and counts the
// snapshot requests sidecars make. Frozen, it accepts requests and never
// answers them (a hung control plane), until the client gives up.
type countingPlane struct {
	snapshots atomic.Int64
	frozen    atomic.Bool
	url       string
}

func newCountingPlane(t *testing.T, api string) *countingPlane {
	t.Helper()
	target, err := url.Parse(api)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = tr
	cp := &countingPlane{}
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/snapshot") {
			cp.snapshots.Add(1)
		}
		if cp.frozen.Load() {
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		rp.ServeHTTP(w, r)
	}))
	cp.url = srv.URL
	t.Cleanup(func() {
		close(release)
		srv.Close()
		tr.CloseIdleConnections()
	})
	return cp
}

// startPatientSidecar is startSidecar with a control-plane timeout long
// enough that a slow answer on a loaded test machine is still an answer.
func startPatientSidecar(t *testing.T, o RemoteOptions) *sidecar {
	t.Helper()
	o.Env = "dev"
	o.HTTPTimeout = 5 * time.Second
	r, err := NewRemote(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	s := &sidecar{r: r, stop: func() { cancel(); <-done }}
	t.Cleanup(s.stop)
	return s
}

// serveSidecar runs the sidecar's HTTP server over r until the test ends;
// freshTimeout 0 keeps the server's default.
func serveSidecar(t *testing.T, r *Remote, freshTimeout time.Duration) string {
	t.Helper()
	srv, err := proxy.New(proxy.Options{Addr: "127.0.0.1:0", Source: r, CacheBytes: -1, FreshTimeout: freshTimeout})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return "http://" + srv.Addr()
}

// hammer makes n POSTs to url from workers goroutines and returns how many
// times each distinct (status, body) came back, and how long it took.
func hammer(t *testing.T, url, body string, n, workers int) (map[string]int, time.Duration) {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: workers}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var next atomic.Int64
	var mu sync.Mutex
	seen := map[string]int{}
	var failed atomic.Value
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				resp, err := client.Post(url, "application/json", strings.NewReader(body))
				if err != nil {
					failed.Store(err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				mu.Lock()
				seen[fmt.Sprintf("%d %s", resp.StatusCode, b)]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		t.Fatalf("request failed: %v", err)
	}
	return seen, time.Since(start)
}

// ofrepAnswer is the part of an OFREP evaluation the app acts on.
type ofrepAnswer struct {
	Key       string         `json:"key"`
	Value     any            `json:"value"`
	Variant   string         `json:"variant"`
	Reason    string         `json:"reason"`
	ErrorCode string         `json:"errorCode"`
	Metadata  map[string]any `json:"metadata"`
}

// TestAlwaysFreshLoadIsBoundedByTime: with push down, 2,000 concurrent
// evaluations of an always-fresh flag make a number of snapshot requests
// bounded by the elapsed time (docs/sync.md, "Bounded control-plane load"),
// not by the number of evaluations — with the control plane answering, and
// with it frozen under the flag's failMode closed (every answer is then the
// safeVariant's value, HTTP 200).
func TestAlwaysFreshLoadIsBoundedByTime(t *testing.T) {
	const (
		n            = 2000
		workers      = 16
		leaseFor     = 200 * time.Millisecond
		pollInterval = time.Second
	)
	tests := []struct {
		name   string
		frozen bool
		// freshTimeout: generous when the control plane answers, so a slow
		// answer on a loaded test machine is not a fail-closed answer.
		freshTimeout time.Duration
		want         ofrepAnswer // metadata: keys that must be present with these values
	}{
		{"control plane answers", false, 5 * time.Second, ofrepAnswer{Key: "payment-api-v2", Value: true, Variant: "on", Reason: "TARGETING_MATCH",
			Metadata: map[string]any{"flagSet": "checkout", "team": "commerce"}}},
		{"control plane frozen, fail closed", true, 0, ofrepAnswer{Key: "payment-api-v2", Value: false, Variant: "off", Reason: "STALE",
			Metadata: map[string]any{"flagSet": "checkout", "team": "commerce", "pennonFailMode": "closed"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := startCluster(t)
			cp := newCountingPlane(t, c.api)
			// No NATS: push is down for the whole test.
			o := RemoteOptions{ServerURL: cp.url, Token: c.token, LeaseFor: leaseFor, PollInterval: pollInterval}
			var s *sidecar
			if tc.frozen {
				s = startSidecar(t, o) // 500 ms control-plane timeout
			} else {
				s = startPatientSidecar(t, o)
			}
			checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
				if s.version() != 1 {
					return fmt.Errorf("version %d", s.version())
				}
				return nil
			})
			cp.frozen.Store(tc.frozen)
			checkfor.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
				if st := s.r.Status().(RemoteStatus); tc.frozen && st.LeaseValid {
					return errors.New("lease still valid")
				}
				return nil
			})
			base := serveSidecar(t, s.r, tc.freshTimeout)
			before := cp.snapshots.Load()
			seen, took := hammer(t, base+"/ofrep/v1/evaluate/flags/payment-api-v2",
				`{"context":{"targetingKey":"u1","email":"ann@pennon.dev"}}`, n, workers)
			requests := cp.snapshots.Load() - before

			// polling loop: one per PollInterval-20% (+1 in flight at the
			// start); freshness checks: one per window (+1); +1 for a poll or
			// check that began just before the load.
			window := min(leaseFor, time.Second)
			bound := int64(1+took/(pollInterval*8/10)) + int64(1+took/window) + 1
			t.Logf("%d evaluations in %v made %d snapshot requests (bound %d)", n, took, requests, bound)
			if requests > bound {
				t.Fatalf("%d snapshot requests for %d evaluations in %v: want at most %d", requests, n, took, bound)
			}
			total := 0
			for k, count := range seen {
				total += count
				status, body, _ := strings.Cut(k, " ")
				var got ofrepAnswer
				if err := json.Unmarshal([]byte(body), &got); err != nil || status != "200" {
					t.Fatalf("%s: %s (%v)", status, body, err)
				}
				if got.Key != tc.want.Key || got.Value != tc.want.Value || got.Variant != tc.want.Variant || got.Reason != tc.want.Reason || got.ErrorCode != "" {
					t.Fatalf("answer %s\nwant %+v", body, tc.want)
				}
				for mk, mv := range tc.want.Metadata {
					if got.Metadata[mk] != mv {
						t.Fatalf("metadata %s = %v, want %v in %s", mk, got.Metadata[mk], mv, body)
					}
				}
				if why, _ := got.Metadata["pennonFailReason"].(string); tc.frozen && why == "" {
					t.Fatalf("fail-closed answer does not say why: %s", body)
				}
			}
			if total != n {
				t.Fatalf("%d answers for %d requests", total, n)
			}
		})
	}
}

// TestBulkChecksFreshnessOnce: a bulk evaluation with two always-fresh flags
// and no lease makes one snapshot request, not one per flag, and answers both
// from the control plane's confirmed flag set.
func TestBulkChecksFreshnessOnce(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	head, err := c.store.Head(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	def := `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","propagation":"always-fresh","failMode":"open"}`
	if _, err := c.store.Commit(ctx, &config.Changeset{Env: "dev", Author: "test", Changes: []config.Change{{Flag: "kill-switch", Op: config.OpPut, Definition: []byte(def), BaseVersion: head.FlagVersion("kill-switch")}}}); err != nil {
		t.Fatal(err)
	}
	cp := newCountingPlane(t, c.api)
	s := startSidecar(t, RemoteOptions{ServerURL: cp.url, Token: c.token, LeaseFor: 50 * time.Millisecond, PollInterval: time.Hour})
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if st := s.r.Status().(RemoteStatus); s.version() != 2 || st.LeaseValid {
			return fmt.Errorf("version %d, lease %v", s.version(), st.LeaseValid)
		}
		return nil
	})
	base := serveSidecar(t, s.r, 5*time.Second)
	before := cp.snapshots.Load()
	seen, _ := hammer(t, base+"/ofrep/v1/evaluate/flags", `{"context":{"targetingKey":"u1","email":"ann@pennon.dev"}}`, 1, 1)
	if got := cp.snapshots.Load() - before; got != 1 {
		t.Fatalf("one bulk request made %d snapshot requests, want 1", got)
	}
	for k := range seen {
		status, body, _ := strings.Cut(k, " ")
		var out struct{ Flags []ofrepAnswer }
		if err := json.Unmarshal([]byte(body), &out); err != nil || status != "200" {
			t.Fatalf("%s %s (%v)", status, body, err)
		}
		want := map[string]ofrepAnswer{
			"payment-api-v2": {Value: true, Variant: "on", Reason: "TARGETING_MATCH"},
			"kill-switch":    {Value: true, Variant: "on", Reason: "STATIC"},
		}
		for _, f := range out.Flags {
			w, ok := want[f.Key]
			if !ok {
				continue
			}
			delete(want, f.Key)
			if f.Value != w.Value || f.Variant != w.Variant || f.Reason != w.Reason || f.Metadata["pennonFailMode"] != nil {
				t.Fatalf("%s: %+v, want %+v", f.Key, f, w)
			}
		}
		if len(want) != 0 {
			t.Fatalf("missing from the bulk answer: %v", want)
		}
	}
}

// TestFailOpenServesLastKnownValueMarkedStale: an always-fresh flag with
// failMode open, control plane gone: the last known (targeted) value, HTTP
// 200, reason STALE, metadata saying so — single and bulk.
func TestFailOpenServesLastKnownValueMarkedStale(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	head, err := c.store.Head(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	def := `{"state":"ENABLED","variants":{"red":"red","blue":"blue"},"defaultVariant":"blue","propagation":"always-fresh","failMode":"open",
		"targeting":{"if":[{"==":[{"var":"plan"},"premium"]},"red","blue"]}}`
	if _, err := c.store.Commit(ctx, &config.Changeset{Env: "dev", Author: "test", Changes: []config.Change{{Flag: "theme", Op: config.OpPut, Definition: []byte(def), BaseVersion: head.FlagVersion("theme")}}}); err != nil {
		t.Fatal(err)
	}
	s := startSidecar(t, RemoteOptions{ServerURL: c.api, Token: c.token, LeaseFor: 50 * time.Millisecond})
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s.version() != 2 {
			return fmt.Errorf("version %d", s.version())
		}
		return nil
	})
	c.stop()
	checkfor.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if s.r.Status().(RemoteStatus).LeaseValid {
			return errors.New("lease still valid")
		}
		return nil
	})
	base := serveSidecar(t, s.r, 0)
	body := `{"context":{"targetingKey":"u1","plan":"premium"}}`
	check := func(t *testing.T, got ofrepAnswer) {
		t.Helper()
		if got.Key != "theme" || got.Value != "red" || got.Variant != "red" || got.Reason != "STALE" || got.ErrorCode != "" ||
			got.Metadata["pennonStale"] != true || got.Metadata["pennonFailMode"] != "open" || got.Metadata["flagSet"] != "checkout" {
			t.Fatalf("got %+v", got)
		}
		if why, _ := got.Metadata["pennonFailReason"].(string); !strings.Contains(why, "control plane") {
			t.Fatalf("pennonFailReason %q", why)
		}
	}
	t.Run("single", func(t *testing.T) {
		seen, _ := hammer(t, base+"/ofrep/v1/evaluate/flags/theme", body, 1, 1)
		for k := range seen {
			status, b, _ := strings.Cut(k, " ")
			var got ofrepAnswer
			if err := json.Unmarshal([]byte(b), &got); err != nil || status != "200" {
				t.Fatalf("%s %s (%v)", status, b, err)
			}
			check(t, got)
		}
	})
	t.Run("bulk", func(t *testing.T) {
		seen, _ := hammer(t, base+"/ofrep/v1/evaluate/flags", body, 1, 1)
		for k := range seen {
			status, b, _ := strings.Cut(k, " ")
			var out struct{ Flags []ofrepAnswer }
			if err := json.Unmarshal([]byte(b), &out); err != nil || status != "200" {
				t.Fatalf("%s %s (%v)", status, b, err)
			}
			found := 0
			for _, f := range out.Flags {
				switch f.Key {
				case "theme":
					check(t, f)
					found++
				case "payment-api-v2": // always-fresh, closed: the safe value
					if f.Value != false || f.Variant != "off" || f.Reason != "STALE" || f.Metadata["pennonFailMode"] != "closed" {
						t.Fatalf("payment-api-v2: %+v", f)
					}
					found++
				case "express-checkout": // cache-first: untouched
					if f.Reason == "STALE" || f.Metadata["pennonFailMode"] != nil {
						t.Fatalf("express-checkout: %+v", f)
					}
					found++
				}
			}
			if found != 3 {
				t.Fatalf("bulk answer lacks flags: %s", b)
			}
		}
	})
}
