package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Run sends load to o.URL as o describes and returns what it measured. When
// ctx is cancelled mid-run it returns the partial result with ctx's error.
func Run(ctx context.Context, o Options) (*Result, error) {
	o = o.defaults()
	hostport, err := o.validate(ctx)
	if err != nil {
		return nil, err
	}
	label := o.Label
	if label == "" {
		label = hostport
	}
	mode := "closed"
	if o.Rate > 0 {
		mode = "open"
	}
	start := time.Now()
	p := &plan{
		opts: o, addr: hostport,
		start: start, measureStart: start.Add(o.Warmup),
	}
	if o.Duration > 0 {
		p.measureEnd = p.measureStart.Add(o.Duration)
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	recs := make([]*recorder, o.Connections)
	var wg sync.WaitGroup
	for w := range recs {
		recs[w] = newRecorder()
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.work(runCtx, w, recs[w])
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()

	res := &Result{
		Label: label, URL: o.URL, Scenario: o.Scenario.Name, Mode: mode,
		Connections: o.Connections, Rate: o.Rate, WarmupSec: o.Warmup.Seconds(),
		StatusCodes: map[string]int64{}, Timeline: []TimelinePoint{},
	}
	total := newHist()
	win := &window{hist: newHist(), codes: res.StatusCodes}
	// Ticks fall every second during warm-up and then every second from
	// the start of measuring, so timeline points are whole seconds.
	nextTick := func(now time.Time) time.Duration {
		if now.Before(p.measureStart) {
			return min(time.Second, p.measureStart.Sub(now))
		}
		since := now.Sub(p.measureStart)
		return time.Second - since%time.Second
	}
	tick := time.NewTimer(nextTick(start))
	defer tick.Stop()
	prev := p.measureStart
	// flush drains the workers' tallies. The window accumulates until it
	// spans a quarter second or more, so ticks that fall just after
	// measuring began (or the final flush right after a tick) do not make
	// sliver points with meaningless rates.
	flush := func(now time.Time, final bool) {
		for _, r := range recs {
			r.drainInto(win)
		}
		if res.FirstError == "" {
			res.FirstError = win.first
		}
		if now.Before(p.measureStart) {
			if o.Progress != nil {
				fmt.Fprintf(o.Progress, "[%5.1fs] %s %s %s: warming up\n", now.Sub(start).Seconds(), label, mode, o.Scenario.Name)
			}
			return
		}
		span := now.Sub(prev).Seconds()
		emit := span >= 0.25 || (final && len(res.Timeline) == 0)
		if !emit && !final {
			return
		}
		n := win.ok + win.errs
		total.Merge(win.hist)
		res.Requests += n
		res.Errors += win.errs
		defer func() {
			win.ok, win.errs = 0, 0
			win.hist.Reset()
		}()
		if !emit {
			return
		}
		prev = now
		pt := TimelinePoint{Second: now.Sub(p.measureStart).Seconds(), Requests: n, Errors: win.errs}
		if span > 0 {
			pt.Throughput = float64(n) / span
		}
		if n > 0 {
			pt.P50, pt.P99 = micros(win.hist.ValueAtPercentile(50)), micros(win.hist.ValueAtPercentile(99))
		}
		res.Timeline = append(res.Timeline, pt)
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "[%5.1fs] %s %s %s: %8.0f req/s  p50 %s  p99 %s  errors %d\n",
				pt.Second, label, mode, o.Scenario.Name, pt.Throughput, fmtMicros(pt.P50), fmtMicros(pt.P99), res.Errors)
		}
	}
	var runErr error
loop:
	for {
		select {
		case now := <-tick.C:
			flush(now, false)
			tick.Reset(nextTick(time.Now()))
		case <-done:
			break loop
		case <-ctx.Done():
			runErr = ctx.Err()
			<-done // workers stop on runCtx, a child of ctx
			break loop
		}
	}
	if runErr == nil {
		runErr = ctx.Err() // cancelled while the workers were finishing
	}
	end := time.Now()
	flush(end, true)
	if end.After(p.measureStart) {
		res.ElapsedSec = end.Sub(p.measureStart).Seconds()
	}
	if res.ElapsedSec > 0 {
		res.Throughput = float64(res.Requests) / res.ElapsedSec
	}
	res.ErrorRate = res.errorShare()
	res.summarise(total)
	return res, runErr
}

