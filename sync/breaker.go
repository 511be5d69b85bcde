package flagsync

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// ErrBreakerOpen is returned while the breaker refuses calls.
var ErrBreakerOpen = errors.New("control plane circuit open: backing off")

// Breaker guards calls to the control plane: after Threshold consecutive
// failures it opens and refuses calls for a backoff that doubles on each
// failed probe (full jitter, capped), then lets one probe through
// (half-open); a success closes it.
type Breaker struct {
	Threshold int
	Base, Max time.Duration
	Now       func() time.Time

	mu       sync.Mutex
	failures int
	openedAt time.Time
	wait     time.Duration
	probing  bool
	// onChange hears the breaker open and close (incidents.go).
	onChange atomic.Pointer[func(open bool, failures int, err error)]
}

// State is closed, open or half-open.
func (b *Breaker) State() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.failures < b.threshold():
		return "closed"
	case b.now().Sub(b.openedAt) >= b.wait:
		return "half-open"
	}
	return "open"
}

func (b *Breaker) threshold() int {
	if b.Threshold <= 0 {
		return 3
	}
	return b.Threshold
}

func (b *Breaker) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

// Allow reports whether a call may go out now.
func (b *Breaker) Allow() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failures < b.threshold() {
		return nil
	}
	if b.now().Sub(b.openedAt) < b.wait || b.probing {
		return ErrBreakerOpen
	}
	b.probing = true
	return nil
}

// Done records a call's outcome. An opening or closing is told to the
// incident hook after the lock is released.
func (b *Breaker) Done(err error) {
	b.mu.Lock()
	was := b.failures >= b.threshold()
	b.doneLocked(err)
	open, failures := b.failures >= b.threshold(), b.failures
	b.mu.Unlock()
	if f := b.onChange.Load(); f != nil && open != was {
		(*f)(open, failures, err)
	}
}

func (b *Breaker) doneLocked(err error) {
	b.probing = false
	if err == nil {
		b.failures, b.wait = 0, 0
		return
	}
	b.failures++
	if b.failures >= b.threshold() {
		base, ceiling := b.Base, b.Max
		if base <= 0 {
			base = 100 * time.Millisecond
		}
		if ceiling <= 0 {
			ceiling = 30 * time.Second
		}
		exp := base << min(b.failures-b.threshold(), 16)
		if exp > ceiling || exp <= 0 {
			exp = ceiling
		}
		b.wait = time.Duration(rand.Int64N(int64(exp)) + 1) // full jitter
		b.openedAt = b.now()
	}
}

// jitter returns d ± frac·d, so a fleet of sidecars does not poll in step.
func jitter(d time.Duration, frac float64) time.Duration {
	delta := float64(d) * frac
	return time.Duration(float64(d) - delta + rand.Float64()*2*delta)
}
