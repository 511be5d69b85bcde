package usage

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"gonum.org/v1/gonum/stat/distuv"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/notify"
)

// ChangeSource is what anomaly detection asks to tell a shift a change
// explains from one nobody made; *config.Store implements it.
type ChangeSource interface {
	Head(ctx context.Context, env string) (*config.State, error)
	Changeset(ctx context.Context, env string, v uint64) (*config.Changeset, error)
}

// AnomalyOptions tune evaluation-pattern shift detection (docs/usage.md,
// "Anomalies"). Zero values take the defaults noted.
type AnomalyOptions struct {
	// Window is the recent period compared (minute rollups); default 15m.
	Window time.Duration
	// Baseline is the period before the window it is compared with (whole
	// hours of the hour rollup ending where the window's hour starts);
	// default 24h.
	Baseline time.Duration
	// MinSamples is the evaluations both the window and the baseline need
	// before a flag is tested; default 200.
	MinSamples uint64
	// Alpha is the chi-square test's significance level; default 0.001.
	Alpha float64
	// MinEffect is the smallest Cramér's V that counts as a shift, so a
	// flag evaluated millions of times does not raise an anomaly for a
	// difference of a fraction of a percent; default 0.1.
	MinEffect float64
	// Every is how often flags are checked; default 1m.
	Every time.Duration
}

// Anomaly is one flag whose served distribution shifted while no
// changeset touched it or its prerequisites.
type Anomaly struct {
	Env    string    `json:"env"`
	Flag   string    `json:"flag"`
	Opened time.Time `json:"opened"`
	// Closed is when the distribution was last seen back in line (or the
	// flag's traffic fell below MinSamples, or a change now explains it).
	Closed    time.Time `json:"closed,omitzero"`
	ChiSquare float64   `json:"chiSquare"`
	PValue    float64   `json:"pValue"`
	Effect    float64   `json:"effect"` // Cramér's V
	// Window and Baseline are the served-variant counts compared when the
	// anomaly opened, and the periods they cover.
	Window       map[string]uint64 `json:"window"`
	Baseline     map[string]uint64 `json:"baseline"`
	WindowFrom   time.Time         `json:"windowFrom"`
	BaselineFrom time.Time         `json:"baselineFrom"`
	BaselineTo   time.Time         `json:"baselineTo"`
}

// maxRecent bounds the closed anomalies remembered per aggregator.
const maxRecent = 200

type anomalies struct {
	a       *Aggregator
	o       AnomalyOptions
	changes ChangeSource
	emit    notify.Emitter
	log     *zap.Logger

	mu     sync.Mutex
	open   map[string]*Anomaly // env + "/" + flag
	recent []Anomaly           // closed, oldest first

	mTotal *prometheus.CounterVec
	mOpen  *prometheus.GaugeVec
}

func newAnomalies(a *Aggregator, o Options) (*anomalies, error) {
	ao := o.Anomaly
	if ao.Window <= 0 {
		ao.Window = 15 * time.Minute
	}
	if ao.Baseline <= 0 {
		ao.Baseline = 24 * time.Hour
	}
	if ao.MinSamples == 0 {
		ao.MinSamples = 200
	}
	if ao.Alpha <= 0 || ao.Alpha >= 1 {
		ao.Alpha = 0.001
	}
	if ao.MinEffect <= 0 {
		ao.MinEffect = 0.1
	}
	if ao.Every <= 0 {
		ao.Every = time.Minute
	}
	if a.o.MinuteMemory < ao.Window+time.Minute {
		a.o.MinuteMemory = ao.Window + time.Minute
	}
	an := &anomalies{a: a, o: ao, changes: o.Changes, emit: o.Emitter, log: o.Logger, open: map[string]*Anomaly{},
		mTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_flag_anomalies_total",
			Help: "Flags whose served variant distribution shifted significantly while no changeset touched them or their prerequisites, by environment."}, []string{"env"}),
		mOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pennon_flag_anomalies_open",
			Help: "Distribution-shift anomalies open now, by environment."}, []string{"env"}),
	}
	if o.Metrics != nil {
		for _, c := range []prometheus.Collector{an.mTotal, an.mOpen} {
			if err := o.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("usage: %w", err)
			}
		}
	}
	return an, nil
}

// Shift is the outcome of comparing two served-variant distributions.
type Shift struct {
	ChiSquare float64
	DF        int
	PValue    float64
	Effect    float64 // Cramér's V
}

