package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/pennon-dev/pennon/deploy/inject"
)

func init() {
	register(command{
		name:    "inject",
		summary: "add the pennon sidecar to Kubernetes workload YAML (idempotent)",
		run:     runInject,
	})
}

func runInject(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("inject", "pennon inject [--file FILE] [flags] > injected.yaml",
		"Reads Kubernetes YAML (Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs,\n"+
			"CronJobs, Pods, Lists; several documents) from --file or stdin and writes it to\n"+
			"stdout with the pennon sidecar, its volumes, label and annotations added to every\n"+
			"pod template. Running it again changes nothing. Other documents pass through.\n"+
			"A pod template annotated pennon.dev/inject: \"false\" is left alone.\n\n"+
			"  kubectl get deploy shop -o yaml | pennon inject | kubectl apply -f -", stderr)
	var o inject.Options
	_ = fs.String("config", "", "YAML file with settings")
	file := fs.String("file", "", "read this file instead of stdin (\"-\" is stdin)")
	fs.StringVar(&o.Image, "image", "ghcr.io/pennon-dev/pennon:latest", "sidecar image")
	fs.StringVar(&o.Env, "env", "production", "environment the sidecar serves")
	fs.StringVar(&o.Server, "server", "http://pennon-control.pennon:8080", "control plane URL")
	fs.StringVar(&o.NATS, "nats", "nats://nats.pennon:4222", "NATS URL")
	fs.StringVar(&o.TokenSecret, "token-secret", "pennon-sidecar-token", "Secret (key \"token\") with the sidecar's read token")
	fs.StringVar(&o.DefaultsConfigMap, "defaults-configmap", "pennon-defaults", "ConfigMap (key \"defaults.json\") with secure defaults")
	fs.StringVar(&o.CPURequest, "cpu-request", "50m", "sidecar CPU request")
	fs.StringVar(&o.CPULimit, "cpu-limit", "1", "sidecar CPU limit")
	fs.StringVar(&o.MemoryRequest, "memory-request", "64Mi", "sidecar memory request")
	fs.StringVar(&o.MemoryLimit, "memory-limit", "256Mi", "sidecar memory limit")
	var trust listFlag
	fs.Var(&trust, "trust-key", "pin the control plane's changeset signing key, ed25519:... (repeatable during a key rotation)")
	fs.StringVar(&o.NATSCAConfigMap, "nats-ca-configmap", "", "ConfigMap (key \"ca.crt\") with the CA of NATS's TLS certificates; adds --nats-ca")
	if err := parseSettings(fs, args); err != nil {
		return err
	}
	o.TrustKeys = trust
	var in io.Reader = os.Stdin
	name := "stdin"
	if *file != "" && *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return err
		}
		defer f.Close()
		in, name = f, *file
	}
	st, err := inject.Inject(in, stdout, o)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	fmt.Fprintf(stderr, "pennon inject: %d documents, %d pod templates, %d injected, %d opted out\n",
		st.Documents, st.Workloads, st.Injected, st.Skipped)
	return nil
}
