package config

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/internal/sign"
)

// foreignCounter records OnForeign calls.
type foreignCounter struct {
	mu  sync.Mutex
	got map[string]int // "env/why"
}

func (c *foreignCounter) add(env, why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got[env+"/"+why]++
}

func (c *foreignCounter) count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got[key]
}

// attacker is a NATS client with control-plane-like rights (it can publish
// to the log subject and use the JetStream API) but without the signing key.
func attacker(t *testing.T, srv *natsrun.Server) jetstream.JetStream {
	t.Helper()
	nc := natsrun.ConnectTest(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// inject appends raw bytes (with an optional signature header) at the next
// stream position, as an attacker would, and returns the version it got.
func inject(t *testing.T, js jetstream.JetStream, env string, data []byte, sig string) uint64 {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, StreamName(env))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(LogSubject(env))
	m.Data = data
	if sig != "" {
		m.Header.Set(SignatureHeader, sig)
	}
	ack, err := js.PublishMsg(ctx, m, jetstream.WithExpectLastSequence(info.State.LastSeq))
	if err != nil {
		t.Fatalf("inject: %v", err)
	}
	return ack.Sequence
}

func TestForeignChangesetsAreSkippedAndReported(t *testing.T) {
	ctx := context.Background()
	srv := natsrun.StartTest(t)
	key, _ := sign.Generate()
	other, _ := sign.Generate()
	counter := &foreignCounter{got: map[string]int{}}
	s := openTestStore(t, srv, StoreOptions{Signer: key, OnForeign: counter.add, SnapshotEvery: 1000})
	for _, env := range []string{"dev", "prod"} {
		if err := s.CreateEnv(ctx, EnvSettings{Name: env}); err != nil {
			t.Fatal(err)
		}
	}
	first, err := s.Commit(ctx, &Changeset{Env: "dev", Author: "ann", Changes: []Change{{Flag: "a", Op: OpPut, Definition: counterDef(1)}}})
	if err != nil {
		t.Fatal(err)
	}
	prodCS, err := s.Commit(ctx, &Changeset{Env: "prod", Author: "ann", Changes: []Change{{Flag: "a", Op: OpPut, Definition: counterDef(7)}}})
	if err != nil {
		t.Fatal(err)
	}
	// What the store wrote is signed over the exact bytes and carries the hash.
	stream, _ := s.js.Stream(ctx, StreamName("dev"))
	raw1, err := stream.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := sign.NewTrust(key.Public()).Verify(sign.PurposeChangeset, raw1.Data, raw1.Header.Get(SignatureHeader)); err != nil {
		t.Fatalf("committed changeset signature: %v", err)
	}
	head1, _ := s.Head(ctx, "dev")
	if first.Hash == "" || first.Hash != head1.Hash {
		t.Fatalf("committed hash %q, head hash %q", first.Hash, head1.Hash)
	}
	prodRaw, _ := func() (*jetstream.RawStreamMsg, error) {
		ps, _ := s.js.Stream(ctx, StreamName("prod"))
		return ps.GetMsg(ctx, prodCS.Version)
	}()

	evil := func(v uint64, def []byte) []byte {
		b, _ := json.Marshal(&Changeset{Env: "dev", Version: v, PrevVersion: v - 1, Author: "admin (forged)",
			Changes: []Change{{Flag: "a", Op: OpPut, Definition: def, BaseVersion: 1}}})
		return b
	}
	js := attacker(t, srv)
	cases := []struct {
		name string
		make func(v uint64) ([]byte, string)
		want string
	}{
		{"unsigned", func(v uint64) ([]byte, string) { return evil(v, counterDef(666)), "" }, ForeignUnsigned},
		{"signed with another key", func(v uint64) ([]byte, string) {
			d := evil(v, counterDef(666))
			return d, other.Sign(sign.PurposeChangeset, d)
		}, ForeignUnknownKey},
		{"another key under our key id", func(v uint64) ([]byte, string) {
			d := evil(v, counterDef(666))
			sig := other.Sign(sign.PurposeChangeset, d)
			return d, key.ID() + sig[len(other.ID()):]
		}, ForeignBadSignature},
		{"corrupted bytes", func(v uint64) ([]byte, string) {
			d := append([]byte{}, raw1.Data...)
			d[len(d)/2] ^= 0x20
			return d, raw1.Header.Get(SignatureHeader)
		}, ForeignBadSignature},
		{"garbage", func(v uint64) ([]byte, string) { return []byte("\x00not json"), "" }, ForeignUnsigned},
		{"replay of version 1 at a new position", func(v uint64) ([]byte, string) {
			return raw1.Data, raw1.Header.Get(SignatureHeader)
		}, ForeignWrongVersion},
		{"replay of another environment's changeset", func(v uint64) ([]byte, string) {
			return prodRaw.Data, prodRaw.Header.Get(SignatureHeader)
		}, ForeignWrongEnv},
	}
	var foreignVersions []uint64
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, err := s.Head(ctx, "dev")
			if err != nil {
				t.Fatal(err)
			}
			v := before.Version + 1
			data, sig := tc.make(v)
			if got := inject(t, js, "dev", data, sig); got != v {
				t.Fatalf("injected at %d, want %d", got, v)
			}
			foreignVersions = append(foreignVersions, v)
			head, err := s.Head(ctx, "dev")
			if err != nil {
				t.Fatalf("Head after a foreign message: %v", err)
			}
			if head.Version != v || head.Hash != before.Hash || string(head.Doc.FlagJSON("a")) != string(before.Doc.FlagJSON("a")) {
				t.Fatalf("head = v%d %s a=%s; want v%d with the state unchanged (%s a=%s)", head.Version, head.Hash, head.Doc.FlagJSON("a"), v, before.Hash, before.Doc.FlagJSON("a"))
			}
			cs, err := s.Changeset(ctx, "dev", v)
			if err != nil || cs.Foreign != tc.want || len(cs.Changes) != 0 || cs.Author != "" {
				t.Fatalf("Changeset(%d) = %+v, %v; want marked %q with no content", v, cs, err, tc.want)
			}
			// A real commit still applies on top, based on the unchanged flag.
			real, err := s.Commit(ctx, &Changeset{Env: "dev", Author: "bob", Changes: []Change{{Flag: fmt.Sprintf("real-%d", v+1), Op: OpPut, Definition: counterDef(int(v))}}})
			if err != nil || real.Version != v+1 || real.PrevVersion != v {
				t.Fatalf("commit after foreign message: %+v, %v", real, err)
			}
		})
	}
	// History marks every foreign version instead of failing.
	hist, err := s.History(ctx, "dev", "", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	marked := map[uint64]string{}
	for _, cs := range hist {
		if cs.Foreign != "" {
			marked[cs.Version] = cs.Foreign
		}
	}
	for i, v := range foreignVersions {
		if marked[v] != cases[i].want {
			t.Errorf("history version %d marked %q, want %q", v, marked[v], cases[i].want)
		}
	}
	// Counted once per message, however often it is read.
	if n := counter.count("dev/" + ForeignUnsigned); n != 2 {
		t.Errorf("unsigned counted %d times, want 2 (one per message)", n)
	}
	// A fresh reader (another replica, or a restart) reaches the same head.
	s2 := openTestStore(t, srv, StoreOptions{Signer: key})
	h1, _ := s.Head(ctx, "dev")
	h2, err := s2.Head(ctx, "dev")
	if err != nil || h2.Version != h1.Version || h2.Hash != h1.Hash {
		t.Fatalf("second reader head %v, want v%d %s", err, h1.Version, h1.Hash)
	}
	// Diff across foreign versions works.
	if _, err := s.Diff(ctx, "dev", 1, h1.Version); err != nil {
		t.Fatalf("diff across foreign versions: %v", err)
	}

	// Doctor's check lists them; repair erases them; the state is unchanged.
	check, err := s.Check(ctx, "dev")
	if err != nil || len(check.Foreign) != len(foreignVersions) || check.Missing != 0 {
		t.Fatalf("check = %+v, %v; want %d foreign", check, err, len(foreignVersions))
	}
	rep, err := s.Repair(ctx, "dev")
	if err != nil || len(rep.Deleted) != len(foreignVersions) || rep.SnapshotVersion != h1.Version {
		t.Fatalf("repair = %+v, %v", rep, err)
	}
	check, err = s.Check(ctx, "dev")
	if err != nil || len(check.Foreign) != 0 || check.Missing != uint64(len(foreignVersions)) || check.Snapshot != "ok" {
		t.Fatalf("check after repair = %+v, %v", check, err)
	}
	s3 := openTestStore(t, srv, StoreOptions{Signer: key})
	h3, err := s3.Head(ctx, "dev")
	if err != nil || h3.Version != h1.Version || h3.Hash != h1.Hash {
		t.Fatalf("head after repair %v %v, want v%d", h3, err, h1.Version)
	}
	if cs, err := s.Commit(ctx, &Changeset{Env: "dev", Author: "bob", Changes: []Change{{Flag: "c", Op: OpPut, Definition: counterDef(1)}}}); err != nil || cs.Version != h1.Version+1 {
		t.Fatalf("commit after repair: %+v %v", cs, err)
	}
}

