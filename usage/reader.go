package usage

import (
	"context"
	"maps"
	"time"
)

// MaxDays bounds FlagUsage's days (the day rollup's retention).
const MaxDays = 400

// FlagUsage implements Reader: every flag of env evaluated within the day
// rollup's retention. Counts over "the last 24 h" and "7 d" are sums of
// hour buckets, the current (partial) hour included.
func (a *Aggregator) FlagUsage(env string, days int) (map[string]FlagUsage, error) {
	now := a.o.Now().UTC()
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.flagUsageLocked(env, days, now), nil
}

// Overview answers env's per-flag usage (as FlagUsage without days) and its
// 24-hour totals from one view of the rollups: the totals are then exactly
// the flags' 24-hour counts plus the unknown keys, which two separate
// reads could not promise while batches are being applied between them.
func (a *Aggregator) Overview(env string) (map[string]FlagUsage, EnvTotals) {
	now := a.o.Now().UTC()
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.flagUsageLocked(env, 0, now), a.totalsLocked(env, now)
}

func (a *Aggregator) flagUsageLocked(env string, days int, now time.Time) map[string]FlagUsage {
	days = min(max(days, 0), MaxDays)
	out := map[string]FlagUsage{}
	get := func(flag string) FlagUsage { return out[flag] }
	for k, b := range a.b[Day] {
		if k.env != env {
			continue
		}
		for flag, c := range b.Flags {
			u := get(flag)
			if c.Last.After(u.LastEvaluated) {
				u.LastEvaluated = c.Last
			}
			out[flag] = u
		}
	}
	hourNow := now.Truncate(time.Hour)
	from24, from7d := hourNow.Add(-23*time.Hour).Unix(), hourNow.Add(-(7*24-1)*time.Hour).Unix()
	for k, b := range a.b[Hour] {
		if k.env != env || k.start < from7d || k.start > hourNow.Unix() {
			continue
		}
		for flag, c := range b.Flags {
			u := get(flag)
			u.Last7d += c.N
			mergeInto(&u.Apps, c.Apps)
			if k.start >= from24 {
				u.Last24h += c.N
				mergeInto(&u.Variants24h, c.Variants)
				mergeInto(&u.Errors24h, c.Codes)
			}
			out[flag] = u
		}
	}
	if days > 0 {
		dayNow := now.Truncate(24 * time.Hour)
		for flag, u := range out {
			u.Days = make([]FlagDay, days)
			for i := range days {
				d := dayNow.Add(-time.Duration(days-1-i) * 24 * time.Hour)
				fd := FlagDay{Day: d}
				if b := a.b[Day][bucketKey{env, d.Unix()}]; b != nil {
					if c := b.Flags[flag]; c != nil {
						fd.Evaluations, fd.Errors = c.N, c.Errors
						fd.Variants = maps.Clone(c.Variants)
					}
				}
				u.Days[i] = fd
			}
			out[flag] = u
		}
	}
	return out
}

func mergeInto(dst *map[string]uint64, src map[string]uint64) {
	if len(src) == 0 {
		return
	}
	if *dst == nil {
		*dst = make(map[string]uint64, len(src))
	}
	for k, v := range src {
		(*dst)[k] += v
	}
}

// EnvTotals is what an environment's sidecars reported over the last 24 h
// beyond the per-flag counts.
type EnvTotals struct {
	Evaluations uint64 `json:"evaluations"`
	// UnknownFlags counts evaluations of keys no flag of the sidecar's
	// flag set had (FLAG_NOT_FOUND answers).
	UnknownFlags uint64 `json:"unknownFlags"`
	// Sidecars: evaluations per reporting sidecar.
	Sidecars map[string]uint64 `json:"sidecars,omitempty"`
}

// totalsLocked sums env's hour buckets of the last 24 h (Overview).
func (a *Aggregator) totalsLocked(env string, now time.Time) EnvTotals {
	hourNow := now.Truncate(time.Hour)
	from := hourNow.Add(-23 * time.Hour).Unix()
	var t EnvTotals
	for k, b := range a.b[Hour] {
		if k.env != env || k.start < from || k.start > hourNow.Unix() {
			continue
		}
		t.UnknownFlags += b.Unknown
		t.Evaluations += b.Unknown
		for _, c := range b.Flags {
			t.Evaluations += c.N
		}
		mergeInto(&t.Sidecars, b.Sidecars)
	}
	return t
}

// Point is one rollup bucket of a series.
type Point struct {
	Start       time.Time         `json:"start"`
	Evaluations uint64            `json:"evaluations"`
	Errors      uint64            `json:"errors"`
	Variants    map[string]uint64 `json:"variants,omitempty"`
}

// MaxPoints bounds one series (two days of minutes).
const MaxPoints = 2880

// Series returns flag's buckets of granularity g from since to now, oldest
// first, every step present (zero when nothing was counted); flag "" sums
// every flag. Minutes older than what is kept in memory are read from
// JetStream.
func (a *Aggregator) Series(ctx context.Context, env, flag string, g Granularity, since time.Time) ([]Point, error) {
	step := grans[g].step
	now := a.o.Now().UTC()
	start := since.UTC().Truncate(step)
	if floor := now.Add(-grans[g].retention).Truncate(step); start.Before(floor) {
		start = floor
	}
	if n := int(now.Sub(start) / step); n >= MaxPoints {
		start = now.Truncate(step).Add(-time.Duration(MaxPoints-1) * step)
	}
	var out []Point
	for t := start; !t.After(now); t = t.Add(step) {
		k := bucketKey{env, t.Unix()}
		a.mu.RLock()
		b, ok := a.b[g][k]
		floor := a.minuteFloor
		var p Point
		if ok {
			p = b.point(t, flag)
		}
		a.mu.RUnlock()
		if !ok && g == Minute && k.start < floor {
			rb, err := a.read(ctx, g, k)
			if err != nil {
				return nil, err
			}
			if rb != nil {
				ok, p = true, rb.point(t, flag)
			}
		}
		if !ok {
			p = Point{Start: t}
		}
		out = append(out, p)
	}
	return out, nil
}

func (b *bucket) point(t time.Time, flag string) Point {
	p := Point{Start: t}
	add := func(c *counts) {
		p.Evaluations += c.N
		p.Errors += c.Errors
		mergeInto(&p.Variants, c.Variants)
	}
	if flag != "" {
		if c := b.Flags[flag]; c != nil {
			add(c)
		}
		return p
	}
	for _, c := range b.Flags {
		add(c)
	}
	p.Evaluations += b.Unknown
	p.Errors += b.Unknown
	return p
}
