package control

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pennon-dev/pennon/config"
)

// Buckets for change requests and emergency reviews.
const (
	ChangeRequestsBucket = "pennon-change-requests"
	ReviewsBucket        = "pennon-reviews"
)

// ChangeRequest is a write to a protected environment waiting for an
// approver other than its author.
type ChangeRequest struct {
	ID       string          `json:"id"`
	Env      string          `json:"env"`
	Author   string          `json:"author"`
	AuthorID string          `json:"authorId"`
	Reason   string          `json:"reason"`
	Changes  []config.Change `json:"changes"`
	// Metadata and Evaluators replace the flag-set metadata and $evaluators
	// when the request is applied (absent: unchanged).
	Metadata   map[string]any             `json:"metadata,omitempty"`
	Evaluators map[string]json.RawMessage `json:"evaluators,omitempty"`
	CreatedAt  time.Time                  `json:"createdAt"`
	State      string                     `json:"state"` // open, applied, rejected
	DecidedBy  string                     `json:"decidedBy,omitempty"`
	DecidedAt  *time.Time                 `json:"decidedAt,omitempty"`
	Version    uint64                     `json:"version,omitempty"` // the changeset it became
	Note       string                     `json:"note,omitempty"`    // rejection reason
}

// Review records that someone looked at an emergency change.
type Review struct {
	Env        string    `json:"env"`
	Version    uint64    `json:"version"`
	ReviewedBy string    `json:"reviewedBy"`
	ReviewedAt time.Time `json:"reviewedAt"`
	Note       string    `json:"note,omitempty"`
}

// workflow keeps change requests and reviews in JetStream KV.
type workflow struct {
	crs, reviews jetstream.KeyValue
}

func openWorkflow(ctx context.Context, js jetstream.JetStream, replicas int) (*workflow, error) {
	crs, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: ChangeRequestsBucket, Replicas: max(replicas, 1), Storage: jetstream.FileStorage})
	if err != nil {
		return nil, err
	}
	rv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: ReviewsBucket, Replicas: max(replicas, 1), Storage: jetstream.FileStorage})
	if err != nil {
		return nil, err
	}
	return &workflow{crs: crs, reviews: rv}, nil
}

func newID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (w *workflow) create(ctx context.Context, cr *ChangeRequest) error {
	b, _ := json.Marshal(cr)
	_, err := w.crs.Create(ctx, cr.ID, b)
	return err
}

// get returns a change request and its KV revision (for CAS updates).
func (w *workflow) get(ctx context.Context, env, id string) (*ChangeRequest, uint64, error) {
	ent, err := w.crs.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) || errors.Is(err, jetstream.ErrInvalidKey) {
		return nil, 0, fieldErr(CodeNotFound, "id", "change request %s: not found", id)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("change request %s: %w", id, err)
	}
	var cr ChangeRequest
	if err := json.Unmarshal(ent.Value(), &cr); err != nil {
		return nil, 0, fmt.Errorf("change request %s: unreadable record: %w", id, err)
	}
	if cr.Env != env {
		return nil, 0, fieldErr(CodeNotFound, "id", "change request %s: not found in %s", id, env)
	}
	return &cr, ent.Revision(), nil
}

// update writes cr only if nobody else decided it meanwhile.
func (w *workflow) update(ctx context.Context, cr *ChangeRequest, rev uint64) error {
	b, _ := json.Marshal(cr)
	_, err := w.crs.Update(ctx, cr.ID, b, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return newErr(CodeDecided, "change request %s was decided concurrently", cr.ID)
	}
	return err
}

func (w *workflow) list(ctx context.Context, env, state string) ([]*ChangeRequest, error) {
	keys, err := w.crs.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return []*ChangeRequest{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := []*ChangeRequest{}
	for _, k := range keys {
		cr, _, err := w.get(ctx, env, k)
		if storeUnavailable(err) {
			return nil, err // an outage is a 503, not a shorter list
		}
		if err != nil {
			continue // another environment's, deleted meanwhile, or unreadable
		}
		if state == "" || cr.State == state {
			out = append(out, cr)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

func reviewKey(env string, v uint64) string { return fmt.Sprintf("%s.%d", env, v) }

func (w *workflow) review(ctx context.Context, r Review) error {
	b, _ := json.Marshal(r)
	_, err := w.reviews.Create(ctx, reviewKey(r.Env, r.Version), b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return newErr(CodeReviewed, "emergency change %d was already reviewed", r.Version)
	}
	return err
}

func (w *workflow) reviewed(ctx context.Context, env string, v uint64) (*Review, bool) {
	ent, err := w.reviews.Get(ctx, reviewKey(env, v))
	if err != nil {
		return nil, false
	}
	var r Review
	if json.Unmarshal(ent.Value(), &r) != nil {
		return nil, false
	}
	return &r, true
}
