package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/proxy"
)

func init() {
	register(command{name: "eval", summary: "evaluate one flag from a file for a context and print the OFREP answer", run: runEval})
}

func runEval(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("eval", `pennon eval --file FILE --flag KEY [--context '{"targetingKey":"u1"}'] [--json]`,
		"Evaluates one flag locally, exactly as the sidecar would, and prints its value, variant and\n"+
			"reason; with --json, the OFREP JSON answer the sidecar would send. Exit 1 on an evaluation error.", stderr)
	file := fs.String("file", "", "flag document to load (required)")
	flag := fs.String("flag", "", "flag key to evaluate (required)")
	ctxJSON := fs.String("context", "{}", "evaluation context as a JSON object")
	asJSON := fs.Bool("json", false, "print the OFREP answer (JSON) instead of a summary")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("eval", pos); err != nil {
		return err
	}
	if *file == "" || *flag == "" {
		return usagef("--file FILE and --flag KEY are required (see pennon eval --help)")
	}
	data, err := os.ReadFile(*file)
	if err != nil {
		return err
	}
	doc, err := config.Parse(data)
	if err != nil {
		return fmt.Errorf("%s is invalid:\n%w", *file, err)
	}
	snap, err := doc.Compile(1)
	if err != nil {
		return err
	}
	ec := evaluator.NewContext()
	if err := ec.Decode([]byte(*ctxJSON), evaluator.Limits{}); err != nil {
		var ce *evaluator.ContextError
		if errors.As(err, &ce) {
			return fmt.Errorf("--context: %s", ce.Detail)
		}
		return fmt.Errorf("--context: %w", err)
	}
	r := snap.Evaluate(*flag, ec)
	err = output{w: stdout, json: *asJSON}.emit(proxy.AppendResult(nil, &r), func(w io.Writer) error {
		if r.ErrorCode != evaluator.CodeNone {
			return fields(w, "flag", r.Key, "error", fmt.Sprintf("%s: %s", r.ErrorCode, r.ErrorDetails))
		}
		value := "(none: the caller's code default applies)"
		if r.HasValue {
			value = string(r.ValueJSON)
		}
		kv := []any{"flag", r.Key, "value", value, "variant", r.Variant, "reason", string(r.Reason)}
		if len(r.MetadataJSON) > 2 {
			kv = append(kv, "metadata", string(r.MetadataJSON))
		}
		return fields(w, kv...)
	})
	if err != nil {
		return err
	}
	if r.ErrorCode != evaluator.CodeNone {
		return exitError{code: 1}
	}
	return nil
}
