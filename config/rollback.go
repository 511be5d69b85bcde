package config

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Risk kinds a rollback plan can name.
const (
	RiskLosesPrerequisite = "dependent-loses-prerequisite"
	RiskDisabledReturns   = "disabled-flag-returns"
	RiskExpiredReturns    = "expired-flag-returns"
	RiskResurrected       = "deleted-flag-resurrected"
	RiskCrossesEmergency  = "crosses-emergency-change"
	RiskInvalid           = "rollback-would-be-rejected"
	RiskSetPartKept       = "set-part-kept"
)

// Risk is one named danger of a rollback.
type Risk struct {
	Kind    string `json:"kind"`
	Flag    string `json:"flag,omitempty"`
	Version uint64 `json:"version,omitempty"`
	Detail  string `json:"detail"`
}

// Affected is a flag a rollback touches indirectly, through prerequisites.
type Affected struct {
	Flag     string `json:"flag"`
	Relation string `json:"relation"` // "depends on the rolled-back flags" or "prerequisite of the rolled-back flags"
}

// RollbackPlan is a rollback's dry run: what would change and what could go
// wrong. Applying it commits Changes as one new changeset; history is never
// rewritten.
type RollbackPlan struct {
	Env      string     `json:"env"`
	Head     uint64     `json:"head"`
	To       uint64     `json:"to"`
	Flags    []string   `json:"flags"` // flags rolled back (all that differ when none were named)
	Changes  []Change   `json:"changes"`
	Diff     []FlagDiff `json:"diff"`
	Affected []Affected `json:"affected"`
	Systems  []string   `json:"systems"`
	Risks    []Risk     `json:"risks"`
	// TrafficShare is not computed: pennon records no evaluation contexts yet.
	TrafficShare *float64 `json:"trafficShare"`
	// Metadata and Evaluators, when set, are restored with the flags: a
	// rollback of every flag restores the flag-set metadata and $evaluators
	// of the target version; a rollback of named flags restores the
	// evaluators those flags reference at the target version.
	Metadata   map[string]any             `json:"metadata,omitempty"`
	Evaluators map[string]json.RawMessage `json:"evaluators,omitempty"`
}

// restoresSetParts fills the plan's metadata and $evaluators from target
// where they differ from head. An empty target value cannot be carried by
// a changeset and is left as it is (noted as a risk).
func (p *RollbackPlan) restoreSetParts(head, target *Document, all bool) {
	if !all {
		p.Evaluators, _ = PromotionEvaluators(target, head, p.Flags)
		return
	}
	if !bytes.Equal(metadataJSON(head.metadata), metadataJSON(target.metadata)) {
		if len(target.metadata) == 0 {
			p.Risks = append(p.Risks, Risk{Kind: RiskSetPartKept, Detail: "the flag-set metadata was empty at the target version and is kept as it is now"})
		} else {
			p.Metadata = target.metadata
		}
	}
	if !bytes.Equal(canonicalJSON(head.evaluators), canonicalJSON(target.evaluators)) && !(len(head.evaluators) == 0 && len(target.evaluators) == 0) {
		if len(target.evaluators) == 0 {
			p.Risks = append(p.Risks, Risk{Kind: RiskSetPartKept, Detail: "$evaluators was empty at the target version and is kept as it is now"})
		} else {
			p.Evaluators = target.evaluators
		}
	}
}

