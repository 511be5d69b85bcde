package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/internal/checkfor"
	"github.com/pennon-dev/pennon/internal/natsauth"
	"github.com/pennon-dev/pennon/internal/sign"
)

// devSystem is `pennon dev` running in process on random ports.
type devSystem struct {
	data, sidecar, api, admin, nats string
}

func startDev(t *testing.T) *devSystem {
	t.Helper()
	data := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan [3]string, 1)
	done := make(chan error, 1)
	var out strings.Builder
	go func() {
		done <- runDevSystem(ctx, devOptions{data: data, sidecarAddr: "127.0.0.1:0", apiAddr: "127.0.0.1:0", natsAddr: "127.0.0.1:0"}, zap.NewNop(), &out, ready)
	}()
	var a [3]string
	select {
	case a = <-ready:
	case err := <-done:
		t.Fatalf("dev stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("dev did not start")
	}
	t.Cleanup(func() { cancel(); <-done })
	m := regexp.MustCompile(`NATS JetStream\s+(\S+)`).FindStringSubmatch(out.String()) // written before ready
	if m == nil {
		t.Fatalf("no NATS URL in the banner:\n%s", out.String())
	}
	return &devSystem{data: data, sidecar: "http://" + a[0], api: a[1], admin: a[2], nats: m[1]}
}

// served is what the sidecar answers and what the control plane holds.
type served struct {
	bulk       string // every flag's value for one context
	hash       string
	flags      string
	perfAnswer string
}

func (d *devSystem) observe(t *testing.T) served {
	t.Helper()
	var s served
	_, s.bulk = post(t, d.sidecar+"/ofrep/v1/evaluate/flags", "", "POST", `{"context":{"targetingKey":"u1","cpuHeadroom":50,"country":"DE"}}`)
	// Skipped foreign messages still take a stream sequence, so the version
	// moves on with the content unchanged: compare content, not version.
	s.bulk = regexp.MustCompile(`"metadata":\{"version":"\d+"\}`).ReplaceAllString(s.bulk, "")
	_, s.perfAnswer = post(t, d.sidecar+"/ofrep/v1/evaluate/flags/performance-mode", "", "POST", `{"context":{"cpuHeadroom":5}}`)
	code, env := post(t, d.api+"/api/v1/envs/dev", d.admin, "GET", "")
	if code != 200 {
		t.Fatalf("control plane env read: %d %s", code, env)
	}
	var e struct{ Hash string }
	_ = json.Unmarshal([]byte(env), &e)
	s.hash = e.Hash
	code, s.flags = post(t, d.api+"/api/v1/envs/dev/flags", d.admin, "GET", "")
	if code != 200 {
		t.Fatalf("control plane flags read: %d %s", code, s.flags)
	}
	s.flags = regexp.MustCompile(`\n  "version": \d+,?`).ReplaceAllString(s.flags, "") // the environment's, see above
	return s
}

type violationLog struct {
	mu   sync.Mutex
	errs []string
}

func (v *violationLog) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.errs = append(v.errs, err.Error())
}

func (v *violationLog) saw(substr string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, e := range v.errs {
		if strings.Contains(e, substr) {
			return nil
		}
	}
	return fmt.Errorf("no violation for %q in %v", substr, v.errs)
}

