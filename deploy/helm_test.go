package deploy

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"text/template"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// The Helm chart is rendered here with text/template and the handful of
// Helm/sprig functions its templates use, defined below with Helm's
// semantics. Linking helm.sh/helm/v3's engine would pull Kubernetes client
// libraries and sprig into every `go test ./...` build on a 2-core CI for no
// extra confidence in these templates; the function set is kept small on
// purpose so the renderer stays honest. Missing keys are errors here
// (stricter than Helm), which catches misspelt value names.

const chartDir = "helm/pennon"

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// chartFiles is .Files: Get reads a file relative to the chart.
type chartFiles struct{ dir string }

func (f chartFiles) Get(name string) string {
	b, err := os.ReadFile(filepath.Join(f.dir, name))
	if err != nil {
		return ""
	}
	return string(b)
}

// renderChart renders every template with values.yaml merged with
// overrides, and returns the manifests and NOTES.txt.
func renderChart(t *testing.T, overrides map[string]any) (manifests, notes string) {
	t.Helper()
	manifests, notes, err := renderChartErr(t, overrides)
	if err != nil {
		t.Fatal(err)
	}
	return manifests, notes
}

// renderChartErr is renderChart for values that should fail to render (a
// `required` value missing): the error is returned, as helm prints it.
func renderChartErr(t *testing.T, overrides map[string]any) (manifests, notes string, err error) {
	t.Helper()
	var chart struct {
		APIVersion  string   `json:"apiVersion"`
		Name        string   `json:"name"`
		Description string   `json:"description"`
		Type        string   `json:"type"`
		Version     string   `json:"version"`
		AppVersion  string   `json:"appVersion"`
		Keywords    []string `json:"keywords"`
		Home        string   `json:"home"`
	}
	readYAML(t, filepath.Join(chartDir, "Chart.yaml"), &chart, true)
	values := map[string]any{}
	readYAML(t, filepath.Join(chartDir, "values.yaml"), &values, false)
	mergeValues(values, overrides)
	// Helm validates the merged values against values.schema.json before
	// rendering; so does this renderer.
	if errs := loadSchema(t).validate("values", values); len(errs) > 0 {
		t.Fatalf("values violate values.schema.json:\n%s", strings.Join(errs, "\n"))
	}

	var root *template.Template
	funcs := template.FuncMap{
		"include": func(name string, data any) (string, error) {
			var b bytes.Buffer
			err := root.ExecuteTemplate(&b, name, data)
			return b.String(), err
		},
		"toYaml": func(v any) (string, error) {
			b, err := yaml.Marshal(v)
			return strings.TrimSuffix(string(b), "\n"), err
		},
		"indent":  indent,
		"nindent": func(n int, s string) string { return "\n" + indent(n, s) },
		"quote":   func(v any) string { return fmt.Sprintf("%q", fmt.Sprint(v)) },
		"default": func(def any, given ...any) any {
			if len(given) == 0 || empty(given[0]) {
				return def
			}
			return given[0]
		},
		"required": func(msg string, v any) (any, error) {
			if empty(v) {
				return nil, errors.New(msg)
			}
			return v, nil
		},
		"int": func(v any) (int, error) {
			switch n := v.(type) {
			case float64:
				return int(n), nil
			case int:
				return n, nil
			}
			return 0, fmt.Errorf("int: %v is not a number", v)
		},
		"until": func(n int) []int {
			out := make([]int, n)
			for i := range out {
				out[i] = i
			}
			return out
		},
	}
	root = template.New("chart").Funcs(funcs).Option("missingkey=error")
	paths, _ := filepath.Glob(filepath.Join(chartDir, "templates", "*"))
	sort.Strings(paths)
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := root.New(filepath.Base(p)).Parse(string(b)); err != nil {
			t.Fatalf("parse %s: %v", p, err)
		}
	}
	data := map[string]any{
		"Values":  values,
		"Release": map[string]any{"Name": "pennon", "Namespace": "pennon", "Service": "Helm"},
		"Chart":   map[string]any{"Name": chart.Name, "Version": chart.Version, "AppVersion": chart.AppVersion},
		"Files":   chartFiles{chartDir},
	}
	var out bytes.Buffer
	for _, p := range paths {
		base := filepath.Base(p)
		if strings.HasPrefix(base, "_") {
			continue
		}
		var b bytes.Buffer
		if err := root.ExecuteTemplate(&b, base, data); err != nil {
			return "", "", fmt.Errorf("render %s: %w", base, err)
		}
		if base == "NOTES.txt" {
			notes = b.String()
			continue
		}
		fmt.Fprintf(&out, "---\n# Source: pennon/templates/%s\n%s\n", base, b.String())
	}
	return out.String(), notes, nil
}

