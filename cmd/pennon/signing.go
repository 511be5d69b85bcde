package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/internal/sign"
)

func init() {
	serverSubcommands["keygen"] = runKeygen
	serverSubcommands["rotate-signing-key"] = runRotateSigningKey
}

// Where the control plane keeps its signing keys by default.
func defaultKeyFile(data string) string { return filepath.Join(data, "keys", "signing.key") }
func nextKeyFile(keyFile string) string { return keyFile + ".next" }

// signing is the control plane's key material, loaded once at start.
type signing struct {
	key   *sign.Key
	trust *sign.Trust
	// foreign counts foreign messages the store finds (register it with
	// the control plane's Prometheus registry).
	foreign *prometheus.CounterVec
}

// onForeign is config.StoreOptions.OnForeign.
func (s *signing) onForeign(env, why string) { s.foreign.WithLabelValues(env, why).Inc() }

// loadSigning loads (or, in the data dir only, creates) the signing key and
// the trust set: the current public key plus retired ones, so changesets
// signed before a rotation still verify. Errors and logs name files and key
// IDs, never key material.
func loadSigning(o serverOptions, log *zap.Logger) (*signing, error) {
	var (
		key *sign.Key
		err error
	)
	if o.signingKeyFile != "" {
		// A mounted Secret: it must exist. Creating one here would give
		// every replica its own key.
		if key, err = sign.Load(o.signingKeyFile); err != nil {
			return nil, fmt.Errorf("signing-key-file: %w (create one with `pennon server keygen --out FILE`)", err)
		}
	} else {
		path := defaultKeyFile(o.data)
		var created bool
		if key, created, err = sign.LoadOrCreate(path); err != nil {
			return nil, fmt.Errorf("signing key in the data dir: %w", err)
		}
		if created {
			log.Info("signing key created (every changeset, snapshot and heartbeat is signed with it; keep it secret, back it up with the data dir)",
				zap.String("file", path), zap.String("keyId", key.ID()))
		}
	}
	retiredFile := o.trustedKeysFile
	if retiredFile == "" {
		// retired.pub next to the key: <data>/keys/, or the directory a
		// Secret holding signing.key and retired.pub is mounted at.
		keyFile := o.signingKeyFile
		if keyFile == "" {
			keyFile = defaultKeyFile(o.data)
		}
		retiredFile = filepath.Join(filepath.Dir(keyFile), "retired.pub")
	}
	retired, err := readPublicKeys(retiredFile, o.trustedKeysFile != "")
	if err != nil {
		return nil, err
	}
	trust := sign.NewTrust(append([]sign.PublicKey{key.Public()}, retired...)...)
	log.Info("signing key loaded", zap.String("keyId", key.ID()), zap.Int("trustedKeys", trust.Len()))
	return &signing{key: key, trust: trust,
		foreign: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_store_foreign_total",
			Help: "Foreign messages (unsigned, badly signed, misplaced or deleted changesets; bad snapshots) found and skipped in the store, by env and reason."},
			[]string{"env", "why"})}, nil
}

// adoptUnsigned runs Store.AdoptUnsigned on every environment and logs what
// it did; environments with nothing to adopt are skipped.
func adoptUnsigned(ctx context.Context, store *config.Store, log *zap.Logger) error {
	envs, err := store.Envs(ctx)
	if err != nil {
		return fmt.Errorf("adopt-unsigned: %w", err)
	}
	for _, e := range envs {
		cs, err := store.AdoptUnsigned(ctx, e.Name, "pennon server --adopt-unsigned")
		switch {
		case errors.Is(err, config.ErrNothingToAdopt):
			log.Info("adopt-unsigned: nothing to adopt", zap.String("env", e.Name), zap.Error(err))
		case err != nil:
			return fmt.Errorf("adopt-unsigned: %w", err)
		default:
			log.Info("adopt-unsigned: environment adopted", zap.String("env", e.Name), zap.Uint64("version", cs.Version))
		}
	}
	return nil
}

// readPublicKeys reads one `ed25519:<base64>` per line (blank lines and
// lines starting with # are ignored). A missing file is an error only when
// required.
func readPublicKeys(path string, required bool) ([]sign.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && !required {
			return nil, nil
		}
		return nil, fmt.Errorf("trusted keys file: %w", err)
	}
	var out []sign.PublicKey
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := sign.ParsePublicKey(line)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, n, err)
		}
		out = append(out, k)
	}
	return out, nil
}

