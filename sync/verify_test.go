package flagsync

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/control"
	"github.com/pennon-dev/pennon/examples"
	"github.com/pennon-dev/pennon/internal/checkfor"
	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/internal/sign"
)

// injectLog appends a message to env's log at the next position, as a NATS
// client with control-plane-like rights but without the signing key would.
func injectLog(t *testing.T, js jetstream.JetStream, env string, data []byte, sig string) uint64 {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, config.StreamName(env))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(config.LogSubject(env))
	m.Data = data
	if sig != "" {
		m.Header.Set(config.SignatureHeader, sig)
	}
	ack, err := js.PublishMsg(ctx, m, jetstream.WithExpectLastSequence(info.State.LastSeq))
	if err != nil {
		t.Fatalf("inject: %v", err)
	}
	return ack.Sequence
}

func lastRejection(s *sidecar) *Rejection { return s.r.Status().(RemoteStatus).LastRej }

func TestForgedChangesetsAreNeverServed(t *testing.T) {
	for _, mode := range []string{"pinned", "trust on first use"} {
		t.Run(mode, func(t *testing.T) {
			c := startCluster(t)
			reg := prometheus.NewRegistry()
			o := RemoteOptions{ServerURL: c.api, NATSURL: c.nats, Token: c.token, ID: "victim", Registry: reg,
				PollInterval: 100 * time.Millisecond, LeaseFor: 200 * time.Millisecond}
			if mode == "pinned" {
				o.TrustKeys = []sign.PublicKey{c.key.Public()}
			}
			s := startSidecar(t, o)
			checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
				if state(s) != StatePush || s.version() != 1 {
					return fmt.Errorf("state %s version %d", state(s), s.version())
				}
				return nil
			})
			if got := s.perf(); got != "balanced" {
				t.Fatalf("performance-mode = %q before the attack, want balanced", got)
			}
			js, err := jetstream.New(natsrun.ConnectTest(t, c.ns))
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			realStream, _ := js.Stream(ctx, config.StreamName("dev"))
			real1, err := realStream.GetMsg(ctx, 1)
			if err != nil {
				t.Fatal(err)
			}
			attackerKey, _ := sign.Generate()
			forged := func(v uint64) []byte {
				b, _ := json.Marshal(&config.Changeset{Env: "dev", Version: v, PrevVersion: v - 1, Author: "admin", Time: time.Now().UTC(),
					Changes: []config.Change{{Flag: "performance-mode", Op: config.OpPut, BaseVersion: 1,
						Definition: []byte(`{"state":"ENABLED","variants":{"fast":"fast","balanced":"balanced","safe":"safe"},"defaultVariant":"fast"}`)}}})
				return b
			}
			cases := []struct {
				name string
				make func(v uint64) ([]byte, string)
				want string // the sidecar's rejection reason
			}{
				{"unsigned", func(v uint64) ([]byte, string) { return forged(v), "" }, whyUnsigned},
				{"signed with the attacker's key", func(v uint64) ([]byte, string) {
					d := forged(v)
					return d, attackerKey.Sign(sign.PurposeChangeset, d)
				}, whyUnknownKey},
				{"attacker's signature under the real key id", func(v uint64) ([]byte, string) {
					d := forged(v)
					sig := attackerKey.Sign(sign.PurposeChangeset, d)
					return d, c.key.ID() + sig[len(attackerKey.ID()):]
				}, whyBadSignature},
				{"real changeset with corrupted bytes", func(v uint64) ([]byte, string) {
					d := bytes.Replace(real1.Data, []byte(`"balanced"`), []byte(`"fast"`), 1)
					return d, real1.Header.Get(config.SignatureHeader)
				}, whyBadSignature},
				{"replay of version 1 at a new sequence", func(v uint64) ([]byte, string) {
					return real1.Data, real1.Header.Get(config.SignatureHeader)
				}, whyWrongVersion},
				{"not JSON", func(v uint64) ([]byte, string) { return []byte("\xff\x00{"), "" }, whyUnsigned},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					head, err := c.store.Head(ctx, "dev")
					if err != nil {
						t.Fatal(err)
					}
					data, sig := tc.make(head.Version + 1)
					v := injectLog(t, js, "dev", data, sig)
					checkfor.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
						if r := lastRejection(s); r == nil || r.Version != v || r.Kind != rejectChangeset || r.Why != tc.want {
							return fmt.Errorf("last rejection %+v, want changeset v%d %s", r, v, tc.want)
						}
						return nil
					})
					// Nothing forged is ever served.
					if got := s.perf(); got != "balanced" {
						t.Fatalf("performance-mode = %q after a forged changeset, want balanced", got)
					}
					// The control plane skips it: head at v with the flag set unchanged.
					after, err := c.store.Head(ctx, "dev")
					if err != nil || after.Version != v || after.Hash != head.Hash {
						t.Fatalf("store head %v %v, want v%d with hash %s", after, err, v, head.Hash)
					}
					// The sidecar converges to the control plane's (version, hash).
					checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
						if st := s.r.Status().(RemoteStatus); st.Version != v || st.Hash != head.Hash {
							return fmt.Errorf("sidecar at v%d %s, want v%d %s", st.Version, st.Hash, v, head.Hash)
						}
						return nil
					})
				})
			}
			if n := testutil.ToFloat64(s.r.v.mRejected.WithLabelValues(rejectChangeset, whyUnsigned)); n != 2 {
				t.Errorf("pennon_sync_rejected_total{changeset,unsigned} = %v, want 2", n)
			}
			// Straight onto the live subject, bypassing the stream: a real
			// changeset's bytes and signature under a forged Nats-Sequence.
			nc := natsrun.ConnectTest(t, c.ns)
			head, _ := c.store.Head(ctx, "dev")
			m := nats.NewMsg(config.LiveSubject("dev"))
			m.Data, m.Header = real1.Data, nats.Header{}
			m.Header.Set(config.SignatureHeader, real1.Header.Get(config.SignatureHeader))
			m.Header.Set("Nats-Sequence", fmt.Sprint(head.Version+1))
			if err := nc.PublishMsg(m); err != nil {
				t.Fatal(err)
			}
			checkfor.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
				if r := lastRejection(s); r == nil || r.Version != head.Version+1 || r.Why != whyWrongVersion {
					return fmt.Errorf("last rejection %+v, want v%d %s", r, head.Version+1, whyWrongVersion)
				}
				return nil
			})
			if got := s.perf(); got != "balanced" {
				t.Fatalf("performance-mode = %q after a replay on the live subject, want balanced", got)
			}
			// The history API marks every foreign version instead of failing.
			body := getJSON(t, c.api+"/api/v1/envs/dev/history?limit=100", c.admin)
			if n := strings.Count(body, `"foreign"`); n != len(cases) {
				t.Fatalf("history marks %d foreign versions, want %d:\n%s", n, len(cases), body)
			}
			// A real commit still applies and reaches the sidecar by push.
			v := c.setDefault(t, "safe")
			checkfor.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
				if s.perf() != "safe" || s.version() != v {
					return fmt.Errorf("sidecar serves %s at v%d, want safe at v%d", s.perf(), s.version(), v)
				}
				return nil
			})
		})
	}
}

