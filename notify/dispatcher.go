package notify

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Options configure a Dispatcher. Zero values take the defaults beside them.
type Options struct {
	// JetStream holds webhooks (KV) and recent events (a stream). Required.
	JetStream jetstream.JetStream
	Replicas  int
	Logger    *zap.Logger
	Metrics   prometheus.Registerer
	// Client sends deliveries; default: 10 s timeout per attempt and no
	// redirects followed (a redirect could point a delivery anywhere).
	Client *http.Client
	// MaxAttempts bounds tries per delivery; default 6.
	MaxAttempts int
	// BaseBackoff is the wait before the second attempt, doubled for each
	// next one up to MaxBackoff, with jitter (half of it random); defaults
	// 1 s and 5 min.
	BaseBackoff time.Duration
	MaxBackoff  time.Duration
	// QueueSize bounds each webhook's queue of undelivered events; when it
	// is full further events for that webhook are dropped and counted;
	// default 256.
	QueueSize int
	// IntakeSize bounds events accepted by Emit and not yet routed;
	// default 4096.
	IntakeSize int
	// KeepDeliveries is how many recent deliveries each webhook's status
	// keeps; default 50.
	KeepDeliveries int
	// EventsMaxAge and EventsPerEnv bound the stored event list.
	EventsMaxAge time.Duration
	EventsPerEnv int64
	// HooksTTL is how long a replica serves its copy of an environment's
	// webhook list before reading it again (webhooks created on another
	// replica are seen within it); default 5 s.
	HooksTTL time.Duration
}

// Dispatcher is the Emitter behind pennon's notifications: Emit queues an
// event and returns; the event is stored in the events stream and POSTed,
// signed, to each of its environment's webhooks whose filter accepts it,
// with retries. Each webhook has its own goroutine and bounded queue, so a
// slow or dead receiver delays and drops only its own deliveries.
type Dispatcher struct {
	o      Options
	log    *zap.Logger
	hooks  *webhookStore
	events *eventLog

	intake     chan Event
	persistQ   chan Event // to the events stream, written by persist
	persisted  chan struct{}
	stopRouter chan struct{}
	routerDone chan struct{}
	stopping   chan struct{} // closed when workers should drain and exit
	runCtx     context.Context
	cancelRun  context.CancelFunc
	closed     atomic.Bool
	closeOnce  sync.Once
	wg         sync.WaitGroup // workers

	mu      sync.Mutex
	workers map[string]*worker // by env.id
	cache   map[string]hookCache
	readErr bool // the webhook list could not be read (logged once)

	mEvents     *prometheus.CounterVec
	mDropped    *prometheus.CounterVec
	mDeliveries *prometheus.CounterVec
	mAttempts   *prometheus.CounterVec
	mStore      prometheus.Counter
}

type hookCache struct {
	list []Webhook
	at   time.Time
}

// New opens the webhook bucket and the events stream and starts routing.
// Close stops it.
func New(ctx context.Context, o Options) (*Dispatcher, error) {
	if o.JetStream == nil {
		return nil, errors.New("notify: Options.JetStream is required")
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 6
	}
	if o.BaseBackoff <= 0 {
		o.BaseBackoff = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Minute
	}
	o.MaxBackoff = max(o.MaxBackoff, o.BaseBackoff)
	if o.QueueSize <= 0 {
		o.QueueSize = 256
	}
	if o.IntakeSize <= 0 {
		o.IntakeSize = 4096
	}
	if o.KeepDeliveries <= 0 {
		o.KeepDeliveries = 50
	}
	if o.EventsMaxAge <= 0 {
		o.EventsMaxAge = DefaultEventsMaxAge
	}
	if o.EventsPerEnv <= 0 {
		o.EventsPerEnv = DefaultEventsPerEnv
	}
	if o.HooksTTL <= 0 {
		o.HooksTTL = 5 * time.Second
	}
	hooks, err := openWebhookStore(ctx, o.JetStream, o.Replicas)
	if err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	events, err := openEventLog(ctx, o.JetStream, o)
	if err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	d := &Dispatcher{o: o, log: o.Logger, hooks: hooks, events: events,
		intake: make(chan Event, o.IntakeSize), persistQ: make(chan Event, o.IntakeSize), persisted: make(chan struct{}), stopRouter: make(chan struct{}), routerDone: make(chan struct{}), stopping: make(chan struct{}),
		workers: map[string]*worker{}, cache: map[string]hookCache{},
		mEvents: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_events_total",
			Help: "Events accepted for notification, by type."}, []string{"type"}),
		mDropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_events_dropped_total",
			Help: "Events not routed: intake_full (Emit faster than routing) or closed (emitted during shutdown)."}, []string{"reason"}),
		mDeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_webhook_deliveries_total",
			Help: "Webhook deliveries by final outcome: delivered, failed (attempts exhausted or refused), dropped (queue full), abandoned (shutdown deadline)."}, []string{"env", "outcome"}),
		mAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_webhook_attempts_total",
			Help: "Webhook delivery attempts by HTTP status code (\"error\": no response)."}, []string{"env", "code"}),
		mStore: prometheus.NewCounter(prometheus.CounterOpts{Name: "pennon_events_store_failures_total",
			Help: "Events that could not be written to the events stream (delivered to webhooks all the same)."}),
	}
	d.runCtx, d.cancelRun = context.WithCancel(context.Background())
	if o.Metrics != nil {
		depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pennon_webhook_queue_depth",
			Help: "Events waiting in webhook queues, all webhooks together."}, d.queueDepth)
		for _, c := range []prometheus.Collector{d.mEvents, d.mDropped, d.mDeliveries, d.mAttempts, d.mStore, depth} {
			if err := o.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("notify: %w", err)
			}
		}
	}
	go d.route()
	go d.persist()
	return d, nil
}