// plan is the immutable shape of one run, shared by its workers.
type plan struct {
	opts         Options
	addr         string // host:port
	start        time.Time
	measureStart time.Time
	measureEnd   time.Time // zero: bounded by request count only
	issued       atomic.Int64
}

// admit reports whether a request beginning at t may be sent, and whether
// it is measured. It enforces both bounds.
func (p *plan) admit(t time.Time) (send, measured bool) {
	if !p.measureEnd.IsZero() && !t.Before(p.measureEnd) {
		return false, false
	}
	if t.Before(p.measureStart) {
		return true, false
	}
	if p.opts.Requests > 0 && p.issued.Add(1) > p.opts.Requests {
		return false, false
	}
	return true, true
}

// work is one worker: one connection's worth of requests, closed or open loop.
func (p *plan) work(ctx context.Context, w int, rec *recorder) {
	if p.opts.Scenario.rpc != nil {
		p.workGRPC(ctx, w, rec)
		return
	}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.Header.SetHost(p.addr)
	for _, h := range p.opts.Headers {
		name, value, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	c := newConn(p.addr, p.opts.Timeout)
	defer c.close()
	g := newGenerator(p.opts.Seed, w, p.opts.Scenario.poolSize())
	p.drive(ctx, rec, w, func() (int, error) {
		path, body := p.opts.Scenario.next(g)
		req.SetRequestURI(path)
		req.SetBodyRaw(body)
		err := c.do(req, resp)
		return status(resp, err), err
	})
}

// drive sends requests with send, closed or open loop, until the plan's
// bounds or ctx end it, and records each measured one. sendOne builds and
// sends one request and returns its status (200 = success) and error.
func (p *plan) drive(ctx context.Context, rec *recorder, w int, sendOne func() (int, error)) {
	var (
		interval time.Duration
		next     time.Time
		prevEnd  time.Time
		timer    *time.Timer
	)
	if p.opts.Rate > 0 {
		n := p.opts.Connections
		interval = time.Duration(float64(time.Second) * float64(n) / p.opts.Rate)
		// Stagger workers across one interval so the aggregate is smooth.
		next = p.start.Add(interval * time.Duration(w) / time.Duration(n))
		timer = time.NewTimer(time.Hour)
		defer timer.Stop()
	}
	for ctx.Err() == nil {
		var begin time.Time
		if interval > 0 {
			intended := next
			next = next.Add(interval)
			if d := time.Until(intended); d > 0 {
				timer.Reset(d)
				select {
				case <-ctx.Done():
					return
				case <-timer.C:
				}
			}
			sent := time.Now()
			// Coordinated omission: when the previous response came back after
			// this request's intended time, the server made us late and that
			// wait counts. When we were idle, lateness is only our timer's.
			begin = intended
			if !prevEnd.After(intended) {
				begin = sent
			}
			send, measured := p.admit(intended)
			if !send {
				return
			}
			code, err := sendOne()
			prevEnd = time.Now()
			if measured {
				rec.record(prevEnd.Sub(begin).Nanoseconds(), code, err)
			}
			continue
		}
		begin = time.Now()
		ok, measured := p.admit(begin)
		if !ok {
			return
		}
		code, err := sendOne()
		if measured {
			rec.record(time.Since(begin).Nanoseconds(), code, err)
		}
	}
}

func status(resp *fasthttp.Response, err error) int {
	if err != nil {
		return 0
	}
	return resp.StatusCode()
}

// fmtMicros prints a latency in µs or ms, whichever reads better.
func fmtMicros(us float64) string {
	switch {
	case us >= 10000:
		return fmt.Sprintf("%.1fms", us/1000)
	case us >= 1000:
		return fmt.Sprintf("%.2fms", us/1000)
	default:
		return fmt.Sprintf("%.0fµs", us)
	}
}
