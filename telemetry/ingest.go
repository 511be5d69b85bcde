package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// IngestOptions configure the control plane's side.
type IngestOptions struct {
	Replicas int
	// MaxAge is how long stored batches are kept (aggregators persist
	// their own rollups; this is their replay window); default 48h.
	MaxAge time.Duration
	// MaxBytes bounds each kind's stream; default 256 MiB.
	MaxBytes int64
	// Duplicates is the window in which a resent batch is recognised by
	// its ID; default 1h (a sidecar keeps unacknowledged batches for about
	// that long at the default interval and pending limit).
	Duplicates time.Duration
	// ReportToken binds a sidecar's report subject to its ID
	// (*natsauth.Keys implements it); required for Listen.
	ReportToken func(env, sidecarID string) string
	// EnvExists reports whether env exists; batches for others are refused.
	EnvExists func(ctx context.Context, env string) bool
	Logger    *zap.Logger
	Metrics   prometheus.Registerer
}

// Ingest stores sidecars' telemetry batches in JetStream.
type Ingest struct {
	o   IngestOptions
	js  jetstream.JetStream
	sub *nats.Subscription
	// Storing a batch waits for JetStream's acknowledgement (about a
	// millisecond); requests are handled by up to ingestWorkers goroutines
	// so a fleet is not served one batch at a time. The subscription
	// blocks when all are busy (back-pressure), and Close waits for them.
	workers chan struct{}
	wg      sync.WaitGroup

	mAccepted *prometheus.CounterVec
	mRejected *prometheus.CounterVec
}

// OpenIngest creates (or updates) one stream per kind.
func OpenIngest(ctx context.Context, js jetstream.JetStream, o IngestOptions) (*Ingest, error) {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.MaxAge <= 0 {
		o.MaxAge = 48 * time.Hour
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 256 << 20
	}
	if o.Duplicates <= 0 {
		o.Duplicates = time.Hour
	}
	o.Duplicates = min(o.Duplicates, o.MaxAge)
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	for _, kind := range Kinds {
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:        StreamName(kind),
			Description: "pennon sidecar telemetry: " + kind,
			Subjects:    []string{StreamSubject(kind, "*")},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      o.MaxAge,
			MaxBytes:    o.MaxBytes,
			MaxMsgSize:  MaxBatchBytes,
			Duplicates:  o.Duplicates,
			Replicas:    o.Replicas,
			Storage:     jetstream.FileStorage,
		})
		if err != nil {
			return nil, fmt.Errorf("telemetry: stream %s: %w", StreamName(kind), err)
		}
	}
	i := &Ingest{o: o, js: js, workers: make(chan struct{}, ingestWorkers),
		mAccepted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_telemetry_received_total",
			Help: "Telemetry batches stored, by kind and path (nats, http); resends count once per delivery."}, []string{"kind", "via"}),
		mRejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_telemetry_rejected_total",
			Help: "Telemetry batches refused, by why: identity (wrong subject for the sidecar), malformed, env (unknown environment), store (JetStream unavailable)."}, []string{"why"}),
	}
	if o.Metrics != nil {
		for _, c := range []prometheus.Collector{i.mAccepted, i.mRejected} {
			if err := o.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("telemetry: %w", err)
			}
		}
	}
	return i, nil
}

