// Package fleet simulates a fleet of sidecars against the distributed
// deployment users would run at scale: a 3-node NATS cluster with R3
// JetStream streams and two control-plane replicas, all in this process on
// loopback. Each simulated sidecar is the real sync client
// (flagsync.Remote: NATS credentials from the control plane, pushed
// changesets, heartbeats, polling fallback, reconciliation) without the
// HTTP server in front of it, so thousands fit on a laptop.
//
// Scenarios (each reports commit → applied across every sidecar, time to
// converge, control-plane requests and CPU, sidecar states over time):
//
//   - steady: one commit per interval;
//   - restart: both control-plane replicas stop, stay down, and start
//     again; every sidecar must return to push at the new head;
//   - kill: the NATS node leading the environment's stream is stopped
//     while commits continue; every acknowledged commit must still be in
//     the stream with its content, and every sidecar must return to push;
//   - burst: commits back to back.
//
// Everything shares two cores with the NATS servers and the control
// planes, so absolute figures are pessimistic; per-sidecar costs
// (requests per minute, heap) are what extrapolate.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/internal/sign"
	flagsync "github.com/pennon-dev/pennon/sync"
)

// Env is the environment every simulated sidecar follows.
const Env = "fleet"

// counterFlag is the flag every measured commit changes.
const counterFlag = "counter"

// Scenario names, in the order Run runs them.
const (
	ScenarioSteady  = "steady"
	ScenarioRestart = "restart"
	ScenarioKill    = "kill"
	ScenarioBurst   = "burst"
)

// Scenarios lists every scenario in run order.
var Scenarios = []string{ScenarioSteady, ScenarioRestart, ScenarioKill, ScenarioBurst}

// Options bound a run. Zero values take the defaults named per field.
type Options struct {
	Sidecars      int // simulated sidecars; default 20
	NATSNodes     int // NATS cluster size; default 3 (R3 streams need 3)
	ControlPlanes int // control-plane replicas; default 2
	Flags         int // flags in the environment besides the counter; default 50

	SteadyCommits int           // default 30
	SteadyEvery   time.Duration // default 1s
	// Outage is how long both control planes stay down; default 10s
	// (longer than the sidecars' silence threshold, so they leave push).
	Outage time.Duration
	// KillCommits are committed during the node-kill scenario, one per
	// KillEvery; the node is stopped after the first third. Defaults 30
	// and 200ms.
	KillCommits  int
	KillEvery    time.Duration
	BurstCommits int // default 100

	// Heartbeat is the control planes' heartbeat interval; default 1s
	// (pennon server's default).
	Heartbeat time.Duration
	// Sidecar timing; zero keeps the sync package's defaults (what a
	// deployed sidecar runs with).
	PollInterval   time.Duration
	ReconcileEvery time.Duration
	SilenceAfter   time.Duration
	LeaseFor       time.Duration

	// StartRate is how many sidecars start per second (a fleet rolling
	// out, not a thundering herd of cold starts); default 200.
	StartRate int
	// ConvergeTimeout bounds every wait for the fleet to converge;
	// default 2m.
	ConvergeTimeout time.Duration
	// Scenarios to run, a subset of Scenarios; default all.
	Scenarios []string

	Logger   *zap.Logger // control planes; default none
	Progress io.Writer   // one line per step; nil: quiet
}

func (o *Options) defaults() error {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.Sidecars, 20)
	def(&o.NATSNodes, 3)
	def(&o.ControlPlanes, 2)
	def(&o.Flags, 50)
	def(&o.SteadyCommits, 30)
	defD(&o.SteadyEvery, time.Second)
	defD(&o.Outage, 10*time.Second)
	def(&o.KillCommits, 30)
	defD(&o.KillEvery, 200*time.Millisecond)
	def(&o.BurstCommits, 100)
	defD(&o.Heartbeat, time.Second)
	def(&o.StartRate, 200)
	defD(&o.ConvergeTimeout, 2*time.Minute)
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if len(o.Scenarios) == 0 {
		o.Scenarios = Scenarios
	}
	for _, s := range o.Scenarios {
		known := false
		for _, k := range Scenarios {
			known = known || s == k
		}
		if !known {
			return fmt.Errorf("scenarios: unknown %q (allowed: steady, restart, kill, burst)", s)
		}
	}
	if o.NATSNodes < 3 {
		return fmt.Errorf("nats nodes: %d cannot carry R3 streams; use 3 or more", o.NATSNodes)
	}
	return nil
}

