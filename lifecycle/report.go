// Package lifecycle tells people which flags should die: per flag, who owns
// it, how old it is, when it last changed and was evaluated, how it answers,
// when it expires, and the findings that follow (unused, stale, expired,
// ownerless, settled, retirement criteria met, orphaned prerequisite). It
// also enforces an environment's rule for changes to expired flags, emits
// findings as notify events, and finds flag keys in source code.
//
// The report is a pure function of the flag set, the change-history facts,
// the usage and the clock (Build); the Service only gathers those inputs.
// It never writes flags.
package lifecycle

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/usage"
)

// Kinds of findings.
const (
	KindUnused         = "unused"        // not evaluated for UnusedDays
	KindStale          = "stale"         // not changed for StaleDays
	KindExpired        = "expired"       // expires is in the past
	KindExpiringSoon   = "expiring-soon" // expires within ExpiringSoonDays
	KindOwnerless      = "ownerless"     // no owner
	KindSettled        = "settled"       // one variant ≥ 99.9 % for SettledDays
	KindRetirement     = "retirement-met"
	KindOrphanedPrereq = "orphaned-prerequisite"
)

// SettledShare is the share of evaluations one variant must have had for a
// flag to count as settled (or for a servedVariant criterion to hold).
const SettledShare = 0.999

const day = 24 * time.Hour

// Change is one changeset as far as a flag's history needs it.
type Change struct {
	Version uint64    `json:"version"`
	Time    time.Time `json:"time"`
	Author  string    `json:"author,omitempty"`
}

// Facts is what the change history says about one flag in the flag set.
type Facts struct {
	// Created is the changeset that put the flag when it did not exist
	// (after its last deletion, if any); nil when the history that far
	// back is not readable.
	Created *Change
	// LastChanged is the last changeset that put the flag.
	LastChanged *Change
	// FormerDependents are flags that named this flag as a prerequisite
	// at some version, with the last version they did.
	FormerDependents map[string]uint64
}

// Input is everything a report is computed from.
type Input struct {
	Env     string
	Version uint64
	Doc     *config.Document
	Facts   map[string]Facts
	// Usage per flag; nil means usage is unknown (no reader, or it
	// failed: UsageError says why), which is not the same as unused.
	Usage      map[string]usage.FlagUsage
	UsageError string
	Now        time.Time
	Policy     config.LifecyclePolicy // with defaults applied
}

// Report is an environment's lifecycle report.
type Report struct {
	Env         string                 `json:"env"`
	Version     uint64                 `json:"version"`
	GeneratedAt time.Time              `json:"generatedAt"`
	Policy      config.LifecyclePolicy `json:"policy"`
	// UsageKnown is false when no usage could be read; then no flag is
	// called unused or settled, and UsageNote says why.
	UsageKnown bool           `json:"usageKnown"`
	UsageNote  string         `json:"usageNote,omitempty"`
	Summary    map[string]int `json:"summary"` // finding kind → flags
	Flags      []FlagReport   `json:"flags"`
}

// FlagReport is one flag's line of the report.
type FlagReport struct {
	Key         string  `json:"key"`
	State       string  `json:"state"`
	Owner       string  `json:"owner,omitempty"`
	Created     *Change `json:"created,omitempty"`
	AgeDays     *int    `json:"ageDays,omitempty"`
	LastChanged *Change `json:"lastChanged,omitempty"`
	// Usage fields are absent when usage is unknown.
	LastEvaluated  *time.Time        `json:"lastEvaluated,omitempty"`
	Evaluations24h *uint64           `json:"evaluations24h,omitempty"`
	Evaluations7d  *uint64           `json:"evaluations7d,omitempty"`
	Variants24h    map[string]uint64 `json:"variants24h,omitempty"`
	Expires        string            `json:"expires,omitempty"`
	Retirement     *RetirementCheck  `json:"retirement,omitempty"`
	Findings       []Finding         `json:"findings"`
}

// RetirementCheck is the flag's retirement field and, for criteria,
// which of them do not hold yet.
type RetirementCheck struct {
	Text    string   `json:"text"`
	Checked bool     `json:"checked"` // criteria, not only a note
	Met     bool     `json:"met"`
	Pending []string `json:"pending,omitempty"`
}

// Finding is one thing to act on.
type Finding struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
	// Variant and Value are what to keep when the flag is removed
	// (settled, retirement-met): the code should return Value.
	Variant string          `json:"variant,omitempty"`
	Value   json.RawMessage `json:"value,omitempty"`
}

