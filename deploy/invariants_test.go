package deploy

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Metric names the alerts rely on: pennon_evaluation* from proxy,
// pennon_sync_* from sync, pennon_emergency_changes_total from control;
// pennon_expired_flag_evaluations_total is proposed (docs/deploy.md).
var wantMetrics = []string{
	"pennon_sync_state", "pennon_sync_version",
	"pennon_evaluations_total", "pennon_evaluation_errors_total", "pennon_evaluation_duration_seconds_bucket",
	"pennon_expired_flag_evaluations_total", "pennon_emergency_changes_total",
}

var wantAlerts = []string{
	"PennonSidecarDegraded", "PennonSidecarStale", "PennonSidecarErrorRate",
	"PennonSidecarLatencyP99", "PennonEmergencyChangeApplied", "PennonExpiredFlagServed",
	// issue 13: behaviour against its own past, the fleet, anomalies, notifications
	"PennonEvaluationLatencySpike", "PennonErrorRateIncrease", "PennonCacheHitRateDrop", "PennonSidecarsLost",
	"PennonSidecarsBehind", "PennonSidecarRewind", "PennonFlagAnomaly", "PennonFallbackAnswersServed", "PennonWebhookDeliveryFailing",
}

// checkInvariants checks what every rendering of pennon's deployment must
// hold, whether from deploy/k8s or the Helm chart.
func checkInvariants(t *testing.T, o *objects) {
	t.Helper()
	for _, e := range invariantErrors(t, o) {
		t.Error(e)
	}
}

