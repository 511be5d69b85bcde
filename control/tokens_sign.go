package control

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/pennon-dev/pennon/internal/sign"
)

// errTokenForged marks a token record that the control plane did not sign:
// written into the bucket by someone with NATS access but not the signing
// key. It never authenticates.
var errTokenForged = errors.New("token record not signed by the control plane")

// SignWith makes the store sign every record it writes with key and accept
// only records signed by a key in trust. Without it (tests) records are
// neither signed nor checked.
func (t *Tokens) SignWith(key *sign.Key, trust *sign.Trust) {
	t.signer, t.trust = key, trust
}

// encode marshals rec, signed when a signer is set.
func (t *Tokens) encode(rec *TokenRecord) ([]byte, error) {
	rec.Signature = ""
	if t.signer == nil {
		return json.Marshal(rec)
	}
	body, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	rec.Signature = t.signer.Sign(sign.PurposeToken, body)
	return json.Marshal(rec)
}

// decode parses a stored record and, when a trust set is configured,
// verifies its signature over the record as it was signed.
func (t *Tokens) decode(data []byte) (*TokenRecord, error) {
	var rec TokenRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, err
	}
	if t.trust == nil {
		return &rec, nil
	}
	sig := rec.Signature
	rec.Signature = ""
	body, err := json.Marshal(&rec)
	if err != nil {
		return nil, err
	}
	if err := t.trust.Verify(sign.PurposeToken, body, sig); err != nil {
		return nil, fmt.Errorf("%w: %v", errTokenForged, err)
	}
	rec.Signature = sig
	return &rec, nil
}