func getJSON(t *testing.T, u, token string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b)
	}
	return string(b)
}

// mitm is a man in the middle between the sidecar and the real control
// plane that rewrites snapshot responses.
func mitm(t *testing.T, api string, rewrite func(rec *config.SnapshotRecord)) string {
	t.Helper()
	target, _ := url.Parse(api)
	p := httputil.NewSingleHostReverseProxy(target)
	p.ModifyResponse = func(resp *http.Response) error {
		if !strings.HasSuffix(resp.Request.URL.Path, "/snapshot") || resp.StatusCode != 200 {
			return nil
		}
		var rec config.SnapshotRecord
		if err := json.NewDecoder(resp.Body).Decode(&rec); err != nil {
			return err
		}
		resp.Body.Close()
		rewrite(&rec)
		b, _ := json.Marshal(&rec)
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Set("Content-Length", fmt.Sprint(len(b)))
		return nil
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestForgedSnapshotsAreRejected(t *testing.T) {
	c := startCluster(t)
	attackerKey, _ := sign.Generate()
	evil, _ := config.Parse([]byte(`{"flags":{"performance-mode":{"state":"ENABLED","variants":{"fast":"fast"},"defaultVariant":"fast"}}}`))
	swapDoc := func(rec *config.SnapshotRecord) { rec.Document, rec.Hash = evil.Canonical(), evil.Hash() }
	cases := []struct {
		name    string
		rewrite func(rec *config.SnapshotRecord)
		want    string
	}{
		{"document swapped, signature kept", swapDoc, whyBadSignature},
		{"signature stripped", func(rec *config.SnapshotRecord) { swapDoc(rec); rec.Signature = "" }, whyUnsigned},
		{"re-signed with the attacker's key", func(rec *config.SnapshotRecord) {
			swapDoc(rec)
			rec.Signature = attackerKey.Sign(sign.PurposeSnapshot, rec.SigningBytes())
		}, whyUnknownKey},
		{"document edited without fixing the hash", func(rec *config.SnapshotRecord) { rec.Document = evil.Canonical() }, whyHashMismatch},
		{"another environment's snapshot", func(rec *config.SnapshotRecord) { rec.Env = "prod" }, whyWrongEnv},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			proxy := mitm(t, c.api, tc.rewrite)
			s := startSidecar(t, RemoteOptions{ServerURL: proxy, Token: c.token, TrustKeys: []sign.PublicKey{c.key.Public()}})
			checkfor.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
				if r := lastRejection(s); r == nil || r.Kind != rejectSnapshot || r.Why != tc.want {
					return fmt.Errorf("last rejection %+v, want snapshot %s", r, tc.want)
				}
				return nil
			})
			if snap := s.r.Current(); snap != nil {
				t.Fatalf("a forged snapshot is served: performance-mode = %s", s.perf())
			}
			if ok, detail := s.r.Ready(); ok {
				t.Fatalf("ready on a forged snapshot: %s", detail)
			}
		})
	}
}

