package natsauth_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/pennon-dev/pennon/internal/natsauth"
	"github.com/pennon-dev/pennon/internal/natsrun"
)

// violations collects the server's asynchronous permission errors.
type violations struct {
	mu   sync.Mutex
	errs []string
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	v.mu.Lock()
	v.errs = append(v.errs, err.Error())
	v.mu.Unlock()
}

func (v *violations) waitFor(t *testing.T, substr string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		v.mu.Lock()
		for _, e := range v.errs {
			if strings.Contains(e, substr) {
				v.mu.Unlock()
				return
			}
		}
		v.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no permissions violation mentioning %q; got %v", substr, v.errs)
}

func sidecarConn(t *testing.T, s *natsrun.Server, env string, ttl time.Duration, v *violations) (*nats.Conn, string) {
	t.Helper()
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	report := "pennon." + env + ".sidecars." + s.Keys.ReportToken(env, "pod-1")
	tok, _, err := s.Keys.Sidecar(pub, "pennon-sidecar "+env, []string{"pennon." + env + ".live", "pennon." + env + ".heartbeat"}, report, ttl)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.ClientURL(), nats.UserJWT(func() (string, error) { return tok, nil }, kp.Sign),
		nats.ErrorHandler(v.handler), nats.NoReconnect())
	if err != nil {
		t.Fatalf("sidecar connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc, report
}

// A sidecar's credentials let it hear its own environment and report about
// itself, and nothing else.
func TestSidecarLeastPrivilege(t *testing.T) {
	s := natsrun.StartTest(t)
	cp := natsrun.ConnectTest(t, s)
	js, _ := jetstream.New(cp)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "PENNON_ENV_dev", Subjects: []string{"pennon.dev.log"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "pennon-tokens"}); err != nil {
		t.Fatal(err)
	}
	var v violations
	sc, report := sidecarConn(t, s, "dev", time.Hour, &v)

	// Allowed: live and heartbeat of dev, own reports.
	live, err := sc.SubscribeSync("pennon.dev.live")
	if err != nil {
		t.Fatal(err)
	}
	_ = sc.Flush()
	if err := cp.Publish("pennon.dev.live", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := live.NextMsg(2 * time.Second); err != nil {
		t.Fatalf("sidecar did not receive its live subject: %v", err)
	}
	reports, _ := cp.SubscribeSync(report)
	_ = cp.Flush()
	_ = sc.Publish(report, []byte("{}"))
	if _, err := reports.NextMsg(2 * time.Second); err != nil {
		t.Fatalf("own report not delivered: %v", err)
	}

	// Refused publishes: the log (forging changesets), another sidecar's
	// report subject, the JetStream API (purge, KV writes), the audit stream.
	watch, _ := cp.SubscribeSync(">")
	_ = cp.Flush()
	for _, subj := range []string{"pennon.dev.log", "pennon.prod.log", "pennon.dev.sidecars.someoneelse", "pennon.dev.heartbeat",
		"$JS.API.STREAM.PURGE.PENNON_ENV_dev", "$KV.pennon-tokens.admin", "pennon.audit"} {
		t.Run("publish "+subj, func(t *testing.T) {
			_ = sc.Publish(subj, []byte("forged"))
			_ = sc.Flush()
			v.waitFor(t, `Publish to "`+subj+`"`)
		})
	}
	// Nothing the sidecar tried reached anyone.
	for {
		m, err := watch.NextMsg(200 * time.Millisecond)
		if err != nil {
			break
		}
		if string(m.Data) == "forged" {
			t.Fatalf("a refused publish was delivered on %s", m.Subject)
		}
	}
	// Refused subscriptions: other environments, the log, KV, the inbox-based JetStream API.
	for _, subj := range []string{"pennon.prod.live", "pennon.dev.log", "pennon.>", ">", "$KV.pennon-tokens.>", "pennon.dev.sidecars.>"} {
		t.Run("subscribe "+subj, func(t *testing.T) {
			if _, err := sc.SubscribeSync(subj); err != nil {
				return // refused locally
			}
			_ = sc.Flush()
			v.waitFor(t, `Subscription to "`+subj+`"`)
		})
	}
	// The JetStream API answers nothing: the stream and bucket survive.
	sjs, _ := jetstream.New(sc)
	tctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := sjs.DeleteStream(tctx, "PENNON_ENV_dev"); err == nil {
		t.Fatal("sidecar deleted a stream")
	}
	if _, err := js.Stream(ctx, "PENNON_ENV_dev"); err != nil {
		t.Fatalf("stream gone after the attempt: %v", err)
	}
}

// Expired sidecar credentials are refused; credentials signed by a key the
// server does not trust are refused.
func TestSidecarCredentialsExpireAndMustBeOurs(t *testing.T) {
	s := natsrun.StartTest(t)
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	tok, exp, err := s.Keys.Sidecar(pub, "x", []string{"pennon.dev.live"}, "pennon.dev.sidecars.a", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for time.Now().Before(exp.Add(1100 * time.Millisecond)) {
		time.Sleep(50 * time.Millisecond) // JWT expiry has one-second resolution: wait it out
	}
	if nc, err := nats.Connect(s.ClientURL(), nats.UserJWT(func() (string, error) { return tok, nil }, kp.Sign), nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("expired credentials accepted")
	}
	other, _ := natsauth.Generate()
	tok2, _, _ := other.Sidecar(pub, "x", []string{"pennon.dev.live"}, "pennon.dev.sidecars.a", time.Hour)
	if nc, err := nats.Connect(s.ClientURL(), nats.UserJWT(func() (string, error) { return tok2, nil }, kp.Sign), nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("credentials from an untrusted account accepted")
	}
	if _, _, err := s.Keys.Sidecar(pub, "x", nil, "a", 0); err == nil {
		t.Fatal("non-expiring sidecar credentials minted")
	}
	if _, _, err := s.Keys.Sidecar("not-a-key", "x", nil, "a", time.Hour); err == nil {
		t.Fatal("minted for a malformed public key")
	}
}

func TestReadonlyPublishesNothing(t *testing.T) {
	s := natsrun.StartTest(t)
	c, err := s.Keys.Readonly(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var v violations
	nc, err := nats.Connect(s.ClientURL(), nats.UserJWTAndSeed(c.JWT, string(c.Seed)), nats.ErrorHandler(v.handler))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.SubscribeSync("pennon.dev.live"); err != nil {
		t.Fatal(err)
	}
	_ = nc.Publish("pennon.dev.log", []byte("x"))
	_ = nc.Flush()
	v.waitFor(t, `Publish to "pennon.dev.log"`)
}

// Keys persist: a restarted server trusts the same identities; the
// nats-config files parse and hold secrets with 0600.
func TestKeysPersistAndConfigFiles(t *testing.T) {
	dir := t.TempDir()
	k1, created, err := natsauth.LoadOrCreate(filepath.Join(dir, "nats"))
	if err != nil || !created {
		t.Fatalf("LoadOrCreate: %v %v", created, err)
	}
	k2, created, err := natsauth.LoadOrCreate(filepath.Join(dir, "nats"))
	if err != nil || created {
		t.Fatalf("reload: %v %v", created, err)
	}
	if k1.AccountPublicKey() != k2.AccountPublicKey() || k1.ReportToken("dev", "a") != k2.ReportToken("dev", "a") {
		t.Fatal("reloaded keys differ")
	}
	if k1.ReportToken("dev", "a") == k1.ReportToken("dev", "b") || k1.ReportToken("dev", "a") == k1.ReportToken("prod", "a") {
		t.Fatal("report tokens collide")
	}
	out := filepath.Join(dir, "out")
	if err := k1.WriteConfig(out); err != nil {
		t.Fatal(err)
	}
	conf, _ := os.ReadFile(filepath.Join(out, natsauth.AuthConfFile))
	for _, want := range []string{"operator: ", "system_account: ", "resolver: MEMORY", k1.AccountPublicKey()} {
		if !strings.Contains(string(conf), want) {
			t.Fatalf("auth.conf lacks %q:\n%s", want, conf)
		}
	}
	for _, name := range []string{natsauth.AccountSeedFile, natsauth.ControlCredsFile, natsauth.ReadonlyCreds, natsauth.OperatorSeedFile} {
		fi, err := os.Stat(filepath.Join(out, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v mode %v; want 0600", name, err, fi.Mode())
		}
	}
	accPub, err := natsauth.AccountOfCreds(filepath.Join(out, natsauth.ControlCredsFile))
	if err != nil || accPub != k1.AccountPublicKey() {
		t.Fatalf("AccountOfCreds = %s, %v; want %s", accPub, err, k1.AccountPublicKey())
	}
	acct, err := natsauth.LoadSigning(filepath.Join(out, natsauth.AccountSeedFile), accPub)
	if err != nil || acct.AccountPublicKey() != k1.AccountPublicKey() || acct.ReportToken("dev", "a") != k1.ReportToken("dev", "a") {
		t.Fatalf("LoadSigning: %v", err)
	}
	if _, err := natsauth.LoadSigning(filepath.Join(out, natsauth.OperatorSeedFile), accPub); err == nil {
		t.Fatal("an operator seed was accepted as the account signing key")
	}
	// A server started with the persisted keys accepts the written control-plane creds.
	s, err := natsrun.Start(natsrun.Options{DataDir: filepath.Join(dir, "js"), Keys: k2})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	nc, err := nats.Connect(s.ClientURL(), nats.UserCredentials(filepath.Join(out, natsauth.ControlCredsFile)))
	if err != nil {
		t.Fatalf("control-plane.creds refused: %v", err)
	}
	nc.Close()
}

// Rotating the account signing key keeps the account (and so every stream)
// and, until the old key is retired, every credential already issued;
// retiring it refuses those credentials and the old control-plane creds.
func TestSigningKeyRotationKeepsData(t *testing.T) {
	dir := t.TempDir()
	keysDir := filepath.Join(dir, "keys")
	k1, _, err := natsauth.LoadOrCreate(keysDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := k1.WriteConfig(keysDir); err != nil { // control-plane.creds v1
		t.Fatal(err)
	}
	start := func(k *natsauth.Keys) *natsrun.Server {
		s, err := natsrun.Start(natsrun.Options{DataDir: filepath.Join(dir, "js"), Keys: k})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := start(k1)
	nc, err := nats.Connect(s.ClientURL(), nats.UserCredentials(filepath.Join(keysDir, natsauth.ControlCredsFile)))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "PENNON_ENV_dev", Subjects: []string{"pennon.dev.log"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "pennon.dev.log", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	oldSidecar, _, _ := k1.Sidecar(pub, "x", []string{"pennon.dev.live"}, "pennon.dev.sidecars.a", time.Hour)
	s.Shutdown()
	s.WaitForShutdown()

	connects := func(s *natsrun.Server, opt nats.Option) bool {
		nc, err := nats.Connect(s.ClientURL(), opt, nats.NoReconnect())
		if err != nil {
			return false
		}
		nc.Close()
		return true
	}
	oldCreds, _ := os.ReadFile(filepath.Join(keysDir, natsauth.ControlCredsFile))
	oldCredsFile := filepath.Join(dir, "old.creds")
	_ = os.WriteFile(oldCredsFile, oldCreds, 0o600)

	k2, err := natsauth.RotateSigningKey(keysDir)
	if err != nil {
		t.Fatal(err)
	}
	if k2.AccountPublicKey() != k1.AccountPublicKey() {
		t.Fatal("rotation changed the account identity")
	}
	s = start(k2)
	if !connects(s, nats.UserJWT(func() (string, error) { return oldSidecar, nil }, kp.Sign)) {
		t.Fatal("credentials from the previous signing key refused during the rotation")
	}
	newCP, _ := k2.ControlPlane(time.Minute)
	nc, err = nats.Connect(s.ClientURL(), nats.UserJWTAndSeed(newCP.JWT, string(newCP.Seed)))
	if err != nil {
		t.Fatalf("new signing key refused: %v", err)
	}
	js, _ = jetstream.New(nc)
	if st, err := js.Stream(ctx, "PENNON_ENV_dev"); err != nil {
		t.Fatalf("stream lost by the rotation: %v", err)
	} else if info, _ := st.Info(ctx); info.State.Msgs != 1 {
		t.Fatalf("stream has %d messages after the rotation, want 1", info.State.Msgs)
	}
	nc.Close()
	if err := k2.WriteConfig(keysDir); err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
	s.WaitForShutdown()

	// The old copy of control-plane.creds is what gets revoked: retire
	// reads the file in dir, so put the old one back first.
	_ = os.WriteFile(filepath.Join(keysDir, natsauth.ControlCredsFile), oldCreds, 0o600)
	k3, err := natsauth.RetireSigningKeys(keysDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := k3.WriteConfig(keysDir); err != nil {
		t.Fatal(err)
	}
	s = start(k3)
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	if connects(s, nats.UserJWT(func() (string, error) { return oldSidecar, nil }, kp.Sign)) {
		t.Fatal("credentials from a retired signing key still accepted")
	}
	if connects(s, nats.UserCredentials(oldCredsFile)) {
		t.Fatal("revoked control-plane credentials still accepted")
	}
	if !connects(s, nats.UserCredentials(filepath.Join(keysDir, natsauth.ControlCredsFile))) {
		t.Fatal("freshly written control-plane credentials refused")
	}
}
