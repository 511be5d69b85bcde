package control

import (
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/pennon-dev/pennon/config"
)

// Checks the API makes itself, before handing a request to a part whose
// errors are plain strings, so that a refusal is a typed 422 naming the
// field rather than an error classified by its text.

var envNameRE = regexp.MustCompile(config.EnvNamePattern)

// checkEnvSettings refuses settings the store would refuse, as typed 422s
// naming the field, before anything is created (the store repeats the check
// for callers other than the API).
func checkEnvSettings(e config.EnvSettings) error {
	if !envNameRE.MatchString(e.Name) {
		return fieldErr(CodeValidation, "name", "name: %q is not a valid environment name (lowercase letters, digits and '-', 1-63 characters, starting with a letter or digit)", e.Name)
	}
	if e.MaxLifetime != "" {
		if d, err := time.ParseDuration(e.MaxLifetime); err != nil || d <= 0 {
			return fieldErr(CodeValidation, "maxLifetime", "maxLifetime: %q is not a positive duration (e.g. 2160h for 90 days)", e.MaxLifetime)
		}
	}
	if err := e.BusinessHours.Check(); err != nil {
		field, _, _ := strings.Cut(err.Error(), ":")
		return fieldErr(CodeValidation, field, "%v", err)
	}
	if err := e.Lifecycle.Check(); err != nil {
		field, _, _ := strings.Cut(err.Error(), ":")
		return fieldErr(CodeValidation, field, "%v", err)
	}
	return nil
}

// checkPublicKey refuses a sidecar's public key that NATS would not accept
// as a user key, before credentials are minted for it.
func checkPublicKey(pub string) error {
	if !nkeys.IsValidPublicUserKey(pub) {
		return fieldErr(CodeValidation, "publicKey", "publicKey: %q is not a NATS user public key (it starts with U; the sidecar generates it with nkeys)", truncate(pub, 16))
	}
	return nil
}
