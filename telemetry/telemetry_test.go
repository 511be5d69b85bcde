package telemetry_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/telemetry"
)

func batch(seq uint64) telemetry.Batch {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	return telemetry.Batch{Kind: telemetry.KindUsage, Env: "dev", Sidecar: "pod-1", Boot: "0123456789abcdef", Seq: seq,
		From: now, To: now.Add(10 * time.Second), Data: json.RawMessage(`{"n":` + string(rune('0'+seq%10)) + `}`)}
}

func TestBatchValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(b *telemetry.Batch)
		field string // "" = valid
	}{
		{"valid", func(*telemetry.Batch) {}, ""},
		{"unknown kind", func(b *telemetry.Batch) { b.Kind = "logs" }, "kind:"},
		{"bad env", func(b *telemetry.Batch) { b.Env = "Dev!" }, "env:"},
		{"no sidecar", func(b *telemetry.Batch) { b.Sidecar = "" }, "sidecar:"},
		{"space in sidecar", func(b *telemetry.Batch) { b.Sidecar = "a b" }, "sidecar:"},
		{"bad boot", func(b *telemetry.Batch) { b.Boot = "xyz" }, "boot:"},
		{"seq zero", func(b *telemetry.Batch) { b.Seq = 0 }, "seq:"},
		{"to before from", func(b *telemetry.Batch) { b.To = b.From.Add(-time.Second) }, "from/to:"},
		{"no data", func(b *telemetry.Batch) { b.Data = nil }, "data:"},
		{"bad data", func(b *telemetry.Batch) { b.Data = json.RawMessage(`{`) }, "data:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := batch(1)
			tc.edit(&b)
			err := b.Validate()
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("valid batch refused: %v", err)
			case tc.field != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.field)):
				t.Fatalf("want an error naming %q, got %v", tc.field, err)
			}
		})
	}
}

func openIngest(t *testing.T) (*natsrun.Server, *nats.Conn, *telemetry.Ingest) {
	t.Helper()
	s := natsrun.StartTest(t)
	nc := natsrun.ConnectTest(t, s)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ing, err := telemetry.OpenIngest(context.Background(), js, telemetry.IngestOptions{
		ReportToken: s.Keys.ReportToken,
		EnvExists:   func(_ context.Context, env string) bool { return env == "dev" },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ing.Close() })
	return s, nc, ing
}

