package config

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.uber.org/zap"
)

// ErrNothingToAdopt: the environment has no unsigned history to adopt
// (it is empty, or it has been written by a signing control plane).
var ErrNothingToAdopt = errors.New("nothing to adopt")

// AdoptUnsigned takes over an environment whose stream was written before
// changesets were signed: with signatures checked, every such message is
// foreign and the environment reads as empty. It rebuilds the head from the
// stream without checking signatures (structure only), and commits it as one
// signed changeset that puts every flag (with the flag-set metadata and
// $evaluators), so from then on the state is vouched for by a signature.
//
// It refuses an environment that already holds a validly signed changeset:
// after the first signed write, unsigned messages are forgeries, never
// history. Run it once, at the upgrade, when nobody but the old control
// plane could have written the stream (`pennon server --adopt-unsigned`).
func (s *Store) AdoptUnsigned(ctx context.Context, env, author string) (*Changeset, error) {
	if s.o.Signer == nil {
		return nil, errors.New("adopt: the store has no signing key (StoreOptions.Signer)")
	}
	c, err := s.Check(ctx, env)
	if err != nil {
		return nil, err
	}
	if c.Truncated {
		return nil, fmt.Errorf("adopt %s: more than %d foreign messages; check the stream with `pennon doctor` first", env, MaxCheckEntries)
	}
	unsigned := 0
	for _, f := range c.Foreign {
		if f.Reason == ForeignUnsigned {
			unsigned++
		}
	}
	if valid := c.Version - uint64(len(c.Foreign)) - c.Missing; valid > 0 {
		return nil, fmt.Errorf("adopt %s: it already holds %d signed changeset(s), so its unsigned messages are not history: %w", env, valid, ErrNothingToAdopt)
	}
	if unsigned == 0 {
		return nil, fmt.Errorf("adopt %s: no unsigned changesets: %w", env, ErrNothingToAdopt)
	}
	// A reader that checks structure only, as the old control plane did.
	legacyOpts := s.o
	legacyOpts.Signer, legacyOpts.Trust, legacyOpts.OnForeign = nil, nil, nil
	legacy := &Store{js: s.js, o: legacyOpts, log: s.log, envs: s.envs, snaps: s.snaps, heads: map[string]*State{},
		locks: map[string]*sync.Mutex{}, foreign: map[string]string{}, served: map[string]*servedSnapshot{}}
	old, err := legacy.Head(ctx, env)
	if err != nil {
		return nil, fmt.Errorf("adopt %s: replay without signatures: %w", env, err)
	}
	if old.Doc.Len() == 0 {
		return nil, fmt.Errorf("adopt %s: the unsigned history holds no flags: %w", env, ErrNothingToAdopt)
	}
	cs := LoadChangeset(env, old.Doc, author, fmt.Sprintf("adopt the unsigned history up to version %d (hash %s), written before changesets were signed", old.Version, old.Hash))
	done, err := s.Commit(ctx, cs)
	if err != nil {
		return nil, fmt.Errorf("adopt %s: %w", env, err)
	}
	if head, err := s.Head(ctx, env); err == nil {
		// Replace the unsigned KV snapshot, so readers start here.
		if err := s.writeSnapshot(ctx, head); err != nil {
			s.log.Warn("snapshot not written", zap.String("env", env), zap.Error(err))
		}
	}
	s.log.Warn("unsigned history adopted: its state is now signed", zap.String("env", env), zap.Uint64("upToVersion", old.Version),
		zap.String("hash", old.Hash), zap.Uint64("version", done.Version), zap.Int("flags", old.Doc.Len()))
	return done, nil
}
