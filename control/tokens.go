package control

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pennon-dev/pennon/internal/sign"
)

// TokensBucket holds token records (hashes only), key = token id.
const TokensBucket = "pennon-tokens"

// Role is what a token may do in an environment. Each role includes the
// ones below it.
type Role int

// Roles, weakest first.
const (
	RoleNone Role = iota
	RoleViewer
	RoleEditor
	RoleApprover
	RoleAdmin
)

var roleNames = map[string]Role{"viewer": RoleViewer, "editor": RoleEditor, "approver": RoleApprover, "admin": RoleAdmin}

func (r Role) String() string {
	for n, v := range roleNames {
		if v == r {
			return n
		}
	}
	return "none"
}

// ParseRole parses viewer, editor, approver or admin.
func ParseRole(s string) (Role, error) {
	if r, ok := roleNames[s]; ok {
		return r, nil
	}
	return RoleNone, fmt.Errorf("%q is not a role (allowed: viewer, editor, approver, admin)", s)
}

// TokenRecord is a stored token: never the secret, only its SHA-256.
type TokenRecord struct {
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	Hash      string            `json:"hash"`
	Roles     map[string]string `json:"roles"` // env or "*" → role name
	CreatedAt time.Time         `json:"createdAt"`
	CreatedBy string            `json:"createdBy,omitempty"`
	ExpiresAt *time.Time        `json:"expiresAt,omitempty"`
	Revoked   bool              `json:"revoked,omitempty"`
	// Signature is the control plane's (sign.PurposeToken) over the record
	// with Signature empty: whoever can write the tokens bucket directly
	// still cannot mint a token the API accepts.
	Signature string `json:"signature,omitempty"`
}

// TokenInfo is a token as the API shows it (no hash).
type TokenInfo struct {
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	Roles     map[string]string `json:"roles"`
	CreatedAt time.Time         `json:"createdAt"`
	CreatedBy string            `json:"createdBy,omitempty"`
	ExpiresAt *time.Time        `json:"expiresAt,omitempty"`
	Revoked   bool              `json:"revoked"`
}

func (t *TokenRecord) info() TokenInfo {
	return TokenInfo{ID: t.ID, Name: t.Name, Roles: t.Roles, CreatedAt: t.CreatedAt, CreatedBy: t.CreatedBy, ExpiresAt: t.ExpiresAt, Revoked: t.Revoked}
}

// RoleIn is the token's role in env (its "*" role counts everywhere).
func (t *TokenRecord) RoleIn(env string) Role {
	best := RoleNone
	for _, k := range []string{env, "*"} {
		if r, ok := roleNames[t.Roles[k]]; ok && r > best {
			best = r
		}
	}
	return best
}

// MaxRole is the token's strongest role anywhere.
func (t *TokenRecord) MaxRole() Role {
	best := RoleNone
	for _, n := range t.Roles {
		if r := roleNames[n]; r > best {
			best = r
		}
	}
	return best
}

// Tokens manages API tokens in a JetStream KV bucket.
type Tokens struct {
	kv  jetstream.KeyValue
	now func() time.Time

	signer *sign.Key   // signs records written (nil: unsigned, tests only)
	trust  *sign.Trust // verifies records read (nil: not checked)
}