// follow collects the sequence numbers (batch Seq) delivered from fromSeq
// until want arrived.
func follow(t *testing.T, ing *telemetry.Ingest, fromSeq uint64, want int) []telemetry.Stored {
	t.Helper()
	var mu sync.Mutex
	var got []telemetry.Stored
	f, err := ing.Follow(context.Background(), telemetry.KindUsage, fromSeq, func(s telemetry.Stored) {
		mu.Lock()
		got = append(got, s)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	select {
	case <-f.CaughtUp():
	case <-time.After(5 * time.Second):
		t.Fatal("follower never caught up")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	return append([]telemetry.Stored(nil), got...)
}

// A resent batch (lost acknowledgement, second replica) is stored once, and
// a follower replays what is stored in order, from any point.
func TestIngestStoresOnceAndReplaysInOrder(t *testing.T) {
	_, _, ing := openIngest(t)
	ctx := context.Background()
	for _, seq := range []uint64{1, 2, 2, 3, 1} {
		if err := ing.Accept(ctx, batch(seq), "http"); err != nil {
			t.Fatalf("accept %d: %v", seq, err)
		}
	}
	got := follow(t, ing, 1, 3)
	var seqs []uint64
	for _, s := range got {
		seqs = append(seqs, s.Batch.Seq)
	}
	if len(seqs) != 3 || seqs[0] != 1 || seqs[1] != 2 || seqs[2] != 3 {
		t.Fatalf("stored batches %v, want [1 2 3]", seqs)
	}
	// Resuming after the second stored batch yields only the third.
	rest := follow(t, ing, got[1].Seq+1, 1)
	if len(rest) != 1 || rest[0].Batch.Seq != 3 {
		t.Fatalf("resumed follower got %+v, want only batch 3", rest)
	}

	// Refusals name the problem and store nothing.
	bad := batch(4)
	bad.Env = "prod"
	if err := ing.Accept(ctx, bad, "http"); !errors.Is(err, telemetry.ErrRefused) || !strings.Contains(err.Error(), `no environment "prod"`) {
		t.Fatalf("batch for an unknown env: %v", err)
	}
	bad = batch(4)
	bad.Seq = 0
	if err := ing.Accept(ctx, bad, "http"); !errors.Is(err, telemetry.ErrRefused) {
		t.Fatalf("malformed batch: %v", err)
	}
	if n := len(follow(t, ing, 1, 4)); n != 3 {
		t.Fatalf("refused batches were stored: %d batches", n)
	}
}

// sidecarConn connects with a sidecar's real credentials (as minted for
// the control plane's nats-credentials endpoint), using its own inbox.
func sidecarConn(t *testing.T, s *natsrun.Server, env, id string) (*nats.Conn, string) {
	t.Helper()
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	report := "pennon." + env + ".sidecars." + s.Keys.ReportToken(env, id)
	tok, _, err := s.Keys.Sidecar(pub, "pennon-sidecar "+env+" "+id,
		[]string{"pennon." + env + ".live", "pennon." + env + ".heartbeat", telemetry.InboxPrefix(pub) + ".>"}, report, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.ClientURL(), nats.UserJWT(func() (string, error) { return tok, nil }, kp.Sign),
		nats.CustomInboxPrefix(telemetry.InboxPrefix(pub)), nats.NoReconnect())
	if err != nil {
		t.Fatalf("sidecar connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc, report
}

func request(t *testing.T, nc *nats.Conn, subject string, b telemetry.Batch) (telemetry.Ack, error) {
	t.Helper()
	data, _ := json.Marshal(b)
	m, err := nc.Request(subject, data, 2*time.Second)
	if err != nil {
		return telemetry.Ack{}, err
	}
	var a telemetry.Ack
	if err := json.Unmarshal(m.Data, &a); err != nil {
		t.Fatalf("ack %q: %v", m.Data, err)
	}
	return a, nil
}

// Over NATS a sidecar is acknowledged on its own inbox, and only batches
// about itself on its own subject are stored.
func TestSidecarBatchesOverNATS(t *testing.T) {
	s, cp, ing := openIngest(t)
	if err := ing.Listen(cp); err != nil {
		t.Fatal(err)
	}
	if err := cp.Flush(); err != nil {
		t.Fatal(err)
	}
	nc, report := sidecarConn(t, s, "dev", "pod-1")

	ack, err := request(t, nc, telemetry.SidecarSubject(report, telemetry.KindUsage), batch(1))
	if err != nil || ack.Error != "" || ack.Seq != 1 {
		t.Fatalf("own batch: ack %+v, err %v", ack, err)
	}
	// Claiming to be another sidecar on one's own subject is refused.
	other := batch(2)
	other.Sidecar = "pod-2"
	ack, err = request(t, nc, telemetry.SidecarSubject(report, telemetry.KindUsage), other)
	if err != nil || !strings.Contains(ack.Error, "does not belong to sidecar pod-2") || ack.Retry {
		t.Fatalf("impersonation: ack %+v, err %v", ack, err)
	}
	// A kind that does not match the subject is refused too.
	wrongKind := batch(3)
	wrongKind.Kind = telemetry.KindIncidents
	if ack, err = request(t, nc, telemetry.SidecarSubject(report, telemetry.KindUsage), wrongKind); err != nil || ack.Error == "" {
		t.Fatalf("kind mismatch: ack %+v, err %v", ack, err)
	}
	// Another sidecar's subject is not even publishable.
	otherReport := "pennon.dev.sidecars." + s.Keys.ReportToken("dev", "pod-2")
	if _, err := request(t, nc, telemetry.SidecarSubject(otherReport, telemetry.KindUsage), other); err == nil {
		t.Fatal("a sidecar published on another sidecar's subject and got an answer")
	}
	got := follow(t, ing, 1, 1)
	if len(got) != 1 || got[0].Batch.Sidecar != "pod-1" || got[0].Batch.Seq != 1 {
		t.Fatalf("stored %+v, want only pod-1's batch 1", got)
	}
}

type countingSource struct {
	mu sync.Mutex
	n  int
}

func (c *countingSource) Kind() string { return telemetry.KindUsage }
func (c *countingSource) add()         { c.mu.Lock(); c.n++; c.mu.Unlock() }
func (c *countingSource) Take() (json.RawMessage, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == 0 {
		return nil, nil
	}
	out, _ := json.Marshal(map[string]int{"n": c.n})
	c.n = 0
	return out, nil
}

// flakyTransport fails while down is set, refuses batches listed in
// refuse, and records what it accepted.
type flakyTransport struct {
	mu     sync.Mutex
	down   bool
	refuse map[uint64]bool
	got    []telemetry.Batch
}

func (f *flakyTransport) Send(_ context.Context, b telemetry.Batch) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.down:
		return errors.New("connection refused")
	case f.refuse[b.Seq]:
		return telemetry.ErrRefused
	}
	f.got = append(f.got, b)
	return nil
}

// Batches are kept until acknowledged and delivered oldest first with
// consecutive sequence numbers; a refused batch is dropped, and past the
// pending limit the oldest make room.
func TestShipperKeepsBatchesUntilAcknowledged(t *testing.T) {
	src := &countingSource{}
	tr := &flakyTransport{down: true, refuse: map[uint64]bool{}}
	sh, err := telemetry.NewShipper(tr, telemetry.ShipperOptions{Env: "dev", Sidecar: "pod-1", MaxPending: 3}, src)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 1; i <= 4; i++ {
		for range i {
			src.add()
		}
		if err := sh.Flush(ctx); err == nil {
			t.Fatal("flush succeeded while the control plane was down")
		}
	}
	if p := sh.Pending(); p != 3 {
		t.Fatalf("pending %d, want 3 (the limit)", p)
	}
	if err := sh.Flush(ctx); err == nil { // nothing new: no batch, still down
		t.Fatal("flush succeeded while down")
	}
	tr.mu.Lock()
	tr.down = false
	tr.refuse[3] = true
	tr.mu.Unlock()
	src.add()
	if err := sh.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	var counts []string
	for _, b := range tr.got {
		seqs = append(seqs, b.Seq)
		counts = append(counts, string(b.Data))
		if b.Boot != sh.Boot() || b.Env != "dev" || b.Sidecar != "pod-1" || b.Validate() != nil {
			t.Fatalf("bad envelope %+v", b)
		}
	}
	// Batches 1 and 2 were dropped to make room (limit 3), 3 was refused:
	// 4 (four adds) and 5 (one) arrive.
	if len(seqs) != 2 || seqs[0] != 4 || seqs[1] != 5 {
		t.Fatalf("delivered seqs %v, want [4 5]", seqs)
	}
	if counts[0] != `{"n":4}` || counts[1] != `{"n":1}` {
		t.Fatalf("payloads %v", counts)
	}
	if sh.Pending() != 0 {
		t.Fatalf("pending %d after delivery", sh.Pending())
	}
}

// Run delivers on its interval and once more when stopped.
func TestShipperRunFlushesOnStop(t *testing.T) {
	src := &countingSource{}
	tr := &flakyTransport{refuse: map[uint64]bool{}}
	sh, err := telemetry.NewShipper(tr, telemetry.ShipperOptions{Env: "dev", Sidecar: "pod-1", Interval: time.Hour}, src)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sh.Run(ctx); close(done) }()
	src.add()
	src.add()
	cancel()
	<-done
	if len(tr.got) != 1 || string(tr.got[0].Data) != `{"n":2}` {
		t.Fatalf("final delivery %+v", tr.got)
	}
}