// Compare runs Pearson's chi-square test of homogeneity on the variant
// counts of window and baseline (a 2 × k table over the variants either
// served). With fewer than two variants there is nothing to compare and
// the p-value is 1.
func Compare(window, baseline map[string]uint64) Shift {
	var nw, nb float64
	cols := map[string]bool{}
	for k, v := range window {
		if v > 0 {
			cols[k] = true
			nw += float64(v)
		}
	}
	for k, v := range baseline {
		if v > 0 {
			cols[k] = true
			nb += float64(v)
		}
	}
	if len(cols) < 2 || nw == 0 || nb == 0 {
		return Shift{PValue: 1}
	}
	n := nw + nb
	var stat float64
	for k := range cols {
		ow, ob := float64(window[k]), float64(baseline[k])
		col := ow + ob
		ew, eb := nw*col/n, nb*col/n
		stat += (ow-ew)*(ow-ew)/ew + (ob-eb)*(ob-eb)/eb
	}
	df := len(cols) - 1
	return Shift{ChiSquare: stat, DF: df, PValue: distuv.ChiSquared{K: float64(df)}.Survival(stat), Effect: math.Sqrt(stat / n)}
}

// periods returns the window's and the baseline's bounds at now.
func (an *anomalies) periods(now time.Time) (windowFrom, baseFrom, baseTo time.Time) {
	windowFrom = now.Add(-an.o.Window).Truncate(time.Minute)
	baseTo = windowFrom.Truncate(time.Hour)
	baseFrom = baseTo.Add(-an.o.Baseline).Truncate(time.Hour)
	return
}

type candidate struct {
	env, flag        string
	window, baseline map[string]uint64
	shift            Shift
}

// candidates lists, per env and flag with enough samples, the window's and
// baseline's served variants and their comparison.
func (an *anomalies) candidates(now time.Time) []candidate {
	windowFrom, baseFrom, baseTo := an.periods(now)
	win := map[[2]string]map[string]uint64{}
	base := map[[2]string]map[string]uint64{}
	a := an.a
	a.mu.RLock()
	for k, b := range a.b[Minute] {
		if k.start < windowFrom.Unix() || k.start > now.Unix() {
			continue
		}
		for flag, c := range b.Flags {
			m := win[[2]string{k.env, flag}]
			mergeInto(&m, c.Variants)
			win[[2]string{k.env, flag}] = m
		}
	}
	for k, b := range a.b[Hour] {
		if k.start < baseFrom.Unix() || k.start >= baseTo.Unix() {
			continue
		}
		for flag, c := range b.Flags {
			if _, ok := win[[2]string{k.env, flag}]; !ok {
				continue
			}
			m := base[[2]string{k.env, flag}]
			mergeInto(&m, c.Variants)
			base[[2]string{k.env, flag}] = m
		}
	}
	a.mu.RUnlock()
	var out []candidate
	for key, w := range win {
		b := base[key]
		if sum(w) < an.o.MinSamples || sum(b) < an.o.MinSamples {
			continue
		}
		out = append(out, candidate{env: key[0], flag: key[1], window: w, baseline: b, shift: Compare(w, b)})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].env != out[j].env {
			return out[i].env < out[j].env
		}
		return out[i].flag < out[j].flag
	})
	return out
}

func sum(m map[string]uint64) (n uint64) {
	for _, v := range m {
		n += v
	}
	return n
}