// harness is everything one run starts.
type harness struct {
	o       Options
	dir     string
	cluster *natsrun.Cluster
	key     *sign.Key
	trust   *sign.Trust
	cps     []*controlPlane
	token   string
	carsMu  sync.Mutex // cars grows while the start-up sampler reads it
	cars    []*car
	mon     *nats.Conn // control-plane identity: counts reports, reads the stream
	monJS   jetstream.JetStream
	reports atomic.Int64

	commitMu   sync.Mutex
	seq        int    // commits attempted (values and replica choice)
	counterVer uint64 // the counter flag's version: the next commit's base
	head       atomic.Uint64
}

func (h *harness) progress(format string, args ...any) {
	if h.o.Progress != nil {
		fmt.Fprintf(h.o.Progress, "fleet: "+format+"\n", args...)
	}
}

// Run starts the cluster, the control planes and the fleet, runs the
// scenarios in order and tears everything down.
func Run(ctx context.Context, o Options) (*Result, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pennon-fleet-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	h := &harness{o: o, dir: dir}
	defer h.close()
	res := &Result{Sidecars: o.Sidecars, NATSNodes: o.NATSNodes, ControlPlanes: o.ControlPlanes, Flags: o.Flags,
		GOMAXPROCS: runtime.GOMAXPROCS(0), NumCPU: runtime.NumCPU(), GoVersion: runtime.Version(), Started: time.Now().UTC(),
		Heartbeat: o.Heartbeat.String(), PollInterval: durOrDefault(o.PollInterval, "5s"), ReconcileEvery: durOrDefault(o.ReconcileEvery, "30s"),
		SilenceAfter: durOrDefault(o.SilenceAfter, "3s"), LeaseFor: durOrDefault(o.LeaseFor, "3s")}
	if err := h.setup(ctx); err != nil {
		return nil, err
	}
	if res.Startup, err = h.startFleet(ctx); err != nil {
		return res, err
	}
	for _, name := range o.Scenarios {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		var sr *ScenarioResult
		switch name {
		case ScenarioSteady:
			sr, err = h.steady(ctx)
		case ScenarioRestart:
			sr, err = h.restart(ctx)
		case ScenarioKill:
			sr, err = h.kill(ctx)
		case ScenarioBurst:
			sr, err = h.burst(ctx)
		}
		if sr != nil {
			res.Scenarios = append(res.Scenarios, sr)
			h.progress("%s", sr.Summary())
		}
		if err != nil {
			return res, fmt.Errorf("scenario %s: %w", name, err)
		}
	}
	return res, nil
}

func durOrDefault(d time.Duration, def string) string {
	if d <= 0 {
		return def + " (sync default)"
	}
	return d.String()
}

// setup starts the NATS cluster and the control planes, creates the
// environment with its flags and the sidecars' viewer token.
func (h *harness) setup(ctx context.Context) error {
	var err error
	h.progress("starting a %d-node NATS cluster", h.o.NATSNodes)
	if h.cluster, err = natsrun.StartCluster(natsrun.ClusterOptions{DataDir: h.dir, Nodes: h.o.NATSNodes, Name: "fleet"}); err != nil {
		return err
	}
	if h.key, err = sign.Generate(); err != nil {
		return err
	}
	h.trust = sign.NewTrust(h.key.Public())
	if h.mon, err = h.cluster.Connect(0, nats.Name("fleet-monitor")); err != nil {
		return fmt.Errorf("monitor connection: %w", err)
	}
	h.monJS, _ = jetstream.New(h.mon)
	if _, err := h.mon.Subscribe(config.SidecarSubject("*")+".*", func(*nats.Msg) { h.reports.Add(1) }); err != nil {
		return fmt.Errorf("count reports: %w", err)
	}
	for i := range h.o.ControlPlanes {
		cp := &controlPlane{idx: i, h: h, routes: map[string]int64{}}
		h.cps = append(h.cps, cp)
		if err := cp.start(ctx); err != nil {
			return fmt.Errorf("control plane %d: %w", i, err)
		}
		if i == 0 {
			if err := h.createEnv(ctx, cp); err != nil {
				return err
			}
		}
	}
	h.progress("%d control planes on %s", len(h.cps), h.cpAddrs())
	return nil
}

func (h *harness) cpAddrs() []string {
	var out []string
	for _, cp := range h.cps {
		out = append(out, cp.addr)
	}
	return out
}

