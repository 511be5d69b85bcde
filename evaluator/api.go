// Package evaluator holds pennon's flag model and evaluates flags.
//
// It compiles flagd-compatible targeting rules (JSON Logic plus flagd's
// fractional, sem_ver, starts_with and ends_with) once, at load, into closures,
// and evaluates them against a decoded context without allocating. It is pure:
// no I/O, no logging, no goroutines. Everything else in pennon depends on it;
// it depends on nothing of ours.
package evaluator

// CONTRACT (read by every package): the exported names in this file are the
// evaluator's public API. Other packages are written against them; change a
// signature only together with its callers.

import "time"

// Reason says why a Result has its value. The strings are OpenFeature's.
type Reason string

// Reasons, as OpenFeature and OFREP spell them.
const (
	ReasonStatic         Reason = "STATIC"
	ReasonTargetingMatch Reason = "TARGETING_MATCH"
	ReasonSplit          Reason = "SPLIT"
	ReasonDefault        Reason = "DEFAULT"
	ReasonDisabled       Reason = "DISABLED"
	ReasonError          Reason = "ERROR"
	// ReasonStale: the answer comes from state that could not be confirmed
	// fresh (a fail mode of an always-fresh flag), as OpenFeature's STALE.
	ReasonStale Reason = "STALE"
)

// ErrorCode classifies a failed evaluation. The strings are OpenFeature's.
type ErrorCode string

// Error codes, as OpenFeature and OFREP spell them. The empty code means success.
const (
	CodeNone                ErrorCode = ""
	CodeFlagNotFound        ErrorCode = "FLAG_NOT_FOUND"
	CodeParseError          ErrorCode = "PARSE_ERROR"
	CodeTypeMismatch        ErrorCode = "TYPE_MISMATCH"
	CodeTargetingKeyMissing ErrorCode = "TARGETING_KEY_MISSING"
	CodeInvalidContext      ErrorCode = "INVALID_CONTEXT"
	CodeGeneral             ErrorCode = "GENERAL"
)

// Propagation is how a sidecar keeps one flag fresh (pennon's `propagation` field).
type Propagation uint8

const (
	// CacheFirst always serves local state (the default).
	CacheFirst Propagation = iota
	// BackgroundRefresh serves local state and refreshes it in the background when old.
	BackgroundRefresh
	// AlwaysFresh serves local state only under a valid freshness lease.
	AlwaysFresh
)

// FailMode is what an always-fresh flag does when freshness cannot be established.
type FailMode uint8

const (
	// FailOpen serves the last known answer (the default).
	FailOpen FailMode = iota
	// FailClosed serves the flag's safeVariant with reason STALE (a value,
	// not an error: an error code would make providers use the code default).
	FailClosed
)

// VariantSpec is one named variant of a flag. Value is decoded JSON
// (encoding/json with UseNumber: bool, string, json.Number, map[string]any, []any).
type VariantSpec struct {
	Name  string
	Value any
}

// FlagSpec is one flag as config hands it to the evaluator: already parsed,
// with $ref references substituted. NewSnapshot checks it again and reports
// what it cannot compile.
type FlagSpec struct {
	Key      string
	Disabled bool          // state DISABLED
	Variants []VariantSpec // document order does not matter; names are unique
	// DefaultVariant is used when HasDefaultVariant; absent or null in the
	// document means "use the caller's code default" (Result.HasValue false).
	DefaultVariant    string
	HasDefaultVariant bool
	// Targeting is decoded JSON (UseNumber); nil or an empty object means none.
	// The compiled flag may keep parts of it (a rule without numbers is
	// not copied): do not modify it after compiling.
	Targeting any
	// FallbackTargeting is a cheaper rule a sidecar may serve instead of
	// Targeting when the flag's evaluation exceeds its budget or the
	// process is overloaded (EvaluateFallback). nil means the flag has no
	// fallback and is never degraded; an empty object means the fallback
	// answers the default variant.
	FallbackTargeting any
	// HasFallback reports whether FallbackTargeting was given (an empty
	// object is a fallback: "serve the default").
	HasFallback bool
	// TargetingBudget is the evaluation cost above which the fallback is
	// served; zero means the sidecar's default. Only meaningful with a
	// fallback.
	TargetingBudget time.Duration
	// Metadata is flag-set metadata merged with the flag's own (flag wins).
	Metadata map[string]any
	// Prerequisites maps another flag's key to the variant it must evaluate to.
	Prerequisites map[string]string
	Propagation   Propagation
	FailMode      FailMode
	SafeVariant   string // "" when unset
	// Experiment lists the tracking-event keys of the flag's experiment
	// (nil: not an experiment); sidecars record exposures of these flags.
	Experiment []string
	// Expires is when the flag should have been retired (zero: never). It
	// does not change answers; it lets the sidecar count expired flags
	// still being served.
	Expires time.Time
}

// FallbackReason says why EvaluateFallback was asked for; it is written
// into the answer's metadata (pennonFallbackReason).
type FallbackReason uint8

// Fallback reasons.
const (
	// FallbackCost: the flag's measured evaluation cost exceeds its budget.
	FallbackCost FallbackReason = iota
	// FallbackOverload: the process is overloaded.
	FallbackOverload
	numFallbackReasons
)

// String is the reason as written in metadata, metrics and logs.
func (r FallbackReason) String() string {
	if r == FallbackOverload {
		return "overload"
	}
	return "cost"
}

// Problem is one thing wrong with input, located by a JSON path such as
// `flags.checkout.targeting.if[0]`.
type Problem struct {
	Path   string
	Reason string
}

// SnapshotOptions tune NewSnapshot. The zero value is ready to use.
type SnapshotOptions struct {
	// Now is the clock for $flagd.timestamp; nil means time.Now.
	Now func() time.Time
	// Compiled, when not nil, holds specs[i] compiled by CompileFlag at
	// index i (same length as specs): NewSnapshot links them instead of
	// compiling again, and reads only Key and Prerequisites of the specs.
	// It lets a caller compile each flag as it reads it and drop the
	// decoded rule at once (config's Parse).
	Compiled []CompiledFlag
}

// Limits bound context decoding. Zero fields take the defaults in DefaultLimits.
type Limits struct {
	MaxBytes int // whole context JSON
	MaxDepth int // nesting of objects/arrays
	MaxKeys  int // total object members
}

// Result is one evaluation's answer. Slices and maps in it are shared with the
// snapshot and must be treated as read-only.
type Result struct {
	Key     string
	Variant string // "" when the answer is the caller's code default
	// HasValue is false when the caller must use its code default (no default
	// variant, or an error): OFREP then omits `value`.
	HasValue  bool
	Value     any
	ValueJSON []byte // JSON encoding of Value, precomputed
	Reason    Reason
	ErrorCode ErrorCode
	// ErrorDetails is a human-readable reason for ErrorCode.
	ErrorDetails string
	// Metadata is merged flag-set + flag metadata (plus prerequisite failure
	// details when one failed); MetadataJSON is its encoding, "{}" when empty.
	Metadata     map[string]any
	MetadataJSON []byte
}
