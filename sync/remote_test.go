package flagsync

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/control"
	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/examples"
	"github.com/pennon-dev/pennon/internal/checkfor"
	"github.com/pennon-dev/pennon/internal/faultnet"
	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/internal/sign"
	"github.com/pennon-dev/pennon/proxy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreTopFunction("github.com/dgraph-io/ristretto/v2.(*defaultPolicy[...]).processItems"),
		goleak.IgnoreTopFunction("github.com/dgraph-io/ristretto/v2.(*Cache[...]).processItems"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"), // idle keep-alive conns of http.DefaultClient
	)
}

// cluster is a real control plane: embedded JetStream, store, admin API and
// heartbeats, with env "dev" holding the checkout example.
type cluster struct {
	ns      *natsrun.Server
	reg     *Registry
	api2    *control.Server
	nats    string
	api     string
	token   string // viewer on dev
	admin   string
	store   *config.Store
	key     *sign.Key
	toks    *control.Tokens
	stop    func()
	stopped bool
}

func startCluster(t *testing.T, opts ...func(*control.Options)) *cluster {
	t.Helper()
	ctx := context.Background()
	ns := natsrun.StartTest(t)
	nc := natsrun.ConnectTest(t, ns)
	js, _ := jetstream.New(nc)
	key, err := sign.Generate() // the control plane signs; sidecars verify
	if err != nil {
		t.Fatal(err)
	}
	store, err := config.OpenStore(ctx, js, config.StoreOptions{Signer: key})
	if err != nil {
		t.Fatal(err)
	}
	toks, err := control.OpenTokens(ctx, js, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	viewer, _, _ := toks.Create(ctx, "sidecar", map[string]string{"dev": "viewer"}, 0, "test")
	admin, _, _ := toks.Create(ctx, "admin", map[string]string{"*": "admin"}, 0, "test")
	if err := store.CreateEnv(ctx, config.EnvSettings{Name: "dev"}); err != nil {
		t.Fatal(err)
	}
	doc, _ := config.Parse(examples.Checkout)
	if _, err := store.Commit(ctx, config.LoadChangeset("dev", doc, "test", "")); err != nil {
		t.Fatal(err)
	}
	reg, _ := NewRegistry(nc, RegistryOptions{Verifier: ns.Keys, Envs: store.EnvNames, LostAfter: time.Second})
	apiOpts := control.Options{Addr: "127.0.0.1:0", Store: store, Tokens: toks, Sidecars: reg, JetStream: js, NATS: ns.Keys,
		Signer: key, Trust: sign.NewTrust(key.Public())}
	for _, o := range opts {
		o(&apiOpts)
	}
	api, err := control.New(apiOpts)
	if err != nil {
		t.Fatal(err)
	}
	if err := api.Listen(); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = api.Serve(rctx) }()
	go func() { defer wg.Done(); RunHeartbeats(rctx, nc, store, 50*time.Millisecond, zap.NewNop()) }()
	c := &cluster{ns: ns, reg: reg, api2: api, nats: ns.ClientURL(), api: "http://" + api.Addr(), token: viewer, admin: admin, store: store, key: key, toks: toks}
	c.stop = func() {
		if c.stopped {
			return
		}
		c.stopped = true
		cancel()
		wg.Wait()
		reg.Close()
		nc.Close()
	}
	t.Cleanup(c.stop)
	return c
}

