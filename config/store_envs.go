package config

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pennon-dev/pennon/internal/sign"
)

// EnvNames lists environment names (one KV keys call: no settings read).
func (s *Store) EnvNames(ctx context.Context) ([]string, error) {
	keys, err := s.envs.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return []string{}, nil
	}
	if err != nil {
		return nil, err
	}
	sort.Strings(keys)
	return keys, nil
}

// encodeEnv marshals settings, signed when the store has a signer.
func (s *Store) encodeEnv(e EnvSettings) []byte {
	e.Signature, e.Untrusted = "", false
	data, _ := json.Marshal(e)
	if s.o.Signer == nil {
		return data
	}
	e.Signature = s.o.Signer.Sign(sign.PurposeEnv, data)
	data, _ = json.Marshal(e)
	return data
}

// decodeEnv parses stored settings. Settings that fail their signature
// check (written by someone with NATS access but not the signing key, e.g.
// to switch off `protected`) are not trusted: they come back fail-safe —
// protected, with the owner and expiry policy on and expired flags blocked —
// marked Untrusted, and are logged once, so reads keep working and no write bypasses approval.
func (s *Store) decodeEnv(name string, data []byte) (EnvSettings, error) {
	var e EnvSettings
	err := json.Unmarshal(data, &e)
	if err == nil && s.o.Trust == nil {
		return e, nil
	}
	if err == nil {
		sig := e.Signature
		e.Signature, e.Untrusted = "", false
		body, _ := json.Marshal(e)
		if err = s.o.Trust.Verify(sign.PurposeEnv, body, sig); err == nil {
			e.Signature = sig
			return e, nil
		}
	}
	s.noteForeign(name, 0, "env-settings", err)
	return EnvSettings{Name: name, Protected: true, RequireOwner: true, RequireExpires: true, CreatedAt: e.CreatedAt, Untrusted: true,
		Lifecycle: &LifecyclePolicy{ExpiredFlags: ExpiredBlock}}, nil
}

// Values of LifecyclePolicy.ExpiredFlags.
const (
	ExpiredWarn  = "warn"
	ExpiredBlock = "block"
)

// LifecyclePolicy is an environment's lifecycle thresholds and its rule for
// expired flags. It is part of EnvSettings, so the control plane's
// signature covers it (an empty policy is omitted, so settings signed
// before it existed still verify). Zero fields take the defaults below.
type LifecyclePolicy struct {
	// ExpiredFlags: "warn" (default) lets changes to an expired flag
	// through with a warning; "block" refuses them unless the change
	// extends expires past now (deleting the flag is always allowed).
	ExpiredFlags string `json:"expiredFlags,omitempty"`
	// Report thresholds, in days (0: the default).
	UnusedDays       int `json:"unusedDays,omitempty"`       // not evaluated for this long; default 30
	StaleDays        int `json:"staleDays,omitempty"`        // not changed for this long; default 90
	ExpiringSoonDays int `json:"expiringSoonDays,omitempty"` // expires within this; default 14
	SettledDays      int `json:"settledDays,omitempty"`      // one variant ≥ 99.9 % for this long; default 14
}

// Defaults of LifecyclePolicy's thresholds.
const (
	DefaultUnusedDays       = 30
	DefaultStaleDays        = 90
	DefaultExpiringSoonDays = 14
	DefaultSettledDays      = 14
)

// WithDefaults returns the policy with zero fields set to their defaults
// (a nil policy is all defaults).
func (p *LifecyclePolicy) WithDefaults() LifecyclePolicy {
	var out LifecyclePolicy
	if p != nil {
		out = *p
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if out.ExpiredFlags == "" {
		out.ExpiredFlags = ExpiredWarn
	}
	def(&out.UnusedDays, DefaultUnusedDays)
	def(&out.StaleDays, DefaultStaleDays)
	def(&out.ExpiringSoonDays, DefaultExpiringSoonDays)
	def(&out.SettledDays, DefaultSettledDays)
	return out
}

// Check refuses a policy the control plane could not apply, naming the
// field (under "lifecycle.") and the fix.
func (p *LifecyclePolicy) Check() error {
	if p == nil {
		return nil
	}
	switch p.ExpiredFlags {
	case "", ExpiredWarn, ExpiredBlock:
	default:
		return fmt.Errorf("lifecycle.expiredFlags: %q is not allowed (allowed: block, warn)", p.ExpiredFlags)
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"unusedDays", p.UnusedDays}, {"staleDays", p.StaleDays}, {"expiringSoonDays", p.ExpiringSoonDays}, {"settledDays", p.SettledDays}} {
		if f.v < 0 || f.v > 3650 {
			return fmt.Errorf("lifecycle.%s: must be a number of days from 1 to 3650 (0 or absent: the default), got %d", f.name, f.v)
		}
	}
	return nil
}
