package deploy

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The checks in this file are issue 10's deployment half: NATS is never
// reachable without credentials, only sidecars and the control plane can
// reach its client port, every secret is a file mounted from a Secret (never
// an argument, an environment literal or a ConfigMap), and the sidecar's
// token is visible to the sidecar container alone (app containers share the
// pod's network, not its files).

// NATS ports by container port name, as both renderings name them.
var natsPorts = map[string]int{"client": 4222, "cluster": 6222, "monitor": 8222}

// fileSource says where a file a container reads comes from: the kind
// ("Secret", "ConfigMap", or "" when no volume provides it), the object's
// name and key, and whether the mount is read-only. Secret, ConfigMap and
// projected volumes are resolved, with or without items.
type fileSource struct {
	kind, name, key string
	readOnly        bool
	volume          string
}

func resolveFile(pod *corev1.PodSpec, c *corev1.Container, file string) fileSource {
	for _, m := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !ok || m.SubPath != "" {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name != m.Name {
				continue
			}
			fs := fileSource{readOnly: m.ReadOnly, volume: v.Name}
			switch {
			case v.Secret != nil:
				fs.kind, fs.name = "Secret", v.Secret.SecretName
				fs.key = keyFor(v.Secret.Items, rel)
			case v.ConfigMap != nil:
				fs.kind, fs.name = "ConfigMap", v.ConfigMap.Name
				fs.key = keyFor(v.ConfigMap.Items, rel)
			case v.Projected != nil:
				for _, s := range v.Projected.Sources {
					switch {
					case s.Secret != nil && providesPath(s.Secret.Items, rel):
						fs.kind, fs.name, fs.key = "Secret", s.Secret.Name, keyFor(s.Secret.Items, rel)
					case s.ConfigMap != nil && providesPath(s.ConfigMap.Items, rel):
						fs.kind, fs.name, fs.key = "ConfigMap", s.ConfigMap.Name, keyFor(s.ConfigMap.Items, rel)
					default:
						continue
					}
					break
				}
			default:
				fs.kind = "volume " + v.Name
			}
			return fs
		}
	}
	return fileSource{}
}

// keyFor maps a path inside a Secret/ConfigMap volume back to its key.
func keyFor(items []corev1.KeyToPath, rel string) string {
	if len(items) == 0 {
		return rel
	}
	for _, it := range items {
		if it.Path == rel {
			return it.Key
		}
	}
	return ""
}

// providesPath: a projected source without items provides every key (so
// any single-level path); with items only the listed paths.
func providesPath(items []corev1.KeyToPath, rel string) bool {
	if len(items) == 0 {
		return !strings.Contains(rel, "/")
	}
	return keyFor(items, rel) != ""
}

// secretHasKey checks a Secret is defined here (or created out of band and
// listed in o.external) and holds key.
func (o *objects) secretHasKey(name, key string) error {
	if s := o.secret(name); s != nil {
		if _, ok := s.StringData[key]; ok {
			return nil
		}
		if _, ok := s.Data[key]; ok {
			return nil
		}
		return fmt.Errorf("Secret %s has no key %s", name, key)
	}
	for _, k := range o.external[name] {
		if k == key {
			return nil
		}
	}
	if o.external[name] != nil {
		return fmt.Errorf("Secret %s (created out of band) has no key %s", name, key)
	}
	return fmt.Errorf("Secret %s is not defined", name)
}

// checkSecretFile checks that flag names a file inside a read-only mount of
// a Secret that has that key.
func checkSecretFile(errs *[]string, o *objects, at string, pod *corev1.PodSpec, c *corev1.Container, flag string) {
	file, ok := argValue(c.Args, flag)
	if !ok {
		errorf(errs, "%s: no %s", at, flag)
		return
	}
	src := resolveFile(pod, c, file)
	if src.kind != "Secret" {
		errorf(errs, "%s: %s=%s is not in a mounted Secret (found: %q)", at, flag, file, src.kind)
		return
	}
	if !src.readOnly {
		errorf(errs, "%s: %s: Secret mount of %s must be read-only", at, flag, file)
	}
	if err := o.secretHasKey(src.name, src.key); err != nil {
		errorf(errs, "%s: %s: %v", at, flag, err)
	}
}