// setDefault commits a new default variant for performance-mode.
func (c *cluster) setDefault(t *testing.T, variant string) uint64 {
	t.Helper()
	ctx := context.Background()
	head, err := c.store.Head(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	def := fmt.Sprintf(`{"state":"ENABLED","variants":{"fast":"fast","balanced":"balanced","safe":"safe"},"defaultVariant":%q}`, variant)
	cs, err := c.store.Commit(ctx, &config.Changeset{Env: "dev", Author: "test", Changes: []config.Change{{Flag: "performance-mode", Op: config.OpPut, Definition: []byte(def), BaseVersion: head.FlagVersion("performance-mode")}}})
	if err != nil {
		t.Fatal(err)
	}
	return cs.Version
}

type sidecar struct {
	r    *Remote
	stop func()
}

func startSidecar(t *testing.T, o RemoteOptions) *sidecar {
	t.Helper()
	return startSidecarWith(t, o, nil)
}

// startSidecarWith is startSidecar with setup run on the Remote before Run.
func startSidecarWith(t *testing.T, o RemoteOptions, setup func(*Remote)) *sidecar {
	t.Helper()
	if o.Env == "" {
		o.Env = "dev"
	}
	if o.PollInterval == 0 {
		o.PollInterval = 100 * time.Millisecond
	}
	if o.SilenceAfter == 0 {
		o.SilenceAfter = 300 * time.Millisecond
	}
	if o.LeaseFor == 0 {
		o.LeaseFor = 200 * time.Millisecond
	}
	o.HTTPTimeout = 500 * time.Millisecond
	r, err := NewRemote(o)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	s := &sidecar{r: r, stop: func() { cancel(); <-done }}
	t.Cleanup(s.stop)
	return s
}

func (s *sidecar) perf() string {
	snap := s.r.Current()
	if snap == nil {
		return "<none>"
	}
	return snap.Evaluate("performance-mode", evaluator.NewContext()).Variant
}

func (s *sidecar) version() uint64 {
	if snap := s.r.Current(); snap != nil {
		return snap.Version()
	}
	return 0
}

func state(s *sidecar) string { return s.r.Status().(RemoteStatus).State }

func TestChangeReachesEverySidecar(t *testing.T) {
	c := startCluster(t)
	var cars []*sidecar
	for i := 0; i < 5; i++ {
		cars = append(cars, startSidecar(t, RemoteOptions{ServerURL: c.api, NATSURL: c.nats, Token: c.token, ID: fmt.Sprint("car-", i)}))
	}
	for _, s := range cars {
		checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if state(s) != StatePush || s.version() != 1 {
				return fmt.Errorf("state %s version %d", state(s), s.version())
			}
			return nil
		})
	}
	v := c.setDefault(t, "safe")
	for _, s := range cars {
		checkfor.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
			if s.perf() != "safe" || s.version() != v {
				return fmt.Errorf("got %s at %d", s.perf(), s.version())
			}
			return nil
		})
	}
	// Every sidecar reports itself, none behind.
	checkfor.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		req, _ := http.NewRequest("GET", c.api+"/api/v1/envs/dev/sidecars", nil)
		req.Header.Set("Authorization", "Bearer "+c.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var out struct {
			Sidecars []config.SidecarReport
			Behind   []string
		}
		json.NewDecoder(resp.Body).Decode(&out)
		if len(out.Sidecars) != 5 || len(out.Behind) != 0 {
			return fmt.Errorf("%d sidecars, behind %v", len(out.Sidecars), out.Behind)
		}
		return nil
	})
	http.DefaultClient.CloseIdleConnections()
}

func TestNATSDownPollingTakesOverThenPushResumes(t *testing.T) {
	c := startCluster(t)
	fp, err := faultnet.New(strings.TrimPrefix(c.nats, "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	defer fp.Close()
	s := startSidecar(t, RemoteOptions{ServerURL: c.api, NATSURL: "nats://" + fp.Addr(), Token: c.token})
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if state(s) != StatePush {
			return fmt.Errorf("state %s", state(s))
		}
		return nil
	})
	fp.Cut()
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if state(s) != StatePolling {
			return fmt.Errorf("state %s", state(s))
		}
		return nil
	})
	// Evaluations never fail, and a change arrives by polling.
	if s.perf() != "balanced" {
		t.Fatalf("serving %s", s.perf())
	}
	committed := time.Now()
	v := c.setDefault(t, "fast")
	checkfor.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if s.version() != v {
			return fmt.Errorf("version %d", s.version())
		}
		return nil
	})
	t.Logf("change arrived by polling after %v (poll interval 100ms ± 20%%)", time.Since(committed))
	fp.Restore()
	v = c.setDefault(t, "safe")
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if state(s) != StatePush || s.version() != v {
			return fmt.Errorf("state %s version %d", state(s), s.version())
		}
		return nil
	})
}

func TestDiskThenDefaultsWhenEverythingIsDown(t *testing.T) {
	dir := t.TempDir()
	c := startCluster(t)
	s := startSidecar(t, RemoteOptions{ServerURL: c.api, NATSURL: c.nats, Token: c.token, StateDir: dir})
	v := c.setDefault(t, "safe")
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s.version() != v {
			return fmt.Errorf("version %d", s.version())
		}
		if _, err := readLKG(dir, "dev"); err != nil {
			return err
		}
		return nil
	})
	s.stop()
	c.stop()

	defaults := filepath.Join(dir, "defaults.json")
	os.WriteFile(defaults, []byte(`{"flags":{"performance-mode":{"state":"ENABLED","variants":{"safe":"safe"},"defaultVariant":"safe"}}}`), 0o600)
	dead := "http://127.0.0.1:1" // nothing listens on port 1
	// Control plane and NATS both down at start: the disk copy serves.
	s2 := startSidecar(t, RemoteOptions{ServerURL: dead, NATSURL: "nats://127.0.0.1:1", Token: c.token, StateDir: dir, Defaults: defaults})
	if state(s2) != StateDisk && state(s2) != StatePolling {
		checkfor.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
			if state(s2) != StateDisk {
				return fmt.Errorf("state %s: %+v", state(s2), s2.r.Status())
			}
			return nil
		})
	}
	if s2.perf() != "safe" || s2.version() != v {
		t.Fatalf("disk copy: %s at %d", s2.perf(), s2.version())
	}
	if ok, detail := s2.r.Ready(); !ok || !strings.Contains(detail, "last known good") {
		t.Fatalf("ready %v %s", ok, detail)
	}
	s2.stop()

	// A corrupt disk copy is reported and ignored: the defaults serve.
	os.WriteFile(lkgPath(dir, "dev"), []byte(`{"checksum":"00","record":{}}`), 0o600)
	s3 := startSidecar(t, RemoteOptions{ServerURL: dead, Token: c.token, StateDir: dir, Defaults: defaults})
	checkfor.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if state(s3) != StateDefaults {
			return fmt.Errorf("state %s", state(s3))
		}
		return nil
	})
	r := s3.r.Current().Evaluate("performance-mode", evaluator.NewContext())
	if r.Variant != "safe" || r.Metadata["pennonSource"] != "defaults" {
		t.Fatalf("defaults answer %+v", r)
	}
	if st := s3.r.Status().(RemoteStatus); !strings.Contains(st.DiskError, "checksum") {
		t.Fatalf("corrupt copy not reported: %+v", st)
	}
}

