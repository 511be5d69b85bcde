package config

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pennon-dev/pennon/internal/natsrun"
)

// Reads cost O(1)/O(page) round trips, not one per version: Head on a
// known environment is one request, a 100-version history page a handful,
// and reading it again none.
func TestReadsCostPagesNotVersions(t *testing.T) {
	ctx := context.Background()
	srv := natsrun.StartTest(t)
	w := openTestStore(t, srv, StoreOptions{SnapshotEvery: 1000})
	if err := w.CreateEnv(ctx, EnvSettings{Name: "dev"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i++ {
		head, _ := w.Head(ctx, "dev")
		if _, err := w.Commit(ctx, &Changeset{Env: "dev", Author: "t", Changes: []Change{{Flag: fmt.Sprint("f", i%7), Op: OpPut, Definition: counterDef(i), BaseVersion: head.FlagVersion(fmt.Sprint("f", i%7))}}}); err != nil {
			t.Fatal(err)
		}
	}
	nc := natsrun.ConnectTest(t, srv)
	js, _ := jetstream.New(nc)
	r, err := OpenStore(ctx, js, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	requests := func(f func()) uint64 {
		before := nc.Stats().OutMsgs
		f()
		return nc.Stats().OutMsgs - before
	}
	var head *State
	n := requests(func() { head, err = r.Head(ctx, "dev") }) // cold: replays 300 versions
	if err != nil || head.Version != 300 {
		t.Fatalf("head %v %v", head, err)
	}
	if n > 20 {
		t.Errorf("cold Head replaying 300 versions sent %d requests; want a few pages", n)
	}
	if n := requests(func() { _, _ = r.Head(ctx, "dev") }); n > 1 {
		t.Errorf("warm Head sent %d requests, want 1 (stream info)", n)
	}
	var page []*Changeset
	n = requests(func() { page, err = r.History(ctx, "dev", "", 0, 100) })
	if err != nil || len(page) != 100 || page[0].Version != 300 || page[99].Version != 201 {
		t.Fatalf("history page: %d entries, err %v", len(page), err)
	}
	if n > 3 {
		t.Errorf("a 100-version history page (cached by the replay) sent %d requests", n)
	}
	// A store that has not replayed: the page is read in one consumer.
	r2, _ := OpenStore(ctx, js, StoreOptions{})
	_, _ = r2.Env(ctx, "dev")
	n = requests(func() { page, err = r2.Changesets(ctx, "dev", 50, 100) })
	if err != nil || len(page) != 100 || page[0].Version != 51 || page[99].Version != 150 {
		t.Fatalf("changesets page: %d entries, err %v", len(page), err)
	}
	t.Logf("changesets page of 100 from a cold store: %d requests", n)
	if n > 25 {
		t.Errorf("a 100-version page from a cold store sent %d requests; want a few", n)
	}
	// Flag-filtered history still finds older entries across pages.
	hist, err := r2.History(ctx, "dev", "f3", 0, 50)
	if err != nil || len(hist) != 43 {
		t.Fatalf("history of f3: %d entries (want 43 = versions with i%%7==3), %v", len(hist), err)
	}
	for _, cs := range hist {
		if !touches(cs, "f3") {
			t.Fatalf("version %d does not touch f3", cs.Version)
		}
	}
}