// checkNATSConfig checks a NATS StatefulSet's configuration: authorization
// comes from auth.conf included from a Secret, nobody is anonymous, and
// messages as large as the embedded server allows are accepted.
func checkNATSConfig(errs *[]string, o *objects, at string, pod *corev1.PodSpec) {
	if len(pod.Containers) == 0 {
		errorf(errs, "%s: no containers", at)
		return
	}
	c := &pod.Containers[0]
	confPath := ""
	for i, a := range c.Args {
		if (a == "--config" || a == "-c") && i+1 < len(c.Args) {
			confPath = c.Args[i+1]
		}
	}
	src := resolveFile(pod, c, confPath)
	cm := o.configMap(src.name)
	if src.kind != "ConfigMap" || cm == nil || cm.Data[src.key] == "" {
		errorf(errs, "%s: --config %q is not a key of a mounted ConfigMap", at, confPath)
		return
	}
	conf := cm.Data[src.key]
	for _, bad := range []string{"no_auth_user", "authorization", "accounts", "password"} {
		if regexp.MustCompile(`(?m)^\s*` + bad + `\b`).MatchString(conf) {
			errorf(errs, "%s: nats.conf sets %s: authorization must come from auth.conf (operator mode) alone, and nobody may be anonymous", at, bad)
		}
	}
	if !regexp.MustCompile(`(?m)^\s*max_payload:\s*8MB\s*$`).MatchString(conf) {
		errorf(errs, "%s: nats.conf must set max_payload: 8MB like the embedded server (large snapshots)", at)
	}
	inc := regexp.MustCompile(`(?m)^\s*include\s+(\S+)\s*$`).FindAllStringSubmatch(conf, -1)
	if len(inc) != 1 {
		errorf(errs, "%s: nats.conf must include exactly one auth.conf (operator mode from `pennon server nats-config`), found %d includes", at, len(inc))
		return
	}
	// nats-server resolves include relative to the including file.
	authPath := path.Join(path.Dir(confPath), strings.Trim(inc[0][1], `"'`))
	auth := resolveFile(pod, c, authPath)
	if auth.kind != "Secret" {
		errorf(errs, "%s: included %s must come from a Secret (found: %q)", at, authPath, auth.kind)
		return
	}
	if !auth.readOnly {
		errorf(errs, "%s: the mount holding %s must be read-only", at, authPath)
	}
	if err := o.secretHasKey(auth.name, auth.key); err != nil {
		errorf(errs, "%s: %s: %v", at, authPath, err)
	}
}

// checkNATSPolicy checks the NetworkPolicies that select the NATS pods:
// the client port only from the control plane and pods labelled as
// sidecars, the cluster port only from NATS pods, no rule that opens every
// port or every source.
func checkNATSPolicy(errs *[]string, o *objects, t *testing.T, nats workload) {
	t.Helper()
	at := nats.name + " NetworkPolicy"
	var rules []networkingv1.NetworkPolicyIngressRule
	for _, n := range o.netpols {
		for _, w := range o.matching(t, &n.Spec.PodSelector) {
			if w.name == nats.name {
				if !hasIngressType(n) {
					errorf(errs, "%s/%s: policyTypes must include Ingress", at, n.Name)
				}
				rules = append(rules, n.Spec.Ingress...)
			}
		}
	}
	if len(rules) == 0 {
		errorf(errs, "%s: no NetworkPolicy selects the NATS pods", at)
		return
	}
	controlOK, sidecarOK := false, false
	for i, r := range rules {
		where := fmt.Sprintf("%s ingress[%d]", at, i)
		if len(r.Ports) == 0 {
			errorf(errs, "%s: allows every port; name the port", where)
		}
		if len(r.From) == 0 {
			errorf(errs, "%s: allows every source", where)
			continue
		}
		for _, p := range r.Ports {
			port := portNumber(p.Port)
			for j, peer := range r.From {
				pw := fmt.Sprintf("%s from[%d] port %d", where, j, port)
				if peer.IPBlock != nil {
					errorf(errs, "%s: ipBlock peers are not allowed on NATS", pw)
					continue
				}
				switch port {
				case 4222:
					switch kind := o.peerKind(t, peer); kind {
					case "control":
						controlOK = true
					case "sidecar":
						sidecarOK = true
					default:
						errorf(errs, "%s: the client port is only for the control plane and pods labelled pennon.dev/sidecar=true (%s)", pw, kind)
					}
				case 6222:
					if o.peerKind(t, peer) != "nats" {
						errorf(errs, "%s: the cluster port is only for NATS pods (a route is trusted by the cluster)", pw)
					}
				case 8222:
					// Monitoring: any named source (Prometheus' namespace).
				default:
					errorf(errs, "%s: unexpected port", pw)
				}
			}
		}
	}
	if !controlOK {
		errorf(errs, "%s: the control plane cannot reach the client port 4222", at)
	}
	if !sidecarOK {
		errorf(errs, "%s: pods labelled pennon.dev/sidecar=true cannot reach the client port 4222", at)
	}
}