func readYAML(t *testing.T, path string, v any, strict bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strict {
		err = yaml.UnmarshalStrict(b, v)
	} else {
		err = yaml.Unmarshal(b, v)
	}
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func mergeValues(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				mergeValues(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

func indent(n int, s string) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(s, "\n", "\n"+pad)
}

func empty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == ""
	case bool:
		return !x
	case float64:
		return x == 0
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	}
	return false
}

// chartSecrets are the Secrets the chart expects to exist (docs/deploy.md
// creates them from `pennon server nats-config` and `pennon server keygen`)
// rather than creating them from values: keys should not live in Helm's
// release history.
var chartSecrets = map[string][]string{
	"pennon-nats-auth":    {"auth.conf"},
	"pennon-nats-control": {"control-plane.creds", "account.seed"},
	"pennon-signing-key":  {"signing.key"},
	"pennon-nats-tls":     {"tls.crt", "tls.key", "ca.crt"},
}

func TestHelmChart(t *testing.T) {
	full := map[string]any{
		"control":    map[string]any{"adminToken": "test-admin-token"},
		"sidecar":    map[string]any{"token": "test-sidecar-token"},
		"exampleApp": map[string]any{"enabled": true},
	}
	out, notes := renderChart(t, full)
	// The rendered chart is kept as a golden file so a template change shows
	// up in review as a manifest diff.
	golden := filepath.Join("testdata", "chart.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if want, err := os.ReadFile(golden); err != nil || string(want) != out {
		t.Errorf("rendered chart differs from %s (run go test ./deploy -update to accept); err %v", golden, err)
	}
	o := &objects{external: chartSecrets}
	decodeAll(t, o, "rendered chart", []byte(out))
	checkInvariants(t, o)
	if len(o.configMaps) != 3 || len(o.netpols) != 2 || len(o.rules) != 1 {
		t.Errorf("configmaps %d netpols %d rules %d", len(o.configMaps), len(o.netpols), len(o.rules))
	}
	if cm := o.configMap("pennon-grafana-dashboard"); cm == nil {
		t.Error("no dashboard ConfigMap")
	} else {
		checkDashboard(t, []byte(cm.Data["pennon-dashboard.json"]))
	}
	if !strings.Contains(notes, "pennon inject") {
		t.Errorf("NOTES.txt: %s", notes)
	}

	// The chart's sidecar is the same as deploy/k8s's, so docs, inject and
	// chart never drift apart.
	k8s := &objects{}
	b, _ := os.ReadFile(filepath.Join("k8s", "example-app.yaml"))
	decodeAll(t, k8s, "example-app.yaml", b)
	// Two differences are by design: the chart names its NATS service after
	// the release, and sets imagePullPolicy from values.
	var chartSidecar corev1.Container
	for _, d := range o.deployments {
		if d.Name == "pennon-example-app" {
			chartSidecar = *d.Spec.Template.Spec.Containers[1].DeepCopy()
		}
	}
	chartSidecar.ImagePullPolicy = ""
	for i, a := range chartSidecar.Args {
		if a == "--nats=nats://pennon-nats.pennon:4222" {
			chartSidecar.Args[i] = "--nats=nats://nats.pennon:4222"
		}
	}
	k8sSidecar := k8s.deployments[0].Spec.Template.Spec.Containers[1]
	cj, _ := yaml.Marshal(chartSidecar)
	kj, _ := yaml.Marshal(k8sSidecar)
	if !bytes.Equal(cj, kj) {
		t.Errorf("chart sidecar differs from deploy/k8s/example-app.yaml:\nchart:\n%s\nk8s:\n%s", cj, kj)
	}
}

