package config

import (
	"context"
	"errors"
	"sort"

	"github.com/nats-io/nats.go/jetstream"
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