// PlanRollback computes the dry run of restoring flags (all flags when
// empty) to their state at version `to`.
func (s *Store) PlanRollback(ctx context.Context, env string, to uint64, flags []string) (*RollbackPlan, error) {
	head, err := s.Head(ctx, env)
	if err != nil {
		return nil, err
	}
	if to >= head.Version {
		return nil, &ValidationError{Problems: problems("toVersion", fmt.Sprintf("must be below the current version %d (got %d)", head.Version, to))}
	}
	target, err := s.StateAt(ctx, env, to)
	if err != nil {
		return nil, err
	}
	var only map[string]bool
	if len(flags) > 0 {
		only = map[string]bool{}
		var unknown []string
		for _, f := range flags {
			only[f] = true
			if head.Doc.Flag(f) == nil && target.Doc.Flag(f) == nil {
				unknown = append(unknown, f)
			}
		}
		if len(unknown) > 0 {
			return nil, &ValidationError{Problems: problems("flags", fmt.Sprintf("not in version %d or %d: %s", to, head.Version, strings.Join(unknown, ", ")))}
		}
	}
	plan := &RollbackPlan{Env: env, Head: head.Version, To: to, Diff: DiffDocuments(head.Doc, target.Doc, only),
		Changes: []Change{}, Affected: []Affected{}, Systems: []string{}, Risks: []Risk{}}
	for _, d := range plan.Diff {
		plan.Flags = append(plan.Flags, d.Flag)
		ch := Change{Flag: d.Flag, BaseVersion: head.FlagVersion(d.Flag)}
		if d.Change == "removed" {
			ch.Op = OpDelete
		} else {
			ch.Op, ch.Definition = OpPut, d.To
		}
		plan.Changes = append(plan.Changes, ch)
	}
	if plan.Flags == nil {
		plan.Flags = []string{}
	}
	// Flags reached through prerequisites, in both documents and both directions.
	rel := map[string]string{}
	for _, doc := range []*Document{head.Doc, target.Doc} {
		g := NewGraph(doc)
		for _, f := range g.Dependents(plan.Flags...) {
			rel[f] = "depends on the rolled-back flags"
		}
		for _, f := range g.Prerequisites(plan.Flags...) {
			if _, ok := rel[f]; !ok {
				rel[f] = "prerequisite of the rolled-back flags"
			}
		}
	}
	for _, f := range plan.Flags {
		delete(rel, f)
	}
	for f, r := range rel {
		plan.Affected = append(plan.Affected, Affected{Flag: f, Relation: r})
	}
	sort.Slice(plan.Affected, func(i, j int) bool { return plan.Affected[i].Flag < plan.Affected[j].Flag })
	systems := map[string]bool{}
	for _, f := range append(append([]string{}, plan.Flags...), keysOf(rel)...) {
		for _, doc := range []*Document{head.Doc, target.Doc} {
			if fd := doc.Flag(f); fd != nil {
				for _, sys := range fd.Systems {
					systems[sys] = true
				}
			}
		}
	}
	plan.Systems = keysOf(systems)
	plan.restoreSetParts(head.Doc, target.Doc, len(flags) == 0)
	if err := s.addRisks(ctx, plan, head, target); err != nil {
		return nil, err
	}
	return plan, nil
}

func keysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (s *Store) addRisks(ctx context.Context, plan *RollbackPlan, head, target *State) error {
	now := s.o.Now()
	rolled := map[string]bool{}
	for _, f := range plan.Flags {
		rolled[f] = true
	}
	// What the environment would look like.
	after, err := head.Doc.Apply(&Changeset{Changes: plan.Changes, Metadata: plan.Metadata, Evaluators: plan.Evaluators})
	var ve *ValidationError
	switch {
	case errors.As(err, &ve):
		for _, p := range ve.Problems {
			plan.Risks = append(plan.Risks, Risk{Kind: RiskInvalid, Detail: p.String()})
		}
		after = nil
	case err != nil:
		return err
	}
	for _, d := range plan.Diff {
		cur, old := head.Doc.Flag(d.Flag), target.Doc.Flag(d.Flag)
		if cur == nil && old != nil {
			plan.Risks = append(plan.Risks, Risk{Kind: RiskResurrected, Flag: d.Flag, Detail: fmt.Sprintf("%s was deleted after version %d and would come back", d.Flag, plan.To)})
		}
		if cur != nil && old != nil && !cur.Enabled() && old.Enabled() {
			v := lastStateChange(ctx, s, plan.Env, d.Flag, plan.To, plan.Head)
			plan.Risks = append(plan.Risks, Risk{Kind: RiskDisabledReturns, Flag: d.Flag, Version: v,
				Detail: fmt.Sprintf("%s was switched off on purpose (version %d) and would be enabled again", d.Flag, v)})
		}
		if old != nil {
			if exp, ok := old.ExpiresAt(); ok && exp.Before(now) {
				plan.Risks = append(plan.Risks, Risk{Kind: RiskExpiredReturns, Flag: d.Flag, Detail: fmt.Sprintf("%s expired on %s and would be served again", d.Flag, old.Expires)})
			}
		}
	}
	// Dependents whose prerequisites the rollback breaks.
	check := head.Doc
	if after != nil {
		check = after
	}
	for _, k := range check.FlagKeys() {
		for p, want := range check.Flag(k).Prerequisites {
			if !rolled[p] {
				continue
			}
			before := prereqStatus(head.Doc, p, want)
			now := prereqStatus(appliedOrTarget(after, target.Doc), p, want)
			if before == "" && now != "" {
				plan.Risks = append(plan.Risks, Risk{Kind: RiskLosesPrerequisite, Flag: k, Detail: fmt.Sprintf("%s requires %s = %q, but after the rollback %s", k, p, want, now)})
			}
		}
	}
	// Emergency changes between the target and the head.
	for v := plan.To + 1; v <= plan.Head; v++ {
		cs, err := s.Changeset(ctx, plan.Env, v)
		if err != nil {
			return err
		}
		if !cs.Emergency {
			continue
		}
		for _, ch := range cs.Changes {
			if rolled[ch.Flag] {
				plan.Risks = append(plan.Risks, Risk{Kind: RiskCrossesEmergency, Flag: ch.Flag, Version: v,
					Detail: fmt.Sprintf("undoes emergency change %d by %s (%s)", v, cs.Author, cs.Reason)})
			}
		}
	}
	sort.SliceStable(plan.Risks, func(i, j int) bool {
		if plan.Risks[i].Kind != plan.Risks[j].Kind {
			return plan.Risks[i].Kind < plan.Risks[j].Kind
		}
		return plan.Risks[i].Flag < plan.Risks[j].Flag
	})
	return nil
}

func appliedOrTarget(after, target *Document) *Document {
	if after != nil {
		return after
	}
	return target
}

// prereqStatus says why prerequisite p = want cannot be met in d, or "".
func prereqStatus(d *Document, p, want string) string {
	f := d.Flag(p)
	switch {
	case f == nil:
		return p + " would not exist"
	case !f.Enabled():
		return p + " would be disabled"
	}
	if _, ok := f.Variants[want]; !ok {
		return fmt.Sprintf("%s would have no variant %q", p, want)
	}
	if len(f.Targeting) == 0 && (f.DefaultVariant == nil || *f.DefaultVariant != want) {
		return fmt.Sprintf("%s would always serve another variant", p)
	}
	return ""
}

// lastStateChange finds the version in (from, to] that last changed flag's state.
func lastStateChange(ctx context.Context, s *Store, env, flag string, from, to uint64) uint64 {
	for v := to; v > from; v-- {
		cs, err := s.Changeset(ctx, env, v)
		if err == nil && touches(cs, flag) {
			return v
		}
	}
	return 0
}

// Rollback commits plan-equivalent changes as a new changeset. It re-plans
// against the current head, so a concurrent change shows up as a conflict.
func (s *Store) Rollback(ctx context.Context, env string, to uint64, flags []string, author, reason string, emergency bool) (*Changeset, error) {
	plan, err := s.PlanRollback(ctx, env, to, flags)
	if err != nil {
		return nil, err
	}
	if plan.Empty() {
		return nil, &ValidationError{Problems: problems("toVersion", fmt.Sprintf("nothing to roll back: the flags are the same at version %d and now", to))}
	}
	return s.Commit(ctx, plan.Changeset(author, reason, emergency))
}

// Empty reports whether the rollback would change nothing.
func (p *RollbackPlan) Empty() bool {
	return len(p.Changes) == 0 && p.Metadata == nil && p.Evaluators == nil
}

// Changeset is the plan as the changeset that applies it.
func (p *RollbackPlan) Changeset(author, reason string, emergency bool) *Changeset {
	return &Changeset{Env: p.Env, Author: author, Reason: reason, Emergency: emergency, RollbackTo: p.To,
		Changes: p.Changes, Metadata: p.Metadata, Evaluators: p.Evaluators}
}