// OpenTokens opens (or creates) the tokens bucket.
func OpenTokens(ctx context.Context, js jetstream.JetStream, replicas int, now func() time.Time) (*Tokens, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: TokensBucket, Replicas: max(replicas, 1), History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("tokens bucket: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	return &Tokens{kv: kv, now: now}, nil
}

// Token secrets look like pnn_<id>_<secret>: the id finds the record, the
// secret is checked against its hash in constant time.
const tokenPrefix = "pnn_"

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Create makes a token and returns its secret, shown once.
func (t *Tokens) Create(ctx context.Context, name string, roles map[string]string, ttl time.Duration, by string) (string, TokenInfo, error) {
	if strings.TrimSpace(name) == "" {
		return "", TokenInfo{}, fieldErr(CodeValidation, "name", "name: required (who or what uses the token)")
	}
	if len(roles) == 0 {
		return "", TokenInfo{}, fieldErr(CodeValidation, "roles", `roles: at least one {"<env or *>": "<role>"} is required`)
	}
	for env, r := range roles {
		if _, err := ParseRole(r); err != nil {
			return "", TokenInfo{}, fieldErr(CodeValidation, "roles."+env, "roles.%s: %v", env, err)
		}
	}
	idb := make([]byte, 8)
	sec := make([]byte, 32)
	if _, err := rand.Read(idb); err != nil {
		return "", TokenInfo{}, err
	}
	if _, err := rand.Read(sec); err != nil {
		return "", TokenInfo{}, err
	}
	id := hex.EncodeToString(idb)
	secret := base64.RawURLEncoding.EncodeToString(sec)
	rec := TokenRecord{ID: id, Name: name, Hash: hashSecret(secret), Roles: roles, CreatedAt: t.now().UTC(), CreatedBy: by}
	if ttl > 0 {
		exp := rec.CreatedAt.Add(ttl)
		rec.ExpiresAt = &exp
	}
	if err := t.put(ctx, &rec, true); err != nil {
		return "", TokenInfo{}, err
	}
	return tokenPrefix + id + "_" + secret, rec.info(), nil
}

// Import stores a token whose secret was supplied by the operator (e.g. a
// Kubernetes Secret), so restarts and replicas agree on the admin token.
func (t *Tokens) Import(ctx context.Context, token, name string, roles map[string]string) error {
	id, secret, ok := splitToken(token)
	if !ok {
		if len(token) < 32 {
			return errors.New("admin token too short: use at least 32 characters (e.g. openssl rand -hex 32), or let the server create one")
		}
		id, secret = opaqueID(token), token
	}
	rec := TokenRecord{ID: id, Name: name, Hash: hashSecret(secret), Roles: roles, CreatedAt: t.now().UTC()}
	return t.put(ctx, &rec, false)
}

func (t *Tokens) put(ctx context.Context, rec *TokenRecord, create bool) error {
	data, err := t.encode(rec)
	if err != nil {
		return err
	}
	if create {
		_, err = t.kv.Create(ctx, rec.ID, data)
	} else {
		_, err = t.kv.Put(ctx, rec.ID, data)
	}
	return err
}

// opaqueID names an operator-supplied token that is not in pennon's own
// format (e.g. `openssl rand -hex 32` from a Kubernetes Secret): its id is
// derived from a hash, so the record can be found without storing the token.
func opaqueID(token string) string {
	sum := sha256.Sum256([]byte("pennon-opaque-token:" + token))
	return hex.EncodeToString(sum[:8])
}

func splitToken(token string) (id, secret string, ok bool) {
	rest, found := strings.CutPrefix(token, tokenPrefix)
	if !found {
		return "", "", false
	}
	id, secret, ok = strings.Cut(rest, "_")
	if !ok || len(id) != 16 || secret == "" {
		return "", "", false
	}
	if _, err := hex.DecodeString(id); err != nil {
		return "", "", false
	}
	return id, secret, true
}

// Errors from Authenticate.
var (
	ErrBadToken     = errors.New("invalid token")
	ErrTokenExpired = errors.New("token expired")
	ErrTokenRevoked = errors.New("token revoked")
	// ErrTokenNotFound: no token has the ID (Revoke).
	ErrTokenNotFound = errors.New("not found")
	// ErrTokenStoreUnavailable means the token could not be checked at all
	// (NATS down, timeout): the caller answers 503 so clients retry instead
	// of concluding their token is bad.
	ErrTokenStoreUnavailable = errors.New("token store unreachable")
)

// Authenticate returns the record for a presented token.
func (t *Tokens) Authenticate(ctx context.Context, token string) (*TokenRecord, error) {
	id, secret, ok := splitToken(token)
	if !ok {
		if len(token) < 32 {
			return nil, ErrBadToken
		}
		id, secret = opaqueID(token), token
	}
	rec, err := t.get(ctx, id)
	if err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) || errors.Is(err, errTokenForged) || errors.As(err, &se) || errors.As(err, &te) {
			return nil, ErrBadToken // unknown (or an unreadable record): the token does not authenticate
		}
		return nil, fmt.Errorf("%w: %v", ErrTokenStoreUnavailable, err)
	}
	if subtle.ConstantTimeCompare([]byte(rec.Hash), []byte(hashSecret(secret))) != 1 {
		return nil, ErrBadToken
	}
	if rec.Revoked {
		return nil, ErrTokenRevoked
	}
	if rec.ExpiresAt != nil && t.now().After(*rec.ExpiresAt) {
		return nil, ErrTokenExpired
	}
	return rec, nil
}

func (t *Tokens) get(ctx context.Context, id string) (*TokenRecord, error) {
	ent, err := t.kv.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return t.decode(ent.Value())
}

// List returns every token (without hashes), oldest first.
func (t *Tokens) List(ctx context.Context) ([]TokenInfo, error) {
	keys, err := t.kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return []TokenInfo{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]TokenInfo, 0, len(keys))
	for _, k := range keys {
		rec, err := t.get(ctx, k)
		if err != nil {
			continue
		}
		out = append(out, rec.info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// Empty reports whether no token exists yet (first start).
func (t *Tokens) Empty(ctx context.Context) (bool, error) {
	keys, err := t.kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return true, nil
	}
	return len(keys) == 0, err
}

// Revoke marks a token revoked (kept for the audit trail).
func (t *Tokens) Revoke(ctx context.Context, id string) error {
	rec, err := t.get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) || errors.Is(err, jetstream.ErrInvalidKey) {
		return fmt.Errorf("token %s: %w", id, ErrTokenNotFound)
	}
	if err != nil {
		return fmt.Errorf("token %s: %w", id, err)
	}
	rec.Revoked = true
	return t.put(ctx, rec, false)
}
