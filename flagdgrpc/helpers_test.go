package flagdgrpc

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/evaluator"
	evalv1 "github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/evaluation/v1"
	syncv1 "github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/sync/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreTopFunction("github.com/dgraph-io/ristretto/v2.(*defaultPolicy[...]).processItems"),
		goleak.IgnoreTopFunction("github.com/dgraph-io/ristretto/v2.(*Cache[...]).processItems"))
}

// docHolder is an in-memory flag source that keeps each snapshot with the
// document it was compiled from, as the sidecar's sources do.
type docHolder struct {
	evaluator.Holder
	mu   sync.Mutex
	doc  *config.Document
	next uint64
}

func (h *docHolder) CurrentDocument() (*evaluator.Snapshot, *config.Document) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.Current(), h.doc
}

func (h *docHolder) load(t testing.TB, doc string) {
	t.Helper()
	d, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.next++
	snap, err := d.Compile(h.next)
	if err != nil {
		t.Fatal(err)
	}
	h.doc = d
	h.Store(snap)
}

func newDocHolder(t testing.TB, doc string) *docHolder {
	h := &docHolder{}
	h.load(t, doc)
	return h
}

type clients struct {
	srv  *Server
	eval evalv1.ServiceClient
	sync syncv1.FlagSyncServiceClient
}

// start runs a Server on loopback ports until the test ends, with real
// gRPC clients generated from the same protos.
func start(t testing.TB, o Options) *clients {
	t.Helper()
	if o.EvalAddr == "" {
		o.EvalAddr = "127.0.0.1:0"
	}
	if _, ok := o.Source.(DocumentSource); o.SyncAddr == "" && (ok || o.Documents != nil) {
		o.SyncAddr = "127.0.0.1:0"
	}
	if o.SourceName == "" {
		o.SourceName = "test"
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	c := &clients{srv: s}
	var conns []*grpc.ClientConn
	dial := func(addr string) *grpc.ClientConn {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, cc)
		return cc
	}
	c.eval = evalv1.NewServiceClient(dial(s.EvalAddr()))
	if s.syncSrv != nil {
		c.sync = syncv1.NewFlagSyncServiceClient(dial(s.SyncAddr()))
	}
	t.Cleanup(func() {
		for _, cc := range conns {
			cc.Close()
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after cancel")
		}
	})
	return c
}

func callCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}
