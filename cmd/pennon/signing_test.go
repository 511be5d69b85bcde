package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/internal/natsauth"
	"github.com/pennon-dev/pennon/internal/sign"
)

func TestSigningKeyFilesAndRotation(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	log := zap.NewNop()
	first, err := loadSigning(serverOptions{data: data}, log)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(data, "keys", "signing.key")
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v %v; want created with mode 0600", fi, err)
	}
	again, err := loadSigning(serverOptions{data: data}, log)
	if err != nil || again.key.ID() != first.key.ID() || again.trust.Len() != 1 {
		t.Fatalf("reload: %v %v", again, err)
	}

	// A --signing-key-file must exist (a Secret), and errors carry no key material.
	if _, err := loadSigning(serverOptions{data: data, signingKeyFile: filepath.Join(data, "absent.key")}, log); err == nil || !strings.Contains(err.Error(), "keygen") {
		t.Fatalf("missing --signing-key-file: %v; want an error naming `pennon server keygen`", err)
	}
	bad := filepath.Join(data, "bad.key")
	secret := "pennon-ed25519-private:c2VjcmV0LXRoYXQtaXMtdG9vLXNob3J0"
	_ = os.WriteFile(bad, []byte(secret), 0o600)
	if _, err := loadSigning(serverOptions{data: data, signingKeyFile: bad}, log); err == nil || strings.Contains(err.Error(), "c2VjcmV0") {
		t.Fatalf("bad key file: %v; want an error without the key's content", err)
	}

	// keygen never overwrites.
	var out bytes.Buffer
	if err := runKeygen(ctx, []string{"--out", keyFile}, &out, &out); err == nil {
		t.Fatal("keygen overwrote an existing key")
	}

	// Rotation: prepare, then switch; the old key stays trusted.
	out.Reset()
	if err := runRotateSigningKey(ctx, []string{"--data", data, "--prepare"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	next, err := sign.Load(keyFile + ".next")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), next.Public().String()) || !strings.Contains(out.String(), first.key.Public().String()) || strings.Contains(out.String(), "private") {
		t.Fatalf("prepare output should show both public keys and no private one:\n%s", out.String())
	}
	// Before the switch the control plane still signs with the old key.
	if k, _ := loadSigning(serverOptions{data: data}, log); k.key.ID() != first.key.ID() {
		t.Fatal("prepare switched the key")
	}
	out.Reset()
	if err := runRotateSigningKey(ctx, []string{"--data", data}, &out, &out); err != nil {
		t.Fatal(err)
	}
	rotated, err := loadSigning(serverOptions{data: data}, log)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.key.ID() != next.ID() || rotated.trust.Len() != 2 {
		t.Fatalf("after rotation: key %s (want %s), %d trusted (want 2)", rotated.key.ID(), next.ID(), rotated.trust.Len())
	}
	msg := []byte("old changeset")
	if err := rotated.trust.Verify(sign.PurposeChangeset, msg, first.key.Sign(sign.PurposeChangeset, msg)); err != nil {
		t.Fatalf("what the retired key signed no longer verifies: %v", err)
	}
	if _, err := os.Stat(keyFile + ".next"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("next key file left behind: %v", err)
	}
}

// TestDoctorReportsAndRepairsForeignMessages runs pennon doctor against
// `pennon dev` after a client with the control plane's NATS credentials (but
// not its signing key) appended a forged changeset.
func TestDoctorReportsAndRepairsForeignMessages(t *testing.T) {
	d := startDev(t)
	ctx := context.Background()
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
	stream, err := js.Stream(ctx, config.StreamName("dev"))
	if err != nil {
		t.Fatal(err)
	}
	info, _ := stream.Info(ctx)
	v := info.State.LastSeq + 1
	forged, _ := json.Marshal(&config.Changeset{Env: "dev", Version: v, PrevVersion: v - 1, Author: "admin",
		Changes: []config.Change{{Flag: "performance-mode", Op: config.OpDelete, BaseVersion: 1}}})
	m := nats.NewMsg(config.LogSubject("dev"))
	m.Data = forged
	if _, err := js.PublishMsg(ctx, m, jetstream.WithExpectLastSequence(info.State.LastSeq)); err != nil {
		t.Fatal(err)
	}

	args := []string{"--server", d.api, "--token", d.admin, "--env", "dev"}
	var out bytes.Buffer
	err = runDoctor(ctx, args, &out, &out)
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("doctor with a foreign message: %v; want exit status 1\n%s", err, out.String())
	}
	for _, want := range []string{"dev", "foreign (unsigned), skipped", "--repair"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("doctor output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := runDoctor(ctx, append(args, "--repair"), &out, &out); err != nil {
		t.Fatalf("doctor --repair: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "erased 1 foreign message(s)") {
		t.Fatalf("repair output:\n%s", out.String())
	}
	out.Reset()
	if err := runDoctor(ctx, append(args, "--json"), &out, &out); err != nil {
		t.Fatalf("doctor after repair: %v\n%s", err, out.String())
	}
	var res struct{ Checks []config.EnvCheck }
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || len(res.Checks) != 1 || len(res.Checks[0].Foreign) != 0 || res.Checks[0].Missing != 1 || !res.Checks[0].Verified {
		t.Fatalf("doctor --json after repair: %v\n%s", err, out.String())
	}
	// The flag the forged changeset deleted is still served.
	if code, body := post(t, d.sidecar+"/ofrep/v1/evaluate/flags/performance-mode", "", "POST", `{"context":{}}`); code != 200 || !strings.Contains(body, `"balanced"`) {
		t.Fatalf("performance-mode after the attack: %d %s", code, body)
	}
}
