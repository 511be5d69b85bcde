package telemetry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Source produces one kind of telemetry in a sidecar.
type Source interface {
	Kind() string
	// Take returns what accumulated since the previous Take and resets it;
	// nil when nothing did. The payload must stay below MaxBatchBytes. The
	// shipper owns the returned bytes.
	Take() (json.RawMessage, error)
}

// Transport delivers a batch to the control plane. It returns nil only once
// the control plane acknowledged the batch; an error wrapping ErrRefused
// means the control plane will never accept this batch (the shipper drops
// it), any other error means "try again later".
type Transport interface {
	Send(ctx context.Context, b Batch) error
}

// TransportFunc adapts a function to Transport.
type TransportFunc func(ctx context.Context, b Batch) error

// Send calls f.
func (f TransportFunc) Send(ctx context.Context, b Batch) error { return f(ctx, b) }

// ErrRefused marks a batch the control plane rejected for its content.
var ErrRefused = errors.New("control plane refused the batch")

// ShipperOptions configure a Shipper.
type ShipperOptions struct {
	Env     string
	Sidecar string
	// Interval between collections; default 10s, with ±10% jitter so a
	// fleet started together does not report in lockstep.
	Interval time.Duration
	// MaxPending bounds the unacknowledged batches kept per kind; when it
	// is reached the oldest is dropped (and counted). Default 360: an
	// hour of batches at the default interval.
	MaxPending int
	// SendTimeout bounds one delivery attempt; default 5s.
	SendTimeout time.Duration
	Logger      *zap.Logger
	Metrics     prometheus.Registerer
}

// Shipper drains its sources every interval into numbered batches and
// delivers them, oldest first, until each is acknowledged.
type Shipper struct {
	o       ShipperOptions
	tr      Transport
	sources []Source
	boot    string

	mu      sync.Mutex
	seq     map[string]uint64
	pending []Batch // oldest first, all kinds
	last    time.Time
	failing bool // delivery is failing: logged once per outage

	sendMu sync.Mutex // one delivery pass at a time

	mBatches *prometheus.CounterVec
	mPending prometheus.GaugeFunc
}

// NewShipper builds a shipper for sources; Run drives it.
func NewShipper(tr Transport, o ShipperOptions, sources ...Source) (*Shipper, error) {
	if tr == nil {
		return nil, errors.New("telemetry: a transport is required")
	}
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 360
	}
	if o.SendTimeout <= 0 {
		o.SendTimeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	var rb [8]byte
	if _, err := rand.Read(rb[:]); err != nil {
		return nil, fmt.Errorf("telemetry: boot id: %w", err)
	}
	s := &Shipper{o: o, tr: tr, sources: sources, boot: hex.EncodeToString(rb[:]), seq: map[string]uint64{}, last: time.Now()}
	s.mBatches = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_telemetry_batches_total",
		Help: "Telemetry batches by kind and outcome: sent (acknowledged), retried (a delivery attempt failed), refused (rejected by the control plane), dropped (pending limit reached)."}, []string{"kind", "outcome"})
	s.mPending = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pennon_telemetry_pending_batches",
		Help: "Telemetry batches waiting for the control plane's acknowledgement."}, func() float64 { return float64(s.Pending()) })
	if o.Metrics != nil {
		for _, c := range []prometheus.Collector{s.mBatches, s.mPending} {
			if err := o.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("telemetry: %w", err)
			}
		}
	}
	return s, nil
}

// Boot is this process's boot ID (part of every batch's identity).
func (s *Shipper) Boot() string { return s.boot }

// Pending is the number of batches not yet acknowledged.
func (s *Shipper) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// Run collects and delivers every interval until ctx ends, then collects
// once more and tries for a few seconds to deliver what is pending, so a
// graceful shutdown loses nothing that could be sent.
func (s *Shipper) Run(ctx context.Context) {
	for {
		jitter := time.Duration((mrand.Float64()*0.2 - 0.1) * float64(s.o.Interval))
		t := time.NewTimer(s.o.Interval + jitter)
		select {
		case <-ctx.Done():
			t.Stop()
			fctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			if err := s.Flush(fctx); err != nil {
				s.o.Logger.Warn("telemetry not delivered at shutdown", zap.Int("pending", s.Pending()), zap.Error(err))
			}
			cancel()
			return
		case <-t.C:
		}
		_ = s.Flush(ctx)
	}
}

// Flush collects from every source now and delivers everything pending,
// oldest first. It stops at the first failed delivery (the rest stays
// pending) and returns that error.
func (s *Shipper) Flush(ctx context.Context) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.collect()
	for {
		s.mu.Lock()
		if len(s.pending) == 0 {
			s.mu.Unlock()
			return nil
		}
		b := s.pending[0]
		s.mu.Unlock()

		sctx, cancel := context.WithTimeout(ctx, s.o.SendTimeout)
		err := s.tr.Send(sctx, b)
		cancel()
		switch {
		case err == nil:
			s.mBatches.WithLabelValues(b.Kind, "sent").Inc()
		case errors.Is(err, ErrRefused):
			s.mBatches.WithLabelValues(b.Kind, "refused").Inc()
			s.o.Logger.Warn("telemetry batch refused by the control plane; dropped", zap.String("kind", b.Kind), zap.Uint64("seq", b.Seq), zap.Error(err))
		default:
			s.mBatches.WithLabelValues(b.Kind, "retried").Inc()
			s.mu.Lock()
			if !s.failing {
				s.failing = true
				s.o.Logger.Warn("telemetry delivery failing; batches kept and resent", zap.Int("pending", len(s.pending)), zap.Error(err))
			}
			s.mu.Unlock()
			return err
		}
		s.mu.Lock()
		if len(s.pending) > 0 && s.pending[0].ID() == b.ID() {
			s.pending = s.pending[1:]
		}
		if s.failing && len(s.pending) == 0 {
			s.failing = false
			s.o.Logger.Info("telemetry delivery recovered")
		}
		s.mu.Unlock()
	}
}

// collect drains every source into new batches.
func (s *Shipper) collect() {
	now := time.Now().UTC()
	s.mu.Lock()
	from := s.last.UTC()
	s.last = now
	s.mu.Unlock()
	for _, src := range s.sources {
		data, err := src.Take()
		if err != nil {
			s.o.Logger.Warn("telemetry source failed", zap.String("kind", src.Kind()), zap.Error(err))
			continue
		}
		if len(data) == 0 {
			continue
		}
		kind := src.Kind()
		s.mu.Lock()
		s.seq[kind]++
		b := Batch{Kind: kind, Env: s.o.Env, Sidecar: s.o.Sidecar, Boot: s.boot, Seq: s.seq[kind], From: from, To: now, Data: data}
		s.pending = append(s.pending, b)
		s.dropOverflowLocked(kind)
		s.mu.Unlock()
	}
}

// dropOverflowLocked keeps at most MaxPending batches of kind.
func (s *Shipper) dropOverflowLocked(kind string) {
	n := 0
	for _, b := range s.pending {
		if b.Kind == kind {
			n++
		}
	}
	for i := 0; n > s.o.MaxPending && i < len(s.pending); {
		if s.pending[i].Kind != kind {
			i++
			continue
		}
		s.mBatches.WithLabelValues(kind, "dropped").Inc()
		s.pending = append(s.pending[:i], s.pending[i+1:]...)
		n--
	}
}
