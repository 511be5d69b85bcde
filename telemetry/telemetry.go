// Package telemetry carries what sidecars tell the control plane besides
// their sync state: usage counts, incident records, experiment aggregates.
//
// Every kind travels the same way. A sidecar's producers (a Source per
// kind) are drained every interval into Batches numbered per (sidecar,
// boot, kind); the Shipper sends them over NATS as requests on the
// sidecar's own report subject (or over the API while push is down) and
// keeps each batch until the control plane acknowledged it. The control
// plane's Ingest stores accepted batches in one JetStream stream per kind,
// de-duplicated by batch ID, so a batch resent after a lost acknowledgement
// or received by two control-plane replicas is stored once. Aggregators
// (usage rollups, incident records, experiment statistics) follow those
// streams and rebuild their state from them after a restart.
package telemetry

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"time"
	"unicode"
)

// Kinds of telemetry. A kind names a JetStream stream and a subject token,
// so kinds are lower-case words.
const (
	KindUsage       = "usage"
	KindIncidents   = "incidents"
	KindExperiments = "experiments"
)

// Kinds lists every kind the control plane accepts.
var Kinds = []string{KindUsage, KindIncidents, KindExperiments}

// MaxBatchBytes bounds one encoded batch (NATS's default payload limit is
// 1 MiB; the rest is headroom). Producers keep their payloads well below.
const MaxBatchBytes = 512 << 10

// Batch is one interval's worth of one kind of telemetry from one sidecar.
// (Sidecar, Boot, Kind, Seq) identifies it: Seq starts at 1 for every boot
// of a sidecar process and grows by one per batch of that kind, so a
// receiver can tell a resend (same Seq) from new data.
type Batch struct {
	Kind    string `json:"kind"`
	Env     string `json:"env"`
	Sidecar string `json:"sidecar"`
	// Boot is random per sidecar process start: a restarted sidecar's
	// batches never collide with its previous life's.
	Boot string    `json:"boot"`
	Seq  uint64    `json:"seq"`
	From time.Time `json:"from"` // what the payload covers, by the sidecar's clock
	To   time.Time `json:"to"`
	// Data is the kind's payload (see the kind's package for its shape).
	Data json.RawMessage `json:"data"`
}

// ID is the batch's identity, used as JetStream's Nats-Msg-Id so resends
// are stored once.
func (b *Batch) ID() string {
	return b.Env + "/" + b.Sidecar + "/" + b.Boot + "/" + b.Kind + "/" + strconv.FormatUint(b.Seq, 10)
}

var (
	envPattern  = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`) // config.EnvNamePattern
	bootPattern = regexp.MustCompile(`^[0-9a-f]{8,64}$`)
)

// Validate checks the envelope (not the payload, which its kind's
// aggregator checks).
func (b *Batch) Validate() error {
	switch {
	case !knownKind(b.Kind):
		return fmt.Errorf("kind: %q is not one of %v", b.Kind, Kinds)
	case !envPattern.MatchString(b.Env):
		return fmt.Errorf("env: %q is not an environment name", b.Env)
	case !ValidSidecarID(b.Sidecar):
		return fmt.Errorf("sidecar: must be 1-%d printable characters without spaces, got %q", MaxSidecarID, b.Sidecar)
	case !bootPattern.MatchString(b.Boot):
		return fmt.Errorf("boot: must be 8-64 lower-case hex digits, got %q", b.Boot)
	case b.Seq == 0:
		return fmt.Errorf("seq: must be 1 or more")
	case b.From.IsZero() || b.To.IsZero() || b.To.Before(b.From):
		return fmt.Errorf("from/to: must be set, with to not before from")
	case len(b.Data) == 0 || !json.Valid(b.Data):
		return fmt.Errorf("data: must be a JSON value")
	}
	return nil
}

func knownKind(k string) bool {
	for _, x := range Kinds {
		if x == k {
			return true
		}
	}
	return false
}

// MaxSidecarID bounds a sidecar's ID (its pod name, up to a DNS name's
// length).
const MaxSidecarID = 253

// ValidSidecarID is the one rule for sidecar IDs, wherever one arrives
// (credential requests, reports, telemetry): 1-MaxSidecarID printable
// characters without spaces.
func ValidSidecarID(id string) bool {
	if id == "" || len(id) > MaxSidecarID {
		return false
	}
	for _, r := range id {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return false
		}
	}
	return true
}

// Ack is the control plane's answer to a batch sent over NATS. An empty
// Error means the batch is stored (or was already); a batch refused for
// its content (Error set, Retry false) is dropped by the sender, one
// refused for an outage (Retry true) is kept and sent again.
type Ack struct {
	Seq   uint64 `json:"seq"`
	Error string `json:"error,omitempty"`
	Retry bool   `json:"retry,omitempty"`
}

// SidecarSubject is where a sidecar sends batches of kind: under its own
// report subject (pennon.<env>.sidecars.<token>), which its NATS
// credentials allow it, and only it, to publish on.
func SidecarSubject(reportSubject, kind string) string { return reportSubject + "." + kind }

// StreamName is the JetStream stream holding kind's batches.
func StreamName(kind string) string {
	up := []byte(kind)
	for i, c := range up {
		if c >= 'a' && c <= 'z' {
			up[i] = c - 'a' + 'A'
		}
	}
	return "PENNON_TELEMETRY_" + string(up)
}

// StreamSubject is the subject kind's batches of env are stored under.
func StreamSubject(kind, env string) string { return "pennon.telemetry." + kind + "." + env }

// InboxPrefix is the reply-subject prefix of a sidecar whose NATS user key
// is userPub. The control plane lets each sidecar subscribe only to its
// own prefix, so replies to one sidecar cannot be read by another.
func InboxPrefix(userPub string) string { return "_INBOX." + userPub }