// peerKind classifies a NetworkPolicy peer: "sidecar" (pods that require
// the sidecar label, in any namespace), "control" or "nats" (a pod
// selector in the policy's namespace that selects only those workloads),
// or a description of what else it lets in.
func (o *objects) peerKind(t *testing.T, p networkingv1.NetworkPolicyPeer) string {
	t.Helper()
	if p.PodSelector == nil {
		return "every pod of the selected namespaces"
	}
	if p.PodSelector.MatchLabels["pennon.dev/sidecar"] == "true" {
		return "sidecar"
	}
	if p.NamespaceSelector != nil {
		return "pods in other namespaces"
	}
	if len(p.PodSelector.MatchLabels) == 0 && len(p.PodSelector.MatchExpressions) == 0 {
		return "every pod in the namespace"
	}
	ws := o.matching(t, p.PodSelector)
	kind := ""
	for _, w := range ws {
		k := "other"
		switch {
		case strings.HasPrefix(w.name, "Deployment/") && strings.HasSuffix(w.name, "control"):
			k = "control"
		case strings.HasPrefix(w.name, "StatefulSet/") && (w.name == "StatefulSet/nats" || strings.HasSuffix(w.name, "-nats")):
			k = "nats"
		}
		if kind != "" && kind != k {
			return "a selector matching several kinds of workload"
		}
		kind = k
	}
	if kind == "" || kind == "other" {
		return fmt.Sprintf("pods matching %v", p.PodSelector.MatchLabels)
	}
	return kind
}

func hasIngressType(n *networkingv1.NetworkPolicy) bool {
	if len(n.Spec.PolicyTypes) == 0 {
		return true // Ingress is implied
	}
	for _, pt := range n.Spec.PolicyTypes {
		if pt == networkingv1.PolicyTypeIngress {
			return true
		}
	}
	return false
}

func portNumber(p *intstr.IntOrString) int {
	switch {
	case p == nil:
		return 0
	case p.Type == intstr.String:
		return natsPorts[p.StrVal]
	default:
		return p.IntValue()
	}
}

var (
	// nkey seeds (SO…, SA…, SU…), NATS creds files and pennon signing keys.
	secretLooking = regexp.MustCompile(`\bS[OAU][A-Z2-7]{50,}\b|NATS USER NKEY SEED|pennon-ed25519-private:`)
	// nats://user:password@host or a token in a URL.
	urlUserinfo = regexp.MustCompile(`[a-z]+://[^/\s@]+@`)
	// Flags that would carry a secret value instead of a file path.
	secretFlags = regexp.MustCompile(`^--(token|admin-token|nats-token|nats-password|nats-seed|signing-key|account-seed)(=|$)`)
	// Environment variable names that hold secrets (a *_FILE path is fine).
	secretEnvName = regexp.MustCompile(`(TOKEN|SEED|PASSWORD|SECRET|CREDS|PRIVATE|SIGNING_KEY)$`)
)

// checkNoSecretValues: no container has a secret on its command line or as
// an environment literal, and no ConfigMap holds a seed or private key.
// Secret values defined in these manifests are looked for verbatim too.
func checkNoSecretValues(errs *[]string, o *objects) {
	var values []string
	for _, s := range o.secrets {
		for _, v := range s.StringData {
			if len(v) >= 8 {
				values = append(values, v)
			}
		}
		for _, v := range s.Data {
			if len(v) >= 8 {
				values = append(values, string(v))
			}
		}
	}
	for _, w := range o.workloads() {
		pod := &w.template.Spec
		all := append(append([]corev1.Container{}, pod.InitContainers...), pod.Containers...)
		for _, c := range all {
			at := w.name + " container " + c.Name
			for _, a := range append(append([]string{}, c.Command...), c.Args...) {
				if secretFlags.MatchString(a) {
					errorf(errs, "%s: %q passes a secret as an argument (visible in ps); use the *-file flag with a mounted Secret", at, a)
				}
				if urlUserinfo.MatchString(a) {
					errorf(errs, "%s: %q puts credentials in a URL; use --nats-creds", at, a)
				}
				if secretLooking.MatchString(a) {
					errorf(errs, "%s: an argument holds a key or seed", at)
				}
				for _, v := range values {
					if strings.Contains(a, v) {
						errorf(errs, "%s: an argument holds a Secret's value", at)
					}
				}
			}
			for _, e := range c.Env {
				if e.Value != "" && (secretEnvName.MatchString(e.Name) || secretLooking.MatchString(e.Value) || urlUserinfo.MatchString(e.Value)) {
					errorf(errs, "%s: env %s is a literal secret; mount a Secret and pass its path", at, e.Name)
				}
			}
		}
	}
	for _, cm := range o.configMaps {
		for k, v := range cm.Data {
			if secretLooking.MatchString(v) || strings.Contains(v, "BEGIN NATS USER JWT") {
				errorf(errs, "ConfigMap/%s: key %s holds a seed, credentials or a private key; those belong in a Secret", cm.Name, k)
			}
		}
	}
}

