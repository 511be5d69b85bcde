package config

import (
	"context"
	"errors"
	"testing"

	"github.com/pennon-dev/pennon/internal/natsrun"
)

func TestEnvsPromotionAndReads(t *testing.T) {
	ctx := context.Background()
	srv := natsrun.StartTest(t)
	s := openTestStore(t, srv, StoreOptions{SnapshotEvery: 2})
	for _, e := range []EnvSettings{{Name: "staging"}, {Name: "production", Protected: true, RequireOwner: true, MaxLifetime: "2160h"}} {
		if err := s.CreateEnv(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateEnv(ctx, EnvSettings{Name: "x", MaxLifetime: "soon"}); err == nil {
		t.Fatal("bad maxLifetime accepted")
	}
	envs, err := s.Envs(ctx)
	if err != nil || len(envs) != 2 || envs[0].Name != "production" || !envs[0].Protected || envs[1].Name != "staging" {
		t.Fatalf("envs: %+v %v", envs, err)
	}
	for i := 1; i <= 3; i++ {
		head, _ := s.Head(ctx, "staging")
		if _, err := s.Commit(ctx, &Changeset{Env: "staging", Author: "ann", Changes: []Change{
			{Flag: "n", Op: OpPut, Definition: counterDef(i), BaseVersion: head.FlagVersion("n")},
			{Flag: "m", Op: OpPut, Definition: counterDef(-i), BaseVersion: head.FlagVersion("m")},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	cs, err := s.Promote(ctx, "staging", "production", []string{"n"}, "bob", "ship it", false)
	if err != nil || cs.PromotedFrom != "staging@3" || cs.Version != 1 {
		t.Fatalf("promote: %+v %v", cs, err)
	}
	prod, err := s.Head(ctx, "production")
	if err != nil || string(prod.Doc.Flag("n").Variants["v"]) != "3" || prod.Doc.Flag("m") != nil {
		t.Fatalf("production after promotion: %+v %v", prod, err)
	}
	// Promoting again bases on production's own flag versions: no conflict.
	if _, err := s.Promote(ctx, "staging", "production", nil, "bob", "all of it", false); err != nil {
		t.Fatal(err)
	}
	var ve *ValidationError
	if _, err := s.Promote(ctx, "staging", "production", []string{"ghost"}, "bob", "", false); !errors.As(err, &ve) {
		t.Fatalf("promoting a missing flag: %v", err)
	}
	if _, err := s.Promote(ctx, "staging", "nowhere", nil, "bob", "", false); !errors.Is(err, ErrEnvNotFound) {
		t.Fatalf("promoting to a missing env: %v", err)
	}

	page, err := s.Changesets(ctx, "staging", 1, 10)
	if err != nil || len(page) != 2 || page[0].Version != 2 || page[1].PrevVersion != 2 {
		t.Fatalf("changesets: %+v %v", page, err)
	}
	if _, err := s.Changeset(ctx, "staging", 99); !errors.Is(err, ErrVersionNotFound) {
		t.Fatalf("missing version: %v", err)
	}
	if _, err := s.Head(ctx, "nope"); !errors.Is(err, ErrEnvNotFound) {
		t.Fatalf("missing env: %v", err)
	}
	head, _ := s.Head(ctx, "staging")
	snap, err := s.Snapshot(ctx, "staging")
	if err != nil || snap.Version != 3 || snap.Hash != head.Hash || snap.FlagVersions["n"] != 3 {
		t.Fatalf("snapshot: %+v %v", snap, err)
	}
	old, err := s.StateAt(ctx, "staging", 1)
	if err != nil || string(old.Doc.Flag("n").Variants["v"]) != "1" {
		t.Fatalf("state at 1: %+v %v", old, err)
	}
}
