package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/pennon-dev/pennon/control"
	"github.com/pennon-dev/pennon/internal/sign"
)

// The admin verbs are thin clients of the control plane's HTTP API: every
// rule (roles, conflicts, protected environments) is enforced by the
// server, so the CLI and the API can never disagree.

func init() {
	for _, c := range []command{
		{name: "flags", summary: "list, show, set, patch or delete flags in an environment", run: runFlags},
		{name: "history", summary: "show an environment's changesets, newest first", run: runHistory},
		{name: "diff", summary: "compare two versions of an environment", run: runDiff},
		{name: "rollback", summary: "restore flags to an earlier version (with --dry-run: impact analysis)", run: runRollback},
		{name: "promote", summary: "copy flags from one environment to another", run: runPromote},
		{name: "envs", summary: "list or create environments", run: runEnvs},
		{name: "tokens", summary: "list, create or revoke API tokens", run: runTokens},
		{name: "approvals", summary: "list, approve or reject change requests", run: runApprovals},
		{name: "sidecars", summary: "which sidecars serve which version, and who is behind", run: runSidecars},
		{name: "audit", summary: "export or verify the audit hash chain", run: runAudit},
	} {
		register(c)
	}
}

// adminCommon are the flags adminFlags adds, accepted by every admin verb.
var adminCommon = []string{"server", "token", "env", "json", "config"}

// client is an admin API client.
type client struct {
	server, token, env string
	asJSON             bool
	out                io.Writer
	http               *http.Client
}

// adminFlags adds the common flags; call parseAdmin after adding your own.
func adminFlags(name, usage, desc string, stderr io.Writer) (*flag.FlagSet, *client) {
	fs := newFlagSet(name, usage, desc, stderr)
	c := &client{http: &http.Client{Timeout: 30 * time.Second}}
	fs.StringVar(&c.server, "server", "http://127.0.0.1:8080", "control plane URL")
	fs.StringVar(&c.token, "token", "", "API token")
	fs.StringVar(&c.env, "env", "dev", "environment")
	fs.BoolVar(&c.asJSON, "json", false, "print JSON for scripts instead of a table")
	fs.String("config", "", "YAML file with any of these settings")
	return fs, c
}

// parseAdmin parses flags and positional words in any order (parseArgs).
func parseAdmin(fs *flag.FlagSet, args []string) ([]string, error) {
	return parseArgs(fs, args)
}

// apiError is the control plane's error body.
type apiErrorBody struct {
	Error struct {
		Code      string `json:"code"`
		Message   string `json:"message"`
		Problems  []struct{ Path, Reason string }
		Conflicts []struct {
			Flag                        string
			BaseVersion, CurrentVersion uint64
			Author                      string
		}
	} `json:"error"`
}

// call performs a request; a non-2xx answer becomes a readable error.
func (c *client) call(ctx context.Context, method, path string, body any, query url.Values) ([]byte, int, error) {
	var data []byte
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, 0, err
		}
		data = b
	}
	return c.send(ctx, method, path, "application/json", data, query)
}

// send performs a request with a body of the given content type (none
// when data is nil); a non-2xx answer becomes a readable error.
func (c *client) send(ctx context.Context, method, path, contentType string, data []byte, query url.Values) ([]byte, int, error) {
	if c.token == "" {
		return nil, 0, errors.New("--token (or PENNON_TOKEN) is required")
	}
	var rd io.Reader
	if data != nil {
		rd = bytes.NewReader(data)
	}
	u := strings.TrimRight(c.server, "/") + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if data != nil {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, resp.StatusCode, err
	}
	if resp.StatusCode >= 300 {
		var e apiErrorBody
		if json.Unmarshal(b, &e) != nil || e.Error.Message == "" {
			return b, resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, strings.TrimSpace(string(b)))
		}
		var msg strings.Builder
		fmt.Fprintf(&msg, "%s (%d %s)", e.Error.Message, resp.StatusCode, e.Error.Code)
		for _, p := range e.Error.Problems {
			fmt.Fprintf(&msg, "\n  %s: %s", p.Path, p.Reason)
		}
		for _, cf := range e.Error.Conflicts {
			fmt.Fprintf(&msg, "\n  %s: you based your change on version %d; it is at version %d (by %s)", cf.Flag, cf.BaseVersion, cf.CurrentVersion, cf.Author)
		}
		return b, resp.StatusCode, errors.New(msg.String())
	}
	return b, resp.StatusCode, nil
}