func invariantErrors(t *testing.T, o *objects) []string {
	t.Helper()
	var errs []string

	// Every workload: selector selects its own template, every container
	// hardened and resourced.
	for _, w := range o.workloads() {
		found := false
		for _, m := range o.matching(t, w.selector) {
			found = found || m.name == w.name
		}
		if !found {
			errorf(&errs, "%s: selector %v does not match its pod labels %v", w.name, w.selector.MatchLabels, w.template.Labels)
		}
		pod := &w.template.Spec
		for i := range pod.Containers {
			checkContainer(&errs, w.name, pod, &pod.Containers[i])
		}
		for _, v := range pod.Volumes {
			cms := []string{}
			if v.ConfigMap != nil {
				cms = append(cms, v.ConfigMap.Name)
			}
			if v.Projected != nil {
				for _, s := range v.Projected.Sources {
					if s.ConfigMap != nil {
						cms = append(cms, s.ConfigMap.Name)
					}
				}
			}
			for _, cm := range cms {
				if o.configMap(cm) == nil {
					errorf(&errs, "%s: volume %s uses ConfigMap %s, which is not defined", w.name, v.Name, cm)
				}
			}
		}
	}

	// Services and PDBs select something, and name ports that exist.
	for _, s := range o.services {
		ws := o.matching(t, selectorFor(s.Spec.Selector))
		if len(ws) == 0 {
			errorf(&errs, "Service/%s: selector %v matches no workload", s.Name, s.Spec.Selector)
			continue
		}
		for _, p := range s.Spec.Ports {
			if p.TargetPort.Type == intstr.String && !anyContainerPort(ws, p.TargetPort.StrVal) {
				errorf(&errs, "Service/%s: targetPort %q is no container port of %s", s.Name, p.TargetPort.StrVal, ws[0].name)
			}
		}
	}
	for _, p := range o.pdbs {
		if len(o.matching(t, p.Spec.Selector)) == 0 {
			errorf(&errs, "PodDisruptionBudget/%s: selector matches no workload", p.Name)
		}
	}
	for _, n := range o.netpols {
		if len(o.matching(t, &n.Spec.PodSelector)) == 0 {
			errorf(&errs, "NetworkPolicy/%s: podSelector matches no workload", n.Name)
		}
	}

	// NATS: 3 replicas, persistent volumes, a headless governing service.
	natsOK := false
	for _, s := range o.statefulSets {
		if s.Name != "nats" && !strings.HasSuffix(s.Name, "-nats") {
			continue
		}
		natsOK = true
		if s.Spec.Replicas == nil || *s.Spec.Replicas != 3 {
			errorf(&errs, "StatefulSet/%s: want 3 replicas for a JetStream R3 majority", s.Name)
		}
		if len(s.Spec.VolumeClaimTemplates) == 0 {
			errorf(&errs, "StatefulSet/%s: no volumeClaimTemplates: JetStream data would not persist", s.Name)
		}
		if h := o.service(s.Spec.ServiceName); h == nil || h.Spec.ClusterIP != corev1.ClusterIPNone {
			errorf(&errs, "StatefulSet/%s: serviceName %q is not a headless Service", s.Name, s.Spec.ServiceName)
		}
		if cm := o.configMap(s.Name + "-config"); cm == nil || !strings.Contains(cm.Data["nats.conf"], "routes") || !strings.Contains(cm.Data["nats.conf"], "jetstream") {
			errorf(&errs, "StatefulSet/%s: ConfigMap %s-config must configure jetstream and cluster routes", s.Name, s.Name)
		}
		checkNATSConfig(&errs, o, "StatefulSet/"+s.Name, &s.Spec.Template.Spec)
		checkNATSPolicy(&errs, o, t, workload{"StatefulSet/" + s.Name, s.Spec.Selector, &s.Spec.Template})
	}
	if !natsOK {
		errorf(&errs, "no NATS StatefulSet")
	}

	// Control plane: 2+ replicas, a PDB, an admin token from a Secret.
	controlOK := false
	for _, d := range o.deployments {
		if !strings.HasSuffix(d.Name, "control") {
			continue
		}
		controlOK = true
		if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
			errorf(&errs, "Deployment/%s: want at least 2 replicas", d.Name)
		}
		pdb := false
		for _, p := range o.pdbs {
			for _, w := range o.matching(t, p.Spec.Selector) {
				pdb = pdb || w.name == "Deployment/"+d.Name
			}
		}
		if !pdb {
			errorf(&errs, "Deployment/%s: no PodDisruptionBudget", d.Name)
		}
		// Every secret the control plane holds is a file from a Secret:
		// the admin token, its NATS identity, the account key that mints
		// sidecar credentials, and the changeset signing key (shared by all
		// replicas, so never generated per pod).
		for _, flag := range []string{"--admin-token-file", "--nats-creds", "--nats-account-seed-file", "--signing-key-file"} {
			checkSecretFile(&errs, o, "Deployment/"+d.Name, &d.Spec.Template.Spec, &d.Spec.Template.Spec.Containers[0], flag)
		}
		if _, ok := argValue(d.Spec.Template.Spec.Containers[0].Args, "--nats-url"); !ok {
			errorf(&errs, "Deployment/%s: no --nats-url (the embedded single-node NATS is not for Kubernetes)", d.Name)
		}
	}
	if !controlOK {
		errorf(&errs, "no control plane Deployment")
	}

	// Sidecars.
	sidecars := 0
	for _, w := range o.workloads() {
		for i := range w.template.Spec.Containers {
			c := &w.template.Spec.Containers[i]
			if len(c.Args) > 0 && c.Args[0] == "sidecar" {
				sidecars++
				checkSidecar(&errs, o, w, c)
			}
		}
	}
	if sidecars == 0 {
		errorf(&errs, "no workload carries the pennon sidecar")
	}
	checkNoSecretValues(&errs, o)

	// Monitoring.
	alerts := map[string]string{}
	for _, r := range o.rules {
		for _, g := range r.Spec.Groups {
			for _, rule := range g.Rules {
				alerts[rule.Alert] = rule.Expr
				if rule.Labels["severity"] == "" || rule.Annotations["summary"] == "" {
					errorf(&errs, "alert %s: needs a severity label and a summary", rule.Alert)
				}
			}
		}
	}
	for _, a := range wantAlerts {
		if alerts[a] == "" {
			errorf(&errs, "PrometheusRule: alert %s missing", a)
		}
	}
	var all strings.Builder
	for _, e := range alerts {
		all.WriteString(e + "\n")
	}
	for _, m := range wantMetrics {
		if !strings.Contains(all.String(), m) {
			errorf(&errs, "PrometheusRule: no alert uses %s", m)
		}
	}
	if len(o.serviceMonitors) == 0 || len(o.podMonitors) == 0 {
		errorf(&errs, "want a ServiceMonitor (control plane) and a PodMonitor (sidecars)")
	}
	for _, pm := range o.podMonitors {
		if len(o.matching(t, &pm.Spec.Selector)) == 0 {
			errorf(&errs, "PodMonitor/%s: selects no workload", pm.Name)
		}
	}
	return errs
}