// TestInjectedGapDuplicateReorder publishes real changesets again on the live
// subject, duplicated, out of order and with a gap: the sidecar must end at
// the store's head with the same hash.
func TestInjectedGapDuplicateReorder(t *testing.T) {
	c := startCluster(t)
	s := startSidecar(t, RemoteOptions{ServerURL: c.api, NATSURL: c.nats, Token: c.token})
	for _, v := range []string{"fast", "safe", "balanced", "fast"} {
		c.setDefault(t, v)
	}
	ctx := context.Background()
	nc := natsrun.ConnectTest(t, c.ns)
	head, _ := c.store.Head(ctx, "dev")
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s.version() != head.Version {
			return fmt.Errorf("version %d", s.version())
		}
		return nil
	})
	republish := func(v uint64) {
		cs, err := c.store.Changeset(ctx, "dev", v)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(cs)
		m := nats.NewMsg(config.LiveSubject("dev"))
		m.Data = b
		m.Header.Set("Nats-Sequence", fmt.Sprint(v))
		m.Header.Set("Nats-Last-Sequence", fmt.Sprint(v-1))
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	// Duplicates and old versions: ignored.
	for _, v := range []uint64{head.Version, 2, head.Version, 3} {
		republish(v)
	}
	// Commit two more while injecting the newer one first (a gap) and a
	// malformed message.
	v1 := c.setDefault(t, "safe")
	v2 := c.setDefault(t, "balanced")
	republish(v2)
	republish(v1)
	bad := nats.NewMsg(config.LiveSubject("dev"))
	bad.Data = []byte("{not json")
	bad.Header.Set("Nats-Sequence", fmt.Sprint(v2+5))
	nc.PublishMsg(bad)
	final, _ := c.store.Head(ctx, "dev")
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		st := s.r.Status().(RemoteStatus)
		if st.Version != final.Version || st.Hash != final.Hash {
			return fmt.Errorf("at %d %s, want %d %s", st.Version, st.Hash, final.Version, final.Hash)
		}
		return nil
	})
	if s.perf() != "balanced" {
		t.Fatalf("serving %s", s.perf())
	}
}

// TestAlwaysFreshFailClosed: payment-api-v2 is always-fresh with failMode
// closed. With no lease and an unreachable control plane, the sidecar serves
// its safeVariant's value with reason STALE, over real HTTP.
func TestAlwaysFreshFailClosed(t *testing.T) {
	dir := t.TempDir()
	c := startCluster(t)
	s := startSidecar(t, RemoteOptions{ServerURL: c.api, NATSURL: c.nats, Token: c.token, StateDir: dir})
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if st := s.r.Status().(RemoteStatus); !st.LeaseValid {
			return fmt.Errorf("no lease yet: %+v", st)
		}
		return nil
	})
	ask := func(src proxy.Source) string {
		srv, err := proxy.New(proxy.Options{Addr: "127.0.0.1:0", Source: src, CacheBytes: -1})
		if err != nil {
			t.Fatal(err)
		}
		srv.Listen()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx) }()
		defer func() { cancel(); <-done }()
		resp, err := http.Post("http://"+srv.Addr()+"/ofrep/v1/evaluate/flags/payment-api-v2", "application/json",
			strings.NewReader(`{"context":{"targetingKey":"u1","email":"ann@pennon.dev"}}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		b, _ := json.Marshal(body)
		http.DefaultClient.CloseIdleConnections()
		return string(b)
	}
	if got := ask(s.r); !strings.Contains(got, `"variant":"on"`) {
		t.Fatalf("under a lease: %s", got)
	}
	s.stop()
	c.stop()
	s2 := startSidecar(t, RemoteOptions{ServerURL: "http://127.0.0.1:1", Token: c.token, StateDir: dir})
	// The control plane is tried first; the disk copy is served once that fails.
	checkfor.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if s2.r.Current() == nil {
			return fmt.Errorf("nothing served yet")
		}
		return nil
	})
	got := ask(s2.r)
	// The safe variant's value, as a success (HTTP 200 shape), saying why.
	if !strings.Contains(got, `"variant":"off"`) || !strings.Contains(got, `"value":false`) || !strings.Contains(got, `"reason":"STALE"`) ||
		!strings.Contains(got, `"pennonFailMode":"closed"`) || strings.Contains(got, "errorCode") {
		t.Fatalf("want the safe variant's value with reason STALE, got %s", got)
	}
}
