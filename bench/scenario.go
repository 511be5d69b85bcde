package bench

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"

	evalv1 "github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/evaluation/v1"
)

// FlagKeys names the flags scenarios evaluate, so the same scenarios run
// against any OFREP server loaded with an equivalent flag set (see
// bench/flags for the pennon/flagd file and the GO Feature Flag file).
type FlagKeys struct {
	Static     string // no targeting: always the default variant
	Targeting  string // if/in/ends_with rules on email and country
	Fractional string // fractional split on targetingKey
}

// DefaultFlagKeys are the keys in bench/flags/bench-flags.json.
var DefaultFlagKeys = FlagKeys{Static: "bench-static", Targeting: "bench-targeting", Fractional: "bench-fractional"}

// Scenario is which flag(s) a run asks for and how each request's
// evaluation context is generated. Build one with NewScenario.
type Scenario struct {
	Name        string
	Description string
	Keys        FlagKeys
	// next writes one request's path and body. It is called by one worker
	// at a time with that worker's generator; pools it reads are immutable.
	next func(g *generator) (path string, body []byte)
	// rpc, when set, makes the scenario a gRPC one: workers call flagd's
	// ResolveBoolean with the request it returns instead of sending next's
	// OFREP request (which then only documents the equivalent question).
	rpc func(g *generator) *evalv1.ResolveBooleanRequest
}

// generator is one worker's private request-generation state.
type generator struct {
	rng    *rand.Rand
	zipf   *rand.Zipf
	worker int
	n      uint64
	buf    []byte
}

func newGenerator(seed uint64, worker int, poolSize int) *generator {
	rng := rand.New(rand.NewPCG(seed, uint64(worker)+1))
	g := &generator{rng: rng, worker: worker, buf: make([]byte, 0, 256)}
	if poolSize > 1 {
		// s=1.1: a few hot users and a long tail, as real traffic has.
		g.zipf = rand.NewZipf(rng, 1.1, 1, uint64(poolSize-1))
	}
	return g
}

