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
