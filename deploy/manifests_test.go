package deploy

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/pennon-dev/pennon/deploy/inject"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

func selectorFor(m map[string]string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: m}
}

type kustomization struct {
	APIVersion         string   `json:"apiVersion"`
	Kind               string   `json:"kind"`
	Namespace          string   `json:"namespace"`
	Resources          []string `json:"resources"`
	ConfigMapGenerator []struct {
		Name    string   `json:"name"`
		Files   []string `json:"files"`
		Options struct {
			DisableNameSuffixHash bool              `json:"disableNameSuffixHash"`
			Labels                map[string]string `json:"labels"`
		} `json:"options"`
	} `json:"configMapGenerator"`
}

func TestManifests(t *testing.T) {
	dir := "k8s"
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	var listed []string
	o := &objects{}
	for _, r := range k.Resources {
		listed = append(listed, filepath.Join(dir, r))
		b, err := os.ReadFile(filepath.Join(dir, r))
		if err != nil {
			t.Fatalf("kustomization resource: %v", err)
		}
		decodeAll(t, o, r, b)
	}
	listed = append(listed, filepath.Join(dir, "kustomization.yaml"), filepath.Join(dir, "secrets.example.yaml"))
	// The example Secrets are not applied by the kustomization (placeholders
	// would overwrite real tokens) but must define what the workloads use.
	b, err := os.ReadFile(filepath.Join(dir, "secrets.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	decodeAll(t, o, "secrets.example.yaml", b)
	sort.Strings(listed)
	sort.Strings(files)
	if strings.Join(files, ",") != strings.Join(listed, ",") {
		t.Errorf("YAML files %v are not exactly the kustomization's resources %v", files, listed)
	}
	for _, g := range k.ConfigMapGenerator {
		for _, f := range g.Files {
			_, src, _ := strings.Cut(f, "=")
			b, err := os.ReadFile(filepath.Join(dir, src))
			if err != nil {
				t.Fatal(err)
			}
			checkDashboard(t, b)
		}
	}
	checkInvariants(t, o)
}

// checkDashboard decodes the Grafana dashboard and checks every panel
// queries something pennon exports.
func checkDashboard(t *testing.T, data []byte) {
	t.Helper()
	var d struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	if d.UID == "" || len(d.Panels) < 6 {
		t.Errorf("dashboard %q: uid %q, %d panels", d.Title, d.UID, len(d.Panels))
	}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 || !strings.Contains(p.Targets[0].Expr, "pennon_") {
			t.Errorf("dashboard panel %q: no pennon query", p.Title)
		}
	}
}

// TestInvariantsCatchMistakes breaks the shipped manifests one way at a time
// and checks the invariants notice: a check that cannot fail checks nothing.
func TestInvariantsCatchMistakes(t *testing.T) {
	load := func(t *testing.T) *objects {
		o := &objects{}
		for _, f := range []string{"nats.yaml", "control.yaml", "example-app.yaml", "networkpolicy.yaml", "monitoring.yaml", "secrets.example.yaml"} {
			b, err := os.ReadFile(filepath.Join("k8s", f))
			if err != nil {
				t.Fatal(err)
			}
			decodeAll(t, o, f, b)
		}
		return o
	}
	sidecar := func(o *objects) *corev1.Container {
		for _, d := range o.deployments {
			for i, c := range d.Spec.Template.Spec.Containers {
				if c.Name == "pennon" {
					return &d.Spec.Template.Spec.Containers[i]
				}
			}
		}
		panic("no sidecar")
	}
	tests := []struct {
		name    string
		breakIt func(o *objects)
		want    string
	}{
		{"all interfaces", func(o *objects) { sidecar(o).Args[4] = "--addr=0.0.0.0:8016" }, "must bind 127.0.0.1:8016"},
		{"no readiness", func(o *objects) { sidecar(o).ReadinessProbe = nil }, "readiness probe must GET /readyz"},
		{"writable root", func(o *objects) { f := false; sidecar(o).SecurityContext.ReadOnlyRootFilesystem = &f }, "readOnlyRootFilesystem"},
		{"no limits", func(o *objects) { sidecar(o).Resources.Limits = nil }, "memory limit"},
		{"token arg", func(o *objects) { c := sidecar(o); c.Args = append(c.Args, "--token=x") }, "token passed as an argument"},
		{"selector", func(o *objects) { o.services[0].Spec.Selector = map[string]string{"app": "nope"} }, "matches no workload"},
		{"one control replica", func(o *objects) {
			for _, d := range o.deployments {
				if d.Name == "pennon-control" {
					one := int32(1)
					d.Spec.Replicas = &one
				}
			}
		}, "at least 2 replicas"},
		{"alert missing", func(o *objects) { o.rules[0].Spec.Groups[0].Rules = o.rules[0].Spec.Groups[0].Rules[1:] }, "alert PennonSidecarDegraded missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := load(t)
			tc.breakIt(o)
			errs := strings.Join(invariantErrors(t, o), "\n")
			if !strings.Contains(errs, tc.want) {
				t.Errorf("invariant errors do not mention %q:\n%s", tc.want, errs)
			}
		})
	}
}

// TestInjectMatchesExample: `pennon inject` with default options must add
// exactly the sidecar and volumes that deploy/k8s/example-app.yaml shows, so
// the example documents what inject does and both pass the same invariants.
func TestInjectMatchesExample(t *testing.T) {
	example := &objects{}
	b, err := os.ReadFile(filepath.Join("k8s", "example-app.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	decodeAll(t, example, "example-app.yaml", b)
	in := `apiVersion: apps/v1
kind: Deployment
metadata: {name: example-app}
spec:
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: x}}
    spec:
      containers: [{name: app, image: x}]
`
	var out bytes.Buffer
	if _, err := inject.Inject(strings.NewReader(in), &out, inject.Options{}); err != nil {
		t.Fatal(err)
	}
	injected := &objects{}
	decodeAll(t, injected, "injected", out.Bytes())
	want, got := example.deployments[0].Spec.Template, injected.deployments[0].Spec.Template
	if !reflect.DeepEqual(want.Spec.Containers[1], got.Spec.Containers[1]) {
		t.Errorf("injected sidecar differs from example-app.yaml's:\n got  %+v\n want %+v", got.Spec.Containers[1], want.Spec.Containers[1])
	}
	if !reflect.DeepEqual(want.Spec.Volumes, got.Spec.Volumes) {
		t.Errorf("injected volumes %+v, example has %+v", got.Spec.Volumes, want.Spec.Volumes)
	}
	for k, v := range want.Annotations {
		if got.Annotations[k] != v {
			t.Errorf("annotation %s: got %q, example has %q", k, got.Annotations[k], v)
		}
	}
	if got.Labels["pennon.dev/sidecar"] != "true" {
		t.Errorf("labels %v", got.Labels)
	}
}
