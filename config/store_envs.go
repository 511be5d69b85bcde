package config

import (
	"context"
	"encoding/json"
	"errors"
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
// protected, with the owner and expiry policy on — marked Untrusted, and are
// logged once, so reads keep working and no write bypasses approval.
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
	return EnvSettings{Name: name, Protected: true, RequireOwner: true, RequireExpires: true, CreatedAt: e.CreatedAt, Untrusted: true}, nil
}
