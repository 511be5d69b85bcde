package deploy

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// jsonSchema is the subset of JSON Schema that values.schema.json uses;
// validate rejects a schema keyword it does not know, so the subset cannot
// silently grow past what is checked here. Helm itself enforces the full
// schema at install time.
type jsonSchema struct {
	Schema               string                 `json:"$schema"`
	Title                string                 `json:"title"`
	Description          string                 `json:"description"`
	Type                 any                    `json:"type"`
	Properties           map[string]*jsonSchema `json:"properties"`
	AdditionalProperties json.RawMessage        `json:"additionalProperties"`
	Items                *jsonSchema            `json:"items"`
	Enum                 []any                  `json:"enum"`
	Minimum              *float64               `json:"minimum"`
	Maximum              *float64               `json:"maximum"`
	ExclusiveMinimum     *float64               `json:"exclusiveMinimum"`
	Pattern              string                 `json:"pattern"`
}

func loadSchema(t *testing.T) *jsonSchema {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	var s jsonSchema
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("values.schema.json: %v", err)
	}
	return &s
}

// validate returns every violation of s by v, each with its values path.
func (s *jsonSchema) validate(path string, v any) []string {
	var errs []string
	bad := func(format string, a ...any) { errs = append(errs, path+": "+fmt.Sprintf(format, a...)) }
	types := []string{}
	switch ty := s.Type.(type) {
	case string:
		types = append(types, ty)
	case []any:
		for _, x := range ty {
			types = append(types, fmt.Sprint(x))
		}
	}
	if len(types) > 0 && !hasType(types, v) {
		bad("is %T, want %s", v, strings.Join(types, " or "))
		return errs
	}
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if ps, ok := s.Properties[k]; ok {
				errs = append(errs, ps.validate(path+"."+k, x[k])...)
				continue
			}
			switch ap := strings.TrimSpace(string(s.AdditionalProperties)); {
			case ap == "false":
				bad("unknown key %q (allowed: %s)", k, strings.Join(sortedKeys(s.Properties), ", "))
			case strings.HasPrefix(ap, "{"):
				var sub jsonSchema
				if err := json.Unmarshal(s.AdditionalProperties, &sub); err != nil {
					bad("schema: %v", err)
				} else {
					errs = append(errs, sub.validate(path+"."+k, x[k])...)
				}
			}
		}
	case []any:
		if s.Items != nil {
			for i, e := range x {
				errs = append(errs, s.Items.validate(fmt.Sprintf("%s[%d]", path, i), e)...)
			}
		}
	case float64:
		if s.Minimum != nil && x < *s.Minimum {
			bad("%v is below the minimum %v", x, *s.Minimum)
		}
		if s.Maximum != nil && x > *s.Maximum {
			bad("%v is above the maximum %v", x, *s.Maximum)
		}
		if s.ExclusiveMinimum != nil && x <= *s.ExclusiveMinimum {
			bad("%v must be greater than %v", x, *s.ExclusiveMinimum)
		}
	case string:
		if s.Pattern != "" && !regexp.MustCompile(s.Pattern).MatchString(x) {
			bad("%q does not match %s", x, s.Pattern)
		}
	}
	if len(s.Enum) > 0 {
		ok := false
		for _, e := range s.Enum {
			ok = ok || fmt.Sprint(e) == fmt.Sprint(v)
		}
		if !ok {
			bad("%v is not one of %v", v, s.Enum)
		}
	}
	return errs
}

func hasType(types []string, v any) bool {
	for _, t := range types {
		switch x := v.(type) {
		case map[string]any:
			if t == "object" {
				return true
			}
		case []any:
			if t == "array" {
				return true
			}
		case string:
			if t == "string" {
				return true
			}
		case bool:
			if t == "boolean" {
				return true
			}
		case float64:
			if t == "number" || (t == "integer" && x == math.Trunc(x)) {
				return true
			}
		case int:
			if t == "number" || t == "integer" {
				return true
			}
		case nil:
			if t == "null" {
				return true
			}
		}
	}
	return false
}

func sortedKeys(m map[string]*jsonSchema) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestValuesSchema: values.yaml satisfies values.schema.json, every value
// has a schema entry and every schema entry a value, and typical mistakes
// are rejected with the path of the bad value.
func TestValuesSchema(t *testing.T) {
	s := loadSchema(t)
	values := map[string]any{}
	readYAML(t, filepath.Join(chartDir, "values.yaml"), &values, false)
	if errs := s.validate("values", values); len(errs) > 0 {
		t.Fatalf("values.yaml violates values.schema.json:\n%s", strings.Join(errs, "\n"))
	}
	var missing []string
	var walk func(path string, s *jsonSchema, v any)
	walk = func(path string, s *jsonSchema, v any) {
		m, _ := v.(map[string]any)
		for k, ps := range s.Properties {
			if _, ok := m[k]; !ok {
				missing = append(missing, path+"."+k)
				continue
			}
			walk(path+"."+k, ps, m[k])
		}
	}
	walk("values", s, values)
	if len(missing) > 0 {
		t.Errorf("in the schema but not in values.yaml (document them there): %v", missing)
	}

	tests := []struct {
		name string
		over map[string]any
		want string
	}{
		{"typo", map[string]any{"nats": map[string]any{"replica": 3.0}}, `values.nats: unknown key "replica"`},
		{"type", map[string]any{"control": map[string]any{"replicas": "two"}}, "values.control.replicas: is string, want integer"},
		{"env name", map[string]any{"sidecar": map[string]any{"env": "Prod"}}, `values.sidecar.env: "Prod" does not match`},
		{"ratio", map[string]any{"monitoring": map[string]any{"alerts": map[string]any{"errorRatio": 2.0}}}, "values.monitoring.alerts.errorRatio: 2 is above the maximum 1"},
		{"trust key", map[string]any{"sidecar": map[string]any{"trustKeys": []any{"abc"}}}, `values.sidecar.trustKeys[0]: "abc" does not match`},
		{"auth secret name", map[string]any{"nats": map[string]any{"auth": map[string]any{"existingSecret": "Bad_Name"}}}, `values.nats.auth.existingSecret: "Bad_Name" does not match`},
		{"password in nats url", map[string]any{"nats": map[string]any{"url": "nats://pennon:hunter2@nats:4222"}}, `values.nats.url: "nats://pennon:hunter2@nats:4222" does not match`},
		{"pull policy", map[string]any{"image": map[string]any{"pullPolicy": "Sometimes"}}, "values.image.pullPolicy: Sometimes is not one of"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := map[string]any{}
			readYAML(t, filepath.Join(chartDir, "values.yaml"), &v, false)
			mergeValues(v, tc.over)
			errs := strings.Join(s.validate("values", v), "\n")
			if !strings.Contains(errs, tc.want) {
				t.Errorf("errors %q, want %q", errs, tc.want)
			}
		})
	}
}