// TestAttackDevDefaults plays a hostile client inside the pod network
// against `pennon dev` as shipped: without credentials, with a sidecar's
// credentials, and with control-plane NATS credentials but without the
// signing key. Nothing it does changes what the sidecar serves or what the
// control plane holds.
func TestAttackDevDefaults(t *testing.T) {
	d := startDev(t)
	checkfor.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if _, b := post(t, d.sidecar+"/ofrep/v1/evaluate/flags/performance-mode", "", "POST", `{"context":{"cpuHeadroom":5}}`); !strings.Contains(b, `"value":"balanced"`) {
			return fmt.Errorf("example not served yet: %s", b)
		}
		return nil
	})
	before := d.observe(t)

	t.Run("anonymous", func(t *testing.T) {
		for _, opts := range [][]nats.Option{nil, {nats.UserInfo("admin", "admin")}, {nats.Token("pennon")}} {
			if nc, err := nats.Connect(d.nats, append(opts, nats.Timeout(2*time.Second))...); err == nil {
				nc.Close()
				t.Fatal("connected to NATS without credentials")
			}
		}
	})

	viewer, err := readToken(filepath.Join(d.data, "sidecar-token"))
	if err != nil {
		t.Fatal(err)
	}
	if code, body := post(t, d.api+"/api/v1/envs", d.admin, "POST", `{"name":"prod"}`); code != 201 {
		t.Fatalf("create prod: %d %s", code, body)
	}

	t.Run("sidecar credentials", func(t *testing.T) {
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		// Credentials for another environment are refused to a dev token.
		if code, body := post(t, d.api+"/api/v1/envs/prod/nats-credentials", viewer, "POST", `{"id":"evil","publicKey":"`+pub+`"}`); code != 403 {
			t.Fatalf("dev token got prod credentials: %d %s", code, body)
		}
		code, body := post(t, d.api+"/api/v1/envs/dev/nats-credentials", viewer, "POST", `{"id":"evil","publicKey":"`+pub+`"}`)
		if code != 200 {
			t.Fatalf("credentials: %d %s", code, body)
		}
		var creds struct {
			JWT string `json:"jwt"`
		}
		_ = json.Unmarshal([]byte(body), &creds)
		var v violationLog
		nc, err := nats.Connect(d.nats, nats.UserJWT(func() (string, error) { return creds.JWT, nil }, kp.Sign), nats.ErrorHandler(v.handler))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		forged, _ := json.Marshal(config.Changeset{Env: "dev", Version: 99, Author: "mallory", Changes: []config.Change{{Flag: "performance-mode", Op: config.OpDelete}}})
		for _, subj := range []string{config.LogSubject("dev"), config.LiveSubject("dev"), config.HeartbeatSubject("dev"), config.LogSubject("prod"),
			"$JS.API.STREAM.PURGE." + config.StreamName("dev"), "$JS.API.STREAM.DELETE.PENNON_AUDIT", "$KV.pennon-tokens.mallory", config.AuditSubject} {
			_ = nc.Publish(subj, forged)
		}
		_ = nc.Flush()
		for _, subj := range []string{config.LiveSubject("prod"), "$KV.pennon-tokens.>", config.LogSubject("dev")} {
			_, _ = nc.SubscribeSync(subj)
		}
		_ = nc.Flush()
		checkfor.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
			for _, want := range []string{`Publish to "pennon.dev.log"`, `Publish to "$JS.API.STREAM.PURGE`, `Publish to "$KV.pennon-tokens.mallory"`,
				`Publish to "pennon.audit"`, `Publish to "pennon.dev.live"`, `Subscription to "pennon.prod.live"`} {
				if err := v.saw(want); err != nil {
					return err
				}
			}
			return nil
		})
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := js.DeleteStream(ctx, config.StreamName("dev")); err == nil {
			t.Fatal("a sidecar identity deleted the dev stream")
		}
	})

	t.Run("control-plane NATS credentials without the signing key", func(t *testing.T) {
		// The attacker stole the NATS keys (not the signing key): a forged
		// changeset lands in the stream, but nobody serves it.
		keys, _, err := natsauth.LoadOrCreate(filepath.Join(d.data, "nats"))
		if err != nil {
			t.Fatal(err)
		}
		c, _ := keys.ControlPlane(time.Minute)
		nc, err := nats.Connect(d.nats, nats.UserJWTAndSeed(c.JWT, string(c.Seed)))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx := context.Background()
		stream, err := js.Stream(ctx, config.StreamName("dev"))
		if err != nil {
			t.Fatal(err)
		}
		info, _ := stream.Info(ctx)
		last := info.State.LastSeq
		first, err := stream.GetMsg(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		evil, _ := sign.Generate()
		mk := func(v uint64) []byte {
			b, _ := json.Marshal(config.Changeset{Env: "dev", Version: v, PrevVersion: v - 1, Author: "pennon dev", Time: time.Now().UTC(), Reason: "routine",
				Changes: []config.Change{{Flag: "performance-mode", Op: config.OpPut, BaseVersion: 1,
					Definition: json.RawMessage(`{"state":"ENABLED","variants":{"fast":"fast","balanced":"balanced","safe":"safe"},"defaultVariant":"fast"}`)}}})
			return b
		}
		attempts := []func(v uint64) *nats.Msg{
			func(v uint64) *nats.Msg { return &nats.Msg{Data: mk(v)} }, // unsigned
			func(v uint64) *nats.Msg { // signed by a key nobody trusts
				m := &nats.Msg{Data: mk(v), Header: nats.Header{}}
				m.Header.Set(config.SignatureHeader, evil.Sign(sign.PurposeChangeset, m.Data))
				return m
			},
			func(v uint64) *nats.Msg { // replay of version 1, validly signed, at a new position
				return &nats.Msg{Data: first.Data, Header: nats.Header(first.Header)}
			},
			func(v uint64) *nats.Msg { return &nats.Msg{Data: []byte("not json at all")} }, // one non-JSON message
		}
		for _, a := range attempts {
			m := a(last + 1)
			m.Subject = config.LogSubject("dev")
			if _, err := js.PublishMsg(ctx, m, jetstream.WithExpectLastSequence(last)); err != nil {
				t.Fatalf("publish into the stream: %v", err)
			}
			last++
		}
		// The control plane keeps answering, and marks the foreign messages.
		checkfor.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
			code, body := post(t, d.api+"/api/v1/envs/dev/history?limit=10", d.admin, "GET", "")
			if code != 200 {
				return fmt.Errorf("history: %d %s", code, body)
			}
			if n := strings.Count(body, `"foreign"`); n < len(attempts) {
				return fmt.Errorf("%d foreign messages marked, want %d: %s", n, len(attempts), body)
			}
			return nil
		})
	})

	// Give forged pushes every chance to be (wrongly) applied, then compare.
	time.Sleep(500 * time.Millisecond)
	after := d.observe(t)
	if after.bulk != before.bulk || after.perfAnswer != before.perfAnswer {
		t.Fatalf("the sidecar serves something else after the attacks:\nbefore %s\n       %s\nafter  %s\n       %s", before.bulk, before.perfAnswer, after.bulk, after.perfAnswer)
	}
	if after.hash != before.hash || after.flags != before.flags {
		t.Fatalf("the control plane holds something else after the attacks:\nbefore %s %s\nafter  %s %s", before.hash, before.flags, after.hash, after.flags)
	}
	// And a legitimate change still goes through to the sidecar.
	code, body := post(t, d.api+"/api/v1/envs/dev/flags/performance-mode", d.admin, "GET", "")
	if code != 200 {
		t.Fatalf("flag read: %d %s", code, body)
	}
	var flag struct {
		Version uint64 `json:"version"`
	}
	_ = json.Unmarshal([]byte(body), &flag)
	if code, body := post(t, d.api+"/api/v1/envs/dev/flags/performance-mode", d.admin, "PUT",
		fmt.Sprintf(`{"baseVersion":%d,"reason":"after the attack","definition":{"state":"ENABLED","variants":{"fast":"fast","balanced":"balanced","safe":"safe"},"defaultVariant":"safe"}}`, flag.Version)); code != 201 {
		t.Fatalf("legitimate change: %d %s", code, body)
	}
	checkfor.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if _, b := post(t, d.sidecar+"/ofrep/v1/evaluate/flags/performance-mode", "", "POST", `{"context":{"cpuHeadroom":5}}`); !strings.Contains(b, `"value":"safe"`) {
			return fmt.Errorf("legitimate change not served: %s", b)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(d.data, "nats", natsauth.AccountSeedFile)); err != nil {
		t.Fatalf("account seed not in the data dir: %v", err)
	}
}
