package main

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
)

// TestDispatch: the verb dispatcher runs the right verb with its
// arguments, and turns every malformed command line into a usage error
// (exit 2) that lists what is valid, without running anything.
func TestDispatch(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		ran     string // "verb arg…" that ran, "" for none
		usage   string // substring of the usage error, "" for none
		exitErr int    // exitError code from parsing, 0 for none
	}{
		{name: "list", args: []string{"list"}, ran: "list"},
		{name: "verb with argument", args: []string{"revoke", "abc"}, ran: "revoke abc"},
		{name: "flags before and after", args: []string{"--env", "prod", "create", "--name", "n"}, ran: "create"},
		{name: "flag between verb and argument", args: []string{"revoke", "--env", "prod", "abc"}, ran: "revoke abc"},
		{name: "no verb", args: nil, usage: "which verb? valid verbs: list, create, revoke ID"},
		{name: "typo", args: []string{"revok", "abc"}, usage: `unknown verb "revok"; valid verbs: list, create, revoke ID`},
		{name: "missing argument", args: []string{"revoke"}, usage: "tokens revoke needs ID"},
		{name: "extra argument", args: []string{"list", "all"}, usage: `tokens list: unexpected argument "all" (usage: tokens list)`},
		{name: "flag of another verb", args: []string{"list", "--name", "n"}, usage: "--name is not a flag of tokens list (it is for: create; tokens list takes none besides the common flags)"},
		{name: "unknown flag", args: []string{"list", "--nme", "n"}, exitErr: 2},
		{name: "help", args: []string{"--help"}, exitErr: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("tokens", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			fs.String("env", "dev", "")
			fs.String("name", "", "")
			ran := ""
			run := func(name string) func([]string) error {
				return func(a []string) error {
					ran = strings.TrimSpace(name + " " + strings.Join(a, " "))
					return nil
				}
			}
			pos, err := parseArgs(fs, tc.args)
			if err == nil {
				err = dispatch("tokens", fs, []string{"env"}, []verb{
					{name: "list", run: run("list")},
					{name: "create", flags: []string{"name"}, run: run("create")},
					{name: "revoke", args: []string{"ID"}, run: run("revoke")},
				}, pos)
			}
			var ue usageError
			var ee exitError
			switch {
			case tc.usage != "":
				if !errors.As(err, &ue) || !strings.Contains(ue.msg, tc.usage) {
					t.Fatalf("err %v, want a usage error containing %q", err, tc.usage)
				}
			case tc.ran == "":
				if !errors.As(err, &ee) || ee.code != tc.exitErr {
					t.Fatalf("err %v, want exit status %d", err, tc.exitErr)
				}
			case err != nil:
				t.Fatalf("err %v", err)
			}
			if ran != tc.ran {
				t.Fatalf("ran %q, want %q", ran, tc.ran)
			}
		})
	}
}

// TestUsageErrorExitsTwo: main prints a usage error with the command's name
// and a pointer to --help, and exits 2; unknown commands exit 2 too.
func TestUsageErrorExitsTwo(t *testing.T) {
	code, out, errOut := runCLI("tokens", "revok", "x", "--token", "t")
	if code != 2 || out != "" || errOut != "pennon tokens: unknown verb \"revok\"; valid verbs: list, create, revoke ID\nRun `pennon tokens --help` for its verbs and flags.\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, _, errOut = runCLI("flag", "list"); code != 2 || !strings.Contains(errOut, `unknown command "flag"`) {
		t.Fatalf("unknown command: exit %d, stderr %q", code, errOut)
	}
	// `pennon help CMD` is `pennon CMD --help`: the usage, exit 0.
	// Asked-for help goes to stdout (it is the output), so it can be paged.
	if code, out, errOut = runCLI("help", "tokens"); code != 0 || errOut != "" || !strings.HasPrefix(out, "Usage: pennon tokens list | create") {
		t.Fatalf("help tokens: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, out, errOut = runCLI("flags", "get", "--help"); code != 0 || errOut != "" || !strings.Contains(out, "--definition") {
		t.Fatalf("flags get --help: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestOutputEmit(t *testing.T) {
	human := func(w io.Writer) error {
		tb := newTable(w, "name", "roles", "note")
		tb.row("a", []string{"x=1", "y=2"}, "")
		tb.row("longer", nil, "tab\there")
		return tb.flush()
	}
	tests := []struct {
		name string
		json bool
		v    any
		want string
	}{
		{"table", false, nil, "NAME    ROLES    NOTE\na       x=1,y=2  -\nlonger  -        tab\\there\n"},
		{"raw JSON indented", true, []byte(`{"a":[1,2]}`), "{\n  \"a\": [\n    1,\n    2\n  ]\n}\n"},
		{"value marshalled", true, struct {
			A int `json:"a"`
		}{3}, "{\n  \"a\": 3\n}\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			if err := (output{w: &b, json: tc.json}).emit(tc.v, human); err != nil {
				t.Fatal(err)
			}
			if b.String() != tc.want {
				t.Fatalf("got\n%q\nwant\n%q", b.String(), tc.want)
			}
		})
	}
	var b strings.Builder
	if err := (output{w: &b, json: true}).emit([]byte(`{"a":`), human); err == nil {
		t.Fatalf("truncated JSON: want an error, wrote %q", b.String())
	}
}

func TestHumanJSON(t *testing.T) {
	var b strings.Builder
	if err := humanJSON(&b, []byte(`{"revoked":"abc","n":2,"roles":{"dev":"viewer"}}`)); err != nil {
		t.Fatal(err)
	}
	want := "n:        2\nrevoked:  abc\nroles:    {\"dev\":\"viewer\"}\n"
	if b.String() != want {
		t.Fatalf("got %q, want %q", b.String(), want)
	}
}

func TestUnescapeHTML(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"\u003e=":1}`, `{">=":1}`},
		{`{"a":"\u0026\u003c"}`, `{"a":"&<"}`},
		{`{"a":"\\u003e"}`, `{"a":"\\u003e"}`}, // an escaped backslash stays as is
		{`{"a":1}`, `{"a":1}`},
	}
	for _, tc := range tests {
		if got := string(unescapeHTML([]byte(tc.in))); got != tc.want {
			t.Errorf("unescapeHTML(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestPercentFlag(t *testing.T) {
	tests := []struct {
		in      string
		want    float64
		wantErr string
	}{
		{"1%", 0.01, ""}, {"0.05", 0.05, ""}, {" 12.5 % ", 0.125, ""}, {"0", 0, ""}, {"100%", 1, ""},
		{"150%", 0, "between 0% and 100%"}, {"-1", 0, "between 0% and 100%"}, {"abc", 0, "such as 1% or 0.01"}, {"NaN", 0, "between"},
	}
	for _, tc := range tests {
		var p percentFlag
		err := p.Set(tc.in)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Set(%q) = %v, want an error containing %q", tc.in, err, tc.wantErr)
			}
		case err != nil || float64(p) != tc.want:
			t.Errorf("Set(%q) = %v, %v; want %v", tc.in, float64(p), err, tc.want)
		}
	}
}
