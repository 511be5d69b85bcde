package bench

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"sync"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/proxy"
)

// BenchFlags is bench/flags/bench-flags.json: the flags every scenario
// evaluates by default, in flagd format, so flagd loads the same file.
//
//go:embed flags/bench-flags.json
var BenchFlags []byte

// BulkFlags is bench/flags/bulk-1000.json: GenerateDocument(1000), the
// 1,000-flag set the bulk figures in bench/README.md are measured with
// (an ~81 KB bulk answer). flagd loads the same file.
//
//go:embed flags/bulk-1000.json
var BulkFlags []byte

// PennonOptions tune the in-process pennon sidecar target.
type PennonOptions struct {
	// Flags is a flag document; nil means BenchFlags.
	Flags []byte
	// CacheBytes sizes the response cache (proxy.Options.CacheBytes): 0 is
	// proxy's default, negative disables the cache.
	CacheBytes int64
	// NoBulkCache keeps bulk answers out of the cache (proxy.Options).
	NoBulkCache bool
}

// StartPennon starts pennon's real sidecar HTTP server (package proxy) on a
// random loopback port, serving a snapshot compiled from o.Flags. Sync is
// not involved: this measures the request path (HTTP, decoding, cache,
// evaluation), which is all a sidecar does per request.
func StartPennon(o PennonOptions) (*Target, error) {
	flags := o.Flags
	if flags == nil {
		flags = BenchFlags
	}
	h, err := holderOf(flags)
	if err != nil {
		return nil, fmt.Errorf("pennon target: %w", err)
	}
	label := "pennon"
	if o.CacheBytes < 0 {
		label = "pennon-nocache"
	}
	srv, err := proxy.New(proxy.Options{Addr: "127.0.0.1:0", Source: h, SourceName: "bench", CacheBytes: o.CacheBytes, NoBulkCache: o.NoBulkCache})
	if err != nil {
		return nil, fmt.Errorf("pennon target: %w", err)
	}
	if err := srv.Listen(); err != nil {
		return nil, fmt.Errorf("pennon target: %w", err)
	}
	return serveTarget(label, "http://"+srv.Addr(), srv.Serve), nil
}

// holderOf serves a flag document compiled at version 1.
func holderOf(flags []byte) (*evaluator.Holder, error) {
	doc, err := config.Parse(flags)
	if err != nil {
		return nil, err
	}
	snap, err := doc.Compile(1)
	if err != nil {
		return nil, err
	}
	h := &evaluator.Holder{}
	h.Store(snap)
	return h, nil
}

// serveTarget runs serve in the background until the target is closed; a
// server stopped by its context is a clean close.
func serveTarget(label, url string, serve func(context.Context) error) *Target {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var serveErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		serveErr = serve(ctx)
	}()
	return &Target{
		Label: label,
		URL:   url,
		close: func() error {
			cancel()
			wg.Wait()
			if errors.Is(serveErr, context.Canceled) {
				return nil
			}
			return serveErr
		},
	}
}