func TestDeletedAndPurgedMessagesAreGaps(t *testing.T) {
	ctx := context.Background()
	srv := natsrun.StartTest(t)
	key, _ := sign.Generate()
	s := openTestStore(t, srv, StoreOptions{Signer: key, SnapshotEvery: 1000})
	if err := s.CreateEnv(ctx, EnvSettings{Name: "dev"}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if _, err := s.Commit(ctx, &Changeset{Env: "dev", Author: "ann", Changes: []Change{{Flag: "f" + string(rune('0'+i)), Op: OpPut, Definition: counterDef(i)}}}); err != nil {
			t.Fatal(err)
		}
	}
	js := attacker(t, srv)
	st, _ := js.Stream(ctx, StreamName("dev"))
	if err := st.DeleteMsg(ctx, 2); err != nil {
		t.Fatal(err)
	}
	s2 := openTestStore(t, srv, StoreOptions{Signer: key})
	head, err := s2.Head(ctx, "dev")
	if err != nil || head.Version != 3 || head.Doc.Flag("f2") != nil || head.Doc.Flag("f3") == nil {
		t.Fatalf("head with version 2 deleted: %+v %v; want v3 with f1, f3", head, err)
	}
	if cs, err := s2.Changeset(ctx, "dev", 2); err != nil || cs.Foreign != ForeignMissing {
		t.Fatalf("deleted version: %+v %v", cs, err)
	}
	if _, err := s2.Changeset(ctx, "dev", 9); err == nil {
		t.Fatal("version past the head: want ErrVersionNotFound")
	}
	// Purge everything: the environment reads as empty at version 3, and
	// accepts version 4.
	if err := st.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	s3 := openTestStore(t, srv, StoreOptions{Signer: key})
	head, err = s3.Head(ctx, "dev")
	if err != nil || head.Version != 3 || head.Doc.Len() != 0 {
		t.Fatalf("head after purge: %+v %v", head, err)
	}
	if cs, err := s3.Commit(ctx, &Changeset{Env: "dev", Author: "ann", Changes: []Change{{Flag: "x", Op: OpPut, Definition: counterDef(1)}}}); err != nil || cs.Version != 4 {
		t.Fatalf("commit after purge: %+v %v", cs, err)
	}
}

