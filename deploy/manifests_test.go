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
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
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
	deployment := func(o *objects, name string) *appsv1.Deployment {
		for _, d := range o.deployments {
			if d.Name == name {
				return d
			}
		}
		panic("no deployment " + name)
	}
	control := func(o *objects) *corev1.Container {
		return &deployment(o, "pennon-control").Spec.Template.Spec.Containers[0]
	}
	volume := func(o *objects, workload, name string) *corev1.Volume {
		for _, w := range o.workloads() {
			if strings.HasSuffix(w.name, "/"+workload) {
				for i := range w.template.Spec.Volumes {
					if w.template.Spec.Volumes[i].Name == name {
						return &w.template.Spec.Volumes[i]
					}
				}
			}
		}
		panic("no volume " + name)
	}
	natsConf := func(o *objects, edit func(string) string) {
		cm := o.configMap("nats-config")
		cm.Data["nats.conf"] = edit(cm.Data["nats.conf"])
	}
	netpol := func(o *objects, name string) *networkingv1.NetworkPolicy {
		for _, n := range o.netpols {
			if n.Name == name {
				return n
			}
		}
		panic("no NetworkPolicy " + name)
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
		{"token env", func(o *objects) {
			c := sidecar(o)
			c.Env = append(c.Env, corev1.EnvVar{Name: "PENNON_TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "pennon-sidecar-token"}, Key: "token"}}})
		}, "PENNON_TOKEN in the environment"},
		{"no token file", func(o *objects) { c := sidecar(o); c.Args = dropArg(c.Args, "--token-file") }, "no --token-file"},
		{"token in a configmap", func(o *objects) {
			v := volume(o, "example-app", "pennon-token")
			v.Secret, v.ConfigMap = nil, &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "pennon-defaults"}}
		}, `--token-file=/var/run/secrets/pennon/token is not in a mounted Secret (found: "ConfigMap")`},
		{"token shared with the app", func(o *objects) {
			app := &deployment(o, "example-app").Spec.Template.Spec.Containers[0]
			app.VolumeMounts = append(app.VolumeMounts, corev1.VolumeMount{Name: "pennon-token", MountPath: "/token", ReadOnly: true})
		}, "also mounted by container app"},
		{"anonymous nats", func(o *objects) { natsConf(o, func(s string) string { return s + "no_auth_user: anyone\n" }) }, "nats.conf sets no_auth_user"},
		{"static users", func(o *objects) {
			natsConf(o, func(s string) string { return s + "authorization {\n  users: [{user: a, password: b}]\n}\n" })
		}, "nats.conf sets authorization"},
		{"no auth include", func(o *objects) {
			natsConf(o, func(s string) string { return strings.Replace(s, "include ./auth.conf", "", 1) })
		}, "must include exactly one auth.conf"},
		{"auth.conf from a configmap", func(o *objects) {
			v := volume(o, "nats", "config")
			v.Projected.Sources[1] = corev1.VolumeProjection{ConfigMap: &corev1.ConfigMapProjection{
				LocalObjectReference: corev1.LocalObjectReference{Name: "nats-config"}, Items: []corev1.KeyToPath{{Key: "auth.conf", Path: "auth.conf"}}}}
		}, `included /etc/nats/auth.conf must come from a Secret (found: "ConfigMap")`},
		{"auth secret missing", func(o *objects) { o.secrets = dropSecret(o.secrets, "pennon-nats-auth") }, "Secret pennon-nats-auth is not defined"},
		{"small payload", func(o *objects) {
			natsConf(o, func(s string) string { return strings.Replace(s, "max_payload: 8MB", "", 1) })
		}, "max_payload: 8MB"},
		{"nats creds missing", func(o *objects) { c := control(o); c.Args = dropArg(c.Args, "--nats-creds") }, "no --nats-creds"},
		{"account seed from a configmap", func(o *objects) {
			v := volume(o, "pennon-control", "nats-credentials")
			v.Secret, v.ConfigMap = nil, &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "nats-config"}}
		}, `--nats-account-seed-file=/etc/pennon/nats/account.seed is not in a mounted Secret (found: "ConfigMap")`},
		{"signing key key missing", func(o *objects) {
			for _, s := range o.secrets {
				if s.Name == "pennon-signing-key" {
					s.StringData = map[string]string{"key": "x"}
				}
			}
		}, "--signing-key-file: Secret pennon-signing-key has no key signing.key"},
		{"writable secret mount", func(o *objects) {
			for i, m := range control(o).VolumeMounts {
				if m.Name == "signing-key" {
					control(o).VolumeMounts[i].ReadOnly = false
				}
			}
		}, "Secret mount of /etc/pennon/signing/signing.key must be read-only"},
		{"secret value in args", func(o *objects) { c := control(o); c.Args = append(c.Args, "--env=CHANGE-ME-with-openssl-rand-hex-32") }, "an argument holds a Secret's value"},
		{"admin token arg", func(o *objects) { c := control(o); c.Args = append(c.Args, "--admin-token=abc") }, "passes a secret as an argument"},
		{"password in nats url", func(o *objects) {
			c := control(o)
			for i, a := range c.Args {
				if strings.HasPrefix(a, "--nats-url=") {
					c.Args[i] = "--nats-url=nats://pennon:hunter2@nats:4222"
				}
			}
		}, "puts credentials in a URL"},
		{"seed env literal", func(o *objects) {
			c := control(o)
			c.Env = append(c.Env, corev1.EnvVar{Name: "PENNON_NATS_SEED", Value: "SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4"})
		}, "env PENNON_NATS_SEED is a literal secret"},
		{"seed in a configmap", func(o *objects) {
			o.configMaps[0].Data["creds"] = "-----BEGIN USER NKEY SEED-----\nSUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4\n"
		}, "holds a seed, credentials or a private key"},
		{"nats client port open to all", func(o *objects) {
			n := netpol(o, "nats")
			n.Spec.Ingress[0].From = append(n.Spec.Ingress[0].From, networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{}})
		}, "the client port is only for the control plane and pods labelled pennon.dev/sidecar=true (every pod of the selected namespaces)"},
		{"nats client port from the app", func(o *objects) {
			n := netpol(o, "nats")
			n.Spec.Ingress[0].From = append(n.Spec.Ingress[0].From, networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{"app.kubernetes.io/name": "example-app"}}})
		}, "(pods matching map[app.kubernetes.io/name:example-app])"},
		{"cluster port from sidecars", func(o *objects) {
			n := netpol(o, "nats")
			n.Spec.Ingress[0].Ports = append(n.Spec.Ingress[0].Ports, networkingv1.NetworkPolicyPort{Port: ptr(intstr.FromInt32(6222))})
		}, "the cluster port is only for NATS pods"},
		{"every port", func(o *objects) { n := netpol(o, "nats"); n.Spec.Ingress[2].Ports = nil }, "ingress[2]: allows every port"},
		{"every source", func(o *objects) { n := netpol(o, "nats"); n.Spec.Ingress[1].From = nil }, "ingress[1]: allows every source"},
		{"no nats policy", func(o *objects) { o.netpols = o.netpols[1:] }, "no NetworkPolicy selects the NATS pods"},
		{"sidecars shut out", func(o *objects) { n := netpol(o, "nats"); n.Spec.Ingress[0].From = n.Spec.Ingress[0].From[:1] }, "pods labelled pennon.dev/sidecar=true cannot reach the client port"},
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

func dropArg(args []string, flag string) []string {
	var out []string
	for _, a := range args {
		if a != flag && !strings.HasPrefix(a, flag+"=") {
			out = append(out, a)
		}
	}
	return out
}

func dropSecret(ss []*corev1.Secret, name string) []*corev1.Secret {
	var out []*corev1.Secret
	for _, s := range ss {
		if s.Name != name {
			out = append(out, s)
		}
	}
	return out
}

func ptr[T any](v T) *T { return &v }

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
