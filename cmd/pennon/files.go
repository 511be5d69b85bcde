package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"

	"github.com/pennon-dev/pennon/control"
)

// Flag sets as files: `pennon export` writes an environment as a flagd
// file, `pennon apply` makes an environment match a file (a plan, then one
// changeset). Both are thin clients of the API (export, apply).

func init() {
	register(command{name: "export", summary: "write an environment's flag set as a flagd file (canonical JSON)", run: runExport})
	register(command{name: "apply", summary: "make an environment match a flag file: show the plan, commit it as one changeset", run: runApply})
	register(command{name: "import", summary: "same as apply (for flagd users: pennon import -f flags.json --env E)", run: runApply})
}

func runExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("export", "pennon export --env ENV [--out flags.json]",
		"Write the environment's flag set as a flagd-format file (canonical JSON: sorted keys, no\n"+
			"insignificant whitespace). pennon sidecar --file, flagd and pennon apply accept it unchanged.", stderr)
	out := fs.String("out", "", "file to write (default: stdout)")
	pos, err := parseAdmin(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(fs.Name(), pos); err != nil {
		return err
	}
	raw, _, err := c.call(ctx, "GET", envPath(c.env, "/export"), nil, nil)
	if err != nil {
		return err
	}
	if *out == "" {
		// A terminal (and the next shell prompt) wants the last line ended;
		// --out keeps the file byte for byte as the API sent it.
		if !bytes.HasSuffix(raw, []byte("\n")) {
			raw = append(raw, '\n')
		}
		_, err = stdout.Write(raw)
		return err
	}
	return os.WriteFile(*out, raw, 0o644)
}

// applyAnswer is what POST /apply answers.
type applyAnswer struct {
	Plan struct {
		BaseVersions map[string]uint64 `json:"baseVersions"`
		Changes      []json.RawMessage `json:"changes"`
	} `json:"plan"`
	Text      string `json:"text"`
	Note      string `json:"note"`
	Changeset *struct {
		Env     string
		Version uint64
	} `json:"changeset"`
	ChangeRequest *control.ChangeRequest `json:"changeRequest"`
}

func runApply(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := adminFlags("apply", "pennon apply -f flags.json --env ENV [--prune] [--dry-run] [--reason WHY]",
		"Make an environment match a flag file. Shows the plan (flags to add, change and remove, $evaluators\n"+
			"and metadata changes), then commits it as one changeset; a flag changed by someone else since\n"+
			"the plan is a conflict naming it, and nothing is applied. Flags missing from the file are kept\n"+
			"unless --prune. In a protected environment this opens a change request.", stderr)
	var file string
	fs.StringVar(&file, "f", "", "the flag file (flagd format; - for stdin)")
	fs.StringVar(&file, "file", "", "same as -f")
	prune := fs.Bool("prune", false, "delete flags (and $evaluators) that the file does not have")
	dry := fs.Bool("dry-run", false, "only show the plan")
	reason := fs.String("reason", "", "why (required in protected environments)")
	emergency := fs.Bool("emergency", false, "apply directly in a protected environment (approvers only)")
	pos, err := parseAdmin(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(fs.Name(), pos); err != nil {
		return err
	}
	c.out = stdout
	if file == "" {
		return usagef("-f FILE is required: the flag file to apply (pennon export writes one)")
	}
	var doc []byte
	if file == "-" {
		doc, err = io.ReadAll(os.Stdin)
	} else {
		doc, err = os.ReadFile(file)
	}
	if err != nil {
		return err
	}
	if !json.Valid(doc) {
		return fmt.Errorf("%s is not valid JSON", file)
	}
	body := map[string]any{"document": json.RawMessage(doc), "prune": *prune, "dryRun": true}
	raw, _, err := c.call(ctx, "POST", envPath(c.env, "/apply"), body, nil)
	if err != nil {
		return err
	}
	var plan applyAnswer
	if err := json.Unmarshal(raw, &plan); err != nil {
		return fmt.Errorf("apply: unexpected answer: %w", err)
	}
	if *dry {
		if c.asJSON {
			return c.print(raw, nil)
		}
		_, err := io.WriteString(stdout, plan.Text)
		return err
	}
	if !c.asJSON {
		io.WriteString(stdout, plan.Text)
	}
	if len(plan.Plan.Changes) == 0 && !hasSetChange(raw) {
		if c.asJSON {
			return c.print(raw, nil)
		}
		return nil // the plan already says "No changes"
	}
	body = map[string]any{"document": json.RawMessage(doc), "prune": *prune, "reason": *reason, "emergency": *emergency, "baseVersions": plan.Plan.BaseVersions}
	raw, code, err := c.call(ctx, "POST", envPath(c.env, "/apply"), body, nil)
	if err != nil {
		return err
	}
	if c.asJSON {
		return c.print(raw, nil)
	}
	var res applyAnswer
	_ = json.Unmarshal(raw, &res)
	switch {
	case code == http.StatusAccepted && res.ChangeRequest != nil:
		_, err = fmt.Fprintf(stdout, "change request %s opened in %s: an approver other than you must approve it (pennon approvals approve %s --env %s)\n", res.ChangeRequest.ID, res.ChangeRequest.Env, res.ChangeRequest.ID, res.ChangeRequest.Env)
	case res.Changeset != nil:
		_, err = fmt.Fprintf(stdout, "committed %s version %d\n", res.Changeset.Env, res.Changeset.Version)
	case res.Note != "":
		_, err = fmt.Fprintln(stdout, res.Note)
	}
	return err
}

// hasSetChange reports whether a plan changes $evaluators or metadata.
func hasSetChange(raw []byte) bool {
	var p struct {
		Plan struct {
			Metadata      json.RawMessage `json:"metadata"`
			NewEvaluators json.RawMessage `json:"newEvaluators"`
		} `json:"plan"`
	}
	_ = json.Unmarshal(raw, &p)
	return len(p.Plan.Metadata) > 0 || len(p.Plan.NewEvaluators) > 0
}

// patchFlag sends a JSON merge patch for one flag. Without --base it is
// based on the flag's current version (read first), so only a change made
// between that read and the patch is a conflict.
func (c *client) patchFlag(ctx context.Context, key, file, def string, base uint64, reason string, emergency bool) error {
	body := []byte(def)
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		body = b
	}
	if len(body) == 0 {
		return errors.New("patch needs --file or --definition (a JSON merge patch such as {\"defaultVariant\":\"off\"})")
	}
	if !json.Valid(body) {
		return errors.New("the merge patch is not valid JSON")
	}
	path := envPath(c.env, "/flags/"+url.PathEscape(key))
	if base == 0 {
		raw, _, err := c.call(ctx, "GET", path, nil, nil)
		if err != nil {
			return err
		}
		var cur struct{ Version uint64 }
		if err := json.Unmarshal(raw, &cur); err != nil {
			return err
		}
		base = cur.Version
	}
	q := url.Values{"baseVersion": {fmt.Sprint(base)}, "reason": {reason}}
	if emergency {
		q.Set("emergency", "true")
	}
	raw, code, err := c.send(ctx, "PATCH", path, control.MergePatchType, body, q)
	if err != nil {
		return err
	}
	return c.printWrite(raw, code)
}
