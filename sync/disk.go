package flagsync

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/internal/sign"
)

// lkgFile is the last-known-good copy on disk: the snapshot record plus a
// checksum of its bytes, so a torn or edited file is detected and ignored.
// The checksum only catches accidents; authenticity comes from signatures:
// the record carries the control plane's snapshot signature, or Proof is the
// signed changeset it was built from (same env, version, time and hash).
// Keys are the signing keys this sidecar trusted when it wrote the file,
// used at the next cold start only when no key is pinned (--trust-key): an
// unpinned sidecar therefore trusts its own state dir like it trusts the
// control plane on first use.
type lkgFile struct {
	Checksum string                  `json:"checksum"` // sha256 hex of Record
	Record   json.RawMessage         `json:"record"`
	Proof    *config.SignedChangeset `json:"proof,omitempty"`
	Keys     []string                `json:"keys,omitempty"`

	rec *config.SnapshotRecord
}

func (f *lkgFile) trustKeys() []sign.PublicKey {
	var out []sign.PublicKey
	for _, s := range f.Keys {
		if k, err := sign.ParsePublicKey(s); err == nil {
			out = append(out, k)
		}
	}
	return out
}

func lkgPath(dir, env string) string { return filepath.Join(dir, "pennon-lkg-"+env+".json") }

// writeLKGFile writes atomically: temp file, fsync, rename, fsync the directory.
func writeLKGFile(dir string, rec *config.SnapshotRecord, proof *config.SignedChangeset, trust *sign.Trust) error {
	body, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(body)
	f := lkgFile{Checksum: hex.EncodeToString(sum[:]), Record: body, Proof: proof}
	if trust != nil {
		for _, k := range trust.Keys() {
			f.Keys = append(f.Keys, k.String())
		}
		sort.Strings(f.Keys)
	}
	data, _ := json.Marshal(f)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	final := lkgPath(dir, rec.Env)
	tmp, err := os.CreateTemp(dir, ".lkg-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// readLKG reads the last-known-good record (checksum and env checked; the
// signature is checked by the caller).
func readLKG(dir, env string) (*config.SnapshotRecord, error) {
	f, err := readLKGFile(dir, env)
	if err != nil {
		return nil, err
	}
	return f.rec, nil
}

func readLKGFile(dir, env string) (*lkgFile, error) {
	data, err := os.ReadFile(lkgPath(dir, env))
	if err != nil {
		return nil, err
	}
	var f lkgFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("last-known-good file is corrupt: %w", err)
	}
	sum := sha256.Sum256(f.Record)
	if hex.EncodeToString(sum[:]) != f.Checksum {
		return nil, fmt.Errorf("last-known-good file checksum mismatch (torn or edited)")
	}
	var rec config.SnapshotRecord
	if err := json.Unmarshal(f.Record, &rec); err != nil {
		return nil, fmt.Errorf("last-known-good record is corrupt: %w", err)
	}
	if rec.Env != env {
		return nil, fmt.Errorf("last-known-good file is for env %q, not %q", rec.Env, env)
	}
	f.rec = &rec
	return &f, nil
}
