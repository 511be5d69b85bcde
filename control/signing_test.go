package control

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/internal/sign"
)

func getWith(t *testing.T, url, token, inm string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if inm != "" {
		req.Header.Set("If-None-Match", inm)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestSigningKeysAndSignedSnapshot(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	cs, err := f.store.Commit(ctx, &config.Changeset{Env: "dev", Author: "t", Changes: []config.Change{{Flag: "a", Op: config.OpPut, Definition: []byte(flagDef)}}})
	if err != nil {
		t.Fatal(err)
	}

	// Any valid token reads the public keys; none is refused.
	code, body := f.do(t, f.tokens["viewer"], "GET", "/api/v1/signing-keys", "")
	var keys struct {
		Current string
		Keys    []struct {
			ID, Key string
			Current bool
		}
	}
	if code != 200 || json.Unmarshal([]byte(body), &keys) != nil || keys.Current != f.key.ID() || len(keys.Keys) != 1 ||
		keys.Keys[0].Key != f.key.Public().String() || !keys.Keys[0].Current {
		t.Fatalf("signing-keys = %d %s; want the current key %s", code, body, f.key.ID())
	}
	if strings.Contains(body, "private") {
		t.Fatalf("signing-keys leaks key material: %s", body)
	}
	if code, _ := f.do(t, "", "GET", "/api/v1/signing-keys", ""); code != 401 {
		t.Fatalf("signing-keys without a token = %d, want 401", code)
	}

	// The snapshot is signed; its ETag is the identity (version, hash).
	url := f.base + "/api/v1/envs/dev/snapshot"
	code, hdr, body := getWith(t, url, f.tokens["viewer"], "")
	var rec config.SnapshotRecord
	if code != 200 || json.Unmarshal([]byte(body), &rec) != nil {
		t.Fatalf("snapshot = %d %s", code, body)
	}
	if err := sign.NewTrust(f.key.Public()).Verify(sign.PurposeSnapshot, rec.SigningBytes(), rec.Signature); err != nil || rec.Version != cs.Version || rec.Hash != cs.Hash {
		t.Fatalf("snapshot v%d %s signature %v; want v%d %s signed", rec.Version, rec.Hash, err, cs.Version, cs.Hash)
	}
	etag := `"1-` + cs.Hash + `"`
	if hdr.Get("ETag") != etag {
		t.Fatalf("ETag %q, want %q", hdr.Get("ETag"), etag)
	}
	cases := []struct {
		name, inm string
		want      int
	}{
		{"same identity", etag, 304},
		{"in a list", `"0-x", ` + etag, 304},
		{"same version, another hash (drift or restore)", `"1-sha256:0000"`, 200},
		{"version only (old sidecars)", `"1"`, 200},
		{"other version", `"2-` + cs.Hash + `"`, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := getWith(t, url, f.tokens["viewer"], tc.inm)
			if code != tc.want {
				t.Fatalf("If-None-Match %s = %d, want %d", tc.inm, code, tc.want)
			}
			if code == 304 && body != "" {
				t.Fatalf("304 with a body: %q", body)
			}
			if code == 200 && !strings.Contains(body, `"signature"`) {
				t.Fatalf("200 without a signature: %s", body)
			}
		})
	}
}

func TestSignedChangesetsCheckAndRepair(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	if _, err := f.store.Commit(ctx, &config.Changeset{Env: "dev", Author: "t", Changes: []config.Change{{Flag: "a", Op: config.OpPut, Definition: []byte(flagDef)}}}); err != nil {
		t.Fatal(err)
	}
	// An attacker with control-plane NATS rights but no signing key appends
	// an unsigned changeset at version 2.
	stream, _ := f.js.Stream(ctx, config.StreamName("dev"))
	forged, _ := json.Marshal(&config.Changeset{Env: "dev", Version: 2, PrevVersion: 1, Author: "root",
		Changes: []config.Change{{Flag: "a", Op: config.OpDelete, BaseVersion: 1}}})
	m := nats.NewMsg(config.LogSubject("dev"))
	m.Data = forged
	if _, err := f.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequence(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Commit(ctx, &config.Changeset{Env: "dev", Author: "t", Changes: []config.Change{{Flag: "b", Op: config.OpPut, Definition: []byte(flagDef)}}}); err != nil {
		t.Fatal(err)
	}
	raw1, _ := stream.GetMsg(ctx, 1)
	raw3, _ := stream.GetMsg(ctx, 3)
	trust := sign.NewTrust(f.key.Public())

	list := func(after string) []config.SignedChangeset {
		t.Helper()
		code, body := f.do(t, f.tokens["viewer"], "GET", "/api/v1/envs/dev/signed-changesets?after="+after, "")
		var out []config.SignedChangeset
		if code != 200 || json.Unmarshal([]byte(body), &out) != nil {
			t.Fatalf("signed-changesets after %s = %d %s", after, code, body)
		}
		for _, sc := range out {
			if err := trust.Verify(sign.PurposeChangeset, sc.Data, sc.Signature); err != nil {
				t.Fatalf("signed changeset %d does not verify: %v", sc.Version, err)
			}
		}
		return out
	}
	// The list stops before the foreign version; after it, it resumes.
	if got := list("0"); len(got) != 1 || got[0].Version != 1 || string(got[0].Data) != string(raw1.Data) {
		t.Fatalf("after 0: %+v; want exactly the stored bytes of version 1", got)
	}
	if got := list("2"); len(got) != 1 || got[0].Version != 3 || string(got[0].Data) != string(raw3.Data) {
		t.Fatalf("after 2: %+v; want version 3", got)
	}

	// History and the changeset route mark version 2 instead of failing.
	code, body := f.do(t, f.tokens["viewer"], "GET", "/api/v1/envs/dev/changesets/2", "")
	if code != 200 || !strings.Contains(body, `"foreign": "unsigned"`) || strings.Contains(body, `"root"`) {
		t.Fatalf("changeset 2 = %d %s; want marked foreign without the forged content", code, body)
	}
	code, body = f.do(t, f.tokens["viewer"], "GET", "/api/v1/envs/dev/flags/a", "")
	if code != 200 {
		t.Fatalf("flag a after a forged delete = %d %s; want it still there", code, body)
	}

	// Check reports it; repair is for admins; after repair it is missing.
	code, body = f.do(t, f.tokens["viewer"], "GET", "/api/v1/envs/dev/check", "")
	var ck config.EnvCheck
	if code != 200 || json.Unmarshal([]byte(body), &ck) != nil || len(ck.Foreign) != 1 || ck.Foreign[0] != (config.ForeignEntry{Version: 2, Reason: "unsigned"}) || !ck.Verified {
		t.Fatalf("check = %d %s", code, body)
	}
	if code, body := f.do(t, f.tokens["editor"], "POST", "/api/v1/envs/dev/repair", ""); code != 403 {
		t.Fatalf("repair by an editor = %d %s, want 403", code, body)
	}
	code, body = f.do(t, f.admin, "POST", "/api/v1/envs/dev/repair", "")
	var rep config.RepairResult
	if code != 200 || json.Unmarshal([]byte(body), &rep) != nil || len(rep.Deleted) != 1 || rep.Deleted[0] != 2 || rep.SnapshotVersion != 3 {
		t.Fatalf("repair = %d %s", code, body)
	}
	code, body = f.do(t, f.tokens["viewer"], "GET", "/api/v1/envs/dev/check", "")
	if code != 200 || json.Unmarshal([]byte(body), &ck) != nil || len(ck.Foreign) != 0 || ck.Missing != 1 || ck.Snapshot != "ok" {
		t.Fatalf("check after repair = %d %s", code, body)
	}
	if _, err := stream.GetMsg(ctx, 2); err == nil {
		t.Fatal("the forged message is still in the stream after repair")
	}
}