func checkContainer(errs *[]string, where string, pod *corev1.PodSpec, c *corev1.Container) {
	at := where + " container " + c.Name
	r := c.Resources
	if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
		errorf(errs, "%s: needs cpu and memory requests and a memory limit", at)
	}
	sc := c.SecurityContext
	if sc == nil {
		errorf(errs, "%s: no securityContext", at)
		return
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		errorf(errs, "%s: allowPrivilegeEscalation must be false", at)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		errorf(errs, "%s: readOnlyRootFilesystem must be true", at)
	}
	if sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) > 0 {
		errorf(errs, "%s: must drop ALL capabilities and add none", at)
	}
	nonRoot := sc.RunAsNonRoot != nil && *sc.RunAsNonRoot
	if pod.SecurityContext != nil && pod.SecurityContext.RunAsNonRoot != nil && *pod.SecurityContext.RunAsNonRoot {
		nonRoot = true
	}
	if !nonRoot {
		errorf(errs, "%s: must run as non-root", at)
	}
}

func checkSidecar(errs *[]string, o *objects, w workload, c *corev1.Container) {
	at := w.name + " sidecar " + c.Name
	if addr, _ := argValue(c.Args, "--addr"); addr != "127.0.0.1:8016" {
		errorf(errs, "%s: OFREP must bind 127.0.0.1:8016, got --addr=%q", at, addr)
	}
	for _, flag := range []string{"--env", "--server", "--nats", "--state-dir", "--defaults", "--health-addr"} {
		if _, ok := argValue(c.Args, flag); !ok {
			errorf(errs, "%s: missing %s", at, flag)
		}
	}
	for _, a := range c.Args {
		if a == "--token" || strings.HasPrefix(a, "--token=") {
			errorf(errs, "%s: token passed as an argument; use --token-file with a mounted Secret", at)
		}
	}
	for _, e := range c.Env {
		if e.Name == "PENNON_TOKEN" {
			errorf(errs, "%s: PENNON_TOKEN in the environment (readable in /proc); use --token-file with a mounted Secret", at)
		}
	}
	checkSecretFile(errs, o, at, &w.template.Spec, c, "--token-file")
	checkTokenPrivate(errs, at, &w.template.Spec, c)
	probe := func(name string, p *corev1.Probe, path string) {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path {
			errorf(errs, "%s: %s probe must GET %s", at, name, path)
			return
		}
		if p.HTTPGet.Port.Type != intstr.String || !containerPort(c, p.HTTPGet.Port.StrVal) {
			errorf(errs, "%s: %s probe port %v is not a named container port", at, name, p.HTTPGet.Port)
		}
		if p.HTTPGet.Host != "" {
			errorf(errs, "%s: %s probe sets host (the kubelet would probe the node, not the pod)", at, name)
		}
	}
	probe("readiness", c.ReadinessProbe, "/readyz")
	probe("liveness", c.LivenessProbe, "/healthz")

	stateDir, _ := argValue(c.Args, "--state-dir")
	defaults, _ := argValue(c.Args, "--defaults")
	vols := map[string]corev1.Volume{}
	for _, v := range w.template.Spec.Volumes {
		vols[v.Name] = v
	}
	var stateOK, defaultsOK bool
	for _, m := range c.VolumeMounts {
		v := vols[m.Name]
		if m.MountPath == stateDir && v.EmptyDir != nil && !m.ReadOnly {
			stateOK = true
		}
		if strings.HasPrefix(defaults, m.MountPath+"/") && v.ConfigMap != nil && m.ReadOnly {
			cm := o.configMap(v.ConfigMap.Name)
			defaultsOK = cm != nil && cm.Data[strings.TrimPrefix(defaults, m.MountPath+"/")] != ""
		}
	}
	if !stateOK {
		errorf(errs, "%s: --state-dir %s must be a writable emptyDir mount", at, stateDir)
	}
	if !defaultsOK {
		errorf(errs, "%s: --defaults %s must be a key of a read-only mounted ConfigMap", at, defaults)
	}
	if w.template.Labels["pennon.dev/sidecar"] != "true" {
		errorf(errs, "%s: pod template needs label pennon.dev/sidecar=true (NetworkPolicies and PodMonitor select on it)", at)
	}
}

func anyContainerPort(ws []workload, name string) bool {
	for _, w := range ws {
		for i := range w.template.Spec.Containers {
			if containerPort(&w.template.Spec.Containers[i], name) {
				return true
			}
		}
	}
	return false
}