// Accept stores b (already authenticated as coming from b.Sidecar of
// b.Env). A batch already stored is accepted again without being stored
// twice. Errors wrapping ErrRefused are about the batch; others are
// outages the sender should retry after.
func (i *Ingest) Accept(ctx context.Context, b Batch, via string) error {
	if err := b.Validate(); err != nil {
		i.mRejected.WithLabelValues("malformed").Inc()
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	if i.o.EnvExists != nil && !i.o.EnvExists(ctx, b.Env) {
		i.mRejected.WithLabelValues("env").Inc()
		return fmt.Errorf("%w: env: no environment %q", ErrRefused, b.Env)
	}
	data, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	if len(data) > MaxBatchBytes {
		i.mRejected.WithLabelValues("malformed").Inc()
		return fmt.Errorf("%w: batch is %d bytes, at most %d are accepted", ErrRefused, len(data), MaxBatchBytes)
	}
	if _, err := i.js.Publish(ctx, StreamSubject(b.Kind, b.Env), data, jetstream.WithMsgID(b.ID())); err != nil {
		i.mRejected.WithLabelValues("store").Inc()
		return fmt.Errorf("telemetry store: %w", err)
	}
	i.mAccepted.WithLabelValues(b.Kind, via).Inc()
	return nil
}

// Listen answers sidecars' batch requests on
// pennon.<env>.sidecars.<token>.<kind>, accepting a batch only on the
// subject bound to its sidecar (the same check as sync reports).
func (i *Ingest) Listen(nc *nats.Conn) error {
	if i.o.ReportToken == nil {
		return errors.New("telemetry: IngestOptions.ReportToken is required to listen")
	}
	sub, err := nc.Subscribe("pennon.*.sidecars.*.*", i.onRequest)
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	i.sub = sub
	return nil
}

// ingestWorkers bounds the batches being stored at once.
const ingestWorkers = 32

func (i *Ingest) onRequest(m *nats.Msg) {
	i.workers <- struct{}{}
	i.wg.Add(1)
	go func() {
		defer func() { <-i.workers; i.wg.Done() }()
		i.handle(m)
	}()
}

func (i *Ingest) handle(m *nats.Msg) {
	reply := func(a Ack) {
		if m.Reply == "" {
			return
		}
		out, _ := json.Marshal(a)
		_ = m.Respond(out)
	}
	parts := strings.Split(m.Subject, ".")
	var b Batch
	if len(parts) != 5 || len(m.Data) > MaxBatchBytes || json.Unmarshal(m.Data, &b) != nil {
		i.mRejected.WithLabelValues("malformed").Inc()
		reply(Ack{Error: "malformed batch"})
		return
	}
	if b.Env != parts[1] || b.Kind != parts[4] || i.o.ReportToken(b.Env, b.Sidecar) != parts[3] {
		i.mRejected.WithLabelValues("identity").Inc()
		reply(Ack{Seq: b.Seq, Error: "this subject does not belong to sidecar " + b.Sidecar + " of " + b.Env})
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := i.Accept(ctx, b, "nats"); err != nil {
		reply(Ack{Seq: b.Seq, Error: err.Error(), Retry: !errors.Is(err, ErrRefused)})
		return
	}
	reply(Ack{Seq: b.Seq})
}

// Close stops listening and waits for the batches being stored.
func (i *Ingest) Close() error {
	var err error
	if i.sub != nil {
		err = i.sub.Unsubscribe()
	}
	i.wg.Wait()
	return err
}

// Stored is a batch as kept in its stream.
type Stored struct {
	Seq      uint64    // stream sequence: the order aggregators apply batches in
	Received time.Time // when the control plane stored it
	Batch    Batch
}

// Follower delivers a kind's stored batches in order, from a starting
// sequence, and keeps following new ones until stopped.
type Follower struct {
	cc     jetstream.ConsumeContext
	caught chan struct{}
	once   sync.Once
}

// Follow calls fn for every batch of kind stored at or after fromSeq (1:
// from the oldest kept), in stream order, then for every new one, until
// Stop. fn runs on one goroutine at a time. Batches that do not decode are
// logged and skipped. CaughtUp closes once every batch stored when Follow
// was called has been delivered.
func (i *Ingest) Follow(ctx context.Context, kind string, fromSeq uint64, fn func(Stored)) (*Follower, error) {
	if !knownKind(kind) {
		return nil, fmt.Errorf("telemetry: unknown kind %q", kind)
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if fromSeq > 1 {
		cfg = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: fromSeq}
	}
	stream, err := i.js.Stream(ctx, StreamName(kind))
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	f := &Follower{caught: make(chan struct{})}
	last := info.State.LastSeq
	if last < max(fromSeq, info.State.FirstSeq) || info.State.Msgs == 0 {
		f.markCaughtUp()
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			return
		}
		var b Batch
		if err := json.Unmarshal(m.Data(), &b); err != nil || b.Validate() != nil {
			i.o.Logger.Warn("skipping undecodable telemetry batch", zap.String("kind", kind), zap.Uint64("seq", md.Sequence.Stream))
		} else {
			fn(Stored{Seq: md.Sequence.Stream, Received: md.Timestamp, Batch: b})
		}
		if md.Sequence.Stream >= last || md.NumPending == 0 {
			f.markCaughtUp()
		}
	})
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	f.cc = cc
	return f, nil
}

func (f *Follower) markCaughtUp() { f.once.Do(func() { close(f.caught) }) }

// CaughtUp closes when the batches stored before Follow have been delivered.
func (f *Follower) CaughtUp() <-chan struct{} { return f.caught }

// Stop ends the delivery.
func (f *Follower) Stop() {
	if f.cc != nil {
		f.cc.Stop()
	}
}

// LastSeq is the sequence of the newest stored batch of kind (0: none).
func (i *Ingest) LastSeq(ctx context.Context, kind string) (uint64, error) {
	s, err := i.js.Stream(ctx, StreamName(kind))
	if err != nil {
		return 0, fmt.Errorf("telemetry: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("telemetry: %w", err)
	}
	return info.State.LastSeq, nil
}
