package inject

import (
	"bytes"
	"fmt"
	"regexp"
	"text/template"

	"gopkg.in/yaml.v3"
)

// Names inject adds. Reusing them is how a second run recognises its own work.
const (
	ContainerName       = "pennon"
	StateVolume         = "pennon-state"
	DefaultsVolume      = "pennon-defaults"
	TokenVolume         = "pennon-token" // the API token Secret, mounted into the sidecar only
	NATSCAVolume        = "pennon-nats-ca"
	LabelSidecar        = "pennon.dev/sidecar"
	AnnotationInjected  = "pennon.dev/injected"
	AnnotationEnv       = "pennon.dev/env"
	AnnotationOptOut    = "pennon.dev/inject" // "false" on a pod template skips it
	defaultsFile        = "defaults.json"
	defaultsMountPath   = "/etc/pennon"
	stateMountPath      = "/var/lib/pennon"
	tokenMountPath      = "/var/run/secrets/pennon"
	tokenFile           = "token"
	natsCAMountPath     = "/var/run/secrets/pennon-nats"
	natsCAFile          = "ca.crt"
	sidecarAddr         = "127.0.0.1:8016"
	sidecarHealthAddr   = "0.0.0.0:8017"
	sidecarHealthPort   = 8017
	sidecarHealthPortNm = "pennon-health"
)

// Options choose what the injected sidecar connects to. The zero value of
// each field takes the default shown, which matches deploy/k8s.
type Options struct {
	Image             string // ghcr.io/pennon-dev/pennon:latest
	Env               string // production
	Server            string // http://pennon-control.pennon:8080
	NATS              string // nats://nats.pennon:4222
	TokenSecret       string // pennon-sidecar-token (key "token")
	DefaultsConfigMap string // pennon-defaults (key "defaults.json")
	CPURequest        string // 50m
	CPULimit          string // 1
	MemoryRequest     string // 64Mi
	MemoryLimit       string // 256Mi
	// TrustKeys pin the control plane's signing keys (--trust-key,
	// "ed25519:<base64>"); two during a rotation. Empty: the sidecar trusts
	// the key it gets at bootstrap.
	TrustKeys []string
	// NATSCAConfigMap names a ConfigMap (key "ca.crt") with the CA that
	// signs the NATS servers' certificates, for NATS over TLS (--nats-ca).
	// A CA certificate is public, so a ConfigMap (e.g. from trust-manager)
	// is the right home. Empty: no TLS settings.
	NATSCAConfigMap string
}

func (o Options) withDefaults() Options {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&o.Image, "ghcr.io/pennon-dev/pennon:latest")
	def(&o.Env, "production")
	def(&o.Server, "http://pennon-control.pennon:8080")
	def(&o.NATS, "nats://nats.pennon:4222")
	def(&o.TokenSecret, "pennon-sidecar-token")
	def(&o.DefaultsConfigMap, "pennon-defaults")
	def(&o.CPURequest, "50m")
	def(&o.CPULimit, "1")
	def(&o.MemoryRequest, "64Mi")
	def(&o.MemoryLimit, "256Mi")
	return o
}

var (
	dnsName   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	quantity  = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$`)
	envName   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	urlScheme = regexp.MustCompile(`^(https?|nats|tls)://[^\s]+$`)
	trustKey  = regexp.MustCompile(`^ed25519:[A-Za-z0-9+/]{43}=$`)
)

// validate reports every bad option at once, naming the flag to fix.
func (o Options) validate() error {
	var probs []string
	check := func(ok bool, format string, a ...any) {
		if !ok {
			probs = append(probs, fmt.Sprintf(format, a...))
		}
	}
	check(o.Image != "" && !bytes.ContainsAny([]byte(o.Image), " \t\n\"'"), "image: %q is not an image reference", o.Image)
	check(envName.MatchString(o.Env), "env: %q must match %s", o.Env, envName)
	check(urlScheme.MatchString(o.Server), "server: %q must be an http(s) URL", o.Server)
	check(urlScheme.MatchString(o.NATS), "nats: %q must be a nats:// URL", o.NATS)
	check(dnsName.MatchString(o.TokenSecret), "token-secret: %q is not a Secret name", o.TokenSecret)
	check(dnsName.MatchString(o.DefaultsConfigMap), "defaults-configmap: %q is not a ConfigMap name", o.DefaultsConfigMap)
	for i, k := range o.TrustKeys {
		check(trustKey.MatchString(k), "trust-key[%d]: %q is not a public key (want ed25519: and 44 base64 characters, as `pennon server keygen` prints it)", i, k)
	}
	check(o.NATSCAConfigMap == "" || dnsName.MatchString(o.NATSCAConfigMap), "nats-ca-configmap: %q is not a ConfigMap name", o.NATSCAConfigMap)
	for _, q := range []struct{ name, v string }{{"cpu-request", o.CPURequest}, {"cpu-limit", o.CPULimit}, {"memory-request", o.MemoryRequest}, {"memory-limit", o.MemoryLimit}} {
		check(quantity.MatchString(q.v), "%s: %q is not a Kubernetes quantity (e.g. 50m, 1, 64Mi)", q.name, q.v)
	}
	if len(probs) > 0 {
		return fmt.Errorf("inject options: %s", joinLines(probs))
	}
	return nil
}