// check compares every flag's window with its baseline and opens or
// closes anomalies.
func (an *anomalies) check(ctx context.Context) {
	if an.changes == nil {
		return
	}
	now := an.a.o.Now().UTC()
	windowFrom, baseFrom, baseTo := an.periods(now)
	shifted := map[string]candidate{}
	unreadable := map[string]bool{} // envs whose history could not be read: their anomalies stay as they are
	heads := map[string]*config.State{}
	changeTimes := map[string]time.Time{}
	for _, c := range an.candidates(now) {
		if c.shift.PValue >= an.o.Alpha || c.shift.Effect < an.o.MinEffect {
			continue
		}
		head, ok := heads[c.env]
		if !ok {
			h, err := an.changes.Head(ctx, c.env)
			if err != nil {
				an.log.Warn("anomaly check skipped: environment not readable", zap.String("env", c.env), zap.Error(err))
			}
			heads[c.env], head = h, h
		}
		if head == nil {
			unreadable[c.env] = true
			continue
		}
		explained, err := an.explained(ctx, head, c.flag, baseFrom, changeTimes)
		if err != nil {
			an.log.Warn("anomaly check skipped: history not readable", zap.String("env", c.env), zap.String("flag", c.flag), zap.Error(err))
			unreadable[c.env] = true
			continue
		}
		if !explained {
			shifted[c.env+"/"+c.flag] = c
		}
	}
	an.mu.Lock()
	defer an.mu.Unlock()
	for key, c := range shifted {
		if an.open[key] != nil {
			continue
		}
		x := &Anomaly{Env: c.env, Flag: c.flag, Opened: now, ChiSquare: c.shift.ChiSquare, PValue: c.shift.PValue, Effect: c.shift.Effect,
			Window: c.window, Baseline: c.baseline, WindowFrom: windowFrom, BaselineFrom: baseFrom, BaselineTo: baseTo}
		an.open[key] = x
		an.mTotal.WithLabelValues(c.env).Inc()
		an.mOpen.WithLabelValues(c.env).Inc()
		an.log.Warn("flag distribution shifted without a change", zap.String("env", c.env), zap.String("flag", c.flag),
			zap.Float64("p_value", c.shift.PValue), zap.Float64("effect", c.shift.Effect),
			zap.Any("window", c.window), zap.Any("baseline", c.baseline))
		an.emit.Emit(ctx, notify.Event{
			ID: "anomaly/" + c.env + "/" + c.flag + "/" + now.Truncate(time.Minute).Format(time.RFC3339), Type: notify.TypeAnomaly,
			Env: c.env, Time: now, Severity: notify.SeverityWarning, Flag: c.flag,
			Title: c.flag + ": served distribution shifted without a change",
			Text: fmt.Sprintf("last %s: %s; previous %s: %s (chi-square %.1f, p=%.2g); no changeset touched the flag or its prerequisites since %s",
				an.o.Window, shares(c.window), an.o.Baseline, shares(c.baseline), c.shift.ChiSquare, c.shift.PValue, baseFrom.Format(time.RFC3339)),
			Data: map[string]any{"chiSquare": c.shift.ChiSquare, "pValue": c.shift.PValue, "effect": c.shift.Effect,
				"window": c.window, "baseline": c.baseline, "windowFrom": windowFrom, "baselineFrom": baseFrom, "baselineTo": baseTo},
		})
	}
	for key, x := range an.open {
		if _, still := shifted[key]; still || unreadable[x.Env] {
			continue
		}
		delete(an.open, key)
		x.Closed = now
		an.recent = append(an.recent, *x)
		if len(an.recent) > maxRecent {
			an.recent = slices.Delete(an.recent, 0, len(an.recent)-maxRecent)
		}
		an.mOpen.WithLabelValues(x.Env).Dec()
		an.log.Info("flag distribution anomaly closed", zap.String("env", x.Env), zap.String("flag", x.Flag), zap.Duration("open_for", now.Sub(x.Opened)))
	}
}

// explained reports whether a changeset committed at or after since
// touched flag or one of its prerequisites (transitively), by the head
// state's per-flag last-change versions. A flag no longer in the head was
// deleted: a change too.
func (an *anomalies) explained(ctx context.Context, head *config.State, flag string, since time.Time, times map[string]time.Time) (bool, error) {
	if head.Doc == nil || head.Doc.Flag(flag) == nil {
		return true, nil
	}
	for _, f := range append([]string{flag}, config.NewGraph(head.Doc).Prerequisites(flag)...) {
		v, ok := head.LookupFlagVersion(f)
		if !ok {
			return true, nil // a prerequisite that does not exist: changed, or broken by a change
		}
		if v == 0 {
			continue
		}
		key := head.Env + "/" + fmt.Sprint(v)
		t, ok := times[key]
		if !ok {
			cs, err := an.changes.Changeset(ctx, head.Env, v)
			if err != nil {
				return false, err
			}
			t = cs.Time
			times[key] = t
		}
		if !t.Before(since) {
			return true, nil
		}
	}
	return false, nil
}

// shares renders a distribution as "on 90%, off 10%".
func shares(m map[string]uint64) string {
	n := sum(m)
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.1f%%", k, 100*float64(m[k])/float64(max(n, 1))))
	}
	return strings.Join(parts, ", ")
}

// Anomalies lists env's open anomalies, then the recently closed ones,
// newest first.
func (a *Aggregator) Anomalies(env string) []Anomaly {
	an := a.anom
	an.mu.Lock()
	defer an.mu.Unlock()
	out := []Anomaly{}
	for _, x := range an.open {
		if x.Env == env {
			out = append(out, *x)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Opened.After(out[j].Opened) })
	for i := len(an.recent) - 1; i >= 0; i-- {
		if an.recent[i].Env == env {
			out = append(out, an.recent[i])
		}
	}
	return out
}

// CheckAnomalies runs one anomaly check now (it also runs every
// AnomalyOptions.Every).
func (a *Aggregator) CheckAnomalies(ctx context.Context) { a.anom.check(ctx) }
