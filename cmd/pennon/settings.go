package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// newFlagSet returns a FlagSet for a subcommand whose --help output starts
// with usageLine and a description, and lists every flag with its
// environment variable.
func newFlagSet(name, usageLine, description string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s\n\n%s\n\nFlags (each can also be set as PENNON_<NAME> or in the --config YAML file):\n", usageLine, description)
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			if f.DefValue != "" {
				def = fmt.Sprintf(" (default %q)", f.DefValue)
			}
			fmt.Fprintf(fs.Output(), "  --%s\t%s%s  [%s]\n", f.Name, f.Usage, def, envName(f.Name))
		})
	}
	return fs
}

// envName is the environment variable for a flag: PENNON_ + upper snake case.
func envName(flagName string) string {
	return "PENNON_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseSettings parses args into fs, then fills every flag not given on the
// command line from its PENNON_* environment variable and, failing that, from
// the YAML file named by the "config" flag (if fs defines one and it is set).
// Precedence: command line > environment > file > default. Unknown keys in
// the file and invalid values anywhere are errors that name their source.
func parseSettings(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitError{code: 0}
		}
		return exitError{code: 2}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	var fileValues map[string]any
	fileName := ""
	if cf := fs.Lookup("config"); cf != nil {
		fileName = cf.Value.String()
		if !given["config"] {
			if v, ok := os.LookupEnv(envName("config")); ok {
				fileName = v
			}
		}
	}
	if fileName != "" {
		data, err := os.ReadFile(fileName)
		if err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		if err := yaml.Unmarshal(data, &fileValues); err != nil {
			return fmt.Errorf("config file %s: %w", fileName, err)
		}
		var unknown []string
		for k := range fileValues {
			if fs.Lookup(k) == nil || k == "config" {
				unknown = append(unknown, k)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			var known []string
			fs.VisitAll(func(f *flag.Flag) {
				if f.Name != "config" {
					known = append(known, f.Name)
				}
			})
			return fmt.Errorf("config file %s: unknown setting(s) %s (allowed: %s)", fileName, strings.Join(unknown, ", "), strings.Join(known, ", "))
		}
	}

	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || f.Name == "config" {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s: invalid value %q: %v", envName(f.Name), redactSetting(f.Name, v), err))
			}
			return
		}
		// PENNON_<NAME>_FILE: the value is the content of a file (a mounted
		// Secret), so secrets need neither a command line nor an env value.
		if path, ok := os.LookupEnv(envName(f.Name) + "_FILE"); ok {
			data, err := os.ReadFile(path)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s_FILE: %w", envName(f.Name), err))
				return
			}
			if err := f.Value.Set(strings.TrimSpace(string(data))); err != nil {
				errs = append(errs, fmt.Errorf("%s_FILE %s: invalid value: %v", envName(f.Name), path, err))
			}
			return
		}
		if v, ok := fileValues[f.Name]; ok {
			s := fmt.Sprint(v)
			if list, isList := v.([]any); isList {
				parts := make([]string, len(list))
				for i, e := range list {
					parts[i] = fmt.Sprint(e)
				}
				s = strings.Join(parts, ",")
			}
			if err := f.Value.Set(s); err != nil {
				errs = append(errs, fmt.Errorf("config file %s: %s: invalid value %q: %v", fileName, f.Name, redactSetting(f.Name, s), err))
			}
		}
	})
	return errors.Join(errs...)
}

// givenOnCommandLine reports whether --name (or -name) appears in args.
func givenOnCommandLine(args []string, name string) bool {
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		a = strings.TrimLeft(a, "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// redactSetting hides the value of settings that hold secrets in errors.
func redactSetting(name, v string) string {
	if strings.Contains(name, "token") || strings.Contains(name, "password") || strings.Contains(name, "seed") || strings.Contains(name, "secret") {
		return "<redacted>"
	}
	return v
}
