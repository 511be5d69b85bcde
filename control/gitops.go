package control

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pennon-dev/pennon/config"
)

// WatchOptions configure the GitOps watcher.
type WatchOptions struct {
	// Dir holds one flagd file per environment, named <env>.json (a
	// Kubernetes ConfigMap mount or a git checkout).
	Dir string
	// Every is how often files are checked (default 5s). Each file is read
	// and hashed; only a file whose content changed is planned again.
	Every time.Duration
	// Prune deletes flags (and $evaluators) that a file does not have, so
	// the directory is the whole truth. Off: they are kept, and each apply's
	// plan (in the log) lists them.
	Prune bool
}

// gitopsPrincipal is who watched files are authored as: "gitops", with the
// editor role everywhere, so protected environments still get a change
// request that an approver must approve, as for any change.
var gitopsPrincipal = principal{tok: &TokenRecord{ID: "gitops", Name: "gitops", Roles: map[string]string{"*": "editor"}}}

var envFile = regexp.MustCompile(config.EnvNamePattern[:len(config.EnvNamePattern)-1] + `\.json$`)

// WatchDir applies DIR/<env>.json files as changesets whenever their
// content changes, until ctx ends. Each file is applied whole, as one
// changeset, or not at all: a file that does not parse or validate, or
// names an environment that does not exist, is rejected, logged once (per
// content) and counted in pennon_gitops_files_total{outcome="rejected"}; the
// environment is left as it was. A failed commit (store unreachable,
// concurrent change) is retried on the next check.
func (s *Server) WatchDir(ctx context.Context, o WatchOptions) error {
	if o.Every <= 0 {
		o.Every = 5 * time.Second
	}
	if st, err := os.Stat(o.Dir); err != nil || !st.IsDir() {
		return fmt.Errorf("--watch-dir %s: not a readable directory (%v)", o.Dir, err)
	}
	files := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pennon_gitops_files_total",
		Help: "Watched flag files handled, by environment and outcome: applied, change-request, unchanged, rejected, failed."}, []string{"env", "outcome"})
	if err := s.o.Registry.Register(files); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			files = are.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	w := &watcher{s: s, o: o, seen: map[string]string{}, files: files, failing: map[string]string{}}
	s.log.Info("watching flag files", zap.String("dir", o.Dir), zap.Duration("every", o.Every), zap.Bool("prune", o.Prune))
	t := time.NewTicker(o.Every)
	defer t.Stop()
	for {
		w.scan(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

type watcher struct {
	s     *Server
	o     WatchOptions
	seen  map[string]string // env → content hash last handled
	files *prometheus.CounterVec
	// failing is, per env, the transient error last logged: a store outage
	// is logged when it starts or changes, not on every check.
	failing map[string]string
}

// transient counts and logs (once per distinct error) a failure that the
// next check retries.
func (w *watcher) transient(env string, log *zap.Logger, err error) bool {
	w.files.WithLabelValues(env, "failed").Inc()
	if w.failing[env] != err.Error() {
		w.failing[env] = err.Error()
		log.Warn("flag file not applied (retried at every check; logged again only if the error changes)", zap.Error(err))
	}
	return true
}

func (w *watcher) scan(ctx context.Context) {
	entries, err := os.ReadDir(w.o.Dir)
	if err != nil {
		if w.seen["\x00dir"] != err.Error() {
			w.seen["\x00dir"] = err.Error()
			w.s.log.Warn("watched directory not readable", zap.String("dir", w.o.Dir), zap.Error(err))
		}
		return
	}
	delete(w.seen, "\x00dir")
	for _, e := range entries {
		name := e.Name()
		if !envFile.MatchString(name) {
			continue // ConfigMap internals (..data), editor files, other names
		}
		env := strings.TrimSuffix(name, ".json")
		path := filepath.Join(w.o.Dir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			continue // a directory, or replaced while read: next time
		}
		sum := sha256.Sum256(data)
		hash := hex.EncodeToString(sum[:])
		if w.seen[env] == hash {
			continue
		}
		w.seen[env] = hash
		if retry := w.applyFile(ctx, env, path, data, hash); retry {
			delete(w.seen, env)
		}
	}
}

// applyFile applies one file; retry says the failure was transient.
func (w *watcher) applyFile(ctx context.Context, env, path string, data []byte, hash string) (retry bool) {
	log := w.s.log.With(zap.String("env", env), zap.String("file", path), zap.String("sha256", hash[:12]))
	reject := func(why string, err error) bool {
		w.files.WithLabelValues(env, "rejected").Inc()
		log.Warn("flag file rejected; nothing applied", zap.String("why", why), zap.Error(err))
		return false
	}
	if _, err := w.s.o.Store.Env(ctx, env); errors.Is(err, config.ErrEnvNotFound) {
		return reject("environment does not exist (create it first: pennon envs create "+env+")", nil)
	} else if err != nil {
		return w.transient(env, log, err)
	}
	doc, err := config.Parse(data)
	if err != nil {
		return reject("invalid flag file", err)
	}
	head, err := w.s.o.Store.Head(ctx, env)
	if err != nil {
		return w.transient(env, log, err)
	}
	plan, err := config.PlanApply(head, doc, w.o.Prune, nil)
	if err != nil {
		return reject("the file would make the flag set invalid", err)
	}
	if plan.Empty() {
		w.files.WithLabelValues(env, "unchanged").Inc()
		log.Info("flag file matches the environment", zap.Uint64("version", head.Version), zap.Strings("kept", plan.Kept))
		return false
	}
	reason := "gitops: " + filepath.Base(path) + " " + gitDescribe(ctx, path, hash)
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, "/api/v1/envs/"+env+"/apply", nil)
	if err != nil {
		return false
	}
	r.SetPathValue("env", env)
	cw := &captureWriter{header: http.Header{}}
	err = w.s.apply(cw, r, gitopsPrincipal, writeRequest{Reason: reason, Changes: plan.Changes, Metadata: plan.Metadata, Evaluators: plan.NewEvals})
	var ce *config.ConflictError
	var ve *config.ValidationError
	switch {
	case errors.As(err, &ve):
		return reject("the file would make the flag set invalid", err)
	case errors.As(err, &ce), err != nil:
		return w.transient(env, log, err)
	}
	delete(w.failing, env)
	var out struct {
		Version       uint64
		ChangeRequest struct{ ID string }
	}
	_ = json.Unmarshal(cw.buf.Bytes(), &out)
	if cw.code == http.StatusAccepted {
		w.files.WithLabelValues(env, "change-request").Inc()
		log.Info("flag file opened a change request (protected environment)", zap.String("changeRequest", out.ChangeRequest.ID), zap.String("reason", reason))
		return false
	}
	w.files.WithLabelValues(env, "applied").Inc()
	log.Info("flag file applied", zap.Uint64("version", out.Version), zap.Int("changes", len(plan.Changes)),
		zap.Bool("evaluators", plan.NewEvals != nil), zap.Bool("metadata", plan.Metadata != nil), zap.Strings("kept", plan.Kept), zap.String("reason", reason))
	return false
}

// gitDescribe names the file's version: its last git commit and author when
// the directory is a git checkout (git log, or .git/HEAD when git is not
// installed), else its content hash.
func gitDescribe(ctx context.Context, path, hash string) string {
	dir := filepath.Dir(path)
	if _, err := exec.LookPath("git"); err == nil {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		out, err := exec.CommandContext(cctx, "git", "-C", dir, "log", "-1", "--format=%H%x00%an <%ae>%x00%s", "--", filepath.Base(path)).Output()
		if parts := strings.SplitN(strings.TrimSpace(string(out)), "\x00", 3); err == nil && len(parts) == 3 {
			return fmt.Sprintf("at commit %s by %s: %s (sha256 %s)", parts[0][:min(12, len(parts[0]))], parts[1], parts[2], hash[:12])
		}
	}
	if c := headCommit(dir); c != "" {
		return fmt.Sprintf("at commit %s (sha256 %s)", c[:min(12, len(c))], hash[:12])
	}
	return "sha256 " + hash[:12]
}

// headCommit reads the checkout's HEAD commit from .git without git.
func headCommit(dir string) string {
	for d := dir; ; d = filepath.Dir(d) {
		head, err := os.ReadFile(filepath.Join(d, ".git", "HEAD"))
		if err == nil {
			ref, ok := strings.CutPrefix(strings.TrimSpace(string(head)), "ref: ")
			if !ok {
				return strings.TrimSpace(string(head)) // detached
			}
			if b, err := os.ReadFile(filepath.Join(d, ".git", filepath.FromSlash(ref))); err == nil {
				return strings.TrimSpace(string(b))
			}
			if f, err := os.Open(filepath.Join(d, ".git", "packed-refs")); err == nil {
				defer f.Close()
				sc := bufio.NewScanner(f)
				for sc.Scan() {
					if h, name, ok := strings.Cut(sc.Text(), " "); ok && name == ref {
						return h
					}
				}
			}
			return ""
		}
		if filepath.Dir(d) == d {
			return ""
		}
	}
}
