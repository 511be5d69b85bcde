package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/pennon-dev/pennon/internal/natsauth"
)

// serverSubcommands are verbs under `pennon server` (e.g. `pennon server
// nats-config`); anything else is the server's own flags.
var serverSubcommands = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) error{
	"nats-config": runNATSConfig,
}

// runNATSConfig writes the NATS authorization an external cluster and its
// control plane need. With --keys pointing at an existing directory (for
// example the embedded server's <data>/nats) the same identities are kept,
// so a running fleet's credentials stay valid.
func runNATSConfig(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("server nats-config", "pennon server nats-config --out ./nats-auth [--keys ./nats-auth]",
		"Writes NATS operator-mode authorization for an external NATS cluster:\n"+
			"  auth.conf            include it from nats-server.conf on every NATS server (public)\n"+
			"  account.seed         secret: the account's signing key; the control plane mints sidecar credentials with it (--nats-account-seed-file)\n"+
			"  account-identity.seed  secret, keep offline: the account itself (its streams live under its public key)\n"+
			"  control-plane.creds  secret: the control plane's own NATS identity (--nats-creds)\n"+
			"  readonly.creds       secret: an operator identity that can watch, never publish\n"+
			"  operator.seed, system.seed  secrets: keep them offline; they re-sign the account JWTs\n"+
			"Existing seeds in --keys (default: --out) are reused; missing ones are created.", stderr)
	out := fs.String("out", "", "directory to write the files to (created 0700)")
	keysDir := fs.String("keys", "", "directory with existing seeds to reuse (default: --out)")
	rotate := fs.Bool("rotate-signing-key", false, "replace the account signing key (account.seed); the old one stays accepted until --retire-signing-keys")
	retire := fs.Bool("retire-signing-keys", false, "stop accepting previous signing keys and revoke the control-plane.creds found in --keys")
	if err := parseSettings(fs, args); err != nil {
		return err
	}
	if *rotate && *retire {
		return fmt.Errorf("--rotate-signing-key and --retire-signing-keys are two steps: run them separately, with the new files deployed in between (see docs/security.md)")
	}
	if *out == "" {
		return fmt.Errorf("--out is required: the directory to write auth.conf and the credentials to")
	}
	if *keysDir == "" {
		*keysDir = *out
	}
	keys, created, err := natsauth.LoadOrCreate(*keysDir)
	if err != nil {
		return err
	}
	switch {
	case *rotate:
		if keys, err = natsauth.RotateSigningKey(*keysDir); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "New account signing key; the previous one stays accepted. Deploy auth.conf (NATS reload), then account.seed and control-plane.creds (control plane), then run --retire-signing-keys.")
	case *retire:
		if keys, err = natsauth.RetireSigningKeys(*keysDir); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "Previous signing keys retired and the previous control-plane credential revoked. Deploy auth.conf (NATS reload).")
	}
	if err := keys.WriteConfig(*out); err != nil {
		return fmt.Errorf("nats-config: %w", err)
	}
	verb := "reused"
	if created {
		verb = "created"
	}
	fmt.Fprintf(stdout, "NATS authorization written to %s (keys %s from %s; account %s)\n", *out, verb, *keysDir, keys.AccountPublicKey())
	fmt.Fprintf(stdout, "  nats-server.conf:  include %s\n", filepath.Join(*out, natsauth.AuthConfFile))
	fmt.Fprintf(stdout, "  control plane:     --nats-creds %s --nats-account-seed-file %s\n",
		filepath.Join(*out, natsauth.ControlCredsFile), filepath.Join(*out, natsauth.AccountSeedFile))
	return nil
}
