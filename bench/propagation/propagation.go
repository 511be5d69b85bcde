// Package propagation measures how long a committed change takes to be
// served by every sidecar: commit (acknowledged by JetStream) → applied
// (the sidecar's snapshot holder swapped to that version), across N
// in-process sidecars following one real control plane over NATS.
package propagation

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/control"
	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/internal/sign"
	flagsync "github.com/pennon-dev/pennon/sync"
)

// Options bound a run.
type Options struct {
	Sidecars int           // followers; default 10
	Changes  int           // commits measured; default 200
	Pause    time.Duration // between commits; default 5ms
	// SyncAlways makes JetStream fsync each commit, as `pennon server` does.
	SyncAlways bool
	// Flags is how many other flags the environment holds besides the one
	// changed: every sidecar applies each change to a set this large, so
	// the delay includes what a change costs at that scale. Default 0.
	Flags int
	// NoStateDir runs the sidecars without a state dir. By default each
	// has its own, as deployed (`--state-dir` on an emptyDir), so the
	// delays include whatever keeping the last-known-good copy costs.
	NoStateDir bool
}

// Result holds commit → applied delays over every (change, sidecar) pair.
type Result struct {
	Sidecars int           `json:"sidecars"`
	Flags    int           `json:"flags"` // flags in the environment, the changed one included
	Changes  int           `json:"changes"`
	Samples  int           `json:"samples"`
	P50      time.Duration `json:"p50"`
	P99      time.Duration `json:"p99"`
	Max      time.Duration `json:"max"`
	// AllP99 is the p99 of "last sidecar applied" per change.
	AllP99 time.Duration `json:"allSidecarsP99"`
	// Commit is how long the commit call took (the control plane's
	// validation, hash, signature and the JetStream write); AfterCommit is
	// applied minus the commit's return, per (change, sidecar): the
	// sidecars' share of the delay.
	CommitP50      time.Duration `json:"commitP50"`
	CommitP99      time.Duration `json:"commitP99"`
	AfterCommitP50 time.Duration `json:"afterCommitP50"`
	AfterCommitP99 time.Duration `json:"afterCommitP99"`
}

func (r Result) String() string {
	us := func(d time.Duration) time.Duration { return d.Round(time.Microsecond) }
	return fmt.Sprintf("%d sidecars, %d flags, %d changes: p50 %v, p99 %v, max %v (all sidecars p99 %v; commit p50 %v p99 %v; after the commit p50 %v p99 %v)",
		r.Sidecars, r.Flags, r.Changes, us(r.P50), us(r.P99), us(r.Max), us(r.AllP99), us(r.CommitP50), us(r.CommitP99), us(r.AfterCommitP50), us(r.AfterCommitP99))
}