// TestHelmChartRequired: values the chart cannot work without fail the
// render with a message naming the value and the fix.
func TestHelmChartRequired(t *testing.T) {
	tests := []struct {
		name string
		over map[string]any
		want string
	}{
		{"admin token", map[string]any{}, "control.adminToken is required unless control.existingSecret is set"},
		{"tls without a secret", map[string]any{
			"control": map[string]any{"adminToken": "x"},
			"nats":    map[string]any{"tls": map[string]any{"enabled": true}},
		}, "nats.tls.secret is required when nats.tls.enabled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := renderChartErr(t, tc.over)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestHelmChartValues(t *testing.T) {
	tests := []struct {
		name  string
		over  map[string]any
		check func(t *testing.T, o *objects)
	}{
		{"external nats, existing secret, no extras", map[string]any{
			"nats":          map[string]any{"enabled": false, "url": "nats://nats.shared:4222"},
			"control":       map[string]any{"existingSecret": "my-admin"},
			"networkPolicy": map[string]any{"enabled": false},
			"monitoring":    map[string]any{"enabled": false, "dashboard": false},
		}, func(t *testing.T, o *objects) {
			if len(o.statefulSets) != 0 || len(o.secrets) != 0 || len(o.netpols) != 0 || len(o.rules) != 0 {
				t.Errorf("disabled parts rendered: sts %d secrets %d netpols %d rules %d", len(o.statefulSets), len(o.secrets), len(o.netpols), len(o.rules))
			}
			args := strings.Join(o.deployments[0].Spec.Template.Spec.Containers[0].Args, " ")
			if !strings.Contains(args, "--nats-url=nats://nats.shared:4222") {
				t.Errorf("control args %s", args)
			}
			if v := o.deployments[0].Spec.Template.Spec.Volumes[0]; v.Secret == nil || v.Secret.SecretName != "my-admin" {
				t.Errorf("admin token volume %+v, want Secret my-admin", v)
			}
		}},
		{"tls", map[string]any{
			"control":    map[string]any{"adminToken": "test-admin-token"},
			"sidecar":    map[string]any{"token": "test-sidecar-token"},
			"exampleApp": map[string]any{"enabled": true},
			"nats":       map[string]any{"tls": map[string]any{"enabled": true, "secret": "pennon-nats-tls"}},
		}, func(t *testing.T, o *objects) {
			checkInvariants(t, o)
			conf := o.configMap("pennon-nats-config").Data["nats.conf"]
			// Client TLS at the top level, and route TLS that verifies the
			// peer inside the cluster block.
			client := strings.Index(conf, "tls {")
			cluster := strings.Index(conf, "cluster {")
			if client < 0 || cluster < 0 || client > cluster || !strings.Contains(conf[cluster:], "tls {") || !strings.Contains(conf[cluster:], "verify: true") {
				t.Errorf("nats.conf TLS blocks:\n%s", conf)
			}
			sts := o.statefulSets[0]
			for _, f := range []string{"/etc/nats/tls/tls.crt", "/etc/nats/tls/tls.key", "/etc/nats/tls/ca.crt"} {
				if !strings.Contains(conf, f) {
					t.Errorf("nats.conf does not name %s", f)
				}
				src := resolveFile(&sts.Spec.Template.Spec, &sts.Spec.Template.Spec.Containers[0], f)
				if src.kind != "Secret" || src.name != "pennon-nats-tls" || src.key != f[len("/etc/nats/tls/"):] {
					t.Errorf("%s comes from %+v, want Secret pennon-nats-tls", f, src)
				}
			}
			for _, d := range o.deployments {
				pod := &d.Spec.Template.Spec
				for i := range pod.Containers {
					c := &pod.Containers[i]
					if c.Name == "app" {
						continue
					}
					ca, ok := argValue(c.Args, "--nats-ca")
					src := resolveFile(pod, c, ca)
					if !ok || src.kind != "Secret" || src.name != "pennon-nats-tls" || src.key != "ca.crt" {
						t.Errorf("%s/%s: --nats-ca=%q from %+v, want ca.crt of Secret pennon-nats-tls", d.Name, c.Name, ca, src)
					}
				}
			}
		}},
		{"custom secrets, trust key, sidecar namespaces", map[string]any{
			"control": map[string]any{"adminToken": "x", "natsSecret": "nats-ctl", "signingKeySecret": "sig"},
			"nats":    map[string]any{"auth": map[string]any{"existingSecret": "nats-auth"}},
			"sidecar": map[string]any{"trustKeys": []any{"ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", "ed25519:Yy0uvyYBLh1yVTPqNBQw7WKSYD7zKCELRbxM5WZHcpM="}},
			"networkPolicy": map[string]any{"sidecarNamespaceSelector": map[string]any{
				"matchLabels": map[string]any{"pennon.dev/sidecars": "allowed"}}},
			"exampleApp": map[string]any{"enabled": true},
		}, func(t *testing.T, o *objects) {
			o.external = map[string][]string{
				"nats-auth": {"auth.conf"}, "nats-ctl": {"control-plane.creds", "account.seed"}, "sig": {"signing.key"},
				"pennon-sidecar-token": {"token"},
			}
			checkInvariants(t, o)
			var sidecar corev1.Container
			for _, d := range o.deployments {
				if d.Name == "pennon-example-app" {
					sidecar = d.Spec.Template.Spec.Containers[1]
				}
			}
			var keys []string
			for _, a := range sidecar.Args {
				if k, ok := strings.CutPrefix(a, "--trust-key="); ok {
					keys = append(keys, k)
				}
			}
			if strings.Join(keys, " ") != "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo= ed25519:Yy0uvyYBLh1yVTPqNBQw7WKSYD7zKCELRbxM5WZHcpM=" {
				t.Errorf("sidecar --trust-key args %v, want both keys (a rotation in progress)", keys)
			}
			for _, n := range o.netpols {
				found := false
				for _, r := range n.Spec.Ingress {
					for _, p := range r.From {
						if p.PodSelector != nil && p.PodSelector.MatchLabels["pennon.dev/sidecar"] == "true" {
							found = true
							if p.NamespaceSelector == nil || p.NamespaceSelector.MatchLabels["pennon.dev/sidecars"] != "allowed" {
								t.Errorf("NetworkPolicy/%s: sidecar peer namespaceSelector %+v", n.Name, p.NamespaceSelector)
							}
						}
					}
				}
				if !found {
					t.Errorf("NetworkPolicy/%s: no sidecar peer", n.Name)
				}
			}
		}},
		{"five nats replicas", map[string]any{
			"control": map[string]any{"adminToken": "x"},
			"nats":    map[string]any{"replicas": 5, "storage": map[string]any{"storageClassName": "fast"}},
		}, func(t *testing.T, o *objects) {
			s := o.statefulSets[0]
			if *s.Spec.Replicas != 5 || *s.Spec.VolumeClaimTemplates[0].Spec.StorageClassName != "fast" {
				t.Errorf("replicas %d", *s.Spec.Replicas)
			}
			if conf := o.configMap("pennon-nats-config").Data["nats.conf"]; !strings.Contains(conf, "pennon-nats-4.pennon-nats-headless:6222") {
				t.Errorf("routes do not follow replicas:\n%s", conf)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, _ := renderChart(t, tc.over)
			o := &objects{external: chartSecrets}
			decodeAll(t, o, "rendered chart", []byte(out))
			tc.check(t, o)
		})
	}
}
