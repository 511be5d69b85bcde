package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
)

func TestInjectCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"inject", "--file", "../../deploy/inject/testdata/workloads.yaml"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	want, err := os.ReadFile("../../deploy/inject/testdata/workloads.golden")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Errorf("output differs from deploy/inject/testdata/workloads.golden")
	}
	if got := errOut.String(); !strings.Contains(got, "10 documents, 8 pod templates, 7 injected, 1 opted out") {
		t.Errorf("stderr %q", got)
	}

	errOut.Reset()
	code = run(context.Background(), []string{"inject", "--file", "/nonexistent.yaml"}, &out, &errOut)
	if code == 0 || !strings.Contains(errOut.String(), "nonexistent.yaml") {
		t.Errorf("missing file: exit %d, stderr %q", code, errOut.String())
	}
	errOut.Reset()
	code = run(context.Background(), []string{"inject", "--env", "Bad Env", "--file", "../../deploy/inject/testdata/workloads.yaml"}, &out, &errOut)
	if code == 0 || !strings.Contains(errOut.String(), `env: "Bad Env" must match`) {
		t.Errorf("bad env: exit %d, stderr %q", code, errOut.String())
	}
}

// --trust-key (repeatable) and --nats-ca-configmap reach the injected sidecar.
func TestInjectTrustAndCAFlags(t *testing.T) {
	key := "ed25519:" + strings.Repeat("A", 43) + "="
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"inject", "--file", "../../deploy/inject/testdata/workloads.yaml",
		"--trust-key", key, "--trust-key", key, "--nats-ca-configmap", "nats-ca-bundle"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"--trust-key=" + key, "--nats-ca=", "nats-ca-bundle"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("injected output lacks %q", want)
		}
	}
	errOut.Reset()
	code = run(context.Background(), []string{"inject", "--file", "../../deploy/inject/testdata/workloads.yaml", "--trust-key", "abc"}, &out, &errOut)
	if code == 0 || !strings.Contains(errOut.String(), `"abc" is not a public key`) {
		t.Errorf("bad key: exit %d, stderr %q", code, errOut.String())
	}
}