// Emit queues e and returns at once; it never blocks and never fails. An
// empty ID, Time or Severity is filled in. When the intake is full (routing
// stalled) or the dispatcher is closed, the event is dropped and counted in
// pennon_events_dropped_total.
func (d *Dispatcher) Emit(_ context.Context, e Event) {
	if e.ID == "" {
		e.ID = newID()
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if e.Severity == "" {
		e.Severity = SeverityInfo
	}
	if d.closed.Load() {
		d.mDropped.WithLabelValues("closed").Inc()
		return
	}
	select {
	case d.intake <- e:
		d.mEvents.WithLabelValues(e.Type).Inc()
	default:
		d.mDropped.WithLabelValues("intake_full").Inc()
	}
}

// route moves events from the intake to the events stream and to the
// queues of the webhooks that want them.
func (d *Dispatcher) route() {
	defer close(d.routerDone)
	for {
		select {
		case e := <-d.intake:
			d.dispatch(e)
		case <-d.stopRouter:
			for {
				select {
				case e := <-d.intake:
					d.dispatch(e)
				default:
					return
				}
			}
		}
	}
}

func (d *Dispatcher) dispatch(e Event) {
	hooks := d.hooksFor(e.Env)
	for _, h := range hooks {
		if h.wants(e.Type) {
			d.workerFor(h).enqueue(e)
		}
	}
	// Storing is the persister's job, so a slow or unreachable store never
	// delays deliveries; when it falls behind, events go unstored (counted).
	select {
	case d.persistQ <- e:
	default:
		d.mStore.Inc()
	}
}

// persist writes routed events to the events stream, in order.
func (d *Dispatcher) persist() {
	defer close(d.persisted)
	for e := range d.persistQ {
		if err := d.events.append(d.runCtx, e); err != nil {
			d.mStore.Inc()
		}
	}
}

// hooksFor is env's webhook list, re-read at most every HooksTTL.
func (d *Dispatcher) hooksFor(env string) []Webhook {
	d.mu.Lock()
	c, ok := d.cache[env]
	d.mu.Unlock()
	if ok && time.Since(c.at) < d.o.HooksTTL {
		return c.list
	}
	ctx, cancel := context.WithTimeout(d.runCtx, 3*time.Second)
	defer cancel()
	list, err := d.hooks.list(ctx, env)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		if !d.readErr {
			d.readErr = true
			d.log.Warn("webhook list unreadable: delivering to the last known list", zap.String("env", env), zap.Error(err))
		}
		// Keep serving the last known list for a TTL: without this, every
		// event during a NATS outage would wait for the read to time out.
		d.cache[env] = hookCache{list: c.list, at: time.Now()}
		return c.list
	}
	if d.readErr {
		d.readErr = false
		d.log.Info("webhook list readable again")
	}
	d.cache[env] = hookCache{list: list, at: time.Now()}
	d.retireGoneLocked(env, list)
	return list
}

// retireGoneLocked stops the workers of env's webhooks that were deleted
// (on any replica).
func (d *Dispatcher) retireGoneLocked(env string, list []Webhook) {
	live := map[string]bool{}
	for _, h := range list {
		live[webhookKey(h.Env, h.ID)] = true
	}
	for k, w := range d.workers {
		if w.hook.Env == env && !live[k] {
			w.retire()
			delete(d.workers, k)
		}
	}
}

func (d *Dispatcher) workerFor(h Webhook) *worker {
	k := webhookKey(h.Env, h.ID)
	d.mu.Lock()
	defer d.mu.Unlock()
	if w, ok := d.workers[k]; ok {
		return w
	}
	w := &worker{d: d, hook: h, q: make(chan *Delivery, d.o.QueueSize), gone: make(chan struct{})}
	d.workers[k] = w
	d.wg.Add(1)
	go w.run()
	return w
}

func (d *Dispatcher) queueDepth() float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, w := range d.workers {
		n += len(w.q)
	}
	return float64(n)
}

// Close stops accepting events, routes what was accepted, and lets each
// webhook deliver its queue until ctx ends; what is still undelivered then
// is abandoned (counted). It returns ctx's error when the deadline cut the
// drain short.
func (d *Dispatcher) Close(ctx context.Context) error {
	var err error
	d.closeOnce.Do(func() {
		// wait waits for ch; past the deadline it cancels every delivery
		// and store call, which then fail at once, and waits again.
		wait := func(ch <-chan struct{}) {
			select {
			case <-ch:
			case <-ctx.Done():
				if err == nil {
					err = ctx.Err()
				}
				d.cancelRun()
				<-ch
			}
		}
		d.closed.Store(true)
		close(d.stopRouter)
		wait(d.routerDone)
		close(d.persistQ)
		close(d.stopping)
		done := make(chan struct{})
		go func() { d.wg.Wait(); close(done) }()
		wait(done)
		wait(d.persisted)
		d.cancelRun()
		// Keep-alive connections to receivers would outlive the dispatcher.
		d.o.Client.CloseIdleConnections()
	})
	return err
}

// backoff is the wait after the attempt-th failed attempt: BaseBackoff
// doubled per attempt, capped at MaxBackoff, half of it random so a fleet
// of webhooks failing together does not retry in lockstep.
func (d *Dispatcher) backoff(attempt int) time.Duration {
	w := d.o.BaseBackoff
	for i := 1; i < attempt && w < d.o.MaxBackoff; i++ {
		w *= 2
	}
	w = min(w, d.o.MaxBackoff)
	return w/2 + rand.N(w/2+1)
}