func TestBadSnapshotIsIgnored(t *testing.T) {
	ctx := context.Background()
	srv := natsrun.StartTest(t)
	key, _ := sign.Generate()
	other, _ := sign.Generate()
	s := openTestStore(t, srv, StoreOptions{Signer: key, SnapshotEvery: 2})
	if err := s.CreateEnv(ctx, EnvSettings{Name: "dev"}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if _, err := s.Commit(ctx, &Changeset{Env: "dev", Author: "ann", Changes: []Change{{Flag: "a", Op: OpPut, Definition: counterDef(i), BaseVersion: uint64(i - 1)}}}); err != nil {
			t.Fatal(err)
		}
	}
	want, _ := s.Head(ctx, "dev")
	// The snapshot of version 2 is written off the commit path: wait for
	// it, or it could land after (and replace) the bad ones put below.
	if err := s.FlushSnapshots(ctx); err != nil {
		t.Fatal(err)
	}
	rec, err := s.Snapshot(ctx, "dev")
	if err != nil || rec.Signature == "" {
		t.Fatalf("served snapshot is not signed: %+v %v", rec, err)
	}
	if err := sign.NewTrust(key.Public()).Verify(sign.PurposeSnapshot, rec.SigningBytes(), rec.Signature); err != nil {
		t.Fatalf("served snapshot signature: %v", err)
	}
	forgedDoc := []byte(`{"flags":{"a":{"state":"ENABLED","variants":{"v":666},"defaultVariant":"v"}}}`)
	doc, _ := Parse(forgedDoc)
	forged := &SnapshotRecord{Env: "dev", Version: 2, Hash: doc.Hash(), Document: doc.Canonical(), FlagVersions: map[string]uint64{"a": 2}}
	cases := []struct {
		name string
		put  func() []byte
	}{
		{"unsigned", func() []byte { b, _ := json.Marshal(forged); return b }},
		{"signed with another key", func() []byte {
			f := *forged
			f.Signature = other.Sign(sign.PurposeSnapshot, f.SigningBytes())
			b, _ := json.Marshal(&f)
			return b
		}},
		{"document edited after signing", func() []byte {
			f := *forged
			f.Hash = "sha256:00"
			f.Signature = key.Sign(sign.PurposeSnapshot, f.SigningBytes())
			b, _ := json.Marshal(&f)
			return b
		}},
		{"not json", func() []byte { return []byte("{") }},
	}
	js := attacker(t, srv)
	kv, err := js.KeyValue(ctx, SnapshotBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := kv.Put(ctx, "dev", tc.put()); err != nil {
				t.Fatal(err)
			}
			counter := &foreignCounter{got: map[string]int{}}
			fresh := openTestStore(t, srv, StoreOptions{Signer: key, OnForeign: counter.add})
			head, err := fresh.Head(ctx, "dev")
			if err != nil || head.Version != want.Version || head.Hash != want.Hash {
				t.Fatalf("head from a bad snapshot: %+v %v; want v%d %s (rebuilt from the stream)", head, err, want.Version, want.Hash)
			}
			total := 0
			for k, n := range counter.got {
				if len(k) > 4 && k[:4] == "dev/" {
					total += n
				}
			}
			if total != 1 {
				t.Fatalf("bad snapshot counted %d times (%v), want 1", total, counter.got)
			}
		})
	}
}