// runKeygen writes a new signing key to --out (never overwriting one) and
// prints its public half: how a key for a Kubernetes Secret is made.
func runKeygen(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("server keygen", "pennon server keygen --out signing.key",
		"Creates a control-plane signing key (ed25519) in --out, mode 0600, and prints its public\n"+
			"key (what sidecars pin with --trust-key). It never overwrites an existing file.", stderr)
	out := fs.String("out", "", "file to write the private key to")
	if err := parseSettings(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("--out is required: the file to write the new signing key to")
	}
	if _, err := os.Stat(*out); err == nil {
		return fmt.Errorf("--out %s already exists; refusing to overwrite a signing key", *out)
	}
	k, err := sign.Generate()
	if err != nil {
		return err
	}
	if err := sign.WriteFileAtomic(*out, k.Encode(), 0o600); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	fmt.Fprintf(stdout, "Signing key written to %s (secret, mode 0600)\nKey ID:     %s\nPublic key: %s\n", *out, k.ID(), k.Public())
	return nil
}

// runRotateSigningKey rotates the control plane's signing key in two steps,
// so that sidecars pinned with --trust-key learn the new key before anything
// is signed with it:
//
//	--prepare   creates <key>.next and prints its public key
//	(roll sidecars out with --trust-key OLD --trust-key NEW)
//	(stop the control plane)
//	(no flag)   <key>.next becomes the key; the old public key is appended
//	            to the retired keys file, so what it signed still verifies
//	(start the control plane)
func runRotateSigningKey(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("server rotate-signing-key", "pennon server rotate-signing-key --data DIR [--prepare]",
		"Rotates the control plane's signing key. Step 1 (--prepare, safe while running): creates the\n"+
			"next key and prints its public key; give it to pinned sidecars (--trust-key, keeping the old\n"+
			"one). Step 2 (control plane stopped): switches to the next key and appends the old public key\n"+
			"to the retired keys file. See docs/security.md, \"Signatures\".", stderr)
	data := fs.String("data", "./pennon-data", "the control plane's data directory")
	keyFile := fs.String("signing-key-file", "", "the signing key file (default <data>/keys/signing.key)")
	retired := fs.String("trusted-keys-file", "", "the retired keys file (default retired.pub next to the key)")
	prepare := fs.Bool("prepare", false, "step 1: create the next key and print its public key")
	if err := parseSettings(fs, args); err != nil {
		return err
	}
	if *keyFile == "" {
		*keyFile = defaultKeyFile(*data)
	}
	if *retired == "" {
		*retired = filepath.Join(filepath.Dir(*keyFile), "retired.pub")
	}
	cur, err := sign.Load(*keyFile)
	if err != nil {
		return fmt.Errorf("current key: %w", err)
	}
	next := nextKeyFile(*keyFile)
	if *prepare {
		nk, created, err := sign.LoadOrCreate(next)
		if err != nil {
			return fmt.Errorf("next key: %w", err)
		}
		verb := "Created"
		if !created {
			verb = "Already prepared"
		}
		fmt.Fprintf(stdout, "%s the next signing key in %s.\nCurrent key: %s %s\nNext key:    %s %s\n\n"+
			"Now give every sidecar pinned with --trust-key both keys:\n  --trust-key %s --trust-key %s\n"+
			"then stop the control plane and run this command again without --prepare.\n",
			verb, next, cur.ID(), cur.Public(), nk.ID(), nk.Public(), cur.Public(), nk.Public())
		return nil
	}
	nk, err := sign.Load(next)
	if err != nil {
		return fmt.Errorf("next key: %w (run with --prepare first)", err)
	}
	old, err := readPublicKeys(*retired, false)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if b, err := os.ReadFile(*retired); err == nil {
		buf.Write(b)
		if len(b) > 0 && b[len(b)-1] != '\n' {
			buf.WriteByte('\n')
		}
	}
	known := false
	for _, k := range old {
		known = known || k.ID == cur.ID()
	}
	if !known {
		fmt.Fprintf(&buf, "%s\n", cur.Public())
	}
	if err := sign.WriteFileAtomic(*retired, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("retired keys file: %w", err)
	}
	if err := sign.WriteFileAtomic(*keyFile, nk.Encode(), 0o600); err != nil {
		return fmt.Errorf("signing key: %w", err)
	}
	if err := os.Remove(next); err != nil {
		return fmt.Errorf("remove %s: %w", next, err)
	}
	fmt.Fprintf(stdout, "Signing key rotated: now %s (%s); %s is retired and still trusted for what it signed (%s).\nStart the control plane.\n",
		nk.ID(), nk.Public(), cur.ID(), *retired)
	return nil
}