func (h *harness) createEnv(ctx context.Context, cp *controlPlane) error {
	store, toks := cp.current()
	// Retried like controlPlane.start: placement may be refused for a moment.
	for deadline := time.Now().Add(30 * time.Second); ; {
		err := store.CreateEnv(ctx, config.EnvSettings{Name: Env})
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "no suitable peers for placement") || time.Now().After(deadline) {
			return fmt.Errorf("create env: %w", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	tok, _, err := toks.Create(ctx, "fleet-sidecars", map[string]string{Env: "viewer"}, 0, "fleet bench")
	if err != nil {
		return fmt.Errorf("viewer token: %w", err)
	}
	h.token = tok
	doc, err := config.Parse(initialDocument(h.o.Flags))
	if err != nil {
		return fmt.Errorf("initial document: %w", err)
	}
	cs, err := store.Commit(ctx, config.LoadChangeset(Env, doc, "fleet", "initial flag set"))
	if err != nil {
		return fmt.Errorf("initial commit: %w", err)
	}
	h.counterVer = cs.Version
	h.head.Store(cs.Version)
	return nil
}

// initialDocument is n boolean flags, a third of them with targeting, and
// the numeric counter flag the scenarios change.
func initialDocument(n int) []byte {
	b := []byte(`{"flags":{"counter":{"state":"ENABLED","variants":{"n":0},"defaultVariant":"n"}`)
	for i := range n {
		b = fmt.Appendf(b, `,"flag-%03d":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"`, i)
		if i%3 == 0 {
			b = fmt.Appendf(b, `,"targeting":{"if":[{"in":[{"var":"country"},["de","fr","nl"]]},"on",null]}`)
		}
		b = append(b, '}')
	}
	return append(b, "}}"...)
}

// commitRec is one acknowledged commit.
type commitRec struct {
	Version uint64
	Hash    string
	Def     []byte
	Start   time.Time // before the Commit call: delays are upper bounds
	Ack     time.Time
}

// commit changes the counter flag through the next control plane in turn
// (both replicas take writes, as behind a load balancer). After an error
// the base version is re-read (from the conflict, or the head with a fresh
// deadline): a commit that timed out may still have landed, and the next
// one must not conflict with it.
func (h *harness) commit(ctx context.Context) (commitRec, error) {
	h.commitMu.Lock()
	defer h.commitMu.Unlock()
	h.seq++
	cp := h.cps[h.seq%len(h.cps)]
	store, _ := cp.current()
	if store == nil {
		return commitRec{}, fmt.Errorf("control plane %d is stopped", cp.idx)
	}
	def := fmt.Appendf(nil, `{"state":"ENABLED","variants":{"n":%d},"defaultVariant":"n"}`, h.seq)
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cs, err := store.Commit(cctx, &config.Changeset{Env: Env, Author: "fleet", Reason: "fleet bench",
		Changes: []config.Change{{Flag: counterFlag, Op: config.OpPut, Definition: def, BaseVersion: h.counterVer}}})
	if err != nil {
		h.rebase(ctx, store, err)
		return commitRec{}, err
	}
	h.counterVer = cs.Version
	h.head.Store(cs.Version)
	return commitRec{Version: cs.Version, Hash: cs.Hash, Def: def, Start: start, Ack: time.Now()}, nil
}

// rebase re-reads the counter flag's version after a failed commit.
func (h *harness) rebase(ctx context.Context, store *config.Store, err error) {
	var conflict *config.ConflictError
	if errors.As(err, &conflict) {
		for _, c := range conflict.Conflicts {
			if c.Flag == counterFlag {
				h.counterVer = c.CurrentVersion
				if c.CurrentVersion > h.head.Load() {
					h.head.Store(c.CurrentVersion)
				}
			}
		}
		return
	}
	for range 3 {
		hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		head, herr := store.Head(hctx, Env)
		cancel()
		if herr == nil {
			h.counterVer = head.FlagVersion(counterFlag)
			h.head.Store(head.Version)
			return
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// trueHead reads the environment's head from JetStream, retrying until
// ctx ends (after a node loss the first reads may time out).
func (h *harness) trueHead(ctx context.Context) (uint64, error) {
	deadline := time.Now().Add(h.o.ConvergeTimeout)
	for {
		for _, cp := range h.cps {
			store, _ := cp.current()
			if store == nil {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			head, err := store.Head(cctx, Env)
			cancel()
			if err == nil {
				h.head.Store(head.Version)
				return head.Version, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, errors.New("head not readable from any control plane")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fleet is the sidecars started so far.
func (h *harness) fleet() []*car {
	h.carsMu.Lock()
	defer h.carsMu.Unlock()
	return h.cars[:len(h.cars):len(h.cars)]
}

func (h *harness) close() {
	// Cancel every sidecar first, then wait: each sends a last report on
	// the way out, and waiting for them one by one takes minutes at 2,000.
	cars := h.fleet()
	for _, c := range cars {
		c.cancel()
	}
	for _, c := range cars {
		<-c.done
	}
	for _, cp := range h.cps {
		cp.stop()
	}
	if h.mon != nil {
		h.mon.Close()
	}
	if h.cluster != nil {
		h.cluster.Shutdown()
	}
}

// heap is the live heap after two collections (the first may leave
// finalizer-reachable objects for the second).
func heap() (uint64, int) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, runtime.NumGoroutine()
}

// startFleet starts the sidecars at StartRate and waits until all serve
// the head over push.
func (h *harness) startFleet(ctx context.Context) (StartupResult, error) {
	var sr StartupResult
	heap0, g0 := heap()
	sr.HeapBeforeBytes = heap0
	w := h.begin()
	h.progress("starting %d sidecars at %d/s", h.o.Sidecars, h.o.StartRate)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	perTick := max(1, h.o.StartRate/10)
	for i := 0; i < h.o.Sidecars; {
		for k := 0; k < perTick && i < h.o.Sidecars; k, i = k+1, i+1 {
			c, err := h.startCar(i)
			if err != nil {
				return sr, fmt.Errorf("sidecar %d: %w", i, err)
			}
			h.carsMu.Lock()
			h.cars = append(h.cars, c)
			h.carsMu.Unlock()
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return sr, ctx.Err()
		}
	}
	conv := h.converge(ctx, h.head.Load(), w.start)
	notOK := conv.behind
	sr.DurationMs, sr.NotConverged, sr.AllPushMs, sr.NotInPush = ms(conv.head), conv.behind, ms(conv.push), conv.notPush
	s := h.end(w)
	sr.Requests, sr.Routes, sr.Errors = s.Requests, s.Routes, s.Errors
	sr.RequestsPerSidecar = float64(s.Requests) / float64(h.o.Sidecars)
	sr.CPUSeconds = s.CPUSeconds
	heap1, g1 := heap()
	sr.HeapAfterBytes = heap1
	sr.HeapPerSidecarBytes = (float64(heap1) - float64(heap0)) / float64(h.o.Sidecars)
	sr.GoroutinesPerSidecar = float64(g1-g0) / float64(h.o.Sidecars)
	h.progress("fleet up in %.1fs (%d not converged): %.0f requests per sidecar, heap %.1f KiB and %.1f goroutines per sidecar",
		sr.DurationMs/1000, notOK, sr.RequestsPerSidecar, sr.HeapPerSidecarBytes/1024, sr.GoroutinesPerSidecar)
	if notOK > 0 {
		return sr, fmt.Errorf("%d of %d sidecars did not reach version %d within %v", notOK, h.o.Sidecars, h.head.Load(), h.o.ConvergeTimeout)
	}
	return sr, nil
}

// convergence is how long the fleet took to serve a version, and to be
// back on push while serving it.
type convergence struct {
	head    time.Duration // every sidecar serves the target (or later)
	behind  int           // sidecars not serving it when the wait ended
	push    time.Duration // every sidecar serves it over push
	notPush int           // sidecars not in push when the wait ended
}

// converge waits until every sidecar serves at least version target
// (converged), then until every one is also in push, up to
// ConvergeTimeout from now. Times are measured from from.
func (h *harness) converge(ctx context.Context, target uint64, from time.Time) convergence {
	deadline := time.Now().Add(h.o.ConvergeTimeout)
	var c convergence
	for {
		behind, notPush := 0, 0
		for _, car := range h.fleet() {
			st, v := car.state()
			if v < target {
				behind++
			}
			if st != flagsync.StatePush {
				notPush++
			}
		}
		if behind == 0 && c.head == 0 {
			c.head = max(time.Since(from), time.Nanosecond)
		}
		if behind == 0 && notPush == 0 {
			c.push = max(time.Since(from), time.Nanosecond)
			return c
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.behind, c.notPush = behind, notPush
			if c.head == 0 {
				c.head = time.Since(from)
			}
			c.push = time.Since(from)
			return c
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