func TestDiskCopyIsVerified(t *testing.T) {
	c := startCluster(t)
	dir := t.TempDir()
	pin := []sign.PublicKey{c.key.Public()}
	// A real sidecar writes its copy (built from the signed snapshot) ...
	s := startSidecar(t, RemoteOptions{ServerURL: c.api, NATSURL: c.nats, Token: c.token, StateDir: dir, TrustKeys: pin})
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s.version() != 1 {
			return fmt.Errorf("version %d", s.version())
		}
		return nil
	})
	// ... and one more version applied from a pushed changeset, which the
	// copy keeps the signed changeset for.
	v := c.setDefault(t, "safe")
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		f, err := readLKGFile(dir, "dev")
		if err != nil || f.rec.Version != v || f.Proof == nil && f.rec.Signature == "" {
			return fmt.Errorf("disk copy not at v%d, signed or with its proof, yet (%v)", v, err)
		}
		return nil
	})
	s.stop()
	c.stop()
	good, err := readLKGFile(dir, "dev")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("disk copy v%d: own signature %v, signed changeset %v", good.rec.Version, good.rec.Signature != "", good.Proof != nil)
	attackerKey, _ := sign.Generate()
	evil, _ := config.Parse([]byte(`{"flags":{"performance-mode":{"state":"ENABLED","variants":{"fast":"fast"},"defaultVariant":"fast"}}}`))
	cases := []struct {
		name  string
		edit  func(rec *config.SnapshotRecord, f *lkgFile)
		serve string // "" : nothing served
	}{
		{"untouched copy is served", func(*config.SnapshotRecord, *lkgFile) {}, "safe"},
		{"document swapped (checksum recomputed)", func(rec *config.SnapshotRecord, f *lkgFile) {
			rec.Document, rec.Hash = evil.Canonical(), evil.Hash()
		}, ""},
		{"proof and signature dropped", func(rec *config.SnapshotRecord, f *lkgFile) { f.Proof, rec.Signature = nil, "" }, ""},
		{"attacker's key added to the stored keys and used", func(rec *config.SnapshotRecord, f *lkgFile) {
			rec.Document, rec.Hash = evil.Canonical(), evil.Hash()
			rec.Signature = attackerKey.Sign(sign.PurposeSnapshot, rec.SigningBytes())
			f.Proof = nil
			f.Keys = []string{attackerKey.Public().String()}
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := *good.rec
			f := *good
			tc.edit(&rec, &f)
			f.rec = nil
			if err := writeLKGFile(dir, &rec, f.Proof, nil); err != nil {
				t.Fatal(err)
			}
			if f.Keys != nil { // rewrite with the attacker's stored keys
				raw, _ := os.ReadFile(lkgPath(dir, "dev"))
				var onDisk lkgFile
				_ = json.Unmarshal(raw, &onDisk)
				onDisk.Keys = f.Keys
				raw, _ = json.Marshal(onDisk)
				if err := os.WriteFile(lkgPath(dir, "dev"), raw, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			// The control plane is gone: only the disk copy could be served.
			r, err := NewRemote(RemoteOptions{Env: "dev", ServerURL: "http://127.0.0.1:1", Token: "x", StateDir: dir, TrustKeys: pin, Logger: zap.NewNop()})
			if err != nil {
				t.Fatal(err)
			}
			r.bootstrapLocal()
			s := &sidecar{r: r}
			if tc.serve == "" {
				if r.Current() != nil {
					t.Fatalf("tampered disk copy served: performance-mode = %s", s.perf())
				}
				if rej := r.lastRejection(); rej == nil || rej.Kind != rejectDisk {
					t.Fatalf("last rejection %+v, want kind disk", rej)
				}
				return
			}
			if got := s.perf(); got != tc.serve {
				t.Fatalf("performance-mode from disk = %q, want %q", got, tc.serve)
			}
		})
	}
}

// startPlaneWithoutHeartbeats is a control plane whose heartbeats the test
// sends itself.
func startPlaneWithoutHeartbeats(t *testing.T) (*natsrun.Server, *config.Store, *sign.Key, string, string) {
	t.Helper()
	ctx := context.Background()
	ns := natsrun.StartTest(t)
	nc := natsrun.ConnectTest(t, ns)
	js, _ := jetstream.New(nc)
	key, _ := sign.Generate()
	store, err := config.OpenStore(ctx, js, config.StoreOptions{Signer: key})
	if err != nil {
		t.Fatal(err)
	}
	toks, err := control.OpenTokens(ctx, js, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	viewer, _, _ := toks.Create(ctx, "sidecar", map[string]string{"dev": "viewer"}, 0, "test")
	if err := store.CreateEnv(ctx, config.EnvSettings{Name: "dev"}); err != nil {
		t.Fatal(err)
	}
	doc, _ := config.Parse(examples.Checkout)
	if _, err := store.Commit(ctx, config.LoadChangeset("dev", doc, "test", "")); err != nil {
		t.Fatal(err)
	}
	api, err := control.New(control.Options{Addr: "127.0.0.1:0", Store: store, Tokens: toks, JetStream: js, NATS: ns.Keys, Signer: key})
	if err != nil {
		t.Fatal(err)
	}
	if err := api.Listen(); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = api.Serve(rctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return ns, store, key, "http://" + api.Addr(), viewer
}

func TestForgedHeartbeatsGrantNoLease(t *testing.T) {
	ns, store, key, api, token := startPlaneWithoutHeartbeats(t)
	ctx := context.Background()
	head, err := store.Head(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	s := startSidecar(t, RemoteOptions{ServerURL: api, NATSURL: ns.ClientURL(), Token: token, TrustKeys: []sign.PublicKey{key.Public()},
		LeaseFor: time.Second, PollInterval: time.Hour, ReconcileEvery: time.Hour})
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s.version() != head.Version {
			return fmt.Errorf("version %d", s.version())
		}
		return nil
	})
	attackerKey, _ := sign.Generate()
	nc := natsrun.ConnectTest(t, ns)
	hbFor := func(at time.Time) config.Heartbeat {
		return config.Heartbeat{Env: "dev", Version: head.Version, Hash: head.Hash, Time: at.UTC()}
	}
	cases := []struct {
		name  string
		hb    func() config.Heartbeat
		want  string
		lease bool
	}{
		{"unsigned", func() config.Heartbeat { return hbFor(time.Now()) }, whyUnsigned, false},
		{"signed by the attacker", func() config.Heartbeat {
			hb := hbFor(time.Now())
			hb.Signature = attackerKey.Sign(sign.PurposeHeartbeat, hb.SigningBytes())
			return hb
		}, whyUnknownKey, false},
		{"a recorded heartbeat replayed two minutes later", func() config.Heartbeat {
			hb := hbFor(time.Now().Add(-2 * time.Minute))
			store.SignHeartbeat(&hb)
			return hb
		}, whyStale, false},
		{"another environment's heartbeat", func() config.Heartbeat {
			hb := hbFor(time.Now())
			hb.Env = "prod"
			store.SignHeartbeat(&hb)
			return hb
		}, whyWrongEnv, false},
		{"the control plane's heartbeat", func() config.Heartbeat {
			hb := hbFor(time.Now())
			store.SignHeartbeat(&hb)
			return hb
		}, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Wait until no lease is held (the initial poll or the previous
			// case granted one): only this heartbeat may grant the next.
			checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
				if s.r.leaseValid() {
					return fmt.Errorf("lease still valid")
				}
				return nil
			})
			before := testutil.ToFloat64(s.r.v.mRejected.WithLabelValues(rejectHeartbeat, tc.want))
			b, _ := json.Marshal(tc.hb())
			if err := nc.Publish(config.HeartbeatSubject("dev"), b); err != nil {
				t.Fatal(err)
			}
			checkfor.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
				if tc.lease {
					if !s.r.leaseValid() {
						return fmt.Errorf("no lease from a valid heartbeat")
					}
					return nil
				}
				if n := testutil.ToFloat64(s.r.v.mRejected.WithLabelValues(rejectHeartbeat, tc.want)); n != before+1 {
					return fmt.Errorf("rejections{heartbeat,%s} = %v, want %v", tc.want, n, before+1)
				}
				return nil
			})
			if !tc.lease && s.r.leaseValid() {
				t.Fatal("a forged heartbeat granted a freshness lease")
			}
		})
	}
}