func TestAdoptUnsignedHistory(t *testing.T) {
	ctx := context.Background()
	srv := natsrun.StartTest(t)
	// A store from before signing wrote the history.
	old := openTestStore(t, srv, StoreOptions{SnapshotEvery: 2})
	if err := old.CreateEnv(ctx, EnvSettings{Name: "dev"}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if _, err := old.Commit(ctx, &Changeset{Env: "dev", Author: "ann", Changes: []Change{{Flag: "a", Op: OpPut, Definition: counterDef(i), BaseVersion: uint64(i - 1)}}}); err != nil {
			t.Fatal(err)
		}
	}
	want, _ := old.Head(ctx, "dev")
	if err := old.FlushSnapshots(ctx); err != nil { // its unsigned snapshot of version 2 is in KV before adoption
		t.Fatal(err)
	}
	key, _ := sign.Generate()
	s := openTestStore(t, srv, StoreOptions{Signer: key})
	if head, err := s.Head(ctx, "dev"); err != nil || head.Version != 3 || head.Doc.Len() != 0 {
		t.Fatalf("unsigned history with signatures checked: %+v %v; want v3 and no flags", head, err)
	}
	cs, err := s.AdoptUnsigned(ctx, "dev", "upgrade")
	if err != nil || cs.Version != 4 {
		t.Fatalf("adopt = %+v, %v", cs, err)
	}
	fresh := openTestStore(t, srv, StoreOptions{Signer: key})
	head, err := fresh.Head(ctx, "dev")
	if err != nil || head.Version != 4 || string(head.Doc.FlagJSON("a")) != string(want.Doc.FlagJSON("a")) {
		t.Fatalf("after adoption: %+v %v; want v4 with a = %s", head, err, want.Doc.FlagJSON("a"))
	}
	if check, err := fresh.Check(ctx, "dev"); err != nil || check.Snapshot != "ok" {
		t.Fatalf("snapshot after adoption: %+v %v", check, err)
	}
	// Once something is signed, unsigned messages are forgeries, not history.
	if _, err := s.AdoptUnsigned(ctx, "dev", "again"); !errors.Is(err, ErrNothingToAdopt) {
		t.Fatalf("second adoption: %v, want ErrNothingToAdopt", err)
	}
	if err := s.CreateEnv(ctx, EnvSettings{Name: "empty"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AdoptUnsigned(ctx, "empty", "upgrade"); !errors.Is(err, ErrNothingToAdopt) {
		t.Fatalf("adopting an empty env: %v, want ErrNothingToAdopt", err)
	}
}

// TestSignedSnapshotIsMemoized: serving the current snapshot costs no
// encoding, hashing or signing after the first request of a version.
func TestSignedSnapshotIsMemoized(t *testing.T) {
	ctx := context.Background()
	srv := natsrun.StartTest(t)
	key, _ := sign.Generate()
	s := openTestStore(t, srv, StoreOptions{Signer: key})
	if err := s.CreateEnv(ctx, EnvSettings{Name: "dev"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(ctx, &Changeset{Env: "dev", Author: "ann", Changes: []Change{{Flag: "a", Op: OpPut, Definition: counterDef(1)}}}); err != nil {
		t.Fatal(err)
	}
	r1, b1, err := s.SignedSnapshot(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	r2, b2, _ := s.SignedSnapshot(ctx, "dev")
	if r1 != r2 || &b1[0] != &b2[0] {
		t.Fatal("the same version's signed snapshot was built twice")
	}
	if _, err := s.Commit(ctx, &Changeset{Env: "dev", Author: "ann", Changes: []Change{{Flag: "a", Op: OpPut, Definition: counterDef(2), BaseVersion: 1}}}); err != nil {
		t.Fatal(err)
	}
	r3, _, _ := s.SignedSnapshot(ctx, "dev")
	if r3 == r1 || r3.Version != 2 || sign.NewTrust(key.Public()).Verify(sign.PurposeSnapshot, r3.SigningBytes(), r3.Signature) != nil {
		t.Fatalf("after a commit: %+v; want a new signed record at version 2", r3)
	}
}
