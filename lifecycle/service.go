package lifecycle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/notify"
	"github.com/pennon-dev/pennon/usage"
)

// Store is what the service reads from the versioned store; *config.Store
// implements it.
type Store interface {
	EnvNames(ctx context.Context) ([]string, error)
	Env(ctx context.Context, name string) (config.EnvSettings, error)
	Head(ctx context.Context, env string) (*config.State, error)
	// Changesets returns up to limit changesets after version `after`, in
	// order (an empty list past the head).
	Changesets(ctx context.Context, env string, after uint64, limit int) ([]*config.Changeset, error)
}

// Options configure a Service.
type Options struct {
	Store Store // required
	// Usage answers evaluation counts; nil: every report says "usage
	// unknown" (nothing is called unused or settled).
	Usage usage.Reader
	// Notify receives the periodic check's findings; default notify.Discard.
	Notify notify.Emitter
	Logger *zap.Logger
	// Interval between periodic checks (Run); default 1h.
	Interval time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Service builds lifecycle reports for the control plane and runs the
// periodic check that emits findings as events.
type Service struct {
	o   Options
	log *zap.Logger

	mu   sync.Mutex
	hist map[string]*history // env → facts folded so far

	sentMu  sync.Mutex
	sentDay string          // UTC date of the IDs in sent
	sent    map[string]bool // event IDs emitted today
	failing bool            // the last check failed (logged once per outage)
}

// New validates the options.
func New(o Options) (*Service, error) {
	if o.Store == nil {
		return nil, errors.New("lifecycle: Options.Store is required")
	}
	if o.Notify == nil {
		o.Notify = notify.Discard
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Interval <= 0 {
		o.Interval = time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Service{o: o, log: o.Logger, hist: map[string]*history{}, sent: map[string]bool{}}, nil
}

// changesetPage bounds one history read.
const changesetPage = 1000

// Report builds the environment's lifecycle report now.
func (s *Service) Report(ctx context.Context, env string) (*Report, error) {
	settings, err := s.o.Store.Env(ctx, env)
	if err != nil {
		return nil, err
	}
	head, err := s.o.Store.Head(ctx, env)
	if err != nil {
		return nil, err
	}
	facts, err := s.facts(ctx, env, head)
	if err != nil {
		return nil, fmt.Errorf("lifecycle %s: history: %w", env, err)
	}
	pol := settings.Lifecycle.WithDefaults()
	in := Input{Env: env, Version: head.Version, Doc: head.Doc, Facts: facts, Now: s.o.Now(), Policy: pol}
	in.Usage, in.UsageError = s.usage(env, head.Doc, pol)
	return Build(in), nil
}

// usage reads enough days for the settled window and every servedVariant
// criterion; a missing or failing reader is "usage unknown", never "unused".
func (s *Service) usage(env string, doc *config.Document, pol config.LifecyclePolicy) (map[string]usage.FlagUsage, string) {
	if s.o.Usage == nil {
		return nil, "no usage reader configured"
	}
	days := pol.SettledDays
	for _, k := range doc.FlagKeys() {
		if r := doc.Flag(k).Retirement; r != nil && r.ForDays > days {
			days = r.ForDays
		}
	}
	u, err := s.o.Usage.FlagUsage(env, days)
	if err != nil {
		return nil, err.Error()
	}
	if u == nil {
		u = map[string]usage.FlagUsage{}
	}
	return u, ""
}

// facts folds the changesets committed since the last report into the
// environment's history and returns the facts of head's flags.
func (s *Service) facts(ctx context.Context, env string, head *config.State) (map[string]Facts, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.hist[env]
	if h == nil || h.through > head.Version {
		h = newHistory() // first report, or the environment was recreated
	}
	for h.through < head.Version {
		page, err := s.o.Store.Changesets(ctx, env, h.through, changesetPage)
		if err != nil {
			return nil, err
		}
		if len(page) == 0 {
			break
		}
		for _, cs := range page {
			h.fold(cs)
		}
	}
	s.hist[env] = h
	return h.facts(head.Doc), nil
}

// Run checks every environment each Interval (the first at once) until ctx
// ends, emitting each finding once per flag per UTC day.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.o.Interval)
	defer t.Stop()
	for {
		s.logCheck(s.Check(ctx))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Service) logCheck(err error) {
	s.sentMu.Lock()
	defer s.sentMu.Unlock()
	switch {
	case err != nil && !s.failing:
		s.failing = true
		s.log.Warn("lifecycle check failing", zap.Error(err))
	case err == nil && s.failing:
		s.failing = false
		s.log.Info("lifecycle check recovered")
	}
}

// Check builds every environment's report and emits the findings not yet
// emitted today. Event IDs are derived from (env, flag, kind, day), so
// several control-plane replicas, or a restart, emit the same IDs and
// receivers de-duplicate.
func (s *Service) Check(ctx context.Context) error {
	names, err := s.o.Store.EnvNames(ctx)
	if err != nil {
		return fmt.Errorf("list environments: %w", err)
	}
	var errs []error
	for _, env := range names {
		r, err := s.Report(ctx, env)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", env, err))
			continue
		}
		for _, e := range Events(r) {
			if s.markSent(e.ID, e.Time) {
				s.o.Notify.Emit(ctx, e)
			}
		}
	}
	return errors.Join(errs...)
}

// markSent records id as emitted on t's day; false if it already was.
func (s *Service) markSent(id string, t time.Time) bool {
	s.sentMu.Lock()
	defer s.sentMu.Unlock()
	if d := t.UTC().Format(time.DateOnly); d != s.sentDay {
		s.sentDay, s.sent = d, map[string]bool{}
	}
	if s.sent[id] {
		return false
	}
	s.sent[id] = true
	return true
}

// Events turns a report's findings into notify events, one per flag and
// finding, with IDs stable for the report's UTC day.
func Events(r *Report) []notify.Event {
	var out []notify.Event
	d := r.GeneratedAt.UTC().Format(time.DateOnly)
	for _, f := range r.Flags {
		for _, fd := range f.Findings {
			sum := sha256.Sum256([]byte(r.Env + "\x00" + f.Key + "\x00" + fd.Kind + "\x00" + d))
			data := map[string]any{"kind": fd.Kind, "version": r.Version}
			if f.Owner != "" {
				data["owner"] = f.Owner
			}
			if fd.Variant != "" {
				data["variant"], data["value"] = fd.Variant, fd.Value
			}
			if f.Expires != "" {
				data["expires"] = f.Expires
			}
			out = append(out, notify.Event{ID: "lifecycle-" + hex.EncodeToString(sum[:12]), Type: notify.TypeLifecycle, Env: r.Env,
				Time: r.GeneratedAt, Severity: severity(fd.Kind), Title: f.Key + ": " + fd.Kind, Text: fd.Message, Flag: f.Key, Data: data})
		}
	}
	return out
}

func severity(kind string) string {
	switch kind {
	case KindExpired, KindOrphanedPrereq:
		return notify.SeverityWarning
	}
	return notify.SeverityInfo
}
