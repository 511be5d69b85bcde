package config

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Reads at fleet scale. Thousands of sidecars poll the snapshot endpoint and
// operators page through history; neither may cost a round trip per
// version. So:
//   - Head costs one JetStream round trip (stream info) once the
//     environment and its stream handle are known (both cached: environments
//     are never deleted, a stream handle is just a name);
//   - a range of versions is read through one ordered consumer (a few round
//     trips for the whole page) instead of one GetMsg per version;
//   - verified changesets are immutable, so a bounded cache keeps the most
//     recently read ones and a history page read twice costs nothing.

// rangeBatchThreshold: ranges shorter than this are read with GetMsg (a
// consumer costs a create and a delete).
const rangeBatchThreshold = 8

// changesetCacheSize bounds the verified-changeset cache (entries, all
// environments).
const changesetCacheSize = 4096

// readCache holds what the read path may reuse.
type readCache struct {
	mu      sync.Mutex
	envs    map[string]EnvSettings
	streams map[string]jetstream.Stream
	cs      map[string]*Changeset // "env\x00version" → verified (or foreign-marked) changeset
	order   []string              // insertion order, for eviction
	headAt  map[string]time.Time  // when Head last confirmed env's head against the stream
}

func (c *readCache) init() {
	if c.envs == nil {
		c.envs, c.streams, c.cs = map[string]EnvSettings{}, map[string]jetstream.Stream{}, map[string]*Changeset{}
		c.headAt = map[string]time.Time{}
	}
}

func csKey(env string, v uint64) string { return fmt.Sprintf("%s\x00%d", env, v) }

func (c *readCache) getCS(env string, v uint64) *Changeset {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init()
	return c.cs[csKey(env, v)]
}

func (c *readCache) putCS(cs *Changeset) {
	if cs.Foreign == ForeignMissing {
		return // may be "past the end" today and real tomorrow
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init()
	k := csKey(cs.Env, cs.Version)
	if _, ok := c.cs[k]; ok {
		return
	}
	if len(c.order) >= changesetCacheSize {
		delete(c.cs, c.order[0])
		c.order = c.order[1:]
	}
	c.cs[k] = cs
	c.order = append(c.order, k)
}

// knownEnv returns the settings of an environment this store has read
// before, without a round trip.
func (s *Store) knownEnv(ctx context.Context, env string) (EnvSettings, error) {
	s.reads.mu.Lock()
	s.reads.init()
	e, ok := s.reads.envs[env]
	s.reads.mu.Unlock()
	if ok {
		return e, nil
	}
	e, err := s.Env(ctx, env)
	if err != nil {
		return e, err
	}
	s.reads.mu.Lock()
	s.reads.envs[env] = e
	s.reads.mu.Unlock()
	return e, nil
}

// stream returns env's stream handle, looked up once.
func (s *Store) stream(ctx context.Context, env string) (jetstream.Stream, error) {
	s.reads.mu.Lock()
	s.reads.init()
	st, ok := s.reads.streams[env]
	s.reads.mu.Unlock()
	if ok {
		return st, nil
	}
	st, err := s.js.Stream(ctx, StreamName(env))
	if err != nil {
		return nil, err
	}
	s.reads.mu.Lock()
	s.reads.streams[env] = st
	s.reads.mu.Unlock()
	return st, nil
}

// readRange returns the changesets from..to (inclusive, from ≥ 1), verified
// like readChangeset: foreign or missing versions come back marked.
func (s *Store) readRange(ctx context.Context, stream jetstream.Stream, env string, from, to uint64) ([]*Changeset, error) {
	if from > to {
		return nil, nil
	}
	out := make([]*Changeset, 0, to-from+1)
	// Serve the cached prefix; read the rest.
	for from <= to {
		cs := s.reads.getCS(env, from)
		if cs == nil {
			break
		}
		out = append(out, cs)
		from++
	}
	if from > to {
		return out, nil
	}
	if to-from+1 < rangeBatchThreshold {
		for v := from; v <= to; v++ {
			cs, err := s.cachedChangeset(ctx, stream, env, v)
			if err != nil {
				return nil, err
			}
			out = append(out, cs)
		}
		return out, nil
	}
	got, err := s.consumeRange(ctx, stream, env, from, to)
	if err != nil {
		return nil, err
	}
	return append(out, got...), nil
}

// cachedChangeset is readChangeset through the cache.
func (s *Store) cachedChangeset(ctx context.Context, stream jetstream.Stream, env string, v uint64) (*Changeset, error) {
	if cs := s.reads.getCS(env, v); cs != nil {
		return cs, nil
	}
	cs, _, err := s.readChangeset(ctx, stream, env, v)
	if err != nil {
		return nil, err
	}
	s.reads.putCS(cs)
	return cs, nil
}

// consumeRange reads from..to with one ordered consumer. Sequences the
// consumer skips (deleted messages) are missing versions.
func (s *Store) consumeRange(ctx context.Context, stream jetstream.Stream, env string, from, to uint64) ([]*Changeset, error) {
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from, InactiveThreshold: 30 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("env %s: read versions %d-%d: %w", env, from, to, err)
	}
	defer func() {
		// Ordered consumers are ephemeral; delete it now rather than
		// leaving it to the inactivity threshold.
		_ = stream.DeleteConsumer(context.Background(), cons.CachedInfo().Name)
	}()
	out := make([]*Changeset, 0, to-from+1)
	next := from
	for next <= to {
		batch, err := cons.Fetch(int(min(to-next+1, 256)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, fmt.Errorf("env %s: read versions %d-%d: %w", env, next, to, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			seq := md.Sequence.Stream
			if seq > to {
				break
			}
			for ; next < seq; next++ { // deleted in between
				s.noteForeign(env, next, ForeignMissing, nil)
				out = append(out, foreignChangeset(env, next, ForeignMissing))
			}
			cs, why, detail := s.checkChangeset(env, seq, m.Data(), m.Headers().Get(SignatureHeader))
			if why != "" {
				s.noteForeign(env, seq, why, detail)
				cs = foreignChangeset(env, seq, why)
			}
			s.reads.putCS(cs)
			out = append(out, cs)
			next = seq + 1
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("env %s: read versions %d-%d: %w", env, next, to, err)
		}
		if n == 0 {
			break // nothing more in the stream
		}
	}
	for ; next <= to; next++ { // past the last message: missing
		out = append(out, foreignChangeset(env, next, ForeignMissing))
	}
	return out, nil
}

// forget drops a cached changeset (its message is being deleted).
func (c *readCache) forget(env string, v uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init()
	delete(c.cs, csKey(env, v))
}

// noteHead records that env's head was just confirmed against the stream.
func (c *readCache) noteHead(env string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init()
	c.headAt[env] = time.Now()
}

// RecentHead returns env's head as last confirmed against the stream, if
// that was within the last `within`; nil otherwise. Heartbeats use it to
// keep going through a short JetStream leader election (no commit can land
// meanwhile, so the head is still the truth); nothing that decides what
// to commit may use it.
func (s *Store) RecentHead(env string, within time.Duration) *State {
	s.reads.mu.Lock()
	at := s.reads.headAt[env]
	s.reads.mu.Unlock()
	if at.IsZero() || time.Since(at) > within {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.heads[env]
}
