package config

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// Parsing and compiling run on every sidecar update and every control-plane
// write, so their cost bounds how fast a change reaches pods.
func BenchmarkParseCheckout(b *testing.B) {
	data, err := os.ReadFile("../examples/checkout.json")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCompileCheckout(b *testing.B) {
	doc := mustParseFile(b, "../examples/checkout.json")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := doc.Compile(1); err != nil {
			b.Fatal(err)
		}
	}
}

// generated1000 is a document of 1000 flags with targeting, the scale of a
// large organisation's flag set.
func generated1000() []byte {
	var sb strings.Builder
	sb.WriteString(`{"flags":{`)
	for i := range 1000 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `"flag-%d":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","owner":"team-%d",`+
			`"targeting":{"if":[{"in":[{"var":"country"},["SE","NO","DK"]]},"on",{"fractional":[["on",10],["off",90]]}]}}`, i, i%20)
	}
	sb.WriteString(`}}`)
	return []byte(sb.String())
}

func BenchmarkParse1000Flags(b *testing.B) {
	data := generated1000()
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkApplyOneFlagTo1000(b *testing.B) {
	doc, err := Parse(generated1000())
	if err != nil {
		b.Fatal(err)
	}
	cs := &Changeset{Changes: []Change{{Flag: "flag-7", Op: OpPut, Definition: []byte(`{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}`)}}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := doc.Apply(cs); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCanonical1000(b *testing.B) {
	doc, err := Parse(generated1000())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = doc.Hash()
	}
}

// generatedN is generated1000's flag mix at n flags, every tenth flag
// requiring the one before it (so changes have dependents to relink).
func generatedN(n int) []byte {
	var sb strings.Builder
	sb.WriteString(`{"flags":{`)
	for i := range n {
		if i > 0 {
			sb.WriteByte(',')
		}
		pre := ""
		if i%10 == 1 {
			pre = fmt.Sprintf(`,"prerequisites":{"flag-%d":"on"}`, i-1)
		}
		fmt.Fprintf(&sb, `"flag-%d":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","owner":"team-%d",`+
			`"targeting":{"if":[{"in":[{"var":"country"},["SE","NO","DK"]]},"on",{"fractional":[["on",10],["off",90]]}]}%s}`, i, i%20, pre)
	}
	sb.WriteString(`}}`)
	return []byte(sb.String())
}

var benchDocs = map[int]*Document{}

// benchDoc parses generatedN(n) once per process: at 100,000 flags that
// takes seconds, and b.Run calls a benchmark function more than once.
func benchDoc(b *testing.B, n int) *Document {
	b.Helper()
	if doc := benchDocs[n]; doc != nil {
		return doc
	}
	doc, err := Parse(generatedN(n))
	if err != nil {
		b.Fatal(err)
	}
	benchDocs[n] = doc
	return doc
}

// BenchmarkOneFlagChange is what a sidecar spends on a pushed one-flag
// changeset: Apply (validate) and Compile (the new snapshot), against a
// compiled document of each size. flag-10 has a dependent (flag-11) that is
// relinked. Measured 2026-11-29 on the shared 2-vCPU host at load 13–16
// (bench/results/scale.md): 0.19 ms at 1k, 1.3 ms at 10k, 1.47 ms at 100k
// wall; 260 allocations and 22–28 KB at every size. `pennon bench scale`
// at load 5 measured 0.11 / 0.17 / 0.78 ms of thread CPU.
func BenchmarkOneFlagChange(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			doc := benchDoc(b, n)
			cs := &Changeset{Changes: []Change{{Flag: "flag-10", Op: OpPut, Definition: []byte(`{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}`)}}}
			b.ReportAllocs()
			for b.Loop() {
				next, err := doc.Apply(cs)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := next.Compile(2); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHashAfterOneFlagChange is the identity check that follows a
// one-flag change (Apply itself: BenchmarkOneFlagChange): "tree" is Hash,
// which rebuilds the changed flag's bucket from the parent's table and the
// root; "legacy" is the "sha256:" hash over the whole canonical document,
// what Hash was before and what a reader still computes to check a value
// signed in that format. Each round rebuilds from the same pending state.
// Numbers: bench/results/scale.md (2026-11-30, hash tree).
func BenchmarkHashAfterOneFlagChange(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		for _, format := range []string{"tree", "legacy"} {
			b.Run(fmt.Sprintf("%d/%s", n, format), func(b *testing.B) {
				doc := benchDoc(b, n)
				_ = doc.Hash()
				cs := &Changeset{Changes: []Change{{Flag: "flag-10", Op: OpPut, Definition: []byte(`{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}`)}}}
				next, err := doc.Apply(cs)
				if err != nil {
					b.Fatal(err)
				}
				pending := next.hashFrom.Load()
				b.ReportAllocs()
				for b.Loop() {
					rehash(next, format, pending)
				}
			})
		}
	}
}
