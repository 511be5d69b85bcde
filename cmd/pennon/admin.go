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
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pennon-dev/pennon/control"
	"github.com/pennon-dev/pennon/internal/sign"
)

// The admin verbs are thin clients of the control plane's HTTP API: every
// rule (roles, conflicts, protected environments) is enforced by the
// server, so the CLI and the API can never disagree.

func init() {
	for _, c := range []command{
		{name: "flags", summary: "list, show, set or delete flags in an environment", run: runFlags},
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

// client is an admin API client.
type client struct {
	server, token, env string
	asJSON             bool
	out                io.Writer
	http               *http.Client
}

// adminFlags adds the common flags; call parse after adding your own.
func adminFlags(name, usage, desc string, stderr io.Writer) (*flag.FlagSet, *client) {
	fs := newFlagSet(name, usage, desc, stderr)
	c := &client{http: &http.Client{Timeout: 30 * time.Second}}
	fs.StringVar(&c.server, "server", "http://127.0.0.1:8080", "control plane URL")
	fs.StringVar(&c.token, "token", "", "API token")
	fs.StringVar(&c.env, "env", "dev", "environment")
	fs.BoolVar(&c.asJSON, "json", false, "print the API's JSON instead of a table")
	fs.String("config", "", "YAML file with any of these settings")
	return fs, c
}

// parseAdmin parses flags, allowing positional arguments after the verb.
func parseAdmin(fs *flag.FlagSet, args []string) ([]string, error) {
	// Move leading positional words (verb, key) after the flags for flag.Parse.
	var pos []string
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		pos = append(pos, args[0])
		args = args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, exitError{code: 0}
		}
		return nil, exitError{code: 2}
	}
	pos = append(pos, fs.Args()...)
	if err := parseSettings(fs, nil); err != nil {
		return nil, err
	}
	return pos, nil
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

// print writes raw JSON with --json, else renders with f.
func (c *client) print(raw []byte, f func(w *tabwriter.Writer) error) error {
	if c.asJSON || f == nil {
		var buf bytes.Buffer
		if json.Indent(&buf, raw, "", "  ") != nil {
			buf.Write(raw)
		}
		buf.WriteByte('\n')
		_, err := c.out.Write(buf.Bytes())
		return err
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	if err := f(tw); err != nil {
		return err
	}
	return tw.Flush()
}

func envPath(env, rest string) string { return "/api/v1/envs/" + url.PathEscape(env) + rest }

func runFlags(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("flags", "pennon flags list|get KEY|set KEY|patch KEY|delete KEY [--env dev] [--token T]", "Work with the flags of one environment.\npatch sends a JSON merge patch (RFC 7396): fields it does not name are kept, null removes one.", stderr)
	file := fs.String("file", "", "set: flag definition file (JSON); patch: merge patch file")
	def := fs.String("definition", "", "set: flag definition as JSON; patch: the merge patch as JSON")
	base := fs.Uint64("base", 0, "the flag version your change is based on (0 for a new flag)")
	reason := fs.String("reason", "", "why (required in protected environments)")
	emergency := fs.Bool("emergency", false, "apply directly in a protected environment (approvers only)")
	pos, err := parseAdmin(fs, args)
	if err != nil {
		return err
	}
	c.out = stdout
	if len(pos) == 0 {
		return errors.New("which verb? list, get KEY, set KEY, patch KEY, delete KEY")
	}
	switch verb := pos[0]; {
	case verb == "list":
		raw, _, err := c.call(ctx, "GET", envPath(c.env, "/flags"), nil, nil)
		if err != nil {
			return err
		}
		return c.print(raw, func(w *tabwriter.Writer) error {
			var out struct {
				Version uint64
				Flags   []struct {
					Key        string
					Version    uint64
					Definition map[string]any
				}
			}
			json.Unmarshal(raw, &out)
			fmt.Fprintf(w, "FLAG\tVERSION\tSTATE\tDEFAULT\tOWNER\tEXPIRES\n")
			for _, f := range out.Flags {
				fmt.Fprintf(w, "%s\t%d\t%v\t%v\t%v\t%v\n", f.Key, f.Version, f.Definition["state"], orDash(f.Definition["defaultVariant"]), orDash(f.Definition["owner"]), orDash(f.Definition["expires"]))
			}
			fmt.Fprintf(w, "(%s at version %d)\n", c.env, out.Version)
			return nil
		})
	case len(pos) < 2:
		return fmt.Errorf("%s needs a flag key", verb)
	case verb == "get":
		raw, _, err := c.call(ctx, "GET", envPath(c.env, "/flags/"+url.PathEscape(pos[1])), nil, nil)
		if err != nil {
			return err
		}
		return c.print(raw, nil)
	case verb == "set":
		body := *def
		if *file != "" {
			b, err := os.ReadFile(*file)
			if err != nil {
				return err
			}
			body = string(b)
		}
		if body == "" {
			return errors.New("set needs --file or --definition")
		}
		if !json.Valid([]byte(body)) {
			return errors.New("the definition is not valid JSON")
		}
		raw, code, err := c.call(ctx, "PUT", envPath(c.env, "/flags/"+url.PathEscape(pos[1])),
			map[string]any{"definition": json.RawMessage(body), "baseVersion": *base, "reason": *reason, "emergency": *emergency}, nil)
		if err != nil {
			return err
		}
		return c.printWrite(raw, code)
	case verb == "patch":
		return c.patchFlag(ctx, pos[1], *file, *def, *base, *reason, *emergency)
	case verb == "delete":
		q := url.Values{"baseVersion": {fmt.Sprint(*base)}, "reason": {*reason}}
		if *emergency {
			q.Set("emergency", "true")
		}
		raw, code, err := c.call(ctx, "DELETE", envPath(c.env, "/flags/"+url.PathEscape(pos[1])), nil, q)
		if err != nil {
			return err
		}
		return c.printWrite(raw, code)
	default:
		return fmt.Errorf("unknown verb %q: list, get, set, patch, delete", verb)
	}
}

// printWrite reports a committed changeset or an opened change request.
func (c *client) printWrite(raw []byte, code int) error {
	if c.asJSON {
		return c.print(raw, nil)
	}
	if code == http.StatusAccepted {
		var out struct{ ChangeRequest control.ChangeRequest }
		json.Unmarshal(raw, &out)
		_, err := fmt.Fprintf(c.out, "change request %s opened in %s: an approver other than you must approve it (pennon approvals approve %s --env %s)\n", out.ChangeRequest.ID, out.ChangeRequest.Env, out.ChangeRequest.ID, out.ChangeRequest.Env)
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
	_, err := fmt.Fprintf(c.out, "committed %s version %d%s\n", cs.Env, cs.Version, tag)
	return err
}

func orDash(v any) any {
	if v == nil || v == "" {
		return "-"
	}
	return v
}

func printChangesets(w *tabwriter.Writer, raw []byte) error {
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
		return err
	}
	fmt.Fprintf(w, "VERSION\tTIME\tAUTHOR\tCHANGES\tREASON\n")
	for _, cs := range out.Changesets {
		var ch []string
		for _, c := range cs.Changes {
			ch = append(ch, c.Op+" "+c.Flag)
		}
		reason := cs.Reason
		if cs.Emergency {
			reason = "[EMERGENCY] " + reason
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", cs.Version, cs.Time.UTC().Format(time.RFC3339), cs.Author, strings.Join(ch, ", "), reason)
	}
	return nil
}

func runHistory(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("history", "pennon history [--flag KEY] [--limit N] [--env dev]", "Show changesets, newest first.", stderr)
	flagKey := fs.String("flag", "", "only changesets touching this flag")
	limit := fs.Int("limit", 20, "how many")
	if _, err := parseAdmin(fs, args); err != nil {
		return err
	}
	c.out = stdout
	raw, _, err := c.call(ctx, "GET", envPath(c.env, "/history"), nil, url.Values{"flag": {*flagKey}, "limit": {fmt.Sprint(*limit)}})
	if err != nil {
		return err
	}
	return c.print(raw, func(w *tabwriter.Writer) error { return printChangesets(w, raw) })
}

func runDiff(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("diff", "pennon diff --from V1 [--to V2] [--env dev]", "Compare two versions (default: --from to the current version).", stderr)
	from := fs.Uint64("from", 0, "older version")
	to := fs.String("to", "", "newer version (default: current)")
	if _, err := parseAdmin(fs, args); err != nil {
		return err
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
	if c.asJSON {
		return c.print(raw, nil)
	}
	_, err = stdout.Write(raw)
	return err
}

func runRollback(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("rollback", "pennon rollback --to V [--flags a,b] [--dry-run] --reason WHY [--env dev]",
		"Restore flags (all, or --flags) to their state at version --to, as a new changeset.\nWith --dry-run, show the changes, flags affected through prerequisites, systems and risks.", stderr)
	to := fs.Uint64("to", 0, "version to restore")
	var flags listFlag
	fs.Var(&flags, "flags", "flags to roll back (default: every flag that differs)")
	dry := fs.Bool("dry-run", false, "only show the impact analysis")
	reason := fs.String("reason", "", "why")
	emergency := fs.Bool("emergency", false, "apply directly in a protected environment (approvers only)")
	if _, err := parseAdmin(fs, args); err != nil {
		return err
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
	if *dry && !c.asJSON {
		_, err = stdout.Write(raw)
		return err
	}
	return c.printWrite(raw, code)
}

func runPromote(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("promote", "pennon promote --from ENV --env TARGET [--flags a,b] --reason WHY", "Copy flags from --from into --env as one changeset (a change request if --env is protected).", stderr)
	from := fs.String("from", "", "source environment")
	var flags listFlag
	fs.Var(&flags, "flags", "flags to promote (default: all)")
	reason := fs.String("reason", "", "why")
	if _, err := parseAdmin(fs, args); err != nil {
		return err
	}
	c.out = stdout
	raw, code, err := c.call(ctx, "POST", envPath(c.env, "/promote"), map[string]any{"from": *from, "flags": []string(flags), "reason": *reason}, nil)
	if err != nil {
		return err
	}
	return c.printWrite(raw, code)
}

func runEnvs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("envs", "pennon envs list | create NAME [--protected]", "List or create environments.", stderr)
	protected := fs.Bool("protected", false, "create: writes need an approved change request")
	pos, err := parseAdmin(fs, args)
	if err != nil {
		return err
	}
	c.out = stdout
	if len(pos) > 0 && pos[0] == "create" {
		if len(pos) < 2 {
			return errors.New("create needs a name")
		}
		raw, _, err := c.call(ctx, "POST", "/api/v1/envs", map[string]any{"name": pos[1], "protected": *protected}, nil)
		if err != nil {
			return err
		}
		return c.print(raw, nil)
	}
	raw, _, err := c.call(ctx, "GET", "/api/v1/envs", nil, nil)
	if err != nil {
		return err
	}
	return c.print(raw, func(w *tabwriter.Writer) error {
		var out struct {
			Envs []struct {
				Name      string
				Protected bool
			}
		}
		json.Unmarshal(raw, &out)
		fmt.Fprintf(w, "ENV\tPROTECTED\n")
		for _, e := range out.Envs {
			fmt.Fprintf(w, "%s\t%v\n", e.Name, e.Protected)
		}
		return nil
	})
}

func runTokens(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("tokens", "pennon tokens list | create --name N --role ENV=ROLE | revoke ID", "Manage API tokens (admin). Secrets are shown once, at creation.", stderr)
	name := fs.String("name", "", "create: token name")
	var roles listFlag
	fs.Var(&roles, "role", "create: ENV=ROLE or *=ROLE (repeatable; roles: viewer, editor, approver, admin)")
	expires := fs.String("expires-in", "", "create: lifetime, e.g. 720h")
	pos, err := parseAdmin(fs, args)
	if err != nil {
		return err
	}
	c.out = stdout
	switch {
	case len(pos) > 0 && pos[0] == "create":
		rm := map[string]string{}
		for _, r := range roles {
			env, role, ok := strings.Cut(r, "=")
			if !ok {
				return fmt.Errorf("--role %q: want ENV=ROLE", r)
			}
			rm[env] = role
		}
		raw, _, err := c.call(ctx, "POST", "/api/v1/tokens", map[string]any{"name": *name, "roles": rm, "expiresIn": *expires}, nil)
		if err != nil {
			return err
		}
		return c.print(raw, nil)
	case len(pos) > 1 && pos[0] == "revoke":
		raw, _, err := c.call(ctx, "DELETE", "/api/v1/tokens/"+url.PathEscape(pos[1]), nil, nil)
		if err != nil {
			return err
		}
		return c.print(raw, nil)
	}
	raw, _, err := c.call(ctx, "GET", "/api/v1/tokens", nil, nil)
	if err != nil {
		return err
	}
	return c.print(raw, func(w *tabwriter.Writer) error {
		var out struct{ Tokens []control.TokenInfo }
		json.Unmarshal(raw, &out)
		fmt.Fprintf(w, "ID\tNAME\tROLES\tREVOKED\n")
		for _, t := range out.Tokens {
			var rs []string
			for env, r := range t.Roles {
				rs = append(rs, env+"="+r)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%v\n", t.ID, t.Name, strings.Join(rs, ","), t.Revoked)
		}
		return nil
	})
}

func runApprovals(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("approvals", "pennon approvals list | approve ID | reject ID --reason WHY [--env production]", "Work with change requests in protected environments.", stderr)
	reason := fs.String("reason", "", "reject: why")
	pos, err := parseAdmin(fs, args)
	if err != nil {
		return err
	}
	c.out = stdout
	if len(pos) > 1 && (pos[0] == "approve" || pos[0] == "reject") {
		var body any
		if pos[0] == "reject" {
			body = map[string]any{"reason": *reason}
		}
		raw, _, err := c.call(ctx, "POST", envPath(c.env, "/change-requests/"+url.PathEscape(pos[1])+"/"+pos[0]), body, nil)
		if err != nil {
			return err
		}
		return c.print(raw, nil)
	}
	raw, _, err := c.call(ctx, "GET", envPath(c.env, "/change-requests"), nil, url.Values{"state": {"open"}})
	if err != nil {
		return err
	}
	return c.print(raw, func(w *tabwriter.Writer) error {
		var out struct{ ChangeRequests []control.ChangeRequest }
		json.Unmarshal(raw, &out)
		fmt.Fprintf(w, "ID\tAUTHOR\tFLAGS\tREASON\n")
		for _, cr := range out.ChangeRequests {
			var fl []string
			for _, ch := range cr.Changes {
				fl = append(fl, string(ch.Op)+" "+ch.Flag)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", cr.ID, cr.Author, strings.Join(fl, ", "), cr.Reason)
		}
		return nil
	})
}

func runSidecars(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("sidecars", "pennon sidecars [--env dev]", "Show which sidecars serve which version of the environment, and who is behind.", stderr)
	if _, err := parseAdmin(fs, args); err != nil {
		return err
	}
	c.out = stdout
	raw, _, err := c.call(ctx, "GET", envPath(c.env, "/sidecars"), nil, nil)
	if err != nil {
		return err
	}
	return c.print(raw, func(w *tabwriter.Writer) error {
		var out struct {
			Version  uint64
			Sidecars []struct {
				ID, State string
				Version   uint64
				Time      time.Time
			}
			Behind []string
		}
		json.Unmarshal(raw, &out)
		fmt.Fprintf(w, "SIDECAR\tVERSION\tSTATE\tLAST REPORT\n")
		for _, s := range out.Sidecars {
			mark := ""
			if s.Version < out.Version {
				mark = fmt.Sprintf(" (behind by %d)", out.Version-s.Version)
			}
			fmt.Fprintf(w, "%s\t%d%s\t%s\t%s\n", s.ID, s.Version, mark, s.State, s.Time.UTC().Format(time.RFC3339))
		}
		fmt.Fprintf(w, "(%s is at version %d; %d sidecar(s), %d behind)\n", c.env, out.Version, len(out.Sidecars), len(out.Behind))
		return nil
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
	if len(pos) == 0 {
		return errors.New("which verb? export or verify")
	}
	var (
		entries []control.AuditEntry
		anchors *control.AuditAnchors
	)
	if *file != "" {
		if pos[0] != "verify" {
			return errors.New("--file is for verify")
		}
		if entries, anchors, err = readAuditExport(*file); err != nil {
			return err
		}
	} else {
		raw, _, err := c.call(ctx, "GET", "/api/v1/audit", nil, nil)
		if err != nil {
			return err
		}
		var body struct{ Entries []control.AuditEntry }
		if err := json.Unmarshal(raw, &body); err != nil {
			return err
		}
		entries = body.Entries
		if raw, _, err = c.call(ctx, "GET", "/api/v1/audit/anchors", nil, nil); err != nil {
			return err
		}
		anchors = &control.AuditAnchors{}
		if err := json.Unmarshal(raw, anchors); err != nil {
			return fmt.Errorf("audit anchors: %w", err)
		}
	}
	switch pos[0] {
	case "export":
		w := stdout
		if *out != "" {
			f, err := os.Create(*out)
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
	case "verify":
		var keys []sign.PublicKey
		source := "--trust-key"
		list := *trustKeys
		if list == "" && anchors != nil {
			list, source = strings.Join(anchors.Keys, ","), "the keys named by the "+map[bool]string{true: "export", false: "server"}[*file != ""]
		}
		for _, k := range strings.Split(list, ",") {
			if strings.TrimSpace(k) == "" {
				continue
			}
			pk, err := sign.ParsePublicKey(k)
			if err != nil {
				return fmt.Errorf("--trust-key: %w", err)
			}
			keys = append(keys, pk)
		}
		if source != "--trust-key" && len(keys) > 0 {
			fmt.Fprintf(stdout, "note: signatures checked against %s; pin the key with --trust-key for an independent check\n", source)
		}
		res := control.VerifyEntries(entries, anchors, sign.NewTrust(keys...))
		for _, n := range res.Notes {
			fmt.Fprintf(stdout, "note: %s\n", n)
		}
		if anchors == nil {
			fmt.Fprintln(stdout, "note: the file has no anchors (an export from before anchoring): a truncated tail cannot be detected")
		}
		if res.OK {
			fmt.Fprintf(stdout, "audit chain OK: %d entries, %d anchors checked\n", res.Entries, res.Anchors)
			return nil
		}
		fmt.Fprintf(stdout, "audit chain BROKEN at entry %d of %d: %s\n", res.FirstBad, res.Entries, res.Problem)
		for _, p := range res.Problems[1:] {
			fmt.Fprintf(stdout, "  entry %d: %s\n", p.Seq, p.Problem)
		}
		return exitError{code: 1}
	}
	return fmt.Errorf("unknown verb %q: export or verify", pos[0])
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
