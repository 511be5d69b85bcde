package fleet

import (
	"maps"
	"sort"
	"syscall"
	"time"

	flagsync "github.com/pennon-dev/pennon/sync"
)

// window is the counters at the start of a measured interval.
type window struct {
	start   time.Time
	req     int64
	errs    int64
	busy    int64
	reports int64
	cpu     time.Duration
	routes  map[string]int64

	stopSampler func() []Point
}

type totals struct {
	req, errs, busy, reports int64
	routes                   map[string]int64
}

func (h *harness) totals() totals {
	t := totals{routes: map[string]int64{}}
	for _, cp := range h.cps {
		t.req += cp.requests.Load()
		t.errs += cp.errs.Load()
		t.busy += cp.busyNs.Load()
		cp.routeMu.Lock()
		for k, v := range cp.routes {
			t.routes[k] += v
		}
		cp.routeMu.Unlock()
	}
	t.reports = h.reports.Load()
	return t
}

// processCPU is user + system CPU time of this process so far: the NATS
// servers, the control planes and every sidecar together (they share the
// process; per-component figures are the request counters).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (h *harness) begin() *window {
	t := h.totals()
	w := &window{start: time.Now(), req: t.req, errs: t.errs, busy: t.busy, reports: t.reports, cpu: processCPU(), routes: t.routes}
	w.stopSampler = h.sample(w.start)
	return w
}

// windowStats are the deltas over a window.
type windowStats struct {
	Seconds    float64
	Requests   int64
	Errors     int64
	Routes     map[string]int64
	BusyS      float64
	Reports    int64
	CPUSeconds float64
	Timeline   []Point
}

func (h *harness) end(w *window) windowStats {
	tl := w.stopSampler()
	t := h.totals()
	s := windowStats{Seconds: time.Since(w.start).Seconds(), Requests: t.req - w.req, Errors: t.errs - w.errs,
		BusyS: float64(t.busy-w.busy) / 1e9, Reports: t.reports - w.reports,
		CPUSeconds: (processCPU() - w.cpu).Seconds(), Timeline: tl, Routes: map[string]int64{}}
	for k, v := range t.routes {
		if d := v - w.routes[k]; d > 0 {
			s.Routes[k] = d
		}
	}
	return s
}

// sampleEvery is the timeline's resolution.
const sampleEvery = 500 * time.Millisecond

// sample records the fleet's states and the control planes' request rate
// every sampleEvery until the returned function is called, which takes one
// last sample (a scenario shorter than sampleEvery still gets a point).
func (h *harness) sample(start time.Time) func() []Point {
	var (
		pts  []Point
		stop = make(chan struct{})
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		tick := time.NewTicker(sampleEvery)
		defer tick.Stop()
		prev, prevT := h.totals(), time.Now()
		take := func() {
			now, cur := time.Now(), h.totals()
			p := Point{T: now.Sub(start).Seconds(), Head: h.head.Load()}
			if dt := now.Sub(prevT).Seconds(); dt > 0 {
				p.RequestsPerS = float64(cur.req-prev.req) / dt
				p.ReportsPerS = float64(cur.reports-prev.reports) / dt
			}
			prev, prevT = cur, now
			for _, c := range h.fleet() {
				st, v := c.state()
				switch st {
				case flagsync.StatePush:
					p.Push++
				case flagsync.StatePolling:
					p.Polling++
				default:
					p.Other++
				}
				if v >= p.Head {
					p.AtHead++
				}
			}
			pts = append(pts, p)
		}
		for {
			select {
			case <-stop:
				take()
				return
			case <-tick.C:
				take()
			}
		}
	}()
	return func() []Point {
		close(stop)
		<-done // pts is only read after the sampler has finished
		return pts
	}
}

// delays computes commit → applied over every (acknowledged commit,
// sidecar) pair, from the start of the Commit call to the watcher seeing
// the version served.
func (h *harness) delays(start time.Time, commits []commitRec, sr *ScenarioResult) {
	var all, worst []time.Duration
	for _, c := range commits {
		var per []time.Duration
		for _, car := range h.cars {
			at, ok := car.appliedAt(c.Version)
			if !ok {
				sr.Missing++
				continue
			}
			per = append(per, max(at.Sub(c.Start), 0))
		}
		all = append(all, per...)
		if len(per) == 0 {
			continue
		}
		sort.Slice(per, func(i, j int) bool { return per[i] < per[j] })
		worst = append(worst, per[len(per)-1])
		sr.PerCommit = append(sr.PerCommit, CommitPoint{Version: c.Version, T: c.Start.Sub(start).Seconds(),
			CommitMs: ms(c.Ack.Sub(c.Start)), P50Ms: ms(pctSorted(per, 50)), P99Ms: ms(pctSorted(per, 99)), MaxMs: ms(per[len(per)-1])})
	}
	sr.Samples = len(all)
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	sr.P50Ms, sr.P99Ms, sr.MaxMs = ms(pctSorted(all, 50)), ms(pctSorted(all, 99)), ms(pctSorted(all, 100))
	sort.Slice(worst, func(i, j int) bool { return worst[i] < worst[j] })
	sr.AllSidecarsP99Ms = ms(pctSorted(worst, 99))
	var cms []time.Duration
	for _, c := range commits {
		cms = append(cms, c.Ack.Sub(c.Start))
	}
	sort.Slice(cms, func(i, j int) bool { return cms[i] < cms[j] })
	sr.CommitP50Ms, sr.CommitMaxMs = ms(pctSorted(cms, 50)), ms(pctSorted(cms, 100))
}

// pctSorted is the p-th percentile (nearest rank) of sorted ds.
func pctSorted(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := int(float64(len(ds))*p/100+0.5) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

// fill copies a window's deltas into a scenario result.
func (h *harness) fill(sr *ScenarioResult, s windowStats) {
	sr.DurationS = s.Seconds
	sr.Requests, sr.Errors, sr.Routes = s.Requests, s.Errors, maps.Clone(s.Routes)
	sr.ControlBusyS = s.BusyS
	sr.Reports = s.Reports
	sr.CPUSeconds = s.CPUSeconds
	sr.Timeline = s.Timeline
	perMin := float64(len(h.cars)) * s.Seconds / 60
	if perMin > 0 {
		sr.RequestsPerSidecarPerMin = float64(s.Requests) / perMin
		sr.ReportsPerSidecarPerMin = float64(s.Reports) / perMin
	}
	if s.Seconds > 0 {
		sr.CPUCores = s.CPUSeconds / s.Seconds
	}
	if n := sr.Acked * len(h.cars); n > 0 {
		sr.CPUMsPerApply = s.CPUSeconds * 1000 / float64(n)
	}
	for _, p := range s.Timeline {
		sr.PeakRequestsPerS = max(sr.PeakRequestsPerS, p.RequestsPerS)
	}
}
