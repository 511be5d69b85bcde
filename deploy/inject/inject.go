// Package inject adds the pennon sidecar to Kubernetes workloads, the way
// service-mesh inject commands do: it reads YAML, finds every pod template
// (Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs,
// and those inside a List), adds the sidecar container (a native sidecar,
// i.e. an init container with restartPolicy Always, in pods meant to
// finish), its volumes (last-known-good state, secure defaults, and the
// API token Secret, which only the sidecar container mounts), the label
// pennon.dev/sidecar=true that the NATS and control-plane NetworkPolicies
// select on, annotations, and writes everything back. It is idempotent: what
// is already there is left alone, so a second run changes nothing. Documents
// that are not workloads pass through untouched. It works on yaml.v3 nodes,
// so key order and comments survive; indentation is normalised to 2 spaces.
package inject

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"gopkg.in/yaml.v3"
)

// Stats say what a run did.
type Stats struct {
	Documents int // YAML documents read
	Workloads int // pod templates found
	Injected  int // pod templates changed
	Skipped   int // opted out with pennon.dev/inject: "false"
}

// Inject reads YAML documents from r and writes them to w with the sidecar
// added to every pod template. Errors name the document and the path.
func Inject(r io.Reader, w io.Writer, o Options) (Stats, error) {
	var st Stats
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return st, err
	}
	in, err := io.ReadAll(r)
	if err != nil {
		return st, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(in))
	var docs []*yaml.Node
	var nums []int // each kept document's position in the input, for errors
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return st, fmt.Errorf("document %d: %w", st.Documents+1, err)
		}
		st.Documents++
		// Empty documents (a stray "---", comments only) are dropped: yaml.v3
		// re-encodes them differently each time, which would break idempotence.
		if !emptyDoc(&doc) {
			docs = append(docs, &doc)
			nums = append(nums, st.Documents)
		}
	}
	if len(docs) == 0 {
		// Nothing but whitespace or comments: hand it back as it came.
		_, err := w.Write(in)
		return st, err
	}
	for i, doc := range docs {
		if err := injectObject(doc.Content[0], o, &st, fmt.Sprintf("document %d", nums[i])); err != nil {
			return st, err
		}
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	for _, doc := range docs {
		if err := enc.Encode(doc); err != nil {
			return st, err
		}
	}
	if err := enc.Close(); err != nil {
		return st, err
	}
	_, err = w.Write(buf.Bytes())
	return st, err
}

// emptyDoc reports a document with nothing in it but comments: no content,
// or a lone null scalar (how yaml.v3 reads "# comment" followed by "---").
func emptyDoc(d *yaml.Node) bool {
	if len(d.Content) == 0 {
		return true
	}
	c := d.Content[0]
	return len(d.Content) == 1 && c.Kind == yaml.ScalarNode && c.Tag == "!!null" && c.Value == ""
}

// podTemplatePaths says where each workload kind keeps its pod template's
// metadata and spec; a Pod is its own template.
var podTemplatePaths = map[string][]string{
	"Pod":         {},
	"Deployment":  {"spec", "template"},
	"StatefulSet": {"spec", "template"},
	"DaemonSet":   {"spec", "template"},
	"ReplicaSet":  {"spec", "template"},
	"Job":         {"spec", "template"},
	"CronJob":     {"spec", "jobTemplate", "spec", "template"},
}

func injectObject(obj *yaml.Node, o Options, st *Stats, where string) error {
	if obj.Kind != yaml.MappingNode {
		return nil // a scalar or list document: not a Kubernetes object
	}
	kind := scalar(get(obj, "kind"))
	if kind == "List" || kind == "DeploymentList" || kind == "PodList" {
		items := get(obj, "items")
		if items == nil || items.Kind != yaml.SequenceNode {
			return nil
		}
		for i, it := range items.Content {
			if err := injectObject(it, o, st, fmt.Sprintf("%s items[%d]", where, i)); err != nil {
				return err
			}
		}
		return nil
	}
	path, ok := podTemplatePaths[kind]
	if !ok {
		return nil
	}
	tmpl := obj
	for _, k := range path {
		tmpl = get(tmpl, k)
		if tmpl == nil || tmpl.Kind != yaml.MappingNode {
			return fmt.Errorf("%s (%s %s): no %v mapping", where, kind, name(obj), path)
		}
	}
	st.Workloads++
	at := fmt.Sprintf("%s (%s %s)", where, kind, name(obj))
	changed, skipped, err := injectTemplate(tmpl, o, at)
	if skipped {
		st.Skipped++
	}
	if changed {
		st.Injected++
	}
	return err
}