func joinLines(s []string) string {
	var b bytes.Buffer
	for i, p := range s {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p)
	}
	return b.String()
}

// The sidecar, as YAML, so it reads like the manifests it is copied into.
// Values are quoted through the q function; options are validated first.
var sidecarTmpl = template.Must(template.New("sidecar").Funcs(template.FuncMap{"q": func(s string) string {
	b, _ := yaml.Marshal(s) // a string always marshals
	return string(bytes.TrimSpace(b))
}}).Parse(`
name: ` + ContainerName + `
image: {{q .Image}}
args:
  - sidecar
  - --env={{.Env}}
  - --server={{.Server}}
  - --nats={{.NATS}}
  - --addr=` + sidecarAddr + `
  - --health-addr=` + sidecarHealthAddr + `
  - --state-dir=` + stateMountPath + `
  - --defaults=` + defaultsMountPath + `/` + defaultsFile + `
  - --token-file=` + tokenMountPath + `/` + tokenFile + `
{{- range .TrustKeys}}
  - --trust-key={{.}}
{{- end}}
{{- if .NATSCAConfigMap}}
  - --nats-ca=` + natsCAMountPath + `/` + natsCAFile + `
{{- end}}
ports:
  - name: ` + sidecarHealthPortNm + `
    containerPort: {{.HealthPort}}
startupProbe:
  httpGet:
    path: /healthz
    port: ` + sidecarHealthPortNm + `
  periodSeconds: 1
  failureThreshold: 30
readinessProbe:
  httpGet:
    path: /readyz
    port: ` + sidecarHealthPortNm + `
  periodSeconds: 5
  failureThreshold: 2
livenessProbe:
  httpGet:
    path: /healthz
    port: ` + sidecarHealthPortNm + `
  periodSeconds: 10
  failureThreshold: 3
resources:
  requests:
    cpu: {{q .CPURequest}}
    memory: {{q .MemoryRequest}}
  limits:
    cpu: {{q .CPULimit}}
    memory: {{q .MemoryLimit}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
  seccompProfile:
    type: RuntimeDefault
volumeMounts:
  - name: ` + StateVolume + `
    mountPath: ` + stateMountPath + `
  - name: ` + DefaultsVolume + `
    mountPath: ` + defaultsMountPath + `
    readOnly: true
  - name: ` + TokenVolume + `
    mountPath: ` + tokenMountPath + `
    readOnly: true
{{- if .NATSCAConfigMap}}
  - name: ` + NATSCAVolume + `
    mountPath: ` + natsCAMountPath + `
    readOnly: true
{{- end}}
`))

var volumesTmpl = template.Must(template.New("volumes").Parse(`
- name: ` + StateVolume + `
  emptyDir:
    sizeLimit: 64Mi
- name: ` + DefaultsVolume + `
  configMap:
    name: {{.DefaultsConfigMap}}
- name: ` + TokenVolume + `
  secret:
    secretName: {{.TokenSecret}}
    defaultMode: 0444
    items:
      - key: ` + tokenFile + `
        path: ` + tokenFile + `
{{- if .NATSCAConfigMap}}
- name: ` + NATSCAVolume + `
  configMap:
    name: {{.NATSCAConfigMap}}
    items:
      - key: ` + natsCAFile + `
        path: ` + natsCAFile + `
{{- end}}
`))

// sidecarNodes renders the container and the two volumes as YAML nodes.
func sidecarNodes(o Options) (container *yaml.Node, volumes []*yaml.Node, err error) {
	data := struct {
		Options
		HealthPort int
	}{o, sidecarHealthPort}
	var c, v bytes.Buffer
	if err := sidecarTmpl.Execute(&c, data); err != nil {
		return nil, nil, err
	}
	if err := volumesTmpl.Execute(&v, data); err != nil {
		return nil, nil, err
	}
	var cn, vn yaml.Node
	if err := yaml.Unmarshal(c.Bytes(), &cn); err != nil {
		return nil, nil, fmt.Errorf("sidecar template: %w", err)
	}
	if err := yaml.Unmarshal(v.Bytes(), &vn); err != nil {
		return nil, nil, fmt.Errorf("volumes template: %w", err)
	}
	return cn.Content[0], vn.Content[0].Content, nil
}