// emit writes the API's answer raw with --json, else renders it for people
// with human (see output.emit).
func (c *client) emit(raw []byte, human func(w io.Writer) error) error {
	return output{w: c.out, json: c.asJSON}.emit(raw, human)
}

// print is emit for an answer without a dedicated human view: people get
// its top-level members as aligned "name: value" lines (humanJSON), never
// the raw JSON unasked.
func (c *client) print(raw []byte, human func(w io.Writer) error) error {
	if human == nil {
		human = func(w io.Writer) error { return humanJSON(w, raw) }
	}
	return c.emit(raw, human)
}

// humanJSON renders a JSON object as sorted "name: value" lines; nested
// values stay compact JSON on their line. Anything else prints as is.
func humanJSON(w io.Writer, raw []byte) error {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		_, err := fmt.Fprintf(w, "%s\n", bytes.TrimSpace(raw))
		return err
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	kv := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		var s string
		if json.Unmarshal(m[k], &s) != nil {
			s = string(m[k])
		}
		kv = append(kv, k, s)
	}
	return fields(w, kv...)
}

func envPath(env, rest string) string { return "/api/v1/envs/" + url.PathEscape(env) + rest }

func runFlags(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("flags", "pennon flags list | get KEY | set KEY | patch KEY | delete KEY [--env dev] [--token T]", "Work with the flags of one environment.\npatch sends a JSON merge patch (RFC 7396): fields it does not name are kept, null removes one.", stderr)
	file := fs.String("file", "", "set: flag definition file (JSON); patch: merge patch file")
	def := fs.String("definition", "", "set: flag definition as JSON; patch: the merge patch as JSON")
	base := fs.Uint64("base", 0, "set, patch, delete: the flag version your change is based on (0 for a new flag)")
	reason := fs.String("reason", "", "set, patch, delete: why (required in protected environments)")
	emergency := fs.Bool("emergency", false, "set, patch, delete: apply directly in a protected environment (approvers only)")
	pos, err := parseAdmin(fs, args)
	if err != nil {
		return err
	}
	c.out = stdout
	write := []string{"base", "reason", "emergency"}
	return dispatch("flags", fs, adminCommon, []verb{
		{name: "list", run: func([]string) error { return c.listFlags(ctx) }},
		{name: "get", args: []string{"KEY"}, run: func(a []string) error { return c.getFlag(ctx, a[0]) }},
		{name: "set", args: []string{"KEY"}, flags: append([]string{"file", "definition"}, write...), run: func(a []string) error {
			body := *def
			if *file != "" {
				b, err := os.ReadFile(*file)
				if err != nil {
					return err
				}
				body = string(b)
			}
			if body == "" {
				return usagef("flags set needs --file FILE or --definition JSON: the flag's full definition")
			}
			if !json.Valid([]byte(body)) {
				return errors.New("the definition is not valid JSON")
			}
			raw, code, err := c.call(ctx, "PUT", envPath(c.env, "/flags/"+url.PathEscape(a[0])),
				map[string]any{"definition": json.RawMessage(body), "baseVersion": *base, "reason": *reason, "emergency": *emergency}, nil)
			if err != nil {
				return err
			}
			return c.printWrite(raw, code)
		}},
		{name: "patch", args: []string{"KEY"}, flags: append([]string{"file", "definition"}, write...), run: func(a []string) error {
			return c.patchFlag(ctx, a[0], *file, *def, *base, *reason, *emergency)
		}},
		{name: "delete", args: []string{"KEY"}, flags: write, run: func(a []string) error {
			q := url.Values{"baseVersion": {fmt.Sprint(*base)}, "reason": {*reason}}
			if *emergency {
				q.Set("emergency", "true")
			}
			raw, code, err := c.call(ctx, "DELETE", envPath(c.env, "/flags/"+url.PathEscape(a[0])), nil, q)
			if err != nil {
				return err
			}
			return c.printWrite(raw, code)
		}},
	}, pos)
}

