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