// Build computes the report. It reads nothing but its input.
func Build(in Input) *Report {
	now := in.Now.UTC()
	r := &Report{Env: in.Env, Version: in.Version, GeneratedAt: now, Policy: in.Policy, UsageKnown: in.Usage != nil,
		Summary: map[string]int{}, Flags: []FlagReport{}}
	if in.Usage == nil {
		r.UsageNote = "usage unknown"
		if in.UsageError != "" {
			r.UsageNote += ": " + in.UsageError
		}
		r.UsageNote += "; no flag is reported unused or settled"
	}
	if in.Doc == nil {
		return r
	}
	requiredBy := map[string][]string{}
	for _, k := range in.Doc.FlagKeys() {
		for p := range in.Doc.Flag(k).Prerequisites {
			requiredBy[p] = append(requiredBy[p], k)
		}
	}
	for _, key := range in.Doc.FlagKeys() {
		f := in.Doc.Flag(key)
		fr := flagReport(in, now, key, f, requiredBy)
		for _, fd := range fr.Findings {
			r.Summary[fd.Kind]++
		}
		r.Flags = append(r.Flags, fr)
	}
	return r
}

func flagReport(in Input, now time.Time, key string, f *config.FlagDoc, requiredBy map[string][]string) FlagReport {
	pol := in.Policy
	facts := in.Facts[key]
	fr := FlagReport{Key: key, State: f.State, Owner: strings.TrimSpace(f.Owner), Created: facts.Created,
		LastChanged: facts.LastChanged, Expires: f.Expires, Findings: []Finding{}}
	if facts.Created != nil {
		age := int(now.Sub(facts.Created.Time) / day)
		fr.AgeDays = &age
	}
	u, usageKnown := in.Usage[key], in.Usage != nil
	if usageKnown {
		if !u.LastEvaluated.IsZero() {
			t := u.LastEvaluated.UTC()
			fr.LastEvaluated = &t
		}
		fr.Evaluations24h, fr.Evaluations7d = &u.Last24h, &u.Last7d
		fr.Variants24h = u.Variants24h
	}
	add := func(kind, format string, a ...any) *Finding {
		fr.Findings = append(fr.Findings, Finding{Kind: kind, Message: fmt.Sprintf(format, a...)})
		return &fr.Findings[len(fr.Findings)-1]
	}

	if usageKnown {
		idle, known := idleDays(u, facts, now)
		switch {
		case !known:
			add(KindUnused, "no evaluation reported")
		case idle < pol.UnusedDays:
		case u.LastEvaluated.IsZero():
			add(KindUnused, "no evaluation reported since it was created %d days ago", idle)
		default:
			add(KindUnused, "not evaluated for %d days (last %s)", idle, u.LastEvaluated.UTC().Format(time.DateOnly))
		}
	}
	if facts.LastChanged != nil {
		if d := int(now.Sub(facts.LastChanged.Time) / day); d >= pol.StaleDays {
			add(KindStale, "not changed for %d days (version %d, %s)", d, facts.LastChanged.Version, facts.LastChanged.Time.UTC().Format(time.DateOnly))
		}
	}
	if exp, ok := f.ExpiresAt(); ok {
		switch {
		case !exp.After(now):
			add(KindExpired, "expired on %s (%d days ago)", f.Expires, int(now.Sub(exp)/day))
		case exp.Sub(now) <= time.Duration(pol.ExpiringSoonDays)*day:
			add(KindExpiringSoon, "expires on %s (in %d days)", f.Expires, int(exp.Sub(now)/day))
		}
	}
	if fr.Owner == "" {
		add(KindOwnerless, "no owner: set owner to the team or person who decides when it goes")
	}
	if usageKnown && f.Enabled() {
		if v, share, ok := settled(u, facts, now, pol.SettledDays, ""); ok {
			fd := add(KindSettled, "served %q for %s of evaluations over %d days: ready to retire, keep %q (%s)", v, percent(share), pol.SettledDays, v, f.Variants[v])
			fd.Variant, fd.Value = v, f.Variants[v]
		}
	}
	if f.Retirement != nil {
		fr.Retirement = retirementCheck(f, u, usageKnown, facts, now)
		if fr.Retirement.Met {
			fd := add(KindRetirement, "retirement criteria met: %s", fr.Retirement.Text)
			if v := f.Retirement.ServedVariant; v != "" {
				fd.Variant, fd.Value = v, f.Variants[v]
			}
		}
	}
	orphaned(in, key, f, requiredBy, facts, u, usageKnown, now, add)
	return fr
}

// idleDays is how long the flag has gone without an evaluation: since its
// last evaluation or, never evaluated, since it was created. known is false
// when it was never evaluated and its creation is not in the readable
// history: idle for longer than anyone can say, which counts as unused.
func idleDays(u usage.FlagUsage, facts Facts, now time.Time) (days int, known bool) {
	switch {
	case !u.LastEvaluated.IsZero():
		return int(now.Sub(u.LastEvaluated) / day), true
	case facts.Created != nil:
		return int(now.Sub(facts.Created.Time) / day), true
	}
	return 0, false
}