// checkTokenPrivate: the sidecar's token Secret is mounted into the sidecar
// container only. App containers share the sidecar's network namespace and
// so can reach NATS and the control plane; they must not also hold the
// token that exchanges for NATS credentials.
func checkTokenPrivate(errs *[]string, at string, pod *corev1.PodSpec, sidecar *corev1.Container) {
	file, _ := argValue(sidecar.Args, "--token-file")
	src := resolveFile(pod, sidecar, file)
	if src.volume == "" {
		return // reported by checkSecretFile
	}
	all := append(append([]corev1.Container{}, pod.InitContainers...), pod.Containers...)
	for _, c := range all {
		if c.Name == sidecar.Name {
			continue
		}
		for _, m := range c.VolumeMounts {
			if m.Name == src.volume {
				errorf(errs, "%s: the token volume %s is also mounted by container %s; only the sidecar may read its token", at, src.volume, c.Name)
			}
		}
	}
}

// secretRef is a Secret volume or projected source.
type secretRef struct {
	name     string
	items    []corev1.KeyToPath
	optional *bool
}

// TestDocsCreateTheSecrets: the `kubectl create secret` commands in
// docs/deploy.md create exactly the Secrets and keys the manifests mount
// (optional ones aside), so following the documentation starts every pod.
func TestDocsCreateTheSecrets(t *testing.T) {
	o := &objects{}
	for _, f := range []string{"nats.yaml", "control.yaml", "example-app.yaml"} {
		b, err := os.ReadFile(filepath.Join("k8s", f))
		if err != nil {
			t.Fatal(err)
		}
		decodeAll(t, o, f, b)
	}
	used := map[string]bool{} // "secret/key"
	for _, w := range o.workloads() {
		for _, v := range w.template.Spec.Volumes {
			var refs []secretRef
			if v.Secret != nil {
				refs = append(refs, secretRef{v.Secret.SecretName, v.Secret.Items, v.Secret.Optional})
			}
			if v.Projected != nil {
				for _, s := range v.Projected.Sources {
					if s.Secret != nil {
						refs = append(refs, secretRef{s.Secret.Name, s.Secret.Items, s.Secret.Optional})
					}
				}
			}
			for _, r := range refs {
				if r.optional != nil && *r.optional {
					continue
				}
				if len(r.items) == 0 {
					t.Errorf("%s volume %s: Secret %s without items; name the keys so a missing one fails the mount", w.name, v.Name, r.name)
				}
				for _, it := range r.items {
					used[r.name+"/"+it.Key] = true
				}
			}
		}
	}
	doc, err := os.ReadFile(filepath.Join("..", "docs", "deploy.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(doc), "\\\n", " ")
	created := map[string]bool{}
	cmd := regexp.MustCompile(`create secret generic (\S+)((?:\s+--from-(?:file|literal)=\S+)+)`)
	key := regexp.MustCompile(`--from-(?:file|literal)=([^=\s]+)=`)
	for _, m := range cmd.FindAllStringSubmatch(text, -1) {
		for _, k := range key.FindAllStringSubmatch(m[2], -1) {
			created[m[1]+"/"+k[1]] = true
		}
	}
	for k := range used {
		if !created[k] {
			t.Errorf("the manifests mount %s, but docs/deploy.md creates no such Secret key", k)
		}
	}
	for k := range created {
		if !used[k] {
			t.Errorf("docs/deploy.md creates %s, which no manifest mounts", k)
		}
	}
}
