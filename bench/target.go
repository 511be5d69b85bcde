package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/valyala/fasthttp"
)

// Target is something in this process to send load to. Close stops it and
// waits for its goroutines.
type Target struct {
	Label string
	URL   string
	close func() error
}

// Close stops the target.
func (t *Target) Close() error {
	if t == nil || t.close == nil {
		return nil
	}
	return t.close()
}

// BareBody is what the bare target answers to every request: 40 bytes of
// JSON, about the size of a small OFREP answer, with no parsing and no
// evaluation. It measures the HTTP stack and the load generator, so it is
// the ceiling any flag server on this machine can approach.
var BareBody = []byte(`{"value":true,"variant":"on","reason":1}`)

// StartBare starts the bare fasthttp target on a random loopback port.
func StartBare() (*Target, error) {
	return startFastHTTP("bare", func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBody(BareBody)
	})
}

// startFastHTTP serves h on 127.0.0.1:0 until Close.
func startFastHTTP(label string, h fasthttp.RequestHandler) (*Target, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start %s target: %w", label, err)
	}
	srv := &fasthttp.Server{Handler: h, Name: "pennon-bench-" + label}
	var wg sync.WaitGroup
	var serveErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		serveErr = srv.Serve(ln)
	}()
	return &Target{
		Label: label,
		URL:   "http://" + ln.Addr().String(),
		close: func() error {
			// Close the listener ourselves too: Shutdown only closes the
			// listeners Serve has registered, and Serve may not have run yet.
			lnErr := ln.Close()
			err := srv.ShutdownWithContext(context.Background())
			wg.Wait()
			return errors.Join(ignoreClosed(lnErr), ignoreClosed(err), ignoreClosed(serveErr))
		},
	}, nil
}

// ignoreClosed drops "use of closed network connection": closing twice is
// how the shutdown above is made race-free, not a failure.
func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
