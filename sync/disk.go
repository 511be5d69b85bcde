package flagsync

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pennon-dev/pennon/config"
)

// lkgFile is the last-known-good copy on disk: the snapshot record plus a
// checksum of its bytes, so a torn or edited file is detected and ignored.
type lkgFile struct {
	Checksum string          `json:"checksum"` // sha256 hex of Record
	Record   json.RawMessage `json:"record"`
}

func lkgPath(dir, env string) string { return filepath.Join(dir, "pennon-lkg-"+env+".json") }

// writeLKG writes atomically: temp file, fsync, rename, fsync the directory.
func writeLKG(dir string, rec *config.SnapshotRecord) error {
	body, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(body)
	data, _ := json.Marshal(lkgFile{Checksum: hex.EncodeToString(sum[:]), Record: body})
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

// readLKG reads and verifies the last-known-good file.
func readLKG(dir, env string) (*config.SnapshotRecord, error) {
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
	return &rec, nil
}