// injectTemplate adds what is missing to one pod template (metadata + spec).
func injectTemplate(tmpl *yaml.Node, o Options, at string) (changed, skipped bool, err error) {
	meta := ensureMap(tmpl, "metadata")
	if a := get(get(meta, "annotations"), AnnotationOptOut); scalar(a) == "false" {
		return false, true, nil
	}
	spec := get(tmpl, "spec")
	if spec == nil || spec.Kind != yaml.MappingNode {
		return false, false, fmt.Errorf("%s: pod template has no spec", at)
	}
	containers := get(spec, "containers")
	if containers == nil || containers.Kind != yaml.SequenceNode {
		return false, false, fmt.Errorf("%s: spec.containers must be a list", at)
	}
	container, volumes, err := sidecarNodes(o)
	if err != nil {
		return false, false, err
	}
	inits := get(spec, "initContainers")
	if inits != nil && inits.Kind != yaml.SequenceNode && inits.Tag != "!!null" {
		return false, false, fmt.Errorf("%s: spec.initContainers must be a list", at)
	}
	if !hasNamed(containers, ContainerName) && (inits == nil || !hasNamed(inits, ContainerName)) {
		if rp := scalar(get(spec, "restartPolicy")); rp == "Never" || rp == "OnFailure" {
			// A pod meant to finish (a Job's) would never finish with a
			// plain sidecar still running: use a native sidecar (an init
			// container with restartPolicy Always, Kubernetes 1.29+), which
			// starts first and is stopped once the main containers exit.
			switch {
			case inits == nil:
				inits = ensureSeq(spec, "initContainers")
			case inits.Tag == "!!null":
				*inits = yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
			}
			container.Content = append(container.Content[:2:2], append([]*yaml.Node{
				{Kind: yaml.ScalarNode, Tag: "!!str", Value: "restartPolicy"},
				{Kind: yaml.ScalarNode, Tag: "!!str", Value: "Always"},
			}, container.Content[2:]...)...)
			inits.Content = append(inits.Content, container)
		} else {
			containers.Content = append(containers.Content, container)
		}
		changed = true
	}
	vols := get(spec, "volumes")
	switch {
	case vols == nil:
		vols = ensureSeq(spec, "volumes")
	case vols.Tag == "!!null":
		*vols = yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	}
	if vols.Kind != yaml.SequenceNode {
		return false, false, fmt.Errorf("%s: spec.volumes must be a list", at)
	}
	for _, v := range volumes {
		if !hasNamed(vols, scalar(get(v, "name"))) {
			vols.Content = append(vols.Content, v)
			changed = true
		}
	}
	changed = setIfAbsent(ensureMap(meta, "labels"), LabelSidecar, "true") || changed
	ann := ensureMap(meta, "annotations")
	changed = setIfAbsent(ann, AnnotationInjected, "true") || changed
	changed = setIfAbsent(ann, AnnotationEnv, o.Env) || changed
	return changed, false, nil
}

// get returns the value of key in mapping m, or nil.
func get(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func scalar(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

func name(obj *yaml.Node) string {
	if n := scalar(get(get(obj, "metadata"), "name")); n != "" {
		return n
	}
	return "(unnamed)"
}

// ensureMap returns m[key], creating an empty mapping (or replacing a null)
// when absent.
func ensureMap(m *yaml.Node, key string) *yaml.Node {
	if v := get(m, key); v != nil && v.Kind == yaml.MappingNode {
		return v
	} else if v != nil && v.Tag == "!!null" {
		*v = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		return v
	}
	v := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
	return v
}

func ensureSeq(m *yaml.Node, key string) *yaml.Node {
	v := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
	return v
}

func setIfAbsent(m *yaml.Node, key, value string) bool {
	if get(m, key) != nil {
		return false
	}
	m.Content = append(m.Content,
		&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key},
		&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value, Style: yaml.DoubleQuotedStyle})
	return true
}

func hasNamed(seq *yaml.Node, n string) bool {
	for _, it := range seq.Content {
		if scalar(get(it, "name")) == n {
			return true
		}
	}
	return false
}
