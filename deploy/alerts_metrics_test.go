package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/control"
	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/internal/natsrun"
	"github.com/pennon-dev/pennon/internal/sign"
	"github.com/pennon-dev/pennon/notify"
	"github.com/pennon-dev/pennon/proxy"
	flagsync "github.com/pennon-dev/pennon/sync"
	"github.com/pennon-dev/pennon/telemetry"
	"github.com/pennon-dev/pennon/usage"
)

// promtool is not available here, so the rule files' structure is checked
// by hand below, and every pennon_* name the alerts and dashboards query is
// checked against what the real components register: an alert on a metric
// nobody exports evaluates to nothing and never fires, silently.

var metricName = regexp.MustCompile(`\bpennon_[a-z0-9_]+`)

// ruleFile is a PrometheusRule's spec as the Prometheus Operator reads it.
type ruleFile struct {
	Kind string `yaml:"kind"`
	Spec struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Record      string            `yaml:"record"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	} `yaml:"spec"`
}

// ruleExprs checks the structure of every PrometheusRule in a multi-document
// YAML stream and returns their expressions by alert name.
func ruleExprs(t *testing.T, where string, data []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	groups := map[string]bool{}
	for {
		var doc ruleFile
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if doc.Kind != "PrometheusRule" {
			continue
		}
		for _, g := range doc.Spec.Groups {
			if g.Name == "" || groups[g.Name] || len(g.Rules) == 0 {
				t.Errorf("%s: group %q: needs a unique name and rules", where, g.Name)
			}
			groups[g.Name] = true
			for _, r := range g.Rules {
				at := where + ": " + g.Name + "/" + r.Alert
				switch {
				case r.Alert == "" || r.Record != "":
					t.Errorf("%s: every rule is an alert with a name", at)
				case out[r.Alert] != "":
					t.Errorf("%s: alert name used twice", at)
				case strings.TrimSpace(r.Expr) == "":
					t.Errorf("%s: no expr", at)
				}
				if r.For != "" {
					if _, err := time.ParseDuration(r.For); err != nil {
						t.Errorf("%s: for %q: %v", at, r.For, err)
					}
				}
				switch r.Labels["severity"] {
				case "info", "warning", "critical":
				default:
					t.Errorf("%s: severity %q: want info, warning or critical", at, r.Labels["severity"])
				}
				if r.Annotations["summary"] == "" {
					t.Errorf("%s: no summary", at)
				}
				if err := balanced(r.Expr); err != nil {
					t.Errorf("%s: expr %v:\n%s", at, err, r.Expr)
				}
				out[r.Alert] = r.Expr
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no PrometheusRule alerts", where)
	}
	return out
}

// balanced checks brackets and quotes pair up: the mistake a hand-edited
// PromQL expression most often makes.
func balanced(expr string) error {
	var stack []rune
	pair := map[rune]rune{')': '(', ']': '[', '}': '{'}
	inQuote := false
	for _, c := range expr {
		switch {
		case c == '"':
			inQuote = !inQuote
		case inQuote:
		case c == '(' || c == '[' || c == '{':
			stack = append(stack, c)
		case pair[c] != 0:
			if len(stack) == 0 || stack[len(stack)-1] != pair[c] {
				return errors.New("unbalanced " + string(c))
			}
			stack = stack[:len(stack)-1]
		}
	}
	if inQuote || len(stack) > 0 {
		return errors.New("unclosed bracket or quote")
	}
	return nil
}

func dashboardExprs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			if err := balanced(tg.Expr); err != nil {
				t.Errorf("%s: panel %q: %v", path, p.Title, err)
			}
			out = append(out, tg.Expr)
		}
	}
	return out
}

// recorder is a Registerer that remembers the name of every metric
// registered through it (vectors appear on /metrics only once a label set is
// used; their registration is what proves the name exists).
type recorder struct {
	prometheus.Registerer
	names map[string]bool
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
	return r.Registerer.Register(c)
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// scrape GETs a /metrics page and adds the names of its samples.
func scrape(t *testing.T, url string, names map[string]bool) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
}

// exported starts a control plane (with its dispatcher, fleet registry and
// usage aggregator) and a sidecar, answers one evaluation, and returns every
// metric name their /metrics pages serve or their code registers.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	ctx := context.Background()
	names := map[string]bool{}

	// Control plane.
	srv := natsrun.StartTest(t)
	nc := natsrun.ConnectTest(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	key, err := sign.Generate()
	if err != nil {
		t.Fatal(err)
	}
	store, err := config.OpenStore(ctx, js, config.StoreOptions{Signer: key, Trust: sign.NewTrust(key.Public())})
	if err != nil {
		t.Fatal(err)
	}
	toks, err := control.OpenTokens(ctx, js, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	rec := &recorder{Registerer: reg, names: names}
	d, err := notify.New(ctx, notify.Options{JetStream: js, Metrics: rec})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	fleet, err := flagsync.NewRegistry(nil, flagsync.RegistryOptions{Envs: store.EnvNames, Metrics: rec, Notify: d})
	if err != nil {
		t.Fatal(err)
	}
	ingest, err := telemetry.OpenIngest(ctx, js, telemetry.IngestOptions{Metrics: rec})
	if err != nil {
		t.Fatal(err)
	}
	agg, err := usage.Open(ctx, usage.Options{JetStream: js, Ingest: ingest, Changes: store, Emitter: d, Metrics: rec})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agg.Close() })
	cp, err := control.New(control.Options{Addr: "127.0.0.1:0", Store: store, Tokens: toks, JetStream: js, Registry: reg, Signer: key,
		Sidecars: fleet, Notify: d, Telemetry: ingest, DataDir: t.TempDir(), Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Listen(); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cp.Serve(cctx) }()
	t.Cleanup(func() { cancel(); <-done })
	admin, _, err := toks.Create(ctx, "root", map[string]string{"*": "admin"}, 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := store.CreateEnv(ctx, config.EnvSettings{Name: "dev"}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("PUT", "http://"+cp.Addr()+"/api/v1/envs/dev/flags/f", strings.NewReader(`{"definition":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}}`))
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("commit: %d", resp.StatusCode)
	}
	scrape(t, "http://"+cp.Addr()+"/metrics", names)

	// Sidecar: the proxy and its sync side, on one registry as in `pennon sidecar`.
	sreg := prometheus.NewRegistry()
	srec := &recorder{Registerer: sreg, names: names}
	if _, err := flagsync.NewRemote(flagsync.RemoteOptions{Env: "dev", ServerURL: "http://127.0.0.1:1", Registry: srec}); err != nil {
		t.Fatal(err)
	}
	// Flags that make the rarer series appear: an expired flag, an
	// always-fresh one answered on its failMode, one with fallbackTargeting.
	doc, err := config.Parse([]byte(`{"flags":{
	 "on":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"},
	 "old":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","expires":"2001-01-01"},
	 "fresh":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","propagation":"always-fresh","failMode":"closed","safeVariant":"off"},
	 "cheap":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","targeting":{"if":[{"==":[{"var":"plan"},"x"]},"on","off"]},"fallbackTargeting":{"if":[true,"on","off"]}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := doc.Compile(1)
	if err != nil {
		t.Fatal(err)
	}
	h := &unfresh{}
	h.Store(snap)
	px, err := proxy.New(proxy.Options{Addr: "127.0.0.1:0", Source: h, Registry: sreg})
	if err != nil {
		t.Fatal(err)
	}
	if err := px.Listen(); err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithCancel(ctx)
	pdone := make(chan error, 1)
	go func() { pdone <- px.Serve(pctx) }()
	t.Cleanup(func() { pcancel(); <-pdone })
	for _, flag := range []string{"on", "on", "missing", "old", "fresh", "cheap"} {
		resp, err := http.Post("http://"+px.Addr()+"/ofrep/v1/evaluate/flags/"+flag, "application/json", strings.NewReader(`{"context":{"targetingKey":"u1"}}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	scrape(t, "http://"+px.Addr()+"/metrics", names)
	return names
}

func TestAlertsAndDashboardsUseExportedMetrics(t *testing.T) {
	manifests, _ := renderChart(t, map[string]any{"control": map[string]any{"adminToken": "t"}, "sidecar": map[string]any{"token": "t"}})
	k8s, err := os.ReadFile(filepath.Join("k8s", "monitoring.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	sources := map[string][]string{}
	for where, data := range map[string][]byte{"deploy/k8s/monitoring.yaml": k8s, "helm chart": []byte(manifests)} {
		for alert, expr := range ruleExprs(t, where, data) {
			sources[where+" alert "+alert] = []string{expr}
		}
	}
	for _, p := range []string{filepath.Join("k8s", "grafana-dashboard.json"), filepath.Join(chartDir, "dashboards", "pennon.json")} {
		sources[p] = dashboardExprs(t, p)
	}
	names := exported(t)
	if len(names) < 20 {
		t.Fatalf("only %d metric names found: the scrape or the recorder is broken", len(names))
	}
	var missing []string
	for where, exprs := range sources {
		for _, e := range exprs {
			for _, m := range metricName.FindAllString(e, -1) {
				base := m
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if names[strings.TrimSuffix(m, suffix)] {
						base = strings.TrimSuffix(m, suffix)
					}
				}
				if !names[base] {
					missing = append(missing, where+": "+m)
				}
			}
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("%s is queried but no component exports it", m)
	}
}

// unfresh is a snapshot holder that can never vouch for freshness, as a
// sidecar cut off from the control plane: always-fresh flags are answered on
// their failMode (the metric under test), everything else from the snapshot.
type unfresh struct{ evaluator.Holder }

func (u *unfresh) Fresh(context.Context, *evaluator.Flag) (*evaluator.Snapshot, error) {
	return nil, errors.New("no freshness lease and the control plane is unreachable")
}
