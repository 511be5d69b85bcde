package config

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/internal/sign"
)

// Environment settings written to the bucket without the signing key (here:
// `protected` switched off to skip approvals) are served fail-safe, marked
// untrusted, and reads of the environment keep working.
func TestForgedEnvSettingsFailSafe(t *testing.T) {
	ctx := context.Background()
	srv := natsrun.StartTest(t)
	key, _ := sign.Generate()
	s := openTestStore(t, srv, StoreOptions{Signer: key, Trust: sign.NewTrust(key.Public())})
	if err := s.CreateEnv(ctx, EnvSettings{Name: "prod", Protected: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateEnv(ctx, EnvSettings{Name: "dev"}); err != nil {
		t.Fatal(err)
	}
	if e, err := s.Env(ctx, "dev"); err != nil || e.Protected || e.Untrusted {
		t.Fatalf("genuine settings: %+v %v", e, err)
	}
	js, _ := jetstream.New(natsrun.ConnectTest(t, srv))
	kv, _ := js.KeyValue(ctx, EnvsBucket)
	ent, _ := kv.Get(ctx, "prod")
	var e EnvSettings
	_ = json.Unmarshal(ent.Value(), &e)
	e.Protected = false // keep the old signature
	b, _ := json.Marshal(e)
	if _, err := kv.Put(ctx, "prod", b); err != nil {
		t.Fatal(err)
	}
	got, err := s.Env(ctx, "prod")
	if err != nil || !got.Protected || !got.Untrusted || !got.RequireOwner {
		t.Fatalf("edited settings: want fail-safe protected+untrusted, got %+v %v", got, err)
	}
	if _, err := s.Head(ctx, "prod"); err != nil {
		t.Fatalf("reads must keep working: %v", err)
	}
	if _, err := kv.Put(ctx, "dev", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Env(ctx, "dev"); err != nil || !got.Protected || !got.Untrusted {
		t.Fatalf("garbage settings: %+v %v", got, err)
	}
}

// The lifecycle policy is covered by the settings' signature: switching a
// blocking environment to warn without the key is refused (served
// fail-safe, blocking), while genuine settings keep their policy.
func TestLifecyclePolicySigned(t *testing.T) {
	ctx := context.Background()
	srv := natsrun.StartTest(t)
	key, _ := sign.Generate()
	s := openTestStore(t, srv, StoreOptions{Signer: key, Trust: sign.NewTrust(key.Public())})
	pol := &LifecyclePolicy{ExpiredFlags: ExpiredBlock, UnusedDays: 7}
	if err := s.CreateEnv(ctx, EnvSettings{Name: "prod", Lifecycle: pol}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Env(ctx, "prod")
	if err != nil || got.Untrusted || got.Lifecycle == nil || *got.Lifecycle != *pol {
		t.Fatalf("genuine settings: %+v %v", got, err)
	}
	js, _ := jetstream.New(natsrun.ConnectTest(t, srv))
	kv, _ := js.KeyValue(ctx, EnvsBucket)
	ent, _ := kv.Get(ctx, "prod")
	var e EnvSettings
	_ = json.Unmarshal(ent.Value(), &e)
	e.Lifecycle.ExpiredFlags = ExpiredWarn // keep the old signature
	b, _ := json.Marshal(e)
	if _, err := kv.Put(ctx, "prod", b); err != nil {
		t.Fatal(err)
	}
	got, err = s.Env(ctx, "prod")
	if err != nil || !got.Untrusted || got.Lifecycle.WithDefaults().ExpiredFlags != ExpiredBlock {
		t.Fatalf("edited policy: want untrusted and blocking, got %+v %v", got, err)
	}
}

func TestLifecyclePolicyCheck(t *testing.T) {
	cases := []struct {
		name string
		p    *LifecyclePolicy
		want string
	}{
		{"nil", nil, ""},
		{"block", &LifecyclePolicy{ExpiredFlags: "block", StaleDays: 180}, ""},
		{"unknown mode", &LifecyclePolicy{ExpiredFlags: "deny"}, `lifecycle.expiredFlags: "deny" is not allowed (allowed: block, warn)`},
		{"negative days", &LifecyclePolicy{SettledDays: -1}, "lifecycle.settledDays: must be a number of days from 1 to 3650 (0 or absent: the default), got -1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Check()
			if got := errString(err); got != tc.want {
				t.Fatalf("Check() = %q, want %q", got, tc.want)
			}
		})
	}
	d := (*LifecyclePolicy)(nil).WithDefaults()
	if d != (LifecyclePolicy{ExpiredFlags: "warn", UnusedDays: 30, StaleDays: 90, ExpiringSoonDays: 14, SettledDays: 14}) {
		t.Fatalf("defaults: %+v", d)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
