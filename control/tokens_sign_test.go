package control

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/internal/sign"
)

// Someone who can write the tokens bucket (NATS control-plane credentials)
// but does not hold the signing key cannot mint a token: a record they
// write, or one they edit to raise its roles, does not authenticate.
func TestForgedTokenRecordsDoNotAuthenticate(t *testing.T) {
	ctx := context.Background()
	srv := natsrun.StartTest(t)
	js, _ := jetstream.New(natsrun.ConnectTest(t, srv))
	toks, err := OpenTokens(ctx, js, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := sign.Generate()
	toks.SignWith(key, sign.NewTrust(key.Public()))
	viewer, info, err := toks.Create(ctx, "app", map[string]string{"dev": "viewer"}, 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := toks.Authenticate(ctx, viewer); err != nil || rec.RoleIn("dev") != RoleViewer {
		t.Fatalf("genuine token: %v", err)
	}
	kv, _ := js.KeyValue(ctx, TokensBucket)

	// 1. A record written from scratch, unsigned.
	secret := "mallory-secret-that-is-long-enough-000000"
	forged := TokenRecord{ID: opaqueID(secret), Name: "admin", Hash: hashSecret(secret), Roles: map[string]string{"*": "admin"}, CreatedAt: time.Now().UTC()}
	b, _ := json.Marshal(forged)
	if _, err := kv.Put(ctx, forged.ID, b); err != nil {
		t.Fatal(err)
	}
	// 2. The same, signed with a key the control plane does not trust.
	evil, _ := sign.Generate()
	other := Tokens{kv: kv, now: time.Now, signer: evil}
	secret2 := "mallory-second-secret-long-enough-11111111"
	rec2 := TokenRecord{ID: opaqueID(secret2), Name: "admin2", Hash: hashSecret(secret2), Roles: map[string]string{"*": "admin"}, CreatedAt: time.Now().UTC()}
	if err := other.put(ctx, &rec2, true); err != nil {
		t.Fatal(err)
	}
	// 3. The genuine viewer record, edited to admin everywhere (signature kept).
	ent, _ := kv.Get(ctx, info.ID)
	var edited TokenRecord
	_ = json.Unmarshal(ent.Value(), &edited)
	edited.Roles = map[string]string{"*": "admin"}
	b, _ = json.Marshal(edited)
	if _, err := kv.Put(ctx, info.ID, b); err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"unsigned": secret, "foreign key": secret2, "edited roles": viewer} {
		if rec, err := toks.Authenticate(ctx, tok); !errors.Is(err, ErrBadToken) {
			t.Errorf("%s: want ErrBadToken, got %v (%+v)", name, err, rec)
		}
	}
	list, err := toks.List(ctx)
	if err != nil || len(list) != 0 {
		t.Fatalf("forged records listed as tokens: %+v %v", list, err)
	}
}
