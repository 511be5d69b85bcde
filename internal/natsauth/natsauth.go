// Package natsauth holds pennon's NATS identities and what each may do.
//
// NATS is a trust boundary: whoever can publish on an environment's log
// subject can append to it, and whoever can use the JetStream API can purge
// every stream. So pennon runs NATS in operator mode (NATS's decentralized
// JWT/nkey authorization, not a scheme of our own) with least privilege per
// identity:
//
//   - the control plane: everything inside the PENNON account (streams, KV
//     buckets, the audit stream, heartbeats);
//   - a sidecar of environment E: subscribe to E's live and heartbeat
//     subjects, publish its own reports on one subject bound to its ID, and
//     nothing else: no JetStream API, no KV, no audit, no other environment;
//   - read-only operators: subscribe to live, heartbeat and report subjects.
//
// Nobody is anonymous. Sidecar credentials are short-lived user JWTs the
// control plane mints (signing with the account key) in exchange for an
// API token, for a public nkey the sidecar generated itself: the sidecar's
// private nkey never leaves its memory, and operators distribute one secret
// (the API token), not two.
//
// The package does no network I/O and no logging.
package natsauth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/pennon-dev/pennon/internal/sign"
)

// AccountName is the NATS account pennon's streams, buckets and subjects
// live in.
const AccountName = "PENNON"

// File names inside a keys directory (`<data>/nats` for the embedded
// server, the --out directory of `pennon server nats-config`).
const (
	OperatorSeedFile = "operator.seed"
	// IdentitySeedFile is the PENNON account's identity key. JetStream files
	// the account's streams under its public key, so it never changes; keep
	// it offline (it is only needed to re-issue the account JWT).
	IdentitySeedFile = "account-identity.seed"
	// AccountSeedFile is the account's current *signing* key: what the
	// control plane mints credentials with. It can be rotated without
	// touching the account's data.
	AccountSeedFile  = "account.seed"
	SystemSeedFile   = "system.seed"
	AuthConfFile     = "auth.conf"
	ControlCredsFile = "control-plane.creds"
	ReadonlyCreds    = "readonly.creds"
	// StateFile records retired signing keys still listed in the account
	// JWT and revoked user keys, so re-running nats-config keeps them.
	StateFile = "nats-auth-state.json"
)

// Keys are the operator, the PENNON account (identity and signing key) and
// the system account. The control plane needs only the signing key and the
// account's public key at run time; the operator and identity keys sign the
// account JWTs.
type Keys struct {
	Operator nkeys.KeyPair // nil when only the signing key was loaded
	Identity nkeys.KeyPair // nil when only the signing key was loaded
	Account  nkeys.KeyPair // the current signing key
	System   nkeys.KeyPair // nil when only the signing key was loaded

	accountPub string
	state      authState

	operatorJWT, accountJWT, systemJWT string
}

// authState is what survives between nats-config runs besides the seeds.
type authState struct {
	// Listed are retired signing keys' public keys the account JWT still
	// accepts (rotation in progress: credentials they signed stay valid).
	Listed []string `json:"listedSigningKeys,omitempty"`
	// Revoked user public keys, with the time before which their JWTs are
	// refused.
	Revoked map[string]int64 `json:"revokedUsers,omitempty"`
}

// Generate creates a fresh operator, account and system account.
func Generate() (*Keys, error) {
	op, err := nkeys.CreateOperator()
	if err != nil {
		return nil, err
	}
	id, err := nkeys.CreateAccount()
	if err != nil {
		return nil, err
	}
	acc, err := nkeys.CreateAccount()
	if err != nil {
		return nil, err
	}
	sys, err := nkeys.CreateAccount()
	if err != nil {
		return nil, err
	}
	k := &Keys{Operator: op, Identity: id, Account: acc, System: sys}
	k.accountPub, _ = id.PublicKey()
	return k, k.sign()
}

// sign issues the operator and account JWTs. They are deterministic in
// content (not in bytes: each carries its issue time and a random ID), and
// public: they name keys and limits, not secrets.
func (k *Keys) sign() error {
	opPub, _ := k.Operator.PublicKey()
	sysPub, _ := k.System.PublicKey()
	accPub := k.accountPub
	signPub, _ := k.Account.PublicKey()
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "pennon"
	oc.SystemAccount = sysPub
	var err error
	if k.operatorJWT, err = oc.Encode(k.Operator); err != nil {
		return fmt.Errorf("operator jwt: %w", err)
	}
	ac := jwt.NewAccountClaims(accPub)
	ac.Name = AccountName
	// JetStream is enabled per account in operator mode: unlimited within
	// the servers' own limits.
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1, MaxAckPending: -1}
	// Users are signed by a signing key, never by the identity key, so the
	// signing key can be rotated while the account (and its data) stays.
	ac.SigningKeys.Add(signPub)
	ac.SigningKeys.Add(k.state.Listed...)
	for pub, before := range k.state.Revoked {
		ac.RevokeAt(pub, time.Unix(before, 0))
	}
	if k.accountJWT, err = ac.Encode(k.Operator); err != nil {
		return fmt.Errorf("account jwt: %w", err)
	}
	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = "SYS"
	if k.systemJWT, err = sc.Encode(k.Operator); err != nil {
		return fmt.Errorf("system account jwt: %w", err)
	}
	return nil
}