// Promote copies flags (all when empty) from one environment's head to
// another as one changeset, subject to the target's validation.
func (s *Store) Promote(ctx context.Context, from, to string, flags []string, author, reason string, emergency bool) (*Changeset, error) {
	cs, err := s.Promotion(ctx, from, to, flags)
	if err != nil {
		return nil, err
	}
	cs.Author, cs.Reason, cs.Emergency = author, reason, emergency
	return s.Commit(ctx, cs)
}

// Promotion is the uncommitted changeset that promotes flags (all when
// empty) from the head of `from` to `to`: their definitions, based on
// `to`'s current flag versions, and the $evaluators they reference ($ref)
// where `to` lacks them or has another rule under the same name (which
// then changes for `to`'s other users of it too). Replaced names the
// evaluators so replaced.
func (s *Store) Promotion(ctx context.Context, from, to string, flags []string) (*Changeset, error) {
	changes, promotedFrom, err := s.PromotionChanges(ctx, from, to, flags)
	if err != nil {
		return nil, err
	}
	src, err := s.Head(ctx, from)
	if err != nil {
		return nil, err
	}
	dst, err := s.Head(ctx, to)
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(changes))
	for i, c := range changes {
		keys[i] = c.Flag
	}
	evs, _ := PromotionEvaluators(src.Doc, dst.Doc, keys)
	return &Changeset{Env: to, PromotedFrom: promotedFrom, Changes: changes, Evaluators: evs}, nil
}

// PromotionChanges computes the puts that copy flags (all when empty) from
// the head of `from` onto `to`, based on `to`'s current flag versions, and
// the "env@version" they come from. Callers that route the change through
// an approval use it without committing.
func (s *Store) PromotionChanges(ctx context.Context, from, to string, flags []string) ([]Change, string, error) {
	src, err := s.Head(ctx, from)
	if err != nil {
		return nil, "", fmt.Errorf("from %s: %w", from, err)
	}
	dst, err := s.Head(ctx, to)
	if err != nil {
		return nil, "", fmt.Errorf("to %s: %w", to, err)
	}
	if len(flags) == 0 {
		flags = src.Doc.FlagKeys()
	}
	changes := make([]Change, 0, len(flags))
	for _, f := range flags {
		def := src.Doc.FlagJSON(f)
		if def == nil {
			return nil, "", &ValidationError{Problems: problems("flags", fmt.Sprintf("%s does not exist in %s", f, from))}
		}
		changes = append(changes, Change{Flag: f, Op: OpPut, Definition: def, BaseVersion: dst.FlagVersion(f)})
	}
	return changes, fmt.Sprintf("%s@%d", from, src.Version), nil
}

// Text renders the dry run for people.
func (p *RollbackPlan) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Rollback of %s in %s from version %d to %d (dry run)\n\n", strings.Join(p.Flags, ", "), p.Env, p.Head, p.To)
	b.WriteString("Changes:\n")
	writeFlagDiffs(&b, p.Diff)
	if p.Metadata != nil {
		fmt.Fprintf(&b, "~ metadata restored: %s\n", canonicalJSON(p.Metadata))
	}
	for _, name := range keysOf(p.Evaluators) {
		fmt.Fprintf(&b, "~ $evaluators.%s restored: %s\n", name, p.Evaluators[name])
	}
	b.WriteString("\nAffected through prerequisites:\n")
	if len(p.Affected) == 0 {
		b.WriteString("  none\n")
	}
	for _, a := range p.Affected {
		fmt.Fprintf(&b, "  %s (%s)\n", a.Flag, a.Relation)
	}
	fmt.Fprintf(&b, "\nSystems: %s\n\nRisks:\n", strings.Join(p.Systems, ", "))
	if len(p.Risks) == 0 {
		b.WriteString("  none found\n")
	}
	for _, r := range p.Risks {
		fmt.Fprintf(&b, "  [%s] %s\n", r.Kind, r.Detail)
	}
	b.WriteString("\nShare of traffic whose answer changes: not computed (no recorded contexts)\n")
	return b.String()
}
