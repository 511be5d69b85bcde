package inject

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func TestInjectGolden(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want Stats
	}{
		{"workloads", Options{}, Stats{Documents: 10, Workloads: 8, Injected: 7, Skipped: 1}},
		{"workloads-staging", Options{Env: "staging", Image: "registry.local/pennon:v0.1.0", Server: "http://pennon-control.flags:8080",
			NATS: "nats://nats.flags:4222", MemoryLimit: "128Mi"}, Stats{Documents: 10, Workloads: 8, Injected: 7, Skipped: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join("testdata", "workloads.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			st, err := Inject(bytes.NewReader(in), &out, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if st != tc.want {
				t.Errorf("stats %+v, want %+v", st, tc.want)
			}
			golden := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("output differs from %s (run with -update to accept):\n%s", golden, out.String())
			}
			// Second run: nothing to do, byte for byte the same.
			var again bytes.Buffer
			st2, err := Inject(bytes.NewReader(out.Bytes()), &again, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if st2.Injected != 0 || !bytes.Equal(again.Bytes(), out.Bytes()) {
				t.Errorf("second run injected %d and changed the output:\n%s", st2.Injected, again.String())
			}
		})
	}
}

func TestInjectPreservesComments(t *testing.T) {
	in, _ := os.ReadFile(filepath.Join("testdata", "workloads.yaml"))
	var out bytes.Buffer
	if _, err := Inject(bytes.NewReader(in), &out, Options{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"# A Deployment with comments", "# inline comment", "# pinned", "# Opted out"} {
		if !strings.Contains(out.String(), c) {
			t.Errorf("comment %q lost", c)
		}
	}
}

func TestInjectEmptyInput(t *testing.T) {
	for _, in := range []string{"", "\n", "# only a comment\n", "---\n", "---\n---\n"} {
		var out bytes.Buffer
		st, err := Inject(strings.NewReader(in), &out, Options{})
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if st.Injected != 0 {
			t.Errorf("%q: injected %d", in, st.Injected)
		}
	}
	var out bytes.Buffer
	if _, err := Inject(strings.NewReader("---\nkind: ConfigMap\n---\n---\nkind: Pod\nspec:\n  containers: []\n"), &out, Options{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "name: pennon") || !strings.Contains(out.String(), "kind: ConfigMap") {
		t.Errorf("output:\n%s", out.String())
	}
}

func TestInjectErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		opts Options
		want string
	}{
		{"bad yaml", "kind: Deployment\n  bad: [", Options{}, "document 1:"},
		{"no template", "kind: Deployment\nmetadata: {name: x}\nspec: {}\n", Options{}, "document 1 (Deployment x): no [spec template] mapping"},
		{"containers not a list", "kind: Pod\nmetadata: {name: p}\nspec: {containers: {}}\n", Options{}, "spec.containers must be a list"},
		{"no spec", "kind: Pod\nmetadata: {name: p}\n", Options{}, "pod template has no spec"},
		{"second doc", "kind: ConfigMap\n---\nkind: Job\nspec: {template: 3}\n", Options{}, "document 2 (Job (unnamed))"},
		{"bad env", "", Options{Env: "Prod"}, `env: "Prod" must match`},
		{"bad quantity", "", Options{MemoryLimit: "lots"}, `memory-limit: "lots" is not a Kubernetes quantity`},
		{"bad server", "", Options{Server: "pennon-control"}, `server: "pennon-control" must be an http(s) URL`},
		{"bad trust key", "", Options{TrustKeys: []string{"ed25519:" + strings.Repeat("A", 43) + "=", "abc"}}, `trust-key[1]: "abc" is not a public key`},
		{"bad ca configmap", "", Options{NATSCAConfigMap: "CA_Bundle"}, `nats-ca-configmap: "CA_Bundle" is not a ConfigMap name`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Inject(strings.NewReader(tc.in), &bytes.Buffer{}, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func FuzzInject(f *testing.F) {
	seed, _ := os.ReadFile(filepath.Join("testdata", "workloads.yaml"))
	f.Add(string(seed))
	f.Add("kind: Pod\nspec:\n  containers: []\n")
	f.Add("kind: CronJob\nspec: {jobTemplate: {spec: {template: {spec: {containers: [{name: pennon}]}}}}}\n")
	f.Add("kind: List\nitems: [1, {kind: Pod}]\n")
	f.Add("- a\n- b\n---\n'x'\n")
	f.Add("")
	f.Add("# c\n---\n---\n")
	f.Fuzz(func(t *testing.T, in string) {
		var out bytes.Buffer
		if _, err := Inject(strings.NewReader(in), &out, Options{}); err != nil {
			return
		}
		var again bytes.Buffer
		st, err := Inject(bytes.NewReader(out.Bytes()), &again, Options{})
		if err != nil {
			t.Fatalf("second run failed on first run's output: %v\n%s", err, out.String())
		}
		if st.Injected != 0 || !bytes.Equal(out.Bytes(), again.Bytes()) {
			t.Fatalf("not idempotent:\n--- first\n%s\n--- second\n%s", out.String(), again.String())
		}
	})
}

// TestInjectTokenPrivateToSidecar: every injected pod template carries the
// label the NATS and control-plane NetworkPolicies select on, and the
// sidecar reads its API token from a file in a Secret volume that no other
// container mounts (app containers share the sidecar's network, not its
// token). The token is never an argument or an environment variable.
func TestInjectTokenPrivateToSidecar(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "workloads.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := Inject(bytes.NewReader(in), &out, Options{TokenSecret: "shop-pennon-token"}); err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(&out)
	checked := 0
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		var tmpls []map[string]any
		collectTemplates(doc, &tmpls)
		for _, tmpl := range tmpls {
			meta, _ := tmpl["metadata"].(map[string]any)
			if ann, _ := meta["annotations"].(map[string]any); ann[AnnotationOptOut] == "false" {
				continue
			}
			checked++
			at := fmt.Sprint(doc["kind"], " ", docName(doc))
			if labels, _ := meta["labels"].(map[string]any); labels[LabelSidecar] != "true" {
				t.Errorf("%s: label %s=%v, want \"true\"", at, LabelSidecar, labels[LabelSidecar])
			}
			spec := tmpl["spec"].(map[string]any)
			var tokenVolume map[string]any
			for _, v := range list(spec["volumes"]) {
				if v["name"] == TokenVolume {
					tokenVolume = v
				}
			}
			secret, _ := tokenVolume["secret"].(map[string]any)
			if secret["secretName"] != "shop-pennon-token" {
				t.Errorf("%s: token volume %v, want Secret shop-pennon-token", at, tokenVolume)
			}
			containers := append(list(spec["initContainers"]), list(spec["containers"])...)
			sidecars := 0
			for _, c := range containers {
				mounts := list(c["volumeMounts"])
				tokenMount := ""
				for _, m := range mounts {
					if m["name"] == TokenVolume {
						tokenMount = fmt.Sprint(m["mountPath"])
						if m["readOnly"] != true {
							t.Errorf("%s: container %v mounts the token writable", at, c["name"])
						}
					}
				}
				for _, e := range list(c["env"]) {
					if e["name"] == "PENNON_TOKEN" {
						t.Errorf("%s: container %v has PENNON_TOKEN in its environment", at, c["name"])
					}
				}
				if c["name"] != ContainerName {
					if tokenMount != "" {
						t.Errorf("%s: container %v mounts the sidecar's token", at, c["name"])
					}
					continue
				}
				sidecars++
				var args []string
				for _, a := range c["args"].([]any) {
					args = append(args, fmt.Sprint(a))
				}
				want := "--token-file=" + tokenMount + "/token"
				if tokenMount == "" || !slices.Contains(args, want) {
					t.Errorf("%s: sidecar args %v, want %s", at, args, want)
				}
				for _, a := range args {
					if a == "--token" || strings.HasPrefix(a, "--token=") {
						t.Errorf("%s: token passed as an argument: %s", at, a)
					}
				}
			}
			if sidecars != 1 {
				t.Errorf("%s: %d pennon containers", at, sidecars)
			}
		}
	}
	if checked != 7 {
		t.Errorf("checked %d injected pod templates, want 7", checked)
	}
}

// collectTemplates finds pod templates (a map with spec.containers) in a
// decoded document, including inside Lists.
func collectTemplates(v any, out *[]map[string]any) {
	switch x := v.(type) {
	case map[string]any:
		if spec, ok := x["spec"].(map[string]any); ok {
			if _, ok := spec["containers"]; ok {
				*out = append(*out, x)
				return
			}
		}
		for _, k := range []string{"spec", "template", "jobTemplate", "items"} {
			if c, ok := x[k]; ok {
				collectTemplates(c, out)
			}
		}
	case []any:
		for _, e := range x {
			collectTemplates(e, out)
		}
	}
}

func list(v any) []map[string]any {
	var out []map[string]any
	s, _ := v.([]any)
	for _, e := range s {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func docName(doc map[string]any) any {
	meta, _ := doc["metadata"].(map[string]any)
	return meta["name"]
}

// TestInjectTLSAndPinning: with a CA ConfigMap and pinned keys the sidecar
// gets --nats-ca pointing into a read-only mount of that ConfigMap and one
// --trust-key per key (two during a rotation), and a second run changes
// nothing.
func TestInjectTLSAndPinning(t *testing.T) {
	keys := []string{"ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", "ed25519:Yy0uvyYBLh1yVTPqNBQw7WKSYD7zKCELRbxM5WZHcpM="}
	opts := Options{TrustKeys: keys, NATSCAConfigMap: "nats-ca-bundle"}
	in := "kind: Deployment\nmetadata: {name: shop}\nspec:\n  template:\n    spec:\n      containers: [{name: shop, image: x}]\n"
	var out bytes.Buffer
	if _, err := Inject(strings.NewReader(in), &out, opts); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	var tmpls []map[string]any
	collectTemplates(doc, &tmpls)
	spec := tmpls[0]["spec"].(map[string]any)
	sidecar := list(spec["containers"])[1]
	var args []string
	for _, a := range sidecar["args"].([]any) {
		args = append(args, fmt.Sprint(a))
	}
	for _, want := range []string{"--trust-key=" + keys[0], "--trust-key=" + keys[1], "--nats-ca=/var/run/secrets/pennon-nats/ca.crt"} {
		if !slices.Contains(args, want) {
			t.Errorf("args %v lack %s", args, want)
		}
	}
	mounted := false
	for _, m := range list(sidecar["volumeMounts"]) {
		if m["name"] == NATSCAVolume && m["mountPath"] == "/var/run/secrets/pennon-nats" && m["readOnly"] == true {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("no read-only %s mount: %v", NATSCAVolume, sidecar["volumeMounts"])
	}
	found := false
	for _, v := range list(spec["volumes"]) {
		if v["name"] == NATSCAVolume {
			cm, _ := v["configMap"].(map[string]any)
			found = cm["name"] == "nats-ca-bundle"
		}
	}
	if !found {
		t.Errorf("volumes %v: want %s from ConfigMap nats-ca-bundle", spec["volumes"], NATSCAVolume)
	}
	var again bytes.Buffer
	if st, err := Inject(bytes.NewReader(out.Bytes()), &again, opts); err != nil || st.Injected != 0 || !bytes.Equal(again.Bytes(), out.Bytes()) {
		t.Errorf("second run: %+v %v\n%s", st, err, again.String())
	}
}
