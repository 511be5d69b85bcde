package notify

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Delivery states.
const (
	StateQueued    = "queued"    // waiting in the webhook's queue
	StateSending   = "sending"   // an attempt is in flight
	StateRetrying  = "retrying"  // an attempt failed; NextRetryAt says when the next one is
	StateDelivered = "delivered" // the receiver answered 2xx
	StateFailed    = "failed"    // attempts exhausted, or refused for good (4xx other than 408/429, a redirect)
	StateDropped   = "dropped"   // the webhook's queue was full
	StateAbandoned = "abandoned" // shutdown deadline, or the webhook was deleted
)

// Delivery is one event's delivery to one webhook, as the status endpoint
// shows it.
type Delivery struct {
	EventID       string     `json:"eventId"`
	EventType     string     `json:"eventType"`
	Title         string     `json:"title"`
	State         string     `json:"state"`
	Attempts      int        `json:"attempts"`
	StatusCode    int        `json:"statusCode,omitempty"`
	Error         string     `json:"error,omitempty"`
	QueuedAt      time.Time  `json:"queuedAt"`
	LastAttemptAt *time.Time `json:"lastAttemptAt,omitempty"`
	NextRetryAt   *time.Time `json:"nextRetryAt,omitempty"`

	event Event
}

// worker delivers one webhook's events, one at a time, in order.
type worker struct {
	d        *Dispatcher
	hook     Webhook
	q        chan *Delivery
	gone     chan struct{}
	goneOnce sync.Once

	mu      sync.Mutex // guards recent and every *Delivery in it
	recent  []*Delivery
	failing bool
}

func (w *worker) retire() { w.goneOnce.Do(func() { close(w.gone) }) }

// enqueue never blocks: a full queue drops the delivery, recorded and counted.
func (w *worker) enqueue(e Event) {
	rec := &Delivery{EventID: e.ID, EventType: e.Type, Title: e.Title, State: StateQueued, QueuedAt: time.Now().UTC(), event: e}
	w.mu.Lock()
	w.recent = append(w.recent, rec)
	if len(w.recent) > w.d.o.KeepDeliveries {
		w.recent = w.recent[len(w.recent)-w.d.o.KeepDeliveries:]
	}
	w.mu.Unlock()
	select {
	case w.q <- rec:
	default:
		w.finish(rec, StateDropped)
	}
}

// deliveries are copies of the recent records, newest first.
func (w *worker) deliveries(limit int) []Delivery {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := []Delivery{}
	for i := len(w.recent) - 1; i >= 0 && len(out) < limit; i-- {
		c := *w.recent[i]
		c.event = Event{}
		out = append(out, c)
	}
	return out
}

func (w *worker) run() {
	defer w.d.wg.Done()
	for {
		select {
		case rec := <-w.q:
			w.deliver(rec)
		case <-w.gone:
			return
		case <-w.d.stopping:
			for {
				select {
				case rec := <-w.q:
					w.deliver(rec)
				default:
					return
				}
			}
		}
	}
}

func (w *worker) finish(rec *Delivery, state string) {
	w.mu.Lock()
	rec.State, rec.NextRetryAt = state, nil
	w.mu.Unlock()
	w.d.mDeliveries.WithLabelValues(w.hook.Env, state).Inc()
}

// deliver tries rec until it is delivered, refused for good, out of
// attempts, or the dispatcher stops.
func (w *worker) deliver(rec *Delivery) {
	if w.d.runCtx.Err() != nil {
		w.finish(rec, StateAbandoned)
		return
	}
	body, err := Body(w.hook.Format, rec.event)
	if err != nil {
		w.mu.Lock()
		rec.Error = "cannot encode the event: " + err.Error()
		w.mu.Unlock()
		w.finish(rec, StateFailed)
		return
	}
	for attempt := 1; ; attempt++ {
		w.mu.Lock()
		rec.State, rec.NextRetryAt = StateSending, nil
		w.mu.Unlock()
		code, retryAfter, err := w.post(rec.event, body, attempt)
		now := time.Now().UTC()
		label := "error"
		if err == nil {
			label = strconv.Itoa(code)
		}
		w.d.mAttempts.WithLabelValues(w.hook.Env, label).Inc()
		w.mu.Lock()
		rec.Attempts, rec.StatusCode, rec.LastAttemptAt, rec.Error = attempt, code, &now, ""
		if err != nil {
			rec.Error = err.Error()
		} else if code >= 300 {
			rec.Error = "receiver answered " + http.StatusText(code)
		}
		w.mu.Unlock()
		if err == nil && code >= 200 && code < 300 {
			w.finish(rec, StateDelivered)
			w.setFailing(false, 0, nil)
			return
		}
		if !retryable(code, err) || attempt >= w.d.o.MaxAttempts {
			w.finish(rec, StateFailed)
			w.setFailing(true, code, err)
			return
		}
		wait := w.d.backoff(attempt)
		if retryAfter > wait && retryAfter <= w.d.o.MaxBackoff {
			wait = retryAfter
		}
		next := now.Add(wait)
		w.mu.Lock()
		rec.State, rec.NextRetryAt = StateRetrying, &next
		w.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-w.d.runCtx.Done():
			t.Stop()
			w.finish(rec, StateAbandoned)
			return
		case <-w.gone:
			t.Stop()
			w.finish(rec, StateAbandoned)
			return
		}
	}
}

// retryable: no answer, 408, 429 and 5xx may succeed later; any other
// status (4xx: the receiver refuses this request; 3xx: redirects are not
// followed) will not.
func retryable(code int, err error) bool {
	return err != nil || code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500
}

// post sends one attempt. The error never contains the URL: webhook URLs
// can carry credentials in their path (Slack's do), and errors end up in
// the deliveries API and in logs.
func (w *worker) post(e Event, body []byte, attempt int) (code int, retryAfter time.Duration, err error) {
	req, err := http.NewRequestWithContext(w.d.runCtx, http.MethodPost, w.hook.URL, bytes.NewReader(body))
	if err != nil {
		return 0, 0, errors.New("cannot build the request")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "pennon-webhook/1")
	req.Header.Set("Pennon-Event-Id", e.ID)
	req.Header.Set("Pennon-Event-Type", e.Type)
	req.Header.Set("Pennon-Delivery-Attempt", strconv.Itoa(attempt))
	req.Header.Set(SignatureHeader, Sign(w.hook.Secret, time.Now(), body))
	resp, err := w.d.o.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if s := resp.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			retryAfter = time.Duration(n) * time.Second
		}
	}
	return resp.StatusCode, retryAfter, nil
}

// setFailing logs the webhook's state changes once: when a delivery fails
// for good after successes, and when one succeeds after failures.
func (w *worker) setFailing(failing bool, code int, err error) {
	w.mu.Lock()
	changed := w.failing != failing
	w.failing = failing
	w.mu.Unlock()
	if !changed {
		return
	}
	host := ""
	if u, perr := url.Parse(w.hook.URL); perr == nil {
		host = u.Host
	}
	if failing {
		w.d.log.Warn("webhook deliveries failing", zap.String("env", w.hook.Env), zap.String("webhook", w.hook.ID),
			zap.String("host", host), zap.Int("status", code), zap.Error(err))
		return
	}
	w.d.log.Info("webhook deliveries succeed again", zap.String("env", w.hook.Env), zap.String("webhook", w.hook.ID), zap.String("host", host))
}