// LoadOrCreate reads the keys in dir, creating any that do not exist
// (files 0600, the directory 0700). created says whether anything was made.
func LoadOrCreate(dir string) (k *Keys, created bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("nats keys: %w", err)
	}
	k = &Keys{}
	load := func(name string, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, error) {
		kp, err := readSeed(filepath.Join(dir, name))
		if err == nil || !errors.Is(err, os.ErrNotExist) {
			return kp, err
		}
		if kp, err = create(); err != nil {
			return nil, err
		}
		if err := writeSeed(filepath.Join(dir, name), kp); err != nil {
			return nil, err
		}
		created = true
		return kp, nil
	}
	if k.Operator, err = load(OperatorSeedFile, nkeys.CreateOperator); err != nil {
		return nil, false, err
	}
	if k.Identity, err = load(IdentitySeedFile, nkeys.CreateAccount); err != nil {
		return nil, false, err
	}
	if k.Account, err = load(AccountSeedFile, nkeys.CreateAccount); err != nil {
		return nil, false, err
	}
	if k.System, err = load(SystemSeedFile, nkeys.CreateAccount); err != nil {
		return nil, false, err
	}
	k.accountPub, _ = k.Identity.PublicKey()
	if data, err := os.ReadFile(filepath.Join(dir, StateFile)); err == nil {
		if err := json.Unmarshal(data, &k.state); err != nil {
			return nil, false, fmt.Errorf("nats keys: %s: %w", filepath.Join(dir, StateFile), err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("nats keys: %w", err)
	}
	return k, created, k.sign()
}

func readSeed(path string) (nkeys.KeyPair, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("nats keys: %w", err)
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(data))))
	if err != nil {
		return nil, fmt.Errorf("nats keys: %s: not an nkey seed", path)
	}
	return kp, nil
}

func writeSeed(path string, kp nkeys.KeyPair) error {
	seed, _ := kp.Seed()
	if err := sign.WriteFileAtomic(path, append(seed, '\n'), 0o600); err != nil {
		return fmt.Errorf("nats keys: %w", err)
	}
	return nil
}

// RotateSigningKey replaces the account's signing key in dir with a new
// one. The old key stays listed in the account JWT (credentials it signed
// keep working) until RetireSigningKeys; the old control-plane credential is
// revoked by then too. The account identity, and so its data, is unchanged.
func RotateSigningKey(dir string) (*Keys, error) {
	k, _, err := LoadOrCreate(dir)
	if err != nil {
		return nil, err
	}
	old, _ := k.Account.PublicKey()
	next, err := nkeys.CreateAccount()
	if err != nil {
		return nil, err
	}
	if err := writeSeed(filepath.Join(dir, AccountSeedFile), next); err != nil {
		return nil, err
	}
	k.Account = next
	k.state.Listed = appendUnique(k.state.Listed, old)
	return k, k.saveState(dir)
}

// RetireSigningKeys stops accepting every signing key but the current one
// and revokes the control-plane credential previously written to dir (if
// any), so a leaked copy of either stops working once NATS reloads
// auth.conf.
func RetireSigningKeys(dir string) (*Keys, error) {
	k, _, err := LoadOrCreate(dir)
	if err != nil {
		return nil, err
	}
	k.state.Listed = nil
	if data, err := os.ReadFile(filepath.Join(dir, ControlCredsFile)); err == nil {
		if tok, err := jwt.ParseDecoratedJWT(data); err == nil {
			if uc, err := jwt.DecodeUserClaims(tok); err == nil {
				if k.state.Revoked == nil {
					k.state.Revoked = map[string]int64{}
				}
				k.state.Revoked[uc.Subject] = time.Now().Unix() + 1
			}
		}
	}
	return k, k.saveState(dir)
}

func appendUnique(list []string, v string) []string {
	for _, x := range list {
		if x == v {
			return list
		}
	}
	return append(list, v)
}

func (k *Keys) saveState(dir string) error {
	b, _ := json.MarshalIndent(k.state, "", "  ")
	if err := sign.WriteFileAtomic(filepath.Join(dir, StateFile), b, 0o600); err != nil {
		return fmt.Errorf("nats keys: %w", err)
	}
	return k.sign()
}

