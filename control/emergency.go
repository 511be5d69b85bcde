package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pennon-dev/pennon/config"
)

// EmergenciesBucket indexes emergency changes, key "<env>.<version>", so
// listing them costs one read per emergency instead of a scan of every
// changeset (the scan stopped at 1,000 versions and missed later ones).
// The start-up pass (catchUp) fills in what the index lacks.
const EmergenciesBucket = "pennon-emergencies"

// emergencyRecord is one index entry. AuthorID is the token that applied
// it: reviews compare token IDs, never display names.
type emergencyRecord struct {
	Env      string    `json:"env"`
	Version  uint64    `json:"version"`
	Time     time.Time `json:"time"`
	Author   string    `json:"author"`
	AuthorID string    `json:"authorId,omitempty"`
	Reason   string    `json:"reason,omitempty"`
}

func emergencyKey(env string, v uint64) string { return env + "." + strconv.FormatUint(v, 10) }

func openEmergencies(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	return js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: EmergenciesBucket, Replicas: max(replicas, 1), History: 1, Storage: jetstream.FileStorage})
}

// indexEmergency records cs (an emergency changeset) in the index. A record
// written at commit (with the author's token ID) is never overwritten by
// the start-up scan.
func (s *Server) indexEmergency(ctx context.Context, cs *config.Changeset, authorID string) error {
	if authorID == "" {
		authorID = tokenIDOf(cs.Author)
	}
	rec := emergencyRecord{Env: cs.Env, Version: cs.Version, Time: cs.Time, Author: cs.Author, AuthorID: authorID, Reason: cs.Reason}
	b, _ := json.Marshal(rec)
	_, err := s.emerg.Create(ctx, emergencyKey(cs.Env, cs.Version), b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil
	}
	return err
}

// tokenIDOf extracts the token ID from an actor string "name (id)": the ID
// is always the last parenthesised part, whatever the name contains.
func tokenIDOf(actor string) string {
	if !strings.HasSuffix(actor, ")") {
		return ""
	}
	i := strings.LastIndex(actor, " (")
	if i < 0 {
		return ""
	}
	return actor[i+2 : len(actor)-1]
}

// emergencyList returns env's indexed emergencies, oldest first.
func (s *Server) emergencyList(ctx context.Context, env string) ([]emergencyRecord, error) {
	set, err := s.indexedEmergencies(ctx, env)
	if err != nil {
		return nil, err
	}
	versions := make([]uint64, 0, len(set))
	for v := range set {
		versions = append(versions, v)
	}
	sort.Slice(versions, func(i, j int) bool { return versions[i] < versions[j] })
	out := make([]emergencyRecord, 0, len(versions))
	for _, v := range versions {
		rec, err := s.emergencyRecord(ctx, env, v)
		if err != nil {
			return nil, err
		}
		if rec != nil {
			out = append(out, *rec)
		}
	}
	return out, nil
}

// emergencyRecord is the index entry for env@v (nil: not an indexed emergency).
func (s *Server) emergencyRecord(ctx context.Context, env string, v uint64) (*emergencyRecord, error) {
	ent, err := s.emerg.Get(ctx, emergencyKey(env, v))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rec emergencyRecord
	if err := json.Unmarshal(ent.Value(), &rec); err != nil {
		return nil, fmt.Errorf("emergency index %s@%d: %w", env, v, err)
	}
	return &rec, nil
}

// indexedEmergencies is the set of env's versions in the index.
func (s *Server) indexedEmergencies(ctx context.Context, env string) (map[uint64]bool, error) {
	kl, err := s.emerg.ListKeysFiltered(ctx, env+".*")
	if err != nil {
		return nil, err
	}
	out := map[uint64]bool{}
	for k := range kl.Keys() {
		if v, err := strconv.ParseUint(strings.TrimPrefix(k, env+"."), 10, 64); err == nil {
			out[v] = true
		}
	}
	return out, nil
}
