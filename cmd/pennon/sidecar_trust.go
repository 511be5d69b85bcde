package main

import (
	"errors"

	"github.com/pennon-dev/pennon/internal/sign"
)

// pinnedKeys is what --trust-key (repeatable, or comma-separated) and
// --trust-key-file (one ed25519:... per line, # comments) pin: the control
// plane's signing keys the sidecar accepts. Empty means trust on first use
// (fetched from the control plane, see docs/security.md).
func (o sidecarOptions) pinnedKeys() ([]sign.PublicKey, error) {
	var out []sign.PublicKey
	for _, s := range o.trustKeys {
		k, err := sign.ParsePublicKey(s)
		if err != nil {
			return nil, errors.New("--trust-key: " + err.Error() + " (copy it from `pennon server keygen` or GET /api/v1/signing-keys)")
		}
		out = append(out, k)
	}
	if o.trustKeyFile != "" {
		ks, err := readPublicKeys(o.trustKeyFile, true)
		if err != nil {
			return nil, errors.New("--trust-key-file: " + err.Error())
		}
		if len(ks) == 0 {
			return nil, errors.New("--trust-key-file " + o.trustKeyFile + ": no key in it (want one ed25519:... per line)")
		}
		out = append(out, ks...)
	}
	return out, nil
}