// Run starts an embedded JetStream, a store, the admin API and heartbeats,
// N sidecars, commits Changes changes one at a time and waits for each to
// be applied everywhere.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Sidecars <= 0 {
		o.Sidecars = 10
	}
	if o.Changes <= 0 {
		o.Changes = 200
	}
	if o.Pause <= 0 {
		o.Pause = 5 * time.Millisecond
	}
	dir, err := os.MkdirTemp("", "pennon-propagation-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(dir)
	ns, err := natsrun.Start(natsrun.Options{DataDir: dir, SyncAlways: o.SyncAlways})
	if err != nil {
		return Result{}, err
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	nc, err := ns.Connect()
	if err != nil {
		return Result{}, err
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	key, err := sign.Generate() // sidecars verify what the control plane signs
	if err != nil {
		return Result{}, err
	}
	store, err := config.OpenStore(ctx, js, config.StoreOptions{Signer: key})
	if err != nil {
		return Result{}, err
	}
	defer func() { _ = store.Close(context.Background()) }() // before nc.Close: flushes the due KV snapshot
	toks, err := control.OpenTokens(ctx, js, 1, nil)
	if err != nil {
		return Result{}, err
	}
	tok, _, err := toks.Create(ctx, "bench", map[string]string{"bench": "viewer"}, 0, "bench")
	if err != nil {
		return Result{}, err
	}
	if err := store.CreateEnv(ctx, config.EnvSettings{Name: "bench"}); err != nil {
		return Result{}, err
	}
	flagDef := func(i int) []byte {
		return []byte(fmt.Sprintf(`{"state":"ENABLED","variants":{"n":%d},"defaultVariant":"n"}`, i))
	}
	if _, err := store.Commit(ctx, &config.Changeset{Env: "bench", Changes: []config.Change{{Flag: "counter", Op: config.OpPut, Definition: flagDef(0)}}}); err != nil {
		return Result{}, err
	}
	if err := loadFlags(ctx, store, o.Flags); err != nil {
		return Result{}, err
	}
	api, err := control.New(control.Options{Addr: "127.0.0.1:0", Store: store, Tokens: toks, JetStream: js, NATS: ns.Keys, Signer: key})
	if err != nil {
		return Result{}, err
	}
	if err := api.Listen(); err != nil {
		return Result{}, err
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Add(2)
	go func() { defer wg.Done(); _ = api.Serve(rctx) }()
	go func() { defer wg.Done(); flagsync.RunHeartbeats(rctx, nc, store, time.Second, zap.NewNop()) }()

	cars := make([]*flagsync.Remote, o.Sidecars)
	for i := range cars {
		stateDir := ""
		if !o.NoStateDir {
			stateDir = filepath.Join(dir, fmt.Sprint("sidecar-", i))
		}
		r, err := flagsync.NewRemote(flagsync.RemoteOptions{Env: "bench", ServerURL: "http://" + api.Addr(), NATSURL: ns.ClientURL(), Token: tok, ID: fmt.Sprint("bench-", i),
			TrustKeys: []sign.PublicKey{key.Public()}, StateDir: stateDir})
		if err != nil {
			return Result{}, err
		}
		cars[i] = r
		wg.Add(1)
		go func() { defer wg.Done(); _ = r.Run(rctx) }()
	}
	// Wait until every sidecar serves version 1 over a live connection;
	// at 100,000 flags each parses a 16 MB snapshot first.
	wait := 30*time.Second + time.Duration(o.Sidecars)*time.Duration(o.Flags)*50*time.Microsecond
	deadline := time.Now().Add(wait)
	for _, r := range cars {
		for r.Current() == nil || r.Current().Version() < 1 || r.Status().(flagsync.RemoteStatus).State != flagsync.StatePush {
			if time.Now().After(deadline) {
				return Result{}, fmt.Errorf("sidecars did not sync within %v", wait)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	var delays, worst, commits, after []time.Duration
	for i := 1; i <= o.Changes; i++ {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		head, err := store.Head(ctx, "bench")
		if err != nil {
			return Result{}, err
		}
		// Arm every watcher before committing so no swap is missed.
		type watch struct{ ch <-chan struct{} }
		watches := make([]watch, len(cars))
		for j, r := range cars {
			watches[j] = watch{r.Changed()}
		}
		// Delays run from the start of the commit call (validation, the
		// JetStream write and its ack included) to when this loop sees the
		// sidecar's new snapshot: an upper bound on commit → applied.
		acked := time.Now()
		cs, err := store.Commit(ctx, &config.Changeset{Env: "bench", Changes: []config.Change{{Flag: "counter", Op: config.OpPut, Definition: flagDef(i), BaseVersion: head.FlagVersion("counter")}}})
		if err != nil {
			return Result{}, err
		}
		committed := time.Since(acked)
		commits = append(commits, committed)
		var last time.Duration
		for j, r := range cars {
			for r.Current().Version() < cs.Version {
				select {
				case <-watches[j].ch:
					watches[j].ch = r.Changed()
				case <-time.After(10 * time.Second):
					return Result{}, fmt.Errorf("sidecar %d did not apply version %d within 10s", j, cs.Version)
				}
			}
			d := time.Since(acked)
			delays = append(delays, d)
			after = append(after, d-committed)
			last = max(last, d)
		}
		worst = append(worst, last)
		time.Sleep(o.Pause)
	}
	res := Result{Sidecars: o.Sidecars, Flags: o.Flags + 1, Changes: o.Changes, Samples: len(delays)}
	res.P50, res.P99, res.Max = pct(delays, 50), pct(delays, 99), pct(delays, 100)
	res.AllP99 = pct(worst, 99)
	res.CommitP50, res.CommitP99 = pct(commits, 50), pct(commits, 99)
	res.AfterCommitP50, res.AfterCommitP99 = pct(after, 50), pct(after, 99)
	return res, nil
}

// loadFlags commits n more flags (a third with targeting), 2,500 per
// changeset (~450 KB, below JetStream's 1 MB message limit): each commit
// hashes the whole set, so fewer commits load 100,000 flags faster.
func loadFlags(ctx context.Context, store *config.Store, n int) error {
	const per = 2500
	for start := 0; start < n; start += per {
		cs := &config.Changeset{Env: "bench", Reason: "propagation bench: flag set"}
		for i := start; i < min(start+per, n); i++ {
			def := `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}`
			if i%3 == 0 {
				def = `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{"in":[{"var":"country"},["DE","FR"]]},"on","off"]}}`
			}
			cs.Changes = append(cs.Changes, config.Change{Flag: fmt.Sprintf("flag-%d", i), Op: config.OpPut, Definition: []byte(def)})
		}
		if _, err := store.Commit(ctx, cs); err != nil {
			return fmt.Errorf("load flags %d-%d: %w", start, start+len(cs.Changes)-1, err)
		}
	}
	return nil
}

// pct is the p-th percentile (nearest rank) of ds.
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}