func (c *client) listFlags(ctx context.Context) error {
	raw, _, err := c.call(ctx, "GET", envPath(c.env, "/flags"), nil, nil)
	if err != nil {
		return err
	}
	return c.emit(raw, func(w io.Writer) error {
		var out struct {
			Version uint64
			Flags   []struct {
				Key        string
				Version    uint64
				Definition map[string]any
			}
		}
		if err := json.Unmarshal(raw, &out); err != nil {
			return fmt.Errorf("flags list: unexpected answer: %w", err)
		}
		t := newTable(w, "flag", "version", "state", "default", "owner", "expires")
		for _, f := range out.Flags {
			t.row(f.Key, f.Version, f.Definition["state"], f.Definition["defaultVariant"], f.Definition["owner"], f.Definition["expires"])
		}
		if err := t.flush(); err != nil {
			return err
		}
		_, err := fmt.Fprintf(w, "(%s at version %d)\n", c.env, out.Version)
		return err
	})
}

func (c *client) getFlag(ctx context.Context, key string) error {
	raw, _, err := c.call(ctx, "GET", envPath(c.env, "/flags/"+url.PathEscape(key)), nil, nil)
	if err != nil {
		return err
	}
	return c.emit(raw, func(w io.Writer) error {
		var out struct {
			Key        string
			Version    uint64
			Author     string
			Time       *time.Time
			Definition json.RawMessage
		}
		if err := json.Unmarshal(raw, &out); err != nil {
			return fmt.Errorf("flags get: unexpected answer: %w", err)
		}
		var when any
		if out.Time != nil {
			when = out.Time.UTC().Format(time.RFC3339)
		}
		if err := fields(w, "flag", out.Key, "env", c.env, "version", out.Version, "changed by", out.Author, "changed at", when); err != nil {
			return err
		}
		var def bytes.Buffer
		if err := json.Indent(&def, out.Definition, "", "  "); err != nil {
			def.Write(out.Definition)
		}
		_, err := fmt.Fprintf(w, "definition:\n%s\n", unescapeHTML(def.Bytes()))
		return err
	})
}

// printWrite reports a committed changeset or an opened change request.
func (c *client) printWrite(raw []byte, code int) error {
	return c.emit(raw, func(w io.Writer) error {
		if code == http.StatusAccepted {
			var out struct{ ChangeRequest control.ChangeRequest }
			json.Unmarshal(raw, &out)
			_, err := fmt.Fprintf(w, "change request %s opened in %s: an approver other than you must approve it (pennon approvals approve %s --env %s)\n", out.ChangeRequest.ID, out.ChangeRequest.Env, out.ChangeRequest.ID, out.ChangeRequest.Env)
			return err
		}
		var cs struct {
			Env       string
			Version   uint64
			Emergency bool
		}
		json.Unmarshal(raw, &cs)
		tag := ""
		if cs.Emergency {
			tag = " (emergency: listed until reviewed)"
		}
		_, err := fmt.Fprintf(w, "committed %s version %d%s\n", cs.Env, cs.Version, tag)
		return err
	})
}

func printChangesets(w io.Writer, raw []byte) error {
	var out struct {
		Changesets []struct {
			Version   uint64
			Time      time.Time
			Author    string
			Reason    string
			Emergency bool
			Changes   []struct{ Flag, Op string }
		}
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return fmt.Errorf("history: unexpected answer: %w", err)
	}
	t := newTable(w, "version", "time", "author", "changes", "reason")
	for _, cs := range out.Changesets {
		var ch []string
		for _, c := range cs.Changes {
			ch = append(ch, c.Op+" "+c.Flag)
		}
		reason := cs.Reason
		if cs.Emergency {
			reason = "[EMERGENCY] " + reason
		}
		t.row(cs.Version, cs.Time.UTC().Format(time.RFC3339), cs.Author, summarize(ch), reason)
	}
	return t.flush()
}

