package sign

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSignVerify(t *testing.T) {
	k, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := Generate()
	msg := []byte(`{"env":"dev","version":3}`)
	sig := k.Sign(PurposeChangeset, msg)
	trust := NewTrust(k.Public())
	cases := []struct {
		name    string
		trust   *Trust
		purpose string
		msg     []byte
		sig     string
		want    error
	}{
		{"valid", trust, PurposeChangeset, msg, sig, nil},
		{"other purpose", trust, PurposeSnapshot, msg, sig, ErrBadSignature},
		{"edited message", trust, PurposeChangeset, []byte(`{"env":"dev","version":4}`), sig, ErrBadSignature},
		{"unsigned", trust, PurposeChangeset, msg, "", ErrUnsigned},
		{"garbage", trust, PurposeChangeset, msg, "nonsense", ErrMalformed},
		{"short sig", trust, PurposeChangeset, msg, k.ID() + ":AAAA", ErrMalformed},
		{"untrusted key", NewTrust(other.Public()), PurposeChangeset, msg, sig, ErrUnknownKey},
		{"nil trust", nil, PurposeChangeset, msg, sig, ErrUnknownKey},
		{"forged with other key under our id", trust, PurposeChangeset, msg, k.ID() + other.Sign(PurposeChangeset, msg)[len(other.ID()):], ErrBadSignature},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.trust.Verify(tc.purpose, tc.msg, tc.sig)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestKeyFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "signing.key")
	k, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("LoadOrCreate = %v, %v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", fi.Mode(), err)
	}
	k2, created, err := LoadOrCreate(path)
	if err != nil || created || k2.ID() != k.ID() {
		t.Fatalf("reload: created=%v err=%v id %s vs %s", created, err, k2.ID(), k.ID())
	}
	pub, err := ParsePublicKey(k.Public().String())
	if err != nil || pub.ID != k.ID() {
		t.Fatalf("ParsePublicKey(%s) = %v, %v", k.Public(), pub.ID, err)
	}
	if _, err := ParsePublicKey("ed25519:short"); err == nil {
		t.Fatal("want error for a short key")
	}
	if _, err := ParseKey([]byte("not a key")); err == nil {
		t.Fatal("want error for a bad key file")
	}
}

func FuzzVerify(f *testing.F) {
	k, _ := Generate()
	f.Add([]byte("m"), k.Sign(PurposeAudit, []byte("m")))
	f.Add([]byte(""), ":")
	trust := NewTrust(k.Public())
	f.Fuzz(func(t *testing.T, msg []byte, sig string) {
		_ = trust.Verify(PurposeAudit, msg, sig) // must not panic
		_, _ = ParsePublicKey(sig)
		_, _ = ParseKey([]byte(sig))
	})
}
