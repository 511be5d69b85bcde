// Package sign is how pennon's control plane vouches for what it writes and
// how everyone else checks it: ed25519 keys, signatures bound to a purpose
// (a changeset signature can never pass as a snapshot or audit signature),
// and a trust set of public keys that survives key rotation.
//
// Why signatures on top of NATS authorization: authorization decides who may
// publish, signatures decide what a sidecar will serve. A leaked NATS
// credential, a misconfigured external cluster or a restored backup can put
// bytes into a stream; none of them can produce a valid signature without
// the control plane's private key, which never leaves its data dir (or the
// Kubernetes Secret it is mounted from).
//
// The package does no I/O beyond reading and writing key files, and no
// logging.
package sign

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Purposes a signature is bound to. The purpose is part of what is signed.
const (
	PurposeChangeset = "changeset"
	PurposeSnapshot  = "snapshot"
	PurposeAudit     = "audit"
	PurposeHeartbeat = "heartbeat"
	PurposeToken     = "token"
	PurposeEnv       = "env"
)

// Errors Verify returns; callers count and report them by kind.
var (
	ErrUnsigned     = errors.New("not signed")
	ErrUnknownKey   = errors.New("signed by a key that is not trusted")
	ErrBadSignature = errors.New("signature does not match")
	ErrMalformed    = errors.New("malformed signature")
)

const (
	privatePrefix = "pennon-ed25519-private:"
	publicPrefix  = "ed25519:"
)

// Key is a signing key (private). It is safe for concurrent use.
type Key struct {
	priv ed25519.PrivateKey
	pub  PublicKey
}

// PublicKey is a verification key and its ID (the first 16 hex digits of
// the SHA-256 of the key), which signatures name so a verifier holding
// several keys (during a rotation) picks the right one.
type PublicKey struct {
	ID  string
	Key ed25519.PublicKey
}

// String is the textual form `ed25519:<base64 key>`, what --trust-key and
// the signing-keys endpoint use.
func (p PublicKey) String() string { return publicPrefix + base64.StdEncoding.EncodeToString(p.Key) }

// ParsePublicKey parses `ed25519:<base64>` (the prefix is optional).
func ParsePublicKey(s string) (PublicKey, error) {
	s = strings.TrimSpace(s)
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, publicPrefix))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return PublicKey{}, fmt.Errorf("public key %q: want %s followed by %d base64-encoded bytes", abbreviate(s), publicPrefix, ed25519.PublicKeySize)
	}
	return newPublicKey(ed25519.PublicKey(b)), nil
}

func newPublicKey(k ed25519.PublicKey) PublicKey {
	sum := sha256.Sum256(k)
	return PublicKey{ID: hex.EncodeToString(sum[:8]), Key: k}
}

func abbreviate(s string) string {
	if len(s) > 24 {
		return s[:24] + "…"
	}
	return s
}

// Generate makes a new random key.
func Generate() (*Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	return fromPrivate(priv), nil
}

func fromPrivate(priv ed25519.PrivateKey) *Key {
	return &Key{priv: priv, pub: newPublicKey(priv.Public().(ed25519.PublicKey))}
}

// Public returns the key's public half.
func (k *Key) Public() PublicKey { return k.pub }

// ID is the public key's ID.
func (k *Key) ID() string { return k.pub.ID }

// Sign signs msg for purpose and returns the signature in its textual form
// `<key id>:<base64 signature>`.
func (k *Key) Sign(purpose string, msg []byte) string {
	sig := ed25519.Sign(k.priv, signedBytes(purpose, msg))
	return k.pub.ID + ":" + base64.StdEncoding.EncodeToString(sig)
}

// signedBytes binds msg to its purpose: "pennon/v1/<purpose>\x00<msg>".
func signedBytes(purpose string, msg []byte) []byte {
	b := make([]byte, 0, len(purpose)+11+len(msg))
	b = append(b, "pennon/v1/"...)
	b = append(b, purpose...)
	b = append(b, 0)
	return append(b, msg...)
}

// Encode is the key file's content. It is a secret.
func (k *Key) Encode() []byte {
	return []byte(privatePrefix + base64.StdEncoding.EncodeToString(k.priv.Seed()) + "\n")
}

// ParseKey parses a key file's content.
func ParseKey(data []byte) (*Key, error) {
	s := strings.TrimSpace(string(data))
	rest, ok := strings.CutPrefix(s, privatePrefix)
	if !ok {
		return nil, fmt.Errorf("signing key: want a line starting with %q (generate one with `pennon server keygen`)", privatePrefix)
	}
	seed, err := base64.StdEncoding.DecodeString(rest)
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("signing key: want %d base64-encoded bytes after %q", ed25519.SeedSize, privatePrefix)
	}
	return fromPrivate(ed25519.NewKeyFromSeed(seed)), nil
}

// Load reads a key file.
func Load(path string) (*Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	k, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// LoadOrCreate reads the key at path, or creates it (mode 0600, written
// atomically) when the file does not exist. created says which happened.
func LoadOrCreate(path string) (k *Key, created bool, err error) {
	k, err = Load(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	if k, err = Generate(); err != nil {
		return nil, false, err
	}
	if err := WriteFileAtomic(path, k.Encode(), 0o600); err != nil {
		return nil, false, fmt.Errorf("signing key: %w", err)
	}
	return k, true, nil
}

// WriteFileAtomic writes data to path through a temporary file in the same
// directory and a rename, so a crash leaves the old file or the new one.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Trust is a set of public keys signatures are checked against. The zero
// value trusts nothing. It is immutable after construction.
type Trust struct {
	keys map[string]PublicKey
}

// NewTrust trusts keys.
func NewTrust(keys ...PublicKey) *Trust {
	t := &Trust{keys: make(map[string]PublicKey, len(keys))}
	for _, k := range keys {
		t.keys[k.ID] = k
	}
	return t
}

// Keys lists the trusted keys.
func (t *Trust) Keys() []PublicKey {
	out := make([]PublicKey, 0, len(t.keys))
	for _, k := range t.keys {
		out = append(out, k)
	}
	return out
}

// Len is the number of trusted keys.
func (t *Trust) Len() int {
	if t == nil {
		return 0
	}
	return len(t.keys)
}

// Verify checks that sig (as Key.Sign returns it) signs msg for purpose
// with a trusted key. The error wraps one of ErrUnsigned, ErrMalformed,
// ErrUnknownKey or ErrBadSignature.
func (t *Trust) Verify(purpose string, msg []byte, sig string) error {
	if sig == "" {
		return ErrUnsigned
	}
	id, b64, ok := strings.Cut(sig, ":")
	if !ok {
		return ErrMalformed
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != ed25519.SignatureSize {
		return ErrMalformed
	}
	if t == nil {
		return fmt.Errorf("key %s: %w", id, ErrUnknownKey)
	}
	k, ok := t.keys[id]
	if !ok {
		return fmt.Errorf("key %s: %w", abbreviate(id), ErrUnknownKey)
	}
	if !ed25519.Verify(k.Key, signedBytes(purpose, msg), raw) {
		return fmt.Errorf("key %s: %w", id, ErrBadSignature)
	}
	return nil
}