// settled reports whether one variant (want, or any when want is "") had
// at least SettledShare of the evaluations over the last n days of u.Days:
// the window must be covered (n days listed, evaluations on its first
// day, so the data spans it) and the flag unchanged during it.
func settled(u usage.FlagUsage, facts Facts, now time.Time, n int, want string) (string, float64, bool) {
	if n <= 0 || len(u.Days) < n {
		return "", 0, false
	}
	win := u.Days[len(u.Days)-n:]
	if win[0].Evaluations == 0 {
		return "", 0, false
	}
	if facts.LastChanged != nil && facts.LastChanged.Time.After(win[0].Day) {
		return "", 0, false
	}
	var total uint64
	per := map[string]uint64{}
	for _, d := range win {
		total += d.Evaluations
		for v, c := range d.Variants {
			per[v] += c
		}
	}
	if total == 0 {
		return "", 0, false
	}
	best, bestN := "", uint64(0)
	for _, v := range sortedKeys(per) {
		if per[v] > bestN {
			best, bestN = v, per[v]
		}
	}
	if want != "" {
		best, bestN = want, per[want]
	}
	share := float64(bestN) / float64(total)
	return best, share, share >= SettledShare
}

// retirementCheck evaluates the flag's retirement criteria; all must hold.
func retirementCheck(f *config.FlagDoc, u usage.FlagUsage, usageKnown bool, facts Facts, now time.Time) *RetirementCheck {
	ret := f.Retirement
	rc := &RetirementCheck{Text: ret.String(), Checked: ret.Checkable()}
	if !rc.Checked {
		return rc
	}
	if t, ok := ret.AfterTime(); ok && now.Before(t) {
		rc.Pending = append(rc.Pending, "not before "+ret.After)
	}
	if ret.ServedVariant != "" {
		_, share, ok := settled(u, facts, now, ret.ForDays, ret.ServedVariant)
		switch {
		case !usageKnown:
			rc.Pending = append(rc.Pending, fmt.Sprintf("served %q for %d days: usage unknown", ret.ServedVariant, ret.ForDays))
		case !ok && share > 0:
			rc.Pending = append(rc.Pending, fmt.Sprintf("served %q for %d days: %s of evaluations, or not for the whole window", ret.ServedVariant, ret.ForDays, percent(share)))
		case !ok:
			rc.Pending = append(rc.Pending, fmt.Sprintf("served %q for %d days: not yet (no full window of evaluations since the last change)", ret.ServedVariant, ret.ForDays))
		}
	}
	if ret.UnusedForDays > 0 {
		idle, known := idleDays(u, facts, now)
		switch {
		case !usageKnown:
			rc.Pending = append(rc.Pending, fmt.Sprintf("unused for %d days: usage unknown", ret.UnusedForDays))
		case known && idle < ret.UnusedForDays:
			rc.Pending = append(rc.Pending, fmt.Sprintf("unused for %d days: evaluated %d days ago", ret.UnusedForDays, idle))
		}
	}
	rc.Met = len(rc.Pending) == 0
	return rc
}

// orphaned adds the orphaned-prerequisite findings of one flag:
//   - it names a prerequisite that does not exist (a document that went
//     through validation cannot, but a report must not trust that);
//   - it names a prerequisite that is DISABLED: the prerequisite never
//     holds, so the flag always serves its default variant;
//   - nothing requires it now, flags did before (it was left behind when
//     they dropped it or were deleted), and no app evaluated it in the
//     unused window (or usage is unknown, which the message says).
func orphaned(in Input, key string, f *config.FlagDoc, requiredBy map[string][]string, facts Facts, u usage.FlagUsage, usageKnown bool, now time.Time, add func(kind, format string, a ...any) *Finding) {
	for _, p := range sortedKeys(f.Prerequisites) {
		pf := in.Doc.Flag(p)
		switch {
		case pf == nil:
			add(KindOrphanedPrereq, "prerequisite %q does not exist: remove it from prerequisites", p)
		case !pf.Enabled():
			def := ""
			if f.DefaultVariant != nil {
				def = *f.DefaultVariant
			}
			add(KindOrphanedPrereq, "prerequisite %q is DISABLED, so %s always serves its default variant %q", p, key, def)
		}
	}
	if len(requiredBy[key]) > 0 || len(facts.FormerDependents) == 0 {
		return
	}
	var was []string
	for _, d := range sortedKeys(facts.FormerDependents) {
		was = append(was, fmt.Sprintf("%s (until version %d)", d, facts.FormerDependents[d]))
	}
	switch idle, known := idleDays(u, facts, now); {
	case !usageKnown:
		add(KindOrphanedPrereq, "was a prerequisite of %s; nothing requires it now (usage unknown: check whether apps evaluate it)", strings.Join(was, ", "))
	case !known || idle >= in.Policy.UnusedDays:
		add(KindOrphanedPrereq, "was a prerequisite of %s; nothing requires it now and no app evaluated it", strings.Join(was, ", "))
	}
}

func percent(share float64) string {
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", share*100), "0"), ".") + " %"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
