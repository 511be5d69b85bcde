package flagdgrpc

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	evalv1 "github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/evaluation/v1"
	"github.com/pennon-dev/pennon/internal/checkfor"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := start(t, Options{Source: newDocHolder(t, testFlags), Registry: reg})
	if _, err := c.eval.ResolveBoolean(callCtx(t), &evalv1.ResolveBooleanRequest{FlagKey: "static-on"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.eval.ResolveBoolean(callCtx(t), &evalv1.ResolveBooleanRequest{FlagKey: "nope"}); err == nil {
		t.Fatal("nope: want an error")
	}
	m := c.srv.m
	for _, tc := range []struct {
		code string
		want float64
	}{{"OK", 1}, {"NotFound", 1}, {"Unknown", 0}} {
		if got := testutil.ToFloat64(m.requests.WithLabelValues("ResolveBoolean", tc.code)); got != tc.want {
			t.Errorf("ResolveBoolean %s: %v, want %v", tc.code, got, tc.want)
		}
	}
	if n := testutil.CollectAndCount(m.latency); n != 1 {
		t.Errorf("latency series: %d, want 1 (ResolveBoolean)", n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	stream, err := c.eval.EventStream(ctx, &evalv1.EventStreamRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	open := m.streams.WithLabelValues("EventStream")
	if got := testutil.ToFloat64(open); got != 1 {
		t.Errorf("open streams %v, want 1", got)
	}
	cancel()
	checkfor.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if got := testutil.ToFloat64(open); got != 0 {
			return fmt.Errorf("open streams %v after the client left", got)
		}
		return nil
	})
	if got := testutil.ToFloat64(m.requests.WithLabelValues("EventStream", "OK")); got != 1 {
		t.Errorf("ended EventStreams counted %v, want 1", got)
	}
}
