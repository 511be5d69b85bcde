package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/internal/checkfor"
	"github.com/pennon-dev/pennon/internal/natsauth"
	"github.com/pennon-dev/pennon/internal/natsrun"
	flagsync "github.com/pennon-dev/pennon/sync"
)

// An external NATS server configured from `pennon server nats-config`
// output, a control plane started with --nats-url, --nats-creds and
// --nats-account-seed-file, and a sidecar started as always: the sidecar
// gets its credentials from the control plane and reaches push.
func TestExternalNATSFromNATSConfig(t *testing.T) {
	out := filepath.Join(t.TempDir(), "nats-auth")
	var stdout, stderr strings.Builder
	if err := runServer(context.Background(), []string{"nats-config", "--out", out}, &stdout, &stderr); err != nil {
		t.Fatalf("nats-config: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "--nats-creds "+filepath.Join(out, natsauth.ControlCredsFile)) {
		t.Fatalf("nats-config output does not say how to use the files:\n%s", stdout.String())
	}
	for _, f := range []string{natsauth.AuthConfFile, natsauth.AccountSeedFile, natsauth.IdentitySeedFile, natsauth.ControlCredsFile, natsauth.ReadonlyCreds} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Fatalf("nats-config did not write %s: %v", f, err)
		}
	}
	// The "external" server trusts what nats-config wrote.
	keys, created, err := natsauth.LoadOrCreate(out)
	if err != nil || created {
		t.Fatalf("reloading nats-config keys: created=%v %v", created, err)
	}
	ns, err := natsrun.Start(natsrun.Options{DataDir: t.TempDir(), Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()

	ctx := context.Background()
	rs, err := startServer(ctx, serverOptions{addr: "127.0.0.1:0", data: t.TempDir(), natsURL: ns.ClientURL(),
		natsCreds: filepath.Join(out, natsauth.ControlCredsFile), natsAccountSeed: filepath.Join(out, natsauth.AccountSeedFile),
		replicas: 1, snapshotEvery: 20, envs: []string{"dev"}, heartbeat: 100 * time.Millisecond}, zap.NewNop())
	if err != nil {
		t.Fatalf("control plane on external NATS: %v", err)
	}
	defer rs.Close()
	tok, _, err := rs.Tokens.Create(ctx, "sidecar", map[string]string{"dev": "viewer"}, 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	r, err := flagsync.NewRemote(flagsync.RemoteOptions{Env: "dev", ServerURL: "http://" + rs.API.Addr(), NATSURL: ns.ClientURL(), Token: tok, ID: "pod-ext",
		PollInterval: 100 * time.Millisecond, SilenceAfter: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(rctx) }()
	defer func() { cancel(); <-done }()
	checkfor.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if st := r.Status().(flagsync.RemoteStatus); st.State != flagsync.StatePush {
			return fmt.Errorf("sidecar state %s (%s %s)", st.State, st.LastError, st.AuthError)
		}
		return nil
	})
	if _, err := rs.Store.Commit(ctx, &config.Changeset{Env: "dev", Author: "test", Changes: []config.Change{{Flag: "f", Op: config.OpPut,
		Definition: []byte(`{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}`)}}}); err != nil {
		t.Fatal(err)
	}
	checkfor.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if snap := r.Current(); snap == nil || snap.Version() != 1 {
			return fmt.Errorf("change not pushed")
		}
		return nil
	})
	// Without the account seed the control plane still runs, and says that
	// sidecars can only poll.
	if _, err := startServer(ctx, serverOptions{addr: "127.0.0.1:0", data: t.TempDir(), natsURL: ns.ClientURL(),
		natsAccountSeed: filepath.Join(out, natsauth.AccountSeedFile), replicas: 1, heartbeat: time.Second}, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "--nats-creds") {
		t.Fatalf("account seed without creds: want an error naming --nats-creds, got %v", err)
	}
}