// LoadSigning reads just the account signing key (what a control plane in
// front of an external NATS cluster needs to mint sidecar credentials);
// accountPub is the account it signs for (IssuerAccount of the control
// plane's own credential, see AccountOfCreds).
func LoadSigning(path, accountPub string) (*Keys, error) {
	kp, err := readSeed(path)
	if err != nil {
		return nil, fmt.Errorf("nats account signing key: %w", err)
	}
	if pub, _ := kp.PublicKey(); !nkeys.IsValidPublicAccountKey(pub) {
		return nil, fmt.Errorf("nats account signing key %s: not an account key (it should start with SA)", path)
	}
	if !nkeys.IsValidPublicAccountKey(accountPub) {
		return nil, fmt.Errorf("nats account signing key: %q is not an account public key", abbreviate(accountPub))
	}
	return &Keys{Account: kp, accountPub: accountPub}, nil
}

// AccountOfCreds is the account a .creds file's user belongs to.
func AccountOfCreds(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("nats creds: %w", err)
	}
	tok, err := jwt.ParseDecoratedJWT(data)
	if err != nil {
		return "", fmt.Errorf("nats creds %s: %w", path, err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		return "", fmt.Errorf("nats creds %s: %w", path, err)
	}
	if uc.IssuerAccount != "" {
		return uc.IssuerAccount, nil
	}
	return uc.Issuer, nil
}

// AccountPublicKey is the PENNON account's public key (its identity).
func (k *Keys) AccountPublicKey() string { return k.accountPub }

// ConfigureServer turns on operator-mode authorization in opts: the
// operator is trusted, both accounts are preloaded in a memory resolver,
// and there is no anonymous user.
func (k *Keys) ConfigureServer(opts *server.Options) error {
	if k.Operator == nil {
		return errors.New("nats keys: the operator key is needed to configure a server")
	}
	oc, err := jwt.DecodeOperatorClaims(k.operatorJWT)
	if err != nil {
		return err
	}
	res := &server.MemAccResolver{}
	sysPub, _ := k.System.PublicKey()
	if err := res.Store(sysPub, k.systemJWT); err != nil {
		return err
	}
	if err := res.Store(k.AccountPublicKey(), k.accountJWT); err != nil {
		return err
	}
	opts.TrustedOperators = []*jwt.OperatorClaims{oc}
	opts.AccountResolver = res
	opts.SystemAccount = sysPub
	opts.NoAuthUser = ""
	return nil
}

// AuthConf is a nats-server configuration fragment (for `include`) with the
// same authorization for an external server or cluster.
func (k *Keys) AuthConf() string {
	sysPub, _ := k.System.PublicKey()
	var b strings.Builder
	b.WriteString("# pennon NATS authorization (operator mode). Generated by `pennon server nats-config`.\n")
	b.WriteString("# Public: JWTs name keys and limits, not secrets. Include it from nats-server.conf.\n")
	fmt.Fprintf(&b, "operator: %s\n", k.operatorJWT)
	fmt.Fprintf(&b, "system_account: %s\n", sysPub)
	b.WriteString("resolver: MEMORY\n")
	b.WriteString("resolver_preload: {\n")
	fmt.Fprintf(&b, "  %s: %s\n", sysPub, k.systemJWT)
	fmt.Fprintf(&b, "  %s: %s\n", k.AccountPublicKey(), k.accountJWT)
	b.WriteString("}\n")
	return b.String()
}

// Credential is a user JWT with the nkey seed that proves it, in NATS's
// .creds file format when written out. The seed is secret.
type Credential struct {
	JWT     string
	Seed    []byte
	Expires time.Time // zero: does not expire
}

// Creds is the credential in NATS's .creds file format.
func (c Credential) Creds() ([]byte, error) { return jwt.FormatUserConfig(c.JWT, c.Seed) }

// newUser mints a user key pair and its JWT with perms.
func (k *Keys) newUser(name string, perms jwt.Permissions, ttl time.Duration) (Credential, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return Credential{}, err
	}
	pub, _ := kp.PublicKey()
	tok, exp, err := k.userJWT(pub, name, perms, ttl)
	if err != nil {
		return Credential{}, err
	}
	seed, _ := kp.Seed()
	return Credential{JWT: tok, Seed: seed, Expires: exp}, nil
}

