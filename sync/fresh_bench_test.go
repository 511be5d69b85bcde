package flagsync

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/valyala/fasthttp"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/control"
	"github.com/pennon-dev/pennon/examples"
	"github.com/pennon-dev/pennon/internal/checkfor"
	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/internal/sign"
	"github.com/pennon-dev/pennon/proxy"
)

// BenchmarkAlwaysFreshUnderLease is the sidecar's cost for an always-fresh
// flag (payment-api-v2: $ref, in, fractional) while it holds a freshness
// lease: the real sync client behind the real handler, in memory. Under a
// lease Fresh answers from the local snapshot; coalescing and the bound on
// control-plane load must not make this path dearer.
//
// Last measured, interleaved, -benchtime 1s -count 3, on the 2-core shared
// machine at load average 12–19 (so wall times are mostly noise): before the
// freshness gate (b29b616, lease from heartbeats) 8.3–32 µs/op, 418–427 B/op,
// 9 allocs/op; after (lease from a poll) 10.4–16.6 µs/op, 416 B/op,
// 9 allocs/op. The lease path itself is unchanged: one mutex, one clock
// comparison, the local snapshot.
func BenchmarkAlwaysFreshUnderLease(b *testing.B) {
	ctx := context.Background()
	ns := natsrun.StartTest(b)
	nc := natsrun.ConnectTest(b, ns)
	js, _ := jetstream.New(nc)
	key, err := sign.Generate()
	if err != nil {
		b.Fatal(err)
	}
	store, err := config.OpenStore(ctx, js, config.StoreOptions{Signer: key})
	if err != nil {
		b.Fatal(err)
	}
	toks, err := control.OpenTokens(ctx, js, 1, nil)
	if err != nil {
		b.Fatal(err)
	}
	viewer, _, _ := toks.Create(ctx, "sidecar", map[string]string{"dev": "viewer"}, 0, "bench")
	if err := store.CreateEnv(ctx, config.EnvSettings{Name: "dev"}); err != nil {
		b.Fatal(err)
	}
	doc, _ := config.Parse(examples.Checkout)
	if _, err := store.Commit(ctx, config.LoadChangeset("dev", doc, "bench", "")); err != nil {
		b.Fatal(err)
	}
	api, err := control.New(control.Options{Addr: "127.0.0.1:0", Store: store, Tokens: toks, JetStream: js, NATS: ns.Keys,
		Signer: key, Trust: sign.NewTrust(key.Public())})
	if err != nil {
		b.Fatal(err)
	}
	if err := api.Listen(); err != nil {
		b.Fatal(err)
	}
	actx, stopAPI := context.WithCancel(ctx)
	apiDone := make(chan struct{})
	go func() { defer close(apiDone); _ = api.Serve(actx) }()
	defer func() { stopAPI(); <-apiDone }()

	// Polling only: the first successful poll grants a lease for LeaseFor.
	r, err := NewRemote(RemoteOptions{Env: "dev", ServerURL: "http://" + api.Addr(), Token: viewer, LeaseFor: time.Hour, PollInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	rctx, stopSync := context.WithCancel(ctx)
	syncDone := make(chan struct{})
	go func() { defer close(syncDone); _ = r.Run(rctx) }()
	defer func() { stopSync(); <-syncDone }()
	checkfor.CheckFor(b, 10*time.Second, 10*time.Millisecond, func() error {
		if st := r.Status().(RemoteStatus); !st.LeaseValid {
			return fmt.Errorf("no lease: %+v", st)
		}
		return nil
	})
	srv, err := proxy.New(proxy.Options{Addr: "127.0.0.1:0", Source: r, CacheBytes: -1})
	if err != nil {
		b.Fatal(err)
	}
	h := srv.Handler()
	var rq fasthttp.RequestCtx
	body := []byte(`{"context":{"targetingKey":"u1","email":"ann@pennon.dev","country":"SE"}}`)
	b.ReportAllocs()
	for b.Loop() {
		rq.Request.Reset()
		rq.Response.Reset()
		rq.Request.Header.SetMethod("POST")
		rq.Request.SetRequestURI("/ofrep/v1/evaluate/flags/payment-api-v2")
		rq.Request.Header.SetContentType("application/json")
		rq.Request.SetBody(body)
		h(&rq)
		if rq.Response.StatusCode() != 200 {
			b.Fatal(string(rq.Response.Body()))
		}
	}
}
