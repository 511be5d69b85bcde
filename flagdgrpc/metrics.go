package flagdgrpc

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/status"
)

// metrics count gRPC calls next to OFREP's HTTP metrics on the sidecar's
// /metrics. Labels are bounded: method is one of the services' RPCs, code
// one of gRPC's 17 status codes.
type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	streams  *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_grpc_requests_total",
			Help: "flagd gRPC calls by method and status code (streams count when they end)."}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pennon_grpc_request_duration_seconds",
			Help:    "Time to answer a flagd gRPC unary call, from the handler's start.",
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 16)}, []string{"method"}),
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pennon_grpc_open_streams",
			Help: "Open flagd EventStream and SyncFlags streams."}, []string{"method"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.latency, m.streams)
	}
	return m
}

// methodName is the RPC's name without its service: /flagd.evaluation.v1.Service/ResolveBoolean → ResolveBoolean.
func methodName(full string) string {
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[i+1:]
	}
	return full
}

func (m *metrics) unary(full string, start time.Time, err error) {
	name := methodName(full)
	m.latency.WithLabelValues(name).Observe(time.Since(start).Seconds())
	m.requests.WithLabelValues(name, status.Code(err).String()).Inc()
}