func runHistory(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("history", "pennon history [--flag KEY] [--limit N] [--env dev]", "Show changesets, newest first.", stderr)
	flagKey := fs.String("flag", "", "only changesets touching this flag")
	limit := fs.Int("limit", 20, "how many")
	pos, err := parseAdmin(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("history", pos); err != nil {
		return err
	}
	c.out = stdout
	raw, _, err := c.call(ctx, "GET", envPath(c.env, "/history"), nil, url.Values{"flag": {*flagKey}, "limit": {fmt.Sprint(*limit)}})
	if err != nil {
		return err
	}
	return c.emit(raw, func(w io.Writer) error { return printChangesets(w, raw) })
}

// given reports whether the flag name was set on the command line, in the
// environment or in the config file (its value differs from the default or
// it was visited).
func given(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	if f := fs.Lookup(name); f != nil && f.Value.String() != f.DefValue {
		set = true
	}
	return set
}

func runDiff(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("diff", "pennon diff --from V1 [--to V2] [--env dev]", "Compare two versions (default: --from to the current version).", stderr)
	from := fs.Uint64("from", 0, "older version (required)")
	to := fs.String("to", "", "newer version (default: current)")
	pos, err := parseAdmin(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("diff", pos); err != nil {
		return err
	}
	if !given(fs, "from") {
		return usagef("--from is required: the older version to compare (pennon history lists versions)")
	}
	c.out = stdout
	q := url.Values{"from": {fmt.Sprint(*from)}}
	if *to != "" {
		q.Set("to", *to)
	}
	if !c.asJSON {
		q.Set("format", "text")
	}
	raw, _, err := c.call(ctx, "GET", envPath(c.env, "/diff"), nil, q)
	if err != nil {
		return err
	}
	return c.emit(raw, func(w io.Writer) error {
		_, err := w.Write(raw)
		return err
	})
}

func runRollback(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("rollback", "pennon rollback --to V [--flags a,b] [--dry-run] --reason WHY [--env dev]",
		"Restore flags (all, or --flags) to their state at version --to, as a new changeset.\nWith --dry-run, show the changes, flags affected through prerequisites, systems and risks.", stderr)
	to := fs.Uint64("to", 0, "version to restore (required)")
	var flags listFlag
	fs.Var(&flags, "flags", "flags to roll back (default: every flag that differs)")
	dry := fs.Bool("dry-run", false, "only show the impact analysis")
	reason := fs.String("reason", "", "why")
	emergency := fs.Bool("emergency", false, "apply directly in a protected environment (approvers only)")
	pos, err := parseAdmin(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("rollback", pos); err != nil {
		return err
	}
	// Without a target the API would plan restoring version 0, the empty
	// environment: deleting every flag. Nobody means that by omission.
	if !given(fs, "to") || *to == 0 {
		return usagef("--to V is required: the version (1 or more) to restore; pennon history lists versions")
	}
	c.out = stdout
	q := url.Values{}
	if *dry && !c.asJSON {
		q.Set("format", "text")
	}
	raw, code, err := c.call(ctx, "POST", envPath(c.env, "/rollback"), map[string]any{"toVersion": *to, "flags": []string(flags), "reason": *reason, "dryRun": *dry, "emergency": *emergency}, q)
	if err != nil {
		return err
	}
	if *dry {
		return c.emit(raw, func(w io.Writer) error {
			_, err := w.Write(raw)
			return err
		})
	}
	return c.printWrite(raw, code)
}

func runPromote(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("promote", "pennon promote --from ENV --env TARGET [--flags a,b] --reason WHY", "Copy flags from --from into --env as one changeset (a change request if --env is protected).", stderr)
	from := fs.String("from", "", "source environment (required)")
	var flags listFlag
	fs.Var(&flags, "flags", "flags to promote (default: all)")
	reason := fs.String("reason", "", "why")
	pos, err := parseAdmin(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("promote", pos); err != nil {
		return err
	}
	if *from == "" {
		return usagef("--from ENV is required: the environment to copy flags from (into --env)")
	}
	c.out = stdout
	raw, code, err := c.call(ctx, "POST", envPath(c.env, "/promote"), map[string]any{"from": *from, "flags": []string(flags), "reason": *reason}, nil)
	if err != nil {
		return err
	}
	return c.printWrite(raw, code)
}

func runEnvs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("envs", "pennon envs list | create NAME [--protected] [--expired-flags warn|block]", "List or create environments.", stderr)
	protected := fs.Bool("protected", false, "create: writes need an approved change request")
	expired := fs.String("expired-flags", "", "create: changes to expired flags are let through with a warning (warn, the default) or refused unless they extend expires (block); docs/lifecycle.md")
	pos, err := parseAdmin(fs, args)
	if err != nil {
		return err
	}
	c.out = stdout
	return dispatch("envs", fs, adminCommon, []verb{
		{name: "list", run: func([]string) error {
			raw, _, err := c.call(ctx, "GET", "/api/v1/envs", nil, nil)
			if err != nil {
				return err
			}
			return c.emit(raw, func(w io.Writer) error {
				var out struct {
					Envs []struct {
						Name      string
						Protected bool
					}
				}
				if err := json.Unmarshal(raw, &out); err != nil {
					return fmt.Errorf("envs list: unexpected answer: %w", err)
				}
				t := newTable(w, "env", "protected")
				for _, e := range out.Envs {
					t.row(e.Name, e.Protected)
				}
				return t.flush()
			})
		}},
		{name: "create", args: []string{"NAME"}, flags: []string{"protected", "expired-flags"}, run: func(a []string) error {
			body := map[string]any{"name": a[0], "protected": *protected}
			if *expired != "" {
				body["lifecycle"] = map[string]any{"expiredFlags": *expired}
			}
			raw, _, err := c.call(ctx, "POST", "/api/v1/envs", body, nil)
			if err != nil {
				return err
			}
			return c.emit(raw, func(w io.Writer) error {
				var e struct {
					Name      string
					Protected bool
				}
				json.Unmarshal(raw, &e)
				kind := "unprotected: writes apply directly"
				if e.Protected {
					kind = "protected: writes need an approved change request"
				}
				_, err := fmt.Fprintf(w, "created environment %s (%s)\n", e.Name, kind)
				return err
			})
		}},
	}, pos)
}

// roleList is "env=role,…" sorted by environment, so output is stable.
func roleList(roles map[string]string) string {
	rs := make([]string, 0, len(roles))
	for env, r := range roles {
		rs = append(rs, env+"="+r)
	}
	sort.Strings(rs)
	return strings.Join(rs, ",")
}

func runTokens(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("tokens", "pennon tokens list | create --name N --role ENV=ROLE [--expires-in 720h] | revoke ID", "Manage API tokens (admin). Secrets are shown once, at creation.", stderr)
	name := fs.String("name", "", "create: token name (required)")
	var roles listFlag
	fs.Var(&roles, "role", "create: ENV=ROLE or *=ROLE (repeatable; roles: viewer, editor, approver, admin)")
	expires := fs.String("expires-in", "", "create: lifetime, e.g. 720h")
	pos, err := parseAdmin(fs, args)
	if err != nil {
		return err
	}
	c.out = stdout
	return dispatch("tokens", fs, adminCommon, []verb{
		{name: "list", run: func([]string) error {
			raw, _, err := c.call(ctx, "GET", "/api/v1/tokens", nil, nil)
			if err != nil {
				return err
			}
			return c.emit(raw, func(w io.Writer) error {
				var out struct{ Tokens []control.TokenInfo }
				if err := json.Unmarshal(raw, &out); err != nil {
					return fmt.Errorf("tokens list: unexpected answer: %w", err)
				}
				t := newTable(w, "id", "name", "roles", "created", "expires", "revoked")
				for _, tk := range out.Tokens {
					var exp any
					if tk.ExpiresAt != nil {
						exp = tk.ExpiresAt.UTC().Format(time.RFC3339)
					}
					t.row(tk.ID, tk.Name, roleList(tk.Roles), tk.CreatedAt.UTC().Format(time.RFC3339), exp, tk.Revoked)
				}
				return t.flush()
			})
		}},
		{name: "create", flags: []string{"name", "role", "expires-in"}, run: func([]string) error {
			if *name == "" || len(roles) == 0 {
				return usagef("tokens create needs --name NAME and at least one --role ENV=ROLE (e.g. --role dev=editor)")
			}
			rm := map[string]string{}
			for _, r := range roles {
				env, role, ok := strings.Cut(r, "=")
				if !ok {
					return usagef("--role %q: want ENV=ROLE, e.g. dev=editor or *=viewer", r)
				}
				rm[env] = role
			}
			raw, _, err := c.call(ctx, "POST", "/api/v1/tokens", map[string]any{"name": *name, "roles": rm, "expiresIn": *expires}, nil)
			if err != nil {
				return err
			}
			return c.emit(raw, func(w io.Writer) error {
				var out struct {
					Token string
					Info  control.TokenInfo
				}
				if err := json.Unmarshal(raw, &out); err != nil {
					return fmt.Errorf("tokens create: unexpected answer: %w", err)
				}
				exp := "never"
				if out.Info.ExpiresAt != nil {
					exp = out.Info.ExpiresAt.UTC().Format(time.RFC3339)
				}
				if err := fields(w, "created token", out.Info.ID, "name", out.Info.Name, "roles", roleList(out.Info.Roles), "expires", exp); err != nil {
					return err
				}
				_, err := fmt.Fprintf(w, "secret (shown once; pennon stores only its hash):\n%s\n", out.Token)
				return err
			})
		}},
		{name: "revoke", args: []string{"ID"}, run: func(a []string) error {
			raw, _, err := c.call(ctx, "DELETE", "/api/v1/tokens/"+url.PathEscape(a[0]), nil, nil)
			if err != nil {
				return err
			}
			return c.emit(raw, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "revoked token %s: requests with it are refused from now on\n", a[0])
				return err
			})
		}},
	}, pos)
}

func runApprovals(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("approvals", "pennon approvals list | approve ID | reject ID --reason WHY [--env production]", "Work with change requests in protected environments.", stderr)
	reason := fs.String("reason", "", "reject: why (required)")
	pos, err := parseAdmin(fs, args)
	if err != nil {
		return err
	}
	c.out = stdout
	decide := func(action string) func([]string) error {
		return func(a []string) error {
			var body any
			if action == "reject" {
				if *reason == "" {
					return usagef("approvals reject needs --reason WHY: the author reads it")
				}
				body = map[string]any{"reason": *reason}
			}
			raw, _, err := c.call(ctx, "POST", envPath(c.env, "/change-requests/"+url.PathEscape(a[0])+"/"+action), body, nil)
			if err != nil {
				return err
			}
			return c.emit(raw, func(w io.Writer) error {
				if action == "reject" {
					_, err := fmt.Fprintf(w, "rejected change request %s in %s: %s\n", a[0], c.env, *reason)
					return err
				}
				var out struct{ Changeset struct{ Version uint64 } }
				json.Unmarshal(raw, &out)
				_, err := fmt.Fprintf(w, "approved change request %s: committed %s version %d\n", a[0], c.env, out.Changeset.Version)
				return err
			})
		}
	}
	return dispatch("approvals", fs, adminCommon, []verb{
		{name: "list", run: func([]string) error {
			raw, _, err := c.call(ctx, "GET", envPath(c.env, "/change-requests"), nil, url.Values{"state": {"open"}})
			if err != nil {
				return err
			}
			return c.emit(raw, func(w io.Writer) error {
				var out struct{ ChangeRequests []control.ChangeRequest }
				if err := json.Unmarshal(raw, &out); err != nil {
					return fmt.Errorf("approvals list: unexpected answer: %w", err)
				}
				t := newTable(w, "id", "author", "created", "changes", "reason")
				for _, cr := range out.ChangeRequests {
					var fl []string
					for _, ch := range cr.Changes {
						fl = append(fl, string(ch.Op)+" "+ch.Flag)
					}
					t.row(cr.ID, cr.Author, cr.CreatedAt.UTC().Format(time.RFC3339), summarize(fl), cr.Reason)
				}
				return t.flush()
			})
		}},
		{name: "approve", args: []string{"ID"}, run: decide("approve")},
		{name: "reject", args: []string{"ID"}, flags: []string{"reason"}, run: decide("reject")},
	}, pos)
}

func runSidecars(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("sidecars", "pennon sidecars [--env dev]", "Show which sidecars serve which version of the environment, and who is behind.", stderr)
	pos, err := parseAdmin(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("sidecars", pos); err != nil {
		return err
	}
	c.out = stdout
	raw, _, err := c.call(ctx, "GET", envPath(c.env, "/sidecars"), nil, nil)
	if err != nil {
		return err
	}
	return c.emit(raw, func(w io.Writer) error {
		var out struct {
			Version  uint64
			Sidecars []struct {
				ID, State string
				Version   uint64
				Time      time.Time
				Lost      bool
			}
			Behind []string
		}
		if err := json.Unmarshal(raw, &out); err != nil {
			return fmt.Errorf("sidecars: unexpected answer: %w", err)
		}
		t := newTable(w, "sidecar", "version", "state", "last report")
		for _, s := range out.Sidecars {
			mark := ""
			if s.Version < out.Version {
				mark = fmt.Sprintf(" (behind by %d)", out.Version-s.Version)
			}
			state := s.State
			if s.Lost {
				state = "LOST (last " + s.State + ")"
			}
			t.row(s.ID, fmt.Sprintf("%d%s", s.Version, mark), state, s.Time.UTC().Format(time.RFC3339))
		}
		if err := t.flush(); err != nil {
			return err
		}
		_, err := fmt.Fprintf(w, "(%s is at version %d; %d sidecar(s), %d behind)\n", c.env, out.Version, len(out.Sidecars), len(out.Behind))
		return err
	})
}

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("audit", "pennon audit export [--out FILE] | verify [--file FILE] [--trust-key ed25519:…]",
		"export writes the audit chain as JSON lines, after a first line with its anchors (the signed\n"+
			"checkpoint and the newest changeset of each environment, whose signed auditHead pins the chain);\n"+
			"verify checks hashes, links, signatures and anchors (from the server, or offline from an export)\n"+
			"and exits 1 naming the first edited, deleted, reordered, forged or truncated entry.", stderr)
	out := fs.String("out", "", "export: file to write (default stdout)")
	file := fs.String("file", "", "verify: check an exported JSON-lines file instead of the server")
	trustKeys := fs.String("trust-key", "", "verify: the control plane's public key(s), comma-separated (ed25519:…); default: the keys the server or the export names")
	pos, err := parseAdmin(fs, args)
	if err != nil {
		return err
	}
	c.out = stdout
	return dispatch("audit", fs, adminCommon, []verb{
		{name: "export", flags: []string{"out"}, run: func([]string) error {
			entries, anchors, err := c.auditFromServer(ctx)
			if err != nil {
				return err
			}
			return writeAuditExport(stdout, *out, entries, anchors)
		}},
		{name: "verify", flags: []string{"file", "trust-key"}, run: func([]string) error {
			var (
				entries []control.AuditEntry
				anchors *control.AuditAnchors
				err     error
			)
			if *file != "" {
				entries, anchors, err = readAuditExport(*file)
			} else {
				entries, anchors, err = c.auditFromServer(ctx)
			}
			if err != nil {
				return err
			}
			return c.verifyAudit(entries, anchors, *trustKeys, *file != "")
		}},
	}, pos)
}

// auditFromServer reads the whole chain and its anchors through the API.
func (c *client) auditFromServer(ctx context.Context) ([]control.AuditEntry, *control.AuditAnchors, error) {
	raw, _, err := c.call(ctx, "GET", "/api/v1/audit", nil, nil)
	if err != nil {
		return nil, nil, err
	}
	var body struct{ Entries []control.AuditEntry }
	if err := json.Unmarshal(raw, &body); err != nil {
		return nil, nil, fmt.Errorf("audit: unexpected answer: %w", err)
	}
	if raw, _, err = c.call(ctx, "GET", "/api/v1/audit/anchors", nil, nil); err != nil {
		return nil, nil, err
	}
	anchors := &control.AuditAnchors{}
	if err := json.Unmarshal(raw, anchors); err != nil {
		return nil, nil, fmt.Errorf("audit anchors: %w", err)
	}
	return body.Entries, anchors, nil
}

// writeAuditExport writes the anchors line, then one entry per line, to
// path (stdout when empty). The export is a data format, the same with or
// without --json.
func writeAuditExport(stdout io.Writer, path string, entries []control.AuditEntry, anchors *control.AuditAnchors) error {
	w := stdout
	if path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	enc := json.NewEncoder(w)
	if err := enc.Encode(auditExportHeader{Export: 1, ExportedAt: time.Now().UTC(), Anchors: anchors}); err != nil {
		return err
	}
	for _, e := range entries {
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	return nil
}

// auditVerdict is `pennon audit verify --json`.
type auditVerdict struct {
	OK      bool     `json:"ok"`
	Entries int      `json:"entries"`
	Anchors int      `json:"anchors"`
	KeysBy  string   `json:"keysFrom"`
	Notes   []string `json:"notes,omitempty"`
	// FirstBad is the sequence of the first bad entry (0 when OK).
	FirstBad uint64                 `json:"firstBad,omitempty"`
	Problems []control.AuditProblem `json:"problems,omitempty"`
}

// verifyAudit checks the chain and prints the verdict; a broken chain
// exits 1.
func (c *client) verifyAudit(entries []control.AuditEntry, anchors *control.AuditAnchors, trustKeys string, fromFile bool) error {
	var keys []sign.PublicKey
	source := "--trust-key"
	list := trustKeys
	if list == "" && anchors != nil {
		list, source = strings.Join(anchors.Keys, ","), "the keys named by the "+map[bool]string{true: "export", false: "server"}[fromFile]
	}
	for _, k := range strings.Split(list, ",") {
		if strings.TrimSpace(k) == "" {
			continue
		}
		pk, err := sign.ParsePublicKey(k)
		if err != nil {
			return usagef("--trust-key: %v", err)
		}
		keys = append(keys, pk)
	}
	res := control.VerifyEntries(entries, anchors, sign.NewTrust(keys...))
	v := auditVerdict{OK: res.OK, Entries: res.Entries, Anchors: res.Anchors, KeysBy: source, Problems: res.Problems}
	if source != "--trust-key" && len(keys) > 0 {
		v.Notes = append(v.Notes, "signatures checked against "+source+"; pin the key with --trust-key for an independent check")
	}
	v.Notes = append(v.Notes, res.Notes...)
	if anchors == nil {
		v.Notes = append(v.Notes, "the file has no anchors (an export from before anchoring): a truncated tail cannot be detected")
	}
	if !res.OK {
		v.FirstBad = res.FirstBad
	}
	err := output{w: c.out, json: c.asJSON}.emit(v, func(w io.Writer) error {
		for _, n := range v.Notes {
			fmt.Fprintf(w, "note: %s\n", n)
		}
		if res.OK {
			_, err := fmt.Fprintf(w, "audit chain OK: %d entries, %d anchors checked\n", res.Entries, res.Anchors)
			return err
		}
		fmt.Fprintf(w, "audit chain BROKEN at entry %d of %d: %s\n", res.FirstBad, res.Entries, res.Problem)
		for _, p := range res.Problems[1:] {
			fmt.Fprintf(w, "  entry %d: %s\n", p.Seq, p.Problem)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !res.OK {
		return exitError{code: 1}
	}
	return nil
}

// auditExportHeader is the first line of `pennon audit export`: the anchors
// that let the export be verified offline, truncated tail included.
type auditExportHeader struct {
	Export     int                   `json:"pennonAuditExport"`
	ExportedAt time.Time             `json:"exportedAt"`
	Anchors    *control.AuditAnchors `json:"anchors"`
}

// readAuditExport reads an export: an optional header line, then one entry
// per line.
func readAuditExport(path string) ([]control.AuditEntry, *control.AuditAnchors, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	var (
		entries []control.AuditEntry
		anchors *control.AuditAnchors
	)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for line := 1; sc.Scan(); line++ {
		if line == 1 && bytes.Contains(sc.Bytes(), []byte(`"pennonAuditExport"`)) {
			var h auditExportHeader
			if err := json.Unmarshal(sc.Bytes(), &h); err != nil {
				return nil, nil, fmt.Errorf("%s line 1 (anchors): %v", path, err)
			}
			anchors = h.Anchors
			if anchors == nil {
				anchors = &control.AuditAnchors{}
			}
			continue
		}
		var e control.AuditEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, nil, fmt.Errorf("%s line %d: %v", path, line, err)
		}
		entries = append(entries, e)
	}
	return entries, anchors, sc.Err()
}
