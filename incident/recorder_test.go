package incident

import (
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a manual clock for the quiet-period rules.
type clock struct{ t atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *clock) advance(d time.Duration) { c.t.Add(int64(d)) }
func newClock() *clock {
	c := &clock{}
	c.t.Store(time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func take(t *testing.T, r *Recorder) []Record {
	t.Helper()
	b, err := r.Take()
	if err != nil {
		t.Fatal(err)
	}
	if b == nil {
		return nil
	}
	if !json.Valid(b) {
		t.Fatalf("invalid JSON %s", b)
	}
	var p Payload
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	return p.Records
}

func byKind(recs []Record, kind string) *Record {
	for i := range recs {
		if recs[i].Kind == kind {
			return &recs[i]
		}
	}
	return nil
}

func TestRecorderRecords(t *testing.T) {
	type load struct{ req, inflight atomic.Int64 }
	var ld load
	probe := func() Load { return Load{InFlight: ld.inflight.Load(), Requests: uint64(ld.req.Load())} }
	cases := []struct {
		name string
		push bool
		run  func(r *Recorder, c *clock)
		want func(t *testing.T, recs []Record)
	}{
		{name: "push lost, polling then disk, recovered with answers per rung", push: true,
			run: func(r *Recorder, c *clock) {
				r.SyncChanged("push", "polling", "NATS disconnected", SyncConditions{State: "polling", Version: 7, Hash: "h7"})
				ld.req.Add(10)
				r.FailModeAnswer(true)
				r.FailModeAnswer(true)
				r.SyncChanged("polling", "disk", "control plane unreachable", SyncConditions{State: "disk", Version: 7})
				ld.req.Add(5)
				c.advance(3 * time.Second)
				r.SyncChanged("disk", "push", "heartbeat matches", SyncConditions{State: "push", Version: 8})
			},
			want: func(t *testing.T, recs []Record) {
				p := byKind(recs, KindPushLost)
				if p == nil || p.Status != StatusRecovered || !p.Recovered || p.Reason != "NATS disconnected" || p.AtStart.Version != 7 || p.AtStart.Hash != "h7" {
					t.Fatalf("push_lost: %+v", p)
				}
				want := []Fallback{{Name: "polling", Answers: 10}, {Name: "disk", Answers: 5}, {Name: FallbackFailClosed, Answers: 2}}
				if len(p.Fallbacks) != len(want) {
					t.Fatalf("fallbacks %+v", p.Fallbacks)
				}
				for i, f := range want {
					if p.Fallbacks[i].Name != f.Name || p.Fallbacks[i].Answers != f.Answers {
						t.Fatalf("fallback %d: %+v, want %+v", i, p.Fallbacks[i], f)
					}
				}
				if p.End.Sub(p.Start) != 3*time.Second || p.Latest == nil || p.Latest.Version != 8 {
					t.Fatalf("end %v latest %+v", p.End, p.Latest)
				}
				if got := p.Summary(p.End.Add(time.Hour)); got != "push_lost (NATS disconnected): recovered after 3s; served: polling 10, disk 5, fail-closed 2; v7" {
					t.Fatalf("summary %q", got)
				}
			}},
		{name: "polling is normal without NATS; disk is not", push: false,
			run: func(r *Recorder, c *clock) {
				r.SyncChanged("starting", "polling", "confirmed current", SyncConditions{})
				r.SyncChanged("polling", "defaults", "no control plane", SyncConditions{})
			},
			want: func(t *testing.T, recs []Record) {
				p := byKind(recs, KindControlPlaneLost)
				if p == nil || p.Status != StatusOpen || len(p.Fallbacks) != 1 || p.Fallbacks[0].Name != "defaults" || byKind(recs, KindPushLost) != nil {
					t.Fatalf("records %+v", recs)
				}
			}},
		{name: "breaker open then closed", push: true,
			run: func(r *Recorder, c *clock) {
				r.BreakerChanged(true, 3, errors.New("dial tcp: connection refused"))
				c.advance(time.Second)
				r.BreakerChanged(false, 0, nil)
			},
			want: func(t *testing.T, recs []Record) {
				b := byKind(recs, KindBreakerOpen)
				if b == nil || !b.Recovered || b.Count != 3 || b.Reason != "dial tcp: connection refused" {
					t.Fatalf("breaker %+v", b)
				}
			}},
		{name: "fail-mode answers close after a quiet period", push: true,
			run: func(r *Recorder, c *clock) {
				for range 5 {
					r.FailModeAnswer(false)
				}
				r.Take() // counted, still open
				c.advance(DefaultQuietFor)
			},
			want: func(t *testing.T, recs []Record) {
				f := byKind(recs, KindFailMode)
				if f == nil || !f.Recovered || len(f.Fallbacks) != 1 || f.Fallbacks[0].Name != FallbackFailOpen || f.Fallbacks[0].Answers != 5 {
					t.Fatalf("fail mode %+v", f)
				}
			}},
		{name: "targeting fallback and cache bypass", push: true,
			run: func(r *Recorder, c *clock) {
				r.TargetingChanged("slow-flag", "cost", true)
				r.FallbackAnswer(false)
				r.FallbackAnswer(true)
				r.CacheBypass(true, "hit rate collapsed")
				r.BypassedAnswer()
				r.CacheBypass(false, "")
				r.Take()
				c.advance(DefaultQuietFor)
			},
			want: func(t *testing.T, recs []Record) {
				tf := byKind(recs, KindTargetingFallback)
				if tf == nil || !tf.Recovered || len(tf.Detail) != 1 || tf.Detail[0] != "slow-flag (cost)" || len(tf.Fallbacks) != 2 {
					t.Fatalf("targeting %+v", tf)
				}
				cb := byKind(recs, KindCacheBypass)
				if cb == nil || !cb.Recovered || cb.Reason != "hit rate collapsed" || cb.Fallbacks[0].Answers != 1 {
					t.Fatalf("cache %+v", cb)
				}
			}},
		{name: "signature rejections counted", push: true,
			run: func(r *Recorder, c *clock) {
				r.Rejected("changeset", "bad-signature", 9)
				r.Rejected("changeset", "bad-signature", 9)
				r.Rejected("heartbeat", "unknown-key", 0)
				r.Take()
				c.advance(DefaultQuietFor)
			},
			want: func(t *testing.T, recs []Record) {
				s := byKind(recs, KindSignatureRejected)
				if s == nil || s.Count != 3 || len(s.Detail) != 2 || s.Detail[0] != "changeset: bad-signature (v9)" || !s.Recovered {
					t.Fatalf("rejections %+v", s)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			r, err := NewRecorder(RecorderOptions{Env: "dev", Source: "car-1", PushExpected: tc.push, Load: probe, Now: c.now})
			if err != nil {
				t.Fatal(err)
			}
			tc.run(r, c)
			recs := take(t, r)
			tc.want(t, recs)
			// What was shipped is not shipped again unless it changes.
			for _, rec := range take(t, r) {
				if rec.Closed() {
					t.Fatalf("closed record sent twice: %+v", rec)
				}
			}
		})
	}
}

func TestRecorderResendsOpenRecordsOnlyWhenChanged(t *testing.T) {
	c := newClock()
	r, _ := NewRecorder(RecorderOptions{Env: "dev", Source: "car-1", PushExpected: true, Now: c.now})
	r.SyncChanged("push", "polling", "NATS disconnected", SyncConditions{})
	first := take(t, r)
	if len(first) != 1 || first[0].Rev != 1 {
		t.Fatalf("first take %+v", first)
	}
	if again := take(t, r); len(again) != 0 {
		t.Fatalf("unchanged open record sent again: %+v", again)
	}
	r.FailModeAnswer(true) // the ladder record counts it: changed
	recs := take(t, r)
	p := byKind(recs, KindPushLost)
	if p == nil || p.Rev != 2 {
		t.Fatalf("changed record not re-sent with a higher rev: %+v", recs)
	}
	c.advance(DefaultResend)
	if p := byKind(take(t, r), KindPushLost); p == nil {
		t.Fatal("open record not re-sent after Resend")
	}
}

func TestRecorderBoundsClosedRecords(t *testing.T) {
	c := newClock()
	r, _ := NewRecorder(RecorderOptions{Env: "dev", Source: "car-1", MaxClosed: 4, Now: c.now})
	for range 10 {
		r.BreakerChanged(true, 3, nil)
		r.BreakerChanged(false, 0, nil)
	}
	recs := take(t, r)
	if len(recs) != 4 || recs[3].ID != "car-1/"+r.Boot()+"/10" {
		t.Fatalf("want the 4 newest closed records, got %d: %+v", len(recs), recs)
	}
}

func TestPerAnswerHooksDoNotAllocate(t *testing.T) {
	r, _ := NewRecorder(RecorderOptions{Env: "dev", Source: "car-1"})
	r.FailModeAnswer(true)
	r.FallbackAnswer(false)
	if n := testing.AllocsPerRun(1000, func() {
		r.FailModeAnswer(true)
		r.FallbackAnswer(true)
		r.BypassedAnswer()
	}); n != 0 {
		t.Fatalf("per-answer hooks allocate %v times", n)
	}
	var nilRec *Recorder
	nilRec.FailModeAnswer(true) // nil-safe
}

func TestRecorderStartGrace(t *testing.T) {
	c := newClock()
	r, _ := NewRecorder(RecorderOptions{Env: "dev", Source: "car-1", PushExpected: true, Now: c.now})
	first := take(t, r) // the greeting: boot, no records
	if first == nil || len(first) != 0 {
		t.Fatalf("first take: %+v", first)
	}
	// A normal start: polling until the first heartbeat.
	r.SyncChanged("starting", "polling", "confirmed current", SyncConditions{State: "polling"})
	c.advance(time.Second)
	r.SyncChanged("polling", "push", "heartbeat matches", SyncConditions{State: "push"})
	c.advance(DefaultStartGrace)
	if recs := take(t, r); len(recs) != 0 {
		t.Fatalf("a normal start opened %+v", recs)
	}
	// A start that never reaches push: a record from the start, after the grace.
	r2, _ := NewRecorder(RecorderOptions{Env: "dev", Source: "car-2", PushExpected: true, Now: c.now})
	began := c.now().UTC()
	r2.SyncChanged("starting", "polling", "confirmed current", SyncConditions{State: "polling", Version: 3})
	if recs := take(t, r2); len(recs) != 0 {
		t.Fatalf("opened before the grace: %+v", recs)
	}
	c.advance(DefaultStartGrace)
	p := byKind(take(t, r2), KindPushLost)
	if p == nil || !p.Start.Equal(began) || p.Status != StatusOpen || p.AtStart.Version != 3 || len(p.Fallbacks) != 1 || p.Fallbacks[0].Name != FallbackPolling {
		t.Fatalf("record %+v", p)
	}
}