func (k *Keys) userJWT(userPub, name string, perms jwt.Permissions, ttl time.Duration) (string, time.Time, error) {
	uc := jwt.NewUserClaims(userPub)
	uc.Name = name
	uc.Permissions = perms
	uc.IssuerAccount = k.accountPub
	var exp time.Time
	if ttl > 0 {
		exp = time.Now().Add(ttl).Truncate(time.Second)
		uc.Expires = exp.Unix()
	}
	tok, err := uc.Encode(k.Account)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("user jwt: %w", err)
	}
	return tok, exp, nil
}

// ControlPlane mints the control plane's own credential: every right in the
// PENNON account. ttl 0 means it does not expire (a file operators rotate by
// re-running nats-config); the embedded server mints a fresh one per start.
func (k *Keys) ControlPlane(ttl time.Duration) (Credential, error) {
	return k.newUser("pennon-control-plane", jwt.Permissions{}, ttl)
}

// Readonly mints an operator identity that can watch what sidecars see and
// report, and publish nothing.
func (k *Keys) Readonly(ttl time.Duration) (Credential, error) {
	p := jwt.Permissions{}
	p.Pub.Deny.Add(">")
	p.Sub.Allow.Add("pennon.*.live", "pennon.*.heartbeat", "pennon.*.sidecars.>", "_INBOX.>")
	return k.newUser("pennon-readonly", p, ttl)
}

// SidecarPermissions is everything a sidecar may do: subscribe to its
// environment's live and heartbeat subjects (and its own reply inbox), publish
// on its own report subject and the telemetry subjects under it
// (publish + ".<kind>"). (This package cannot import config — config's tests start NATS
// through natsrun, which uses this package — so callers pass the subjects.)
func SidecarPermissions(subscribe []string, publish string) jwt.Permissions {
	p := jwt.Permissions{}
	p.Sub.Allow.Add(subscribe...)
	p.Pub.Allow.Add(publish, publish+".>")
	return p
}

// Sidecar signs a user JWT named name for the public nkey userPub (generated
// by the sidecar) with SidecarPermissions, valid for ttl.
func (k *Keys) Sidecar(userPub, name string, subscribe []string, publish string, ttl time.Duration) (string, time.Time, error) {
	if !nkeys.IsValidPublicUserKey(userPub) {
		return "", time.Time{}, fmt.Errorf("publicKey: %q is not a NATS user public key (it should start with U)", abbreviate(userPub))
	}
	if ttl <= 0 {
		return "", time.Time{}, errors.New("sidecar credentials must expire")
	}
	return k.userJWT(userPub, name, SidecarPermissions(subscribe, publish), ttl)
}

func abbreviate(s string) string {
	if len(s) > 16 {
		return s[:16] + "…"
	}
	return s
}

// ReportToken is the subject token that binds a sidecar's reports to its
// ID, so the registry can check that a report came on the subject its
// sidecar's credentials allow. The secrecy that matters is NATS's: only the
// control plane mints permission to publish on a token's subject. The key
// derives from the account's public identity, so every control-plane replica
// computes the same token and signing-key rotations keep it.
func (k *Keys) ReportToken(env, sidecarID string) string {
	key := sha256.Sum256([]byte("pennon report subjects\x00" + k.accountPub))
	m := hmac.New(sha256.New, key[:])
	m.Write([]byte(env + "\x00" + sidecarID))
	return hex.EncodeToString(m.Sum(nil)[:12])
}

// WriteConfig writes what an external NATS cluster and its control plane
// need into dir: auth.conf (public), account.seed, control-plane.creds and
// readonly.creds (secrets, 0600), and the operator/system seeds so the set
// can be regenerated with the same identities.
func (k *Keys) WriteConfig(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	write := func(name string, data []byte, mode os.FileMode) error {
		return sign.WriteFileAtomic(filepath.Join(dir, name), data, mode)
	}
	if err := write(AuthConfFile, []byte(k.AuthConf()), 0o644); err != nil {
		return err
	}
	for name, kp := range map[string]nkeys.KeyPair{OperatorSeedFile: k.Operator, IdentitySeedFile: k.Identity, AccountSeedFile: k.Account, SystemSeedFile: k.System} {
		seed, _ := kp.Seed()
		if err := write(name, append(seed, '\n'), 0o600); err != nil {
			return err
		}
	}
	if len(k.state.Listed) > 0 || len(k.state.Revoked) > 0 {
		b, _ := json.MarshalIndent(k.state, "", "  ")
		if err := write(StateFile, b, 0o600); err != nil {
			return err
		}
	}
	for name, mint := range map[string]func(time.Duration) (Credential, error){ControlCredsFile: k.ControlPlane, ReadonlyCreds: k.Readonly} {
		c, err := mint(0)
		if err != nil {
			return err
		}
		b, err := c.Creds()
		if err != nil {
			return err
		}
		if err := write(name, b, 0o600); err != nil {
			return err
		}
	}
	return nil
}
