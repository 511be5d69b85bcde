package control

import (
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// signingKey is one public key in GET /api/v1/signing-keys.
type signingKey struct {
	ID      string `json:"id"`
	Key     string `json:"key"` // ed25519:<base64>, what --trust-key takes
	Current bool   `json:"current,omitempty"`
}

// signingKeys lists the control plane's current signing key and every key
// it still trusts (retired keys verify what they signed before a rotation).
// Sidecars that are not pinned with --trust-key fetch this at bootstrap:
// trust on first use, so the transport (TLS) or a pin is the defence
// against a man in the middle. Public keys only; any valid token may read.
func (s *Server) signingKeys(w http.ResponseWriter, r *http.Request, _ principal) error {
	out := struct {
		Current string       `json:"current,omitempty"`
		Keys    []signingKey `json:"keys"`
	}{Keys: []signingKey{}}
	if s.o.Signer != nil {
		out.Current = s.o.Signer.ID()
		out.Keys = append(out.Keys, signingKey{ID: s.o.Signer.ID(), Key: s.o.Signer.Public().String(), Current: true})
	}
	if s.o.Trust != nil {
		keys := s.o.Trust.Keys()
		sort.Slice(keys, func(i, j int) bool { return keys[i].ID < keys[j].ID })
		for _, k := range keys {
			if k.ID != out.Current {
				out.Keys = append(out.Keys, signingKey{ID: k.ID, Key: k.String()})
			}
		}
	}
	return writeJSON(w, 200, out)
}

// snapshotETag is a flag set's identity, (version, hash): a sidecar at the
// same version with different content (a restore from backup, drift) does
// not match and gets the control plane's snapshot.
func snapshotETag(version uint64, hash string) string {
	return `"` + strconv.FormatUint(version, 10) + "-" + hash + `"`
}

// etagMatches implements If-None-Match: a list of entity tags or "*".
func etagMatches(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

// signedChangesets returns committed changesets after ?after=N (at most
// ?limit=M, default and maximum 1000) as a JSON array of
// config.SignedChangeset: the exact bytes stored in the stream and their
// signatures, so a sidecar catching up verifies each one as if it had
// arrived by push. The list stops before the first foreign or missing
// version; the sidecar takes a snapshot to get past it.
func (s *Server) signedChangesets(w http.ResponseWriter, r *http.Request, _ principal) error {
	q, err := queryUints(r, "after", "limit")
	if err != nil {
		return err
	}
	list, err := s.o.Store.SignedChangesets(r.Context(), r.PathValue("env"), q[0], int(q[1]))
	if err != nil {
		return err
	}
	return writeJSON(w, 200, list)
}

// checkEnv reads every message of the environment's stream and reports
// foreign and missing versions and the state of the stored snapshot (what
// `pennon doctor` shows).
func (s *Server) checkEnv(w http.ResponseWriter, r *http.Request, _ principal) error {
	c, err := s.o.Store.Check(r.Context(), r.PathValue("env"))
	if err != nil {
		return err
	}
	return writeJSON(w, 200, c)
}

// repairEnv erases foreign messages from the environment's stream and
// writes a signed snapshot at the head. Skipping is automatic; repair only
// removes the forged bytes from the log and the history. Audited.
func (s *Server) repairEnv(w http.ResponseWriter, r *http.Request, p principal) error {
	env := r.PathValue("env")
	if _, err := s.o.Store.Env(r.Context(), env); err != nil {
		return err
	}
	if !s.o.Store.Verifying() {
		return newErr(CodeNoSigningKey, "this control plane runs without a signing key, so it cannot tell foreign messages from its own; start it with a key (see docs/security.md)")
	}
	res, err := s.o.Store.Repair(r.Context(), env)
	if err != nil {
		return err
	}
	s.record(r.Context(), p, "env.repair", env, env, "repaired", map[string]any{"erased": res.Deleted, "snapshotVersion": res.SnapshotVersion})
	return writeJSON(w, 200, res)
}