// ScenarioNames lists the scenarios NewScenario knows, in a stable order.
func ScenarioNames() []string {
	names := make([]string, 0, len(scenarioDocs))
	for n := range scenarioDocs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

var scenarioDocs = map[string]string{
	"static":     "one flag without targeting, one fixed context: the fastest path (and the most cacheable)",
	"targeting":  "one flag with if/ends_with/in rules, contexts from 1,000 users",
	"fractional": "one flag split by fractional bucketing on targetingKey, contexts from 10,000 users",
	"bulk":       "bulk evaluation of all flags (POST /ofrep/v1/evaluate/flags), contexts from 1,000 users",
	"bulk-zipf": "bulk evaluation of all flags, contexts from 50,000 users Zipf-distributed (a few hot users, a long tail: " +
		"page loads of real traffic); load flags/bulk-1000.json for the 1,000-flag answer",
	"mix":    "realistic mix: 40% targeting, 30% fractional, 20% static, 10% bulk; 50,000 distinct users, Zipf-distributed",
	"unique": "cache-hostile: every request a never-seen-before context on the targeting flag",
	"grpc-static": "the static scenario over flagd's gRPC evaluation service: ResolveBoolean of the static flag, one fixed context " +
		"(target a sidecar's --grpc-addr, e.g. grpc=http://127.0.0.1:8013, or pennon-grpc)",
}

const (
	singlePath = "/ofrep/v1/evaluate/flags/"
	bulkPath   = "/ofrep/v1/evaluate/flags"
)

// NewScenario returns the named scenario evaluating keys (zero fields take
// DefaultFlagKeys).
func NewScenario(name string, keys FlagKeys) (Scenario, error) {
	if keys.Static == "" {
		keys.Static = DefaultFlagKeys.Static
	}
	if keys.Targeting == "" {
		keys.Targeting = DefaultFlagKeys.Targeting
	}
	if keys.Fractional == "" {
		keys.Fractional = DefaultFlagKeys.Fractional
	}
	doc, ok := scenarioDocs[name]
	if !ok {
		return Scenario{}, fmt.Errorf("scenario: unknown %q (allowed: %s)", name, strings.Join(ScenarioNames(), ", "))
	}
	s := Scenario{Name: name, Description: doc, Keys: keys}
	static, targeting, fractional := singlePath+keys.Static, singlePath+keys.Targeting, singlePath+keys.Fractional
	switch name {
	case "static":
		body := []byte(`{"context":{"targetingKey":"user-1"}}`)
		s.next = func(*generator) (string, []byte) { return static, body }
	case "targeting":
		pool := contextPool(1000)
		s.next = func(g *generator) (string, []byte) { return targeting, pool[g.rng.IntN(len(pool))] }
	case "fractional":
		pool := contextPool(10000)
		s.next = func(g *generator) (string, []byte) { return fractional, pool[g.rng.IntN(len(pool))] }
	case "bulk":
		pool := contextPool(1000)
		s.next = func(g *generator) (string, []byte) { return bulkPath, pool[g.rng.IntN(len(pool))] }
	case "bulk-zipf":
		pool := contextPool(50000)
		s.next = func(g *generator) (string, []byte) {
			if g.zipf != nil {
				return bulkPath, pool[g.zipf.Uint64()]
			}
			return bulkPath, pool[g.rng.IntN(len(pool))]
		}
	case "mix":
		pool := contextPool(50000)
		s.next = func(g *generator) (string, []byte) {
			var body []byte
			if g.zipf != nil {
				body = pool[g.zipf.Uint64()]
			} else {
				body = pool[g.rng.IntN(len(pool))]
			}
			switch r := g.rng.IntN(100); {
			case r < 40:
				return targeting, body
			case r < 70:
				return fractional, body
			case r < 90:
				return static, body
			default:
				return bulkPath, body
			}
		}
	case "grpc-static":
		body := []byte(`{"context":{"targetingKey":"user-1"}}`)
		s.next = func(*generator) (string, []byte) { return static, body }
		req := &evalv1.ResolveBooleanRequest{FlagKey: keys.Static, Context: &structpb.Struct{
			Fields: map[string]*structpb.Value{"targetingKey": structpb.NewStringValue("user-1")}}}
		s.rpc = func(*generator) *evalv1.ResolveBooleanRequest { return req }
	case "unique":
		s.next = func(g *generator) (string, []byte) {
			g.n++
			g.buf = appendContext(g.buf[:0], "u"+strconv.Itoa(g.worker)+"-"+strconv.FormatUint(g.n, 36), g.rng.IntN(len(countries)), g.rng.IntN(10) == 0)
			return targeting, g.buf
		}
	}
	return s, nil
}

// GRPC reports whether the scenario calls flagd's gRPC evaluation service
// (target a sidecar's --grpc-addr) rather than OFREP.
func (s Scenario) GRPC() bool { return s.rpc != nil }

// poolSize is how many distinct contexts the scenario draws from (for the
// Zipf generator); 0 when it does not use a pool.
func (s Scenario) poolSize() int {
	if s.Name == "mix" || s.Name == "bulk-zipf" {
		return 50000
	}
	return 0
}

var (
	countries = []string{"DE", "US", "FR", "JP", "BR", "IN", "GB", "NL"}
	plans     = []string{"free", "pro", "enterprise"}
)

// contextPool builds n distinct request bodies once, so generating load
// costs the generator nothing per request.
func contextPool(n int) [][]byte {
	pool := make([][]byte, n)
	for i := range pool {
		pool[i] = appendContext(nil, "user-"+strconv.Itoa(i), i%len(countries), i%10 == 0)
	}
	return pool
}

// appendContext appends an OFREP request body: {"context":{...}} with a
// targetingKey, an email (internal for 1 in 10), a country and a plan.
func appendContext(b []byte, key string, country int, internal bool) []byte {
	domain := "example.com"
	if internal {
		domain = "pennon.dev"
	}
	b = append(b, `{"context":{"targetingKey":"`...)
	b = append(b, key...)
	b = append(b, `","email":"`...)
	b = append(b, key...)
	b = append(b, '@')
	b = append(b, domain...)
	b = append(b, `","country":"`...)
	b = append(b, countries[country]...)
	b = append(b, `","plan":"`...)
	b = append(b, plans[(country+len(key))%len(plans)]...)
	b = append(b, `"}}`...)
	return b
}
