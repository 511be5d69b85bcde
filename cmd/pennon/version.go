package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

func init() {
	register(command{name: "version", summary: "print the version and build information", run: runVersion})
}

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", "pennon version [--json]", "Prints pennon's version, the commit it was built from, and the Go toolchain.", stderr)
	asJSON := fs.Bool("json", false, "print JSON for scripts instead of a sentence")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("version", pos); err != nil {
		return err
	}
	v := struct {
		Version string `json:"version"`
		Commit  string `json:"commit"`
		Go      string `json:"go"`
		OS      string `json:"os"`
		Arch    string `json:"arch"`
	}{Version: version, Commit: "unknown", Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				v.Commit = s.Value
			}
		}
	}
	return output{w: stdout, json: *asJSON}.emit(v, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "pennon %s (commit %s, %s %s/%s)\n", v.Version, v.Commit, v.Go, v.OS, v.Arch)
		return err
	})
}
