package deploy

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Prometheus Operator kinds, reduced to the fields we use: decoding is
// strict, so a misspelt or misplaced field fails the test, and pulling in
// the operator's module for three types is not worth its build time.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type podMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		NamespaceSelector struct {
			Any        bool     `json:"any"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector"`
		Selector            metav1.LabelSelector `json:"selector"`
		PodMetricsEndpoints []struct {
			Port        string `json:"port"`
			Path        string `json:"path"`
			Interval    string `json:"interval"`
			Relabelings []struct {
				SourceLabels []string `json:"sourceLabels"`
				TargetLabel  string   `json:"targetLabel"`
			} `json:"relabelings"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for,omitempty"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// objects is every decoded manifest, by kind.
type objects struct {
	namespaces      []*corev1.Namespace
	configMaps      []*corev1.ConfigMap
	secrets         []*corev1.Secret
	services        []*corev1.Service
	deployments     []*appsv1.Deployment
	statefulSets    []*appsv1.StatefulSet
	pdbs            []*policyv1.PodDisruptionBudget
	netpols         []*networkingv1.NetworkPolicy
	serviceMonitors []*serviceMonitor
	podMonitors     []*podMonitor
	rules           []*prometheusRule
	// external lists Secrets created out of band (by the documented
	// kubectl commands, not by the manifests) with the keys they hold.
	external map[string][]string
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// decodeAll splits multi-document YAML and decodes each document strictly
// into its API type. name locates errors.
func decodeAll(t *testing.T, o *objects, name string, data []byte) {
	t.Helper()
	for i, doc := range docSep.Split(string(data), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("%s document %d: %v", name, i, err)
		}
		var target any
		switch tm.APIVersion + "/" + tm.Kind {
		case "v1/Namespace":
			v := &corev1.Namespace{}
			o.namespaces, target = append(o.namespaces, v), v
		case "v1/ConfigMap":
			v := &corev1.ConfigMap{}
			o.configMaps, target = append(o.configMaps, v), v
		case "v1/Secret":
			v := &corev1.Secret{}
			o.secrets, target = append(o.secrets, v), v
		case "v1/Service":
			v := &corev1.Service{}
			o.services, target = append(o.services, v), v
		case "apps/v1/Deployment":
			v := &appsv1.Deployment{}
			o.deployments, target = append(o.deployments, v), v
		case "apps/v1/StatefulSet":
			v := &appsv1.StatefulSet{}
			o.statefulSets, target = append(o.statefulSets, v), v
		case "policy/v1/PodDisruptionBudget":
			v := &policyv1.PodDisruptionBudget{}
			o.pdbs, target = append(o.pdbs, v), v
		case "networking.k8s.io/v1/NetworkPolicy":
			v := &networkingv1.NetworkPolicy{}
			o.netpols, target = append(o.netpols, v), v
		case "monitoring.coreos.com/v1/ServiceMonitor":
			v := &serviceMonitor{}
			o.serviceMonitors, target = append(o.serviceMonitors, v), v
		case "monitoring.coreos.com/v1/PodMonitor":
			v := &podMonitor{}
			o.podMonitors, target = append(o.podMonitors, v), v
		case "monitoring.coreos.com/v1/PrometheusRule":
			v := &prometheusRule{}
			o.rules, target = append(o.rules, v), v
		default:
			t.Fatalf("%s document %d: unexpected kind %s/%s", name, i, tm.APIVersion, tm.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), target); err != nil {
			t.Errorf("%s document %d (%s): strict decode: %v", name, i, tm.Kind, err)
		}
	}
}

func stripComments(doc string) string {
	var b bytes.Buffer
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// workload is a pod template with where it came from.
type workload struct {
	name     string
	selector *metav1.LabelSelector
	template *corev1.PodTemplateSpec
}

func (o *objects) workloads() []workload {
	var ws []workload
	for _, d := range o.deployments {
		ws = append(ws, workload{"Deployment/" + d.Name, d.Spec.Selector, &d.Spec.Template})
	}
	for _, s := range o.statefulSets {
		ws = append(ws, workload{"StatefulSet/" + s.Name, s.Spec.Selector, &s.Spec.Template})
	}
	return ws
}

// matching returns the workloads whose pod labels a selector selects.
func (o *objects) matching(t *testing.T, sel *metav1.LabelSelector) []workload {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %v: %v", sel, err)
	}
	var out []workload
	for _, w := range o.workloads() {
		if s.Matches(labelSet(w.template.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

type labelSet map[string]string

func (l labelSet) Has(k string) bool              { _, ok := l[k]; return ok }
func (l labelSet) Get(k string) string            { return l[k] }
func (l labelSet) Lookup(k string) (string, bool) { v, ok := l[k]; return v, ok }

func (o *objects) configMap(name string) *corev1.ConfigMap {
	for _, c := range o.configMaps {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func (o *objects) secret(name string) *corev1.Secret {
	for _, s := range o.secrets {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func (o *objects) service(name string) *corev1.Service {
	for _, s := range o.services {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func containerPort(c *corev1.Container, name string) bool {
	for _, p := range c.Ports {
		if p.Name == name {
			return true
		}
	}
	return false
}

func argValue(args []string, flag string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v, true
		}
	}
	return "", false
}

func errorf(errs *[]string, format string, a ...any) {
	*errs = append(*errs, fmt.Sprintf(format, a...))
}
