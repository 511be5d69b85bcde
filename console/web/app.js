// app.js: the pennon console. A hash router picks a view; each view reads
// the admin API and builds its part of the page. Nothing here decides who
// may do what: a button the token may not use answers with the API's 403,
// shown as it came.

import * as api from "./api.js";
import { h, add, clear, field, when, ago, pretty, sideBySide, changedFields, table } from "./dom.js";
import { dependencyGraph, drawGraph } from "./graph.js";
import { rateChart } from "./chart.js";

const main = document.getElementById("main");
let me = null;          // whoami
let timers = [];        // per-view refreshes, stopped on navigation

// ---- page chrome ----------------------------------------------------------

// A message is shown until the next navigation, or through the next one
// when it reports what caused it (a save that reloads the view).
let keepNext = false;
function say(msg, throughNavigation = false) {
  keepNext = throughNavigation;
  const el = document.getElementById("status");
  el.textContent = msg;
  el.hidden = !msg;
}
function fail(err) {
  const el = document.getElementById("alert");
  if (!err) { el.hidden = true; el.textContent = ""; return; }
  const status = err.status ? ` (HTTP ${err.status}${err.code ? ", " + err.code : ""})` : "";
  el.textContent = (err.message || String(err)) + status;
  el.hidden = false;
}

function chrome() {
  const signed = !!me;
  document.getElementById("nav").hidden = !signed;
  document.getElementById("who").hidden = !signed;
  if (me) {
    const roles = Object.entries(me.roles || {}).map(([e, r]) => `${r} on ${e}`).join(", ");
    document.getElementById("who-name").textContent = `${me.name} (${me.id}) · ${roles}`;
  }
}

document.getElementById("signout").addEventListener("click", () => {
  api.setToken("");
  me = null;
  chrome();
  say("Signed out. The token is no longer kept in this tab.", true);
  location.hash = "#/signin";
});

api.setUnauthorizedHandler(() => {
  api.setToken("");
  me = null;
  chrome();
  fail({ message: "The API no longer accepts your token (revoked or expired). Sign in again." });
  location.hash = "#/signin";
});

// "/" focuses the page's search box, as in most consoles.
document.addEventListener("keydown", (e) => {
  if (e.key !== "/" || e.ctrlKey || e.metaKey || e.altKey) return;
  const t = e.target;
  if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) return;
  const box = document.querySelector("[data-search]");
  if (box) { e.preventDefault(); slashFocused = true; box.focus(); }
});
// Some input paths (DevTools' synthetic keys, some IMEs) still deliver the
// "/" character after keydown moved the focus; drop that one character.
let slashFocused = false;
document.addEventListener("keypress", (e) => {
  if (slashFocused && e.key === "/") e.preventDefault();
  slashFocused = false;
}, true);

// ---- routing ----------------------------------------------------------------

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/envs";
  const [p, q] = raw.split("?");
  return { parts: p.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(q || "") };
}

export function go(hash) { if (location.hash === hash) route(); else location.hash = hash; }
const envHash = (env, rest = "") => "#/envs/" + encodeURIComponent(env) + rest;

async function route() {
  timers.forEach(clearInterval);
  timers = [];
  fail(null);
  if (!keepNext) say("");
  keepNext = false;
  const { parts, query } = parseHash();
  if (!api.token()) { me = null; chrome(); return signIn(); }
  if (!me) {
    try { me = await api.get("/api/v1/whoami"); } catch (err) { if (!api.token()) return signIn(); fail(err); return; }
    chrome();
  }
  document.querySelectorAll("#nav a").forEach((a) => a.removeAttribute("aria-current"));
  const navKey = parts[0] === "envs" ? "envs" : parts[0];
  const cur = document.querySelector(`#nav a[data-nav="${navKey}"]`);
  if (cur) cur.setAttribute("aria-current", "page");
  clear(main);
  const view = h("div", { "aria-busy": "true" });
  main.appendChild(view);
  try {
    if (parts[0] === "signin") return signIn();
    if (parts[0] === "approvals") await approvals(view, null);
    else if (parts[0] === "emergencies") await emergencies(view, query);
    else if (parts[0] === "audit") await audit(view);
    else if (parts[0] === "envs" && parts[1]) {
      const env = parts[1], page = parts[2] || "flags";
      envHeader(view, env, page);
      const body = h("div", {});
      view.appendChild(body);
      if (page === "flags" && parts[3]) await flagPage(body, env, parts[3], query.get("new") === "1");
      else if (page === "flags") await flags(body, env);
      else if (page === "history") await history(body, env, query);
      else if (page === "diff") await diff(body, env, query);
      else if (page === "rollback") await rollback(body, env, query);
      else if (page === "fleet") await fleet(body, env);
      else if (page === "approvals") await approvals(body, env);
      else if (page === "experiments" && parts[3]) await experimentPage(body, env, parts[3]);
      else if (page === "experiments") await experiments(body, env);
      else if (page === "incidents") await incidents(body, env);
      else if (page === "events") await events(body, env);
      else body.appendChild(h("p", {}, "No such page."));
    } else await envs(view);
  } catch (err) {
    fail(err);
  } finally {
    view.removeAttribute("aria-busy");
  }
}

// After a navigation, focus moves to the new content so screen readers
// start there and Tab continues from it (not from the link clicked).
window.addEventListener("hashchange", () => route().then(() => {
  if (!main.contains(document.activeElement) && api.token()) main.focus({ preventScroll: true });
}));
route();

function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

// badges shows short labels, separated by spaces so they read (and copy)
// as words.
function badges(list, cls = () => "") {
  return list.flatMap((x, i) => [i ? " " : null, h("span", { class: ("badge " + cls(x)).trim() }, x)]);
}

function title(text) {
  document.title = text + " · pennon";
  return h("h1", {}, text);
}

// ---- sign in ----------------------------------------------------------------

function signIn() {
  clear(main);
  document.title = "Sign in · pennon";
  const input = h("input", { type: "password", name: "token", autocomplete: "off", required: true, spellcheck: "false" });
  const err = h("p", { class: "problems", hidden: true, role: "alert" });
  const form = h("form", { class: "card signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to pennon"),
    h("p", {}, "Paste an API token. ", h("code", {}, "pennon dev"), " prints an admin token when it starts (also in ",
      h("code", {}, "pennon-data/admin-token"), "); ", h("code", {}, "pennon tokens create"), " makes others."),
    field("API token", input, "Kept in this tab's session storage only; never put in a URL."),
    err,
    h("p", {}, h("button", { class: "primary", type: "submit" }, "Sign in")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const t = input.value.trim();
    try {
      const r = await api.call("GET", "/api/v1/whoami", undefined, { token: t });
      api.setToken(t);
      me = r.body;
      chrome();
      say(`Signed in as ${me.name}.`, true);
      go("#/envs");
    } catch (x) {
      err.textContent = x.status === 401 ? "The API does not accept this token: " + x.message : x.message;
      err.hidden = false;
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  });
  main.appendChild(form);
  input.focus();
}

// ---- environments -------------------------------------------------------------

async function envs(view) {
  const { envs } = await api.get("/api/v1/envs");
  const details = await Promise.all(envs.map((e) => api.get(api.envPath(e.name)).catch(() => null)));
  add(view, title("Environments"),
    table(null, ["Environment", "Protection", "Version", "Flags", "Your role", "Created"], envs.map((e, i) => [
      h("a", { href: envHash(e.name, "/flags") }, e.name),
      e.protected ? h("span", { class: "badge warn" }, "protected: changes need approval") : h("span", { class: "badge" }, "direct changes"),
      details[i] ? String(details[i].version) : "?",
      details[i] ? String(details[i].flags) : "?",
      (me.roles && (me.roles[e.name] || me.roles["*"])) || "none",
      when(e.createdAt),
    ])));
}

function envHeader(view, env, page) {
  const tabs = [["flags", "Flags"], ["history", "History"], ["diff", "Diff"], ["rollback", "Rollback"], ["fleet", "Fleet"], ["approvals", "Approvals"],
    ["experiments", "Experiments"], ["incidents", "Incidents"], ["events", "Activity"]];
  add(view, h("div", { class: "crumbs" }, h("a", { href: "#/envs" }, "Environments"), " / ", env),
    h("nav", { class: "tabs", "aria-label": "Environment " + env },
      tabs.map(([k, label]) => h("a", { href: envHash(env, "/" + k), "aria-current": k === page ? "page" : null }, label))));
}

// ---- flags list ---------------------------------------------------------------

function lifecycle(def) {
  const out = [];
  if (!def.owner) out.push("no owner");
  if (!def.expires) out.push("no expiry");
  else {
    const t = new Date(def.expires).getTime();
    if (t < Date.now()) out.push("expired");
    else if (t < Date.now() + 30 * 86400e3) out.push("expires within 30 days");
  }
  return out;
}

// optional is a read the view can do without: a control plane that does
// not aggregate usage answers 501, and the view says so instead of failing.
function optional(p) { return p.catch((err) => ({ unavailable: err.message || String(err) })); }

// The lifecycle report's findings the list cannot work out from the
// definition alone (they need usage or history).
const REPORT_FINDINGS = ["unused", "stale", "settled", "retirement-met", "orphaned-prerequisite"];

async function flags(body, env) {
  const [list, hist, use, anom, life] = await Promise.all([api.get(api.envPath(env, "/flags")), api.get(api.envPath(env, "/history?limit=1000")),
    optional(api.get(api.envPath(env, "/usage"))), optional(api.get(api.envPath(env, "/anomalies"))), optional(api.get(api.envPath(env, "/lifecycle")))]);
  const usageOf = (use && use.flags) || {};
  const anomalous = new Set(((anom && anom.anomalies) || []).filter((a) => !a.closed).map((a) => a.flag));
  const reportFindings = {};
  for (const f of (life && life.flags) || []) reportFindings[f.key] = (f.findings || []).map((x) => x.kind).filter((k) => REPORT_FINDINGS.includes(k));
  const findingsOf = (f) => [...lifecycle(f.definition), ...(reportFindings[f.key] || [])];
  const byVersion = {};
  for (const cs of hist.changesets || []) byVersion[cs.version] = cs;
  const all = list.flags;
  const owners = [...new Set(all.map((f) => f.definition.owner).filter(Boolean))].sort();
  const systems = [...new Set(all.flatMap((f) => f.definition.systems || []))].sort();
  const opt = (v, label) => h("option", { value: v }, label ?? v);
  const q = h("input", { type: "search", "data-search": true, placeholder: "key or description (press /)", "aria-keyshortcuts": "/" });
  const owner = h("select", {}, opt("", "any owner"), owners.map((o) => opt(o)));
  const system = h("select", {}, opt("", "any system"), systems.map((o) => opt(o)));
  const state = h("select", {}, opt("", "any state"), opt("ENABLED"), opt("DISABLED"));
  const lifeSel = h("select", {}, opt("", "any"), ["expired", "expires within 30 days", "no owner", "no expiry", ...REPORT_FINDINGS].map((o) => opt(o)));
  const count = h("p", { class: "muted", "aria-live": "polite" });
  const holder = h("div", {});
  const render = () => {
    const needle = q.value.trim().toLowerCase();
    const rows = all.filter((f) => {
      const d = f.definition;
      if (needle && !f.key.toLowerCase().includes(needle) && !(d.description || "").toLowerCase().includes(needle)) return false;
      if (owner.value && d.owner !== owner.value) return false;
      if (system.value && !(d.systems || []).includes(system.value)) return false;
      if (state.value && d.state !== state.value) return false;
      if (lifeSel.value && !findingsOf(f).includes(lifeSel.value)) return false;
      return true;
    });
    count.textContent = `${rows.length} of ${all.length} flags · environment version ${list.version}`;
    clear(holder).appendChild(table(null, ["Flag", "State", "Default", "Owner", "Systems", "Findings", "Evaluations 24 h", "Last evaluated", "Version", "Last changed"], rows.map((f) => {
      const d = f.definition, cs = byVersion[f.version], u = usageOf[f.key];
      return [
        [h("a", { href: envHash(env, "/flags/" + encodeURIComponent(f.key)) }, f.key), anomalous.has(f.key) ? [" ", h("span", { class: "badge bad" }, "anomaly")] : null],
        h("span", { class: "badge " + (d.state === "ENABLED" ? "ok" : "") }, d.state),
        d.defaultVariant ?? "(code default)",
        d.owner || "",
        badges(d.systems || []),
        badges(findingsOf(f), (x) => (x === "expired" || x === "unused" ? "bad" : "warn")),
        use.unavailable ? "–" : h("span", { class: "num" }, String(u ? u.last24h : 0)),
        use.unavailable ? "–" : u && u.lastEvaluated ? h("span", { title: when(u.lastEvaluated) }, ago(u.lastEvaluated)) : "never",
        h("span", { class: "num" }, String(f.version)),
        cs ? h("span", { title: when(cs.time) }, ago(cs.time) + " by " + cs.author) : "",
      ];
    }), (i) => ({ class: anomalous.has(rows[i].key) ? "anomaly" : "" })));
  };
  for (const c of [q, owner, system, state, lifeSel]) c.addEventListener("input", render);
  const newKey = h("input", { type: "text", placeholder: "new-flag-key", spellcheck: "false" });
  const create = h("form", { class: "row", "aria-label": "New flag" }, field("New flag", newKey), h("button", { type: "submit" }, "Create…"));
  create.addEventListener("submit", (e) => {
    e.preventDefault();
    const k = newKey.value.trim();
    if (!k) { newKey.focus(); return; }
    go(envHash(env, "/flags/" + encodeURIComponent(k) + "?new=1"));
  });
  add(body, title(`Flags in ${env}`),
    h("div", { class: "row", role: "search" }, field("Search", q), field("Owner", owner), field("System", system), field("State", state), field("Lifecycle", lifeSel)),
    anomalous.size ? h("p", { class: "problems", role: "note" }, `Anomaly: the served variants of ${[...anomalous].sort().join(", ")} shifted without a change (see each flag's page).`) : null,
    use.unavailable ? h("p", { class: "muted" }, "Usage: " + use.unavailable) : null,
    count, holder, create);
  render();
}

// ---- a flag -------------------------------------------------------------------

const STRUCTURED = [
  ["state", "State", "select"], ["defaultVariant", "Default variant", "variant"], ["description", "Description", "text"],
  ["owner", "Owner", "text"], ["expires", "Expires", "text", "YYYY-MM-DD"], ["systems", "Systems", "list", "comma separated"],
  ["variants", "Variants", "rows"], ["targeting", "Targeting", "json"], ["prerequisites", "Prerequisites", "rows"],
  ["metadata", "Metadata", "json"],
];

// A new flag starts from this template (baseVersion 0: "I believe it
// does not exist"; if it does, the API answers 409 like any stale edit).
const NEW_FLAG = { state: "ENABLED", variants: { on: true, off: false }, defaultVariant: "off" };

async function flagPage(body, env, key, isNew) {
  const [flag, envInfo, hist, all] = await Promise.all([
    api.get(api.envPath(env, "/flags/" + encodeURIComponent(key))).catch((err) => {
      if (isNew && err.status === 404) return { key, version: 0, definition: structuredClone(NEW_FLAG) };
      throw err;
    }),
    api.get(api.envPath(env)),
    api.get(api.envPath(env, "/history?limit=50&flag=" + encodeURIComponent(key))),
    api.get(api.envPath(env, "/flags")),
  ]);
  const usage = isNew ? null : usagePanel(env, key, flag.definition);
  const flagKeys = all.flags.map((f) => f.key);
  let base = flag.definition;              // what the edit started from
  let baseVersion = flag.version;
  let draft = structuredClone(base);
  const meta = h("p", { class: "muted" });
  const showMeta = () => {
    meta.textContent = baseVersion === 0 ? `new flag: not in ${env} yet` : `version ${baseVersion}` + (flag.author ? ` · last changed by ${flag.author} at ${when(flag.time)}` : "");
  };
  showMeta();

  // Structured editor: one control per common field.
  const controls = {};
  const form = h("div", { class: "grid-form" });
  for (const [name, label, kind, hint] of STRUCTURED) {
    let c;
    if (kind === "select") c = h("select", {}, ["ENABLED", "DISABLED"].map((v) => h("option", { value: v }, v)));
    else if (kind === "variant") c = h("select", {});
    else if (kind === "json") c = h("textarea", { class: "small", spellcheck: "false" });
    else if (kind === "rows") c = name === "variants" ? variantRows() : prerequisiteRows(flagKeys.filter((k) => k !== key));
    else c = h("input", { type: "text", placeholder: hint || "" });
    c.id = "field-" + name;
    c.dataset.field = name;
    controls[name] = c;
    add(form, kind === "rows" ? h("span", { id: "label-" + name, class: "label" }, label) : h("label", { for: c.id }, label), c);
    c.addEventListener("input", () => fromStructured(name));
  }
  const jsonBox = h("textarea", { class: "json", id: "flag-json", spellcheck: "false", "aria-describedby": "problems" });
  const problems = h("div", { id: "problems", "aria-live": "polite" });
  const reason = h("input", { type: "text", class: "wide", placeholder: "why (shown in history and audit)" });
  const emergency = h("input", { type: "checkbox" });
  const save = h("button", { class: "primary", type: "button" }, envInfo.protected ? "Request change" : "Save");
  const result = h("div", { "aria-live": "polite" });

  function fillStructured(except) {
    const vsel = controls.defaultVariant;
    const variants = Object.keys(draft.variants || {});
    if (except !== "defaultVariant") {
      add(clear(vsel), h("option", { value: "" }, "(none: code default)"), variants.map((v) => h("option", { value: v }, v)));
    }
    for (const [name, , kind] of STRUCTURED) {
      if (name === except) continue;
      const c = controls[name], v = draft[name];
      if (kind === "json") c.value = v === undefined ? "" : pretty(v);
      else if (kind === "rows") c.set(v || {});
      else if (kind === "list") c.value = (v || []).join(", ");
      else c.value = v ?? "";
    }
  }
  // syntax names a field whose text is not JSON; the draft keeps its last
  // valid value, so saving waits until the text parses again.
  let syntax = null;
  function fromStructured(name) {
    const [, , kind] = STRUCTURED.find((s) => s[0] === name);
    const c = controls[name];
    c.removeAttribute("aria-invalid");
    if (syntax === name) syntax = null;
    let v = c.value;
    if (kind === "json") {
      if (!v.trim()) v = undefined;
      else try { v = JSON.parse(v); } catch (e) { syntax = name; c.setAttribute("aria-invalid", "true"); showProblems([{ path: "definition." + name, reason: "not valid JSON: " + e.message }]); return; }
    } else if (kind === "list") v = v.split(",").map((s) => s.trim()).filter(Boolean);
    else if (kind === "rows") {
      const r = c.get();
      if (r.error) { syntax = name; c.setAttribute("aria-invalid", "true"); showProblems([{ path: "definition." + name, reason: r.error }]); return; }
      v = Object.keys(r.value).length || name === "variants" ? r.value : undefined;
    }
    if (v === "" || (Array.isArray(v) && !v.length)) v = name === "defaultVariant" ? null : undefined;
    if (v === undefined) delete draft[name]; else draft[name] = v;
    jsonBox.value = pretty(draft);
    if (name === "variants") fillStructured(name); // the default variant's choices follow
    changed();
  }
  jsonBox.addEventListener("input", () => {
    jsonBox.removeAttribute("aria-invalid");
    syntax = null;
    try {
      const v = JSON.parse(jsonBox.value);
      if (!v || typeof v !== "object" || Array.isArray(v)) throw new Error("a flag definition is a JSON object");
      draft = v;
    } catch (e) {
      syntax = "json";
      jsonBox.setAttribute("aria-invalid", "true");
      showProblems([{ path: "(JSON syntax)", reason: e.message }]);
      return;
    }
    fillStructured();
    changed();
  });

  // Validation as you type, by the API's own rules (POST …/validate).
  let seq = 0, debounce = null;
  function changed() {
    clearTimeout(debounce);
    debounce = setTimeout(validate, 300);
  }
  async function validate() {
    const mine = ++seq;
    try {
      const r = await api.post(api.envPath(env, "/validate"), { flag: key, definition: draft });
      if (mine === seq) showProblems(r.body.problems || []);
    } catch (err) {
      if (mine === seq) showProblems([{ path: "(validation)", reason: err.message }]);
    }
  }
  function showProblems(list) {
    for (const [name, c] of Object.entries(controls)) if (name !== syntax) c.removeAttribute("aria-invalid");
    clear(problems);
    if (!list.length) { problems.appendChild(h("p", { class: "ok-box" }, "✓ valid: the API would accept this definition")); return; }
    problems.appendChild(h("ul", { class: "problems", "aria-label": "Validation problems" }, list.map((p) => {
      const top = String(p.path).replace(/^definition\.?/, "").split(/[.[]/)[0];
      if (controls[top]) controls[top].setAttribute("aria-invalid", "true");
      return h("li", {}, h("code", {}, p.path), ": ", p.reason);
    })));
  }

  // Saving: 201 committed, 202 change request, 409 conflict, 422 problems.
  save.addEventListener("click", async () => {
    clear(result);
    fail(null);
    if (syntax) {
      fail({ message: `Nothing was saved: the ${syntax === "json" ? "JSON editor" : syntax + " field"} does not hold valid JSON yet.` });
      (syntax === "json" ? jsonBox : controls[syntax]).focus();
      return;
    }
    save.disabled = true;
    try {
      const r = await api.put(api.envPath(env, "/flags/" + encodeURIComponent(key)), { definition: draft, baseVersion, reason: reason.value, emergency: emergency.checked });
      if (r.status === 202) {
        const cr = r.body.changeRequest;
        say(`Change request ${cr.id} opened: ${r.body.note}.`);
        result.appendChild(h("p", { class: "ok-box" }, `Change request ${cr.id} is waiting for an approver. `, h("a", { href: envHash(env, "/approvals") }, "Open approvals")));
      } else {
        say(`Saved ${key}: ${env} is now at version ${r.body.version}.`, true);
        if (isNew) return go(envHash(env, "/flags/" + encodeURIComponent(key)));
        return route();
      }
    } catch (err) {
      if (err.status === 409 && err.conflicts.length) showConflict(err.conflicts);
      else if (err.problems.length) { showProblems(err.problems); fail(err); }
      else fail(err);
    } finally {
      save.disabled = false;
    }
  });

  function showConflict(conflicts) {
    const c = conflicts.find((x) => x.flag === key) || conflicts[0];
    const current = c.current;
    const rebase = h("button", { class: "primary", type: "button" }, `Rebase my edit on version ${c.currentVersion}`);
    const discard = h("button", { type: "button" }, "Discard my edit and load the current version");
    rebase.addEventListener("click", () => {
      // Three-way merge by top-level field: the fields you changed keep
      // your value, every other field takes the current one.
      const merged = structuredClone(current || {});
      const both = [];
      for (const k of new Set([...Object.keys(base || {}), ...Object.keys(draft)])) {
        const mineChanged = JSON.stringify(base?.[k]) !== JSON.stringify(draft[k]);
        const theirsChanged = JSON.stringify(base?.[k]) !== JSON.stringify(current?.[k]);
        if (!mineChanged) continue;
        if (theirsChanged && JSON.stringify(current?.[k]) !== JSON.stringify(draft[k])) both.push(k);
        if (draft[k] === undefined) delete merged[k]; else merged[k] = structuredClone(draft[k]);
      }
      draft = merged;
      base = current;
      baseVersion = c.currentVersion;
      flag.author = c.author; flag.time = c.time;
      showMeta();
      fillStructured();
      jsonBox.value = pretty(draft);
      clear(result).appendChild(h("p", { class: both.length ? "warn-box" : "ok-box" },
        `Your edit now applies on top of version ${baseVersion}.` +
        (both.length ? ` Both you and ${c.author} changed: ${both.join(", ")} — your values are kept; check them.` : "") + " Review and save again."));
      say(`Rebased on version ${baseVersion}.`);
      changed();
      save.focus();
    });
    discard.addEventListener("click", () => route());
    add(clear(result), h("section", { class: "card", "aria-labelledby": "conflict-title" },
      h("h2", { id: "conflict-title" }, `Conflict: ${c.flag} changed since version ${c.baseVersion}`),
      h("p", {}, `${c.author || "someone"} changed it at ${when(c.time)}; it is now at version ${c.currentVersion}. Nothing was saved.`),
      h("ul", {},
        h("li", {}, `${c.author || "They"} changed: `, h("strong", {}, changedFields(base, current).join(", ") || "nothing visible (same definition)")),
        h("li", {}, "You changed: ", h("strong", {}, changedFields(base, draft).join(", ") || "nothing"))),
      h("h3", {}, "What changed since you started"),
      sideBySide(`Your base (version ${c.baseVersion})`, base, `Current (version ${c.currentVersion}, ${c.author || ""})`, current),
      h("h3", {}, "Your edit against the current version"),
      sideBySide(`Current (version ${c.currentVersion})`, current, "Yours", c.proposed ?? draft),
      h("div", { class: "actions" }, rebase, discard)));
    fail({ message: `Conflict: ${c.flag} is at version ${c.currentVersion} now (you started from ${c.baseVersion}). Rebase your edit or discard it.`, status: 409, code: "conflict" });
    rebase.focus();
    result.scrollIntoView({ block: "start" });
  }

  fillStructured();
  jsonBox.value = pretty(draft);
  add(body, title(key), meta, usage,
    h("div", { class: "grid2" },
      h("section", { class: "card", "aria-labelledby": "structured-title" }, h("h2", { id: "structured-title" }, "Definition"), form),
      h("section", { class: "card", "aria-labelledby": "json-title" }, h("h2", { id: "json-title" }, h("label", { for: "flag-json" }, "JSON")), jsonBox)),
    h("section", { class: "card", "aria-labelledby": "save-title" },
      h("h2", { id: "save-title" }, envInfo.protected ? `Request a change (${env} is protected)` : "Save"),
      problems,
      h("div", { class: "row" }, h("div", { class: "stack wide" }, field("Reason", reason)),
        field("Emergency (approvers)", emergency), save),
      result),
    h("h2", {}, "History of this flag"),
    timeline(env, hist.changesets || [], key));
  validate();
}

// usagePanel is the flag's usage and lifecycle card: filled when its reads
// answer, so the editor never waits for them.
function usagePanel(env, key, def) {
  const box = h("section", { class: "card", "aria-labelledby": "usage-title", "aria-busy": "true" }, h("h2", { id: "usage-title" }, "Usage and lifecycle"));
  Promise.all([
    optional(api.get(api.envPath(env, "/usage?flag=" + encodeURIComponent(key)))),
    optional(api.get(api.envPath(env, "/lifecycle"))),
    optional(api.get(api.envPath(env, "/anomalies"))),
  ]).then(([use, life, anom]) => {
    const u = use.usage;
    const rep = ((life && life.flags) || []).find((f) => f.key === key);
    const mine = ((anom && anom.anomalies) || []).filter((a) => a.flag === key);
    const v24 = Object.entries((u && u.variants24h) || {}).sort((a, b) => b[1] - a[1]);
    const total = v24.reduce((n, [, c]) => n + c, 0);
    add(box,
      mine.map((a) => h("div", { class: a.closed ? "warn-box" : "problems", role: a.closed ? null : "alert" },
        h("strong", {}, a.closed ? `Anomaly (closed ${when(a.closed)}): ` : "Anomaly: "),
        `the served variants shifted without a change since ${when(a.opened)} (χ² ${fmt(a.chiSquare, 1)}, p ${pval(a.pValue)}, Cramér's V ${fmt(a.effect, 2)}). `,
        "Now: ", shares(a.window), "; before: ", shares(a.baseline), ".")),
      use.unavailable ? h("p", { class: "muted" }, "Usage: " + use.unavailable)
        : h("dl", { class: "facts" },
          h("dt", {}, "Last evaluated"), h("dd", {}, u && u.lastEvaluated ? `${when(u.lastEvaluated)} (${ago(u.lastEvaluated)})` : "never, in the kept data"),
          h("dt", {}, "Evaluations, 24 h"), h("dd", { class: "num-left" }, String(u ? u.last24h : 0)),
          h("dt", {}, "Evaluations, 7 days"), h("dd", { class: "num-left" }, String(u ? u.last7d : 0)),
          h("dt", {}, "Variants served, 24 h"), h("dd", {}, total ? v24.map(([v, c], i) => [i ? ", " : "", h("strong", {}, v), ` ${c} (${(100 * c / total).toFixed(1)}%)`]) : "none")),
      life.unavailable ? h("p", { class: "muted" }, "Lifecycle: " + life.unavailable)
        : !rep ? null
          : (rep.findings || []).length ? h("ul", { class: "findings", "aria-label": "Lifecycle findings" }, rep.findings.map((f) => h("li", {},
            h("span", { class: "badge " + (f.kind === "expired" || f.kind === "unused" ? "bad" : "warn") }, f.kind), " ", f.message)))
            : h("p", { class: "ok-box" }, "No lifecycle findings."),
      life.usageKnown === false && life.usageNote ? h("p", { class: "muted" }, life.usageNote) : null,
      def && def.experiment ? h("p", {}, "This flag is an experiment: ", h("a", { href: envHash(env, "/experiments/" + encodeURIComponent(key)) }, "see its report")) : null);
  }).catch((err) => add(box, h("p", { class: "problems" }, "Usage could not be shown: " + err.message)))
    .finally(() => box.removeAttribute("aria-busy"));
  return box;
}

function shares(m) {
  const e = Object.entries(m || {});
  const n = e.reduce((s, [, c]) => s + c, 0);
  return n ? e.sort().map(([v, c]) => `${v} ${(100 * c / n).toFixed(1)}%`).join(", ") : "–";
}

// rowsEditor edits an object of short entries (variants, prerequisites)
// as rows of two labelled inputs. get() reads the rows back: {value} or
// {error} naming the row at fault.
function rowsEditor(what, keyLabel, valueLabel, readValue, showValue, datalist) {
  const box = h("div", { class: "rows", role: "group" });
  const list = h("div", {});
  const addBtn = h("button", { type: "button" }, "Add " + what);
  const row = (k, v) => {
    const n = list.children.length + 1;
    const kin = h("input", { type: "text", value: k, "aria-label": `${keyLabel} ${n}`, spellcheck: "false", list: datalist ? datalist.id : null });
    const vin = h("input", { type: "text", value: v, "aria-label": `${valueLabel} ${n}`, spellcheck: "false" });
    const rm = h("button", { type: "button", class: "link", "aria-label": `Remove ${what} ${n}` }, "remove");
    const r = h("div", { class: "kv" }, kin, vin, rm);
    rm.addEventListener("click", () => { r.remove(); box.dispatchEvent(new Event("input")); addBtn.focus(); });
    return r;
  };
  addBtn.addEventListener("click", () => { const r = row("", ""); list.appendChild(r); r.querySelector("input").focus(); });
  add(box, list, datalist, addBtn);
  box.set = (obj) => { clear(list); for (const [k, v] of Object.entries(obj)) list.appendChild(row(k, showValue(v))); };
  box.get = () => {
    const out = {};
    for (const [i, r] of [...list.children].entries()) {
      const [kin, vin] = r.querySelectorAll("input");
      const k = kin.value.trim();
      if (!k && !vin.value.trim()) continue; // a row being typed
      if (!k) return { error: `${what} ${i + 1} has no ${keyLabel.toLowerCase()}` };
      if (k in out) return { error: `${what} "${k}" appears twice` };
      const v = readValue(vin.value);
      if (v.error) return { error: `${what} "${k}": ${v.error}` };
      out[k] = v.value;
    }
    return { value: out };
  };
  return box;
}

// Variant values are JSON (true, 3, "text", {…}); a bare word is taken as
// a string, as people type it.
function variantRows() {
  return rowsEditor("variant", "Variant name", "Variant value", (t) => {
    const s = t.trim();
    try { return { value: JSON.parse(s) }; } catch (e) {
      if (s && !/^[[{"]/.test(s)) return { value: s };
      return { error: "not valid JSON: " + e.message };
    }
  }, (v) => JSON.stringify(v));
}

function prerequisiteRows(keys) {
  const dl = h("datalist", { id: "flag-keys" }, keys.map((k) => h("option", { value: k })));
  return rowsEditor("prerequisite", "Prerequisite flag", "Required variant", (t) => ({ value: t.trim() }), (v) => String(v), dl);
}

// ---- history ------------------------------------------------------------------

function timeline(env, list, flag) {
  if (!list.length) return h("p", { class: "muted" }, "No changes yet.");
  return h("ol", { class: "timeline", "aria-label": "History" }, list.map((cs) => {
    const kind = cs.emergency ? "emergency" : cs.rollbackTo ? "rollback" : "";
    return h("li", { class: kind, "data-version": cs.version },
      h("div", {}, h("strong", {}, `v${cs.version}`), " · ", cs.author, " · ", h("time", { datetime: cs.time }, when(cs.time)), " ",
        cs.emergency ? h("span", { class: "badge bad" }, "emergency") : null,
        cs.rollbackTo ? h("span", { class: "badge warn" }, `rollback to v${cs.rollbackTo}`) : null,
        cs.changeRequest ? h("span", { class: "badge" }, `change request ${cs.changeRequest}`) : null,
        cs.promotedFrom ? h("span", { class: "badge" }, `promoted from ${cs.promotedFrom}`) : null),
      h("div", {}, cs.reason || h("span", { class: "muted" }, "(no reason given)")),
      h("div", { class: "meta" }, (cs.changes || []).map((c) => h("span", {}, h("a", { href: envHash(env, "/flags/" + encodeURIComponent(c.flag)) }, c.flag), ` (${c.op}) `)),
        cs.metadata ? "metadata " : "", cs.evaluators ? "$evaluators " : "",
        " · ", h("a", { href: envHash(env, `/diff?from=${cs.prevVersion}&to=${cs.version}`) }, "diff"),
        " · ", h("a", { href: envHash(env, `/rollback?to=${cs.prevVersion}${flag ? "&flags=" + encodeURIComponent(flag) : ""}`) }, flag ? "preview undo of this flag" : "preview undo")));
  }));
}

async function history(body, env, query) {
  const before = query.get("before") || "";
  const r = await api.get(api.envPath(env, `/history?limit=50${before ? "&before=" + encodeURIComponent(before) : ""}`));
  const list = r.changesets || [];
  const last = list[list.length - 1];
  add(body, title(`History of ${env}`), timeline(env, list),
    last && last.version > 1 ? h("p", {}, h("a", { href: envHash(env, `/history?before=${last.version}`) }, "Older changes")) : null);
}

// ---- diff -------------------------------------------------------------------

async function diff(body, env, query) {
  const info = await api.get(api.envPath(env));
  const to = h("input", { type: "number", min: 0, value: query.get("to") || info.version });
  const from = h("input", { type: "number", min: 0, value: query.get("from") || Math.max(0, info.version - 1) });
  const form = h("form", { class: "row" }, field("From version", from), field("To version", to), h("button", { class: "primary", type: "submit" }, "Compare"));
  form.addEventListener("submit", (e) => { e.preventDefault(); go(envHash(env, `/diff?from=${from.value}&to=${to.value}`)); });
  add(body, title(`Diff of ${env}`), form);
  const d = await api.get(api.envPath(env, `/diff?from=${from.value}&to=${to.value}`));
  add(body, h("p", { class: "muted" }, `${plural(d.flags.length, "flag")} differ${d.flags.length === 1 ? "s" : ""} between version ${d.from} and version ${d.to}.`),
    d.metadataChanged ? h("p", { class: "warn-box" }, "The flag-set metadata changed.") : null,
    d.evaluatorsChanged ? h("p", { class: "warn-box" }, "$evaluators changed: " + (d.evaluators || []).map((e) => e.name || JSON.stringify(e)).join(", ")) : null,
    d.flags.map((f) => h("section", { class: "card" },
      h("h2", {}, h("a", { href: envHash(env, "/flags/" + encodeURIComponent(f.flag)) }, f.flag), " ", h("span", { class: "badge " + (f.change === "removed" ? "bad" : f.change === "added" ? "ok" : "warn") }, f.change),
        (f.fields || []).length ? h("span", { class: "muted" }, " fields: " + f.fields.join(", ")) : null),
      sideBySide(`version ${d.from}`, f.from, `version ${d.to}`, f.to))));
}

// ---- rollback preview -------------------------------------------------------

async function rollback(body, env, query) {
  const info = await api.get(api.envPath(env));
  const to = h("input", { type: "number", min: 0, value: query.get("to") || Math.max(0, info.version - 1), required: true });
  const only = h("input", { type: "text", value: query.get("flags") || "", placeholder: "all flags that differ" });
  const form = h("form", { class: "row" }, field("Roll back to version", to), field("Only these flags (comma separated)", only),
    h("button", { class: "primary", type: "submit" }, "Preview"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    go(envHash(env, `/rollback?to=${encodeURIComponent(to.value)}${only.value.trim() ? "&flags=" + encodeURIComponent(only.value.trim()) : ""}`));
  });
  add(body, title(`Rollback preview: ${env}`), form);
  if (!query.get("to")) {
    add(body, h("p", { class: "muted" }, "Choose a version (from History) and preview: nothing changes until you confirm."));
    return;
  }
  const flagsWanted = (query.get("flags") || "").split(",").map((s) => s.trim()).filter(Boolean);
  const [planResp, list] = await Promise.all([
    api.post(api.envPath(env, "/rollback"), { toVersion: Number(query.get("to")), flags: flagsWanted, dryRun: true }),
    api.get(api.envPath(env, "/flags")),
  ]);
  const plan = planResp.body;
  const defs = {};
  for (const f of list.flags) defs[f.key] = f.definition;
  for (const d of plan.diff || []) if (!defs[d.flag] && d.from) defs[d.flag] = d.from; // deleted since: draw as it was
  const affected = (plan.affected || []).map((a) => a.flag);
  const g = dependencyGraph(defs, plan.flags || [], affected);
  const share = plan.trafficShare;
  add(body,
    h("section", { class: "card", "aria-labelledby": "plan-title" },
      h("h2", { id: "plan-title" }, `Rolling back ${plural((plan.flags || []).length, "flag")} from version ${plan.head} to version ${plan.to}`),
      h("p", {}, "Rolled back: ", badges(plan.flags || [], () => "warn")),
      h("p", {}, "Systems touched: ", (plan.systems || []).length ? badges(plan.systems) : h("span", { class: "muted" }, "none named")),
      h("p", {}, "Share of recent traffic that would change: ",
        share === null || share === undefined
          ? h("strong", {}, "not measured") : h("strong", {}, (share * 100).toFixed(1) + " %"),
        share === null || share === undefined ? h("span", { class: "muted" }, " (pennon records no evaluation contexts yet, so it cannot replay traffic)") : null)),
    h("section", { class: "card", "aria-labelledby": "graph-h" },
      h("h2", { id: "graph-h" }, "Dependency graph (prerequisites)"),
      g.nodes.length ? h("div", { class: "graph" }, drawGraph(g, plan.flags || [], affected, `Prerequisite graph of the flags this rollback touches`))
        : h("p", { class: "muted" }, "No flag is involved.")),
    h("div", { class: "grid2" },
      h("section", { class: "card", "aria-labelledby": "aff-h" }, h("h2", { id: "aff-h" }, "Affected through prerequisites"),
        (plan.affected || []).length ? h("ul", {}, plan.affected.map((a) => h("li", {}, h("strong", {}, a.flag), " — ", a.relation))) : h("p", { class: "muted" }, "None.")),
      h("section", { class: "card", "aria-labelledby": "risk-h" }, h("h2", { id: "risk-h" }, "Risks"),
        (plan.risks || []).length ? h("ul", { class: "risks" }, plan.risks.map((r) => h("li", {}, h("span", { class: "badge bad" }, r.kind), " ", r.flag ? h("strong", {}, r.flag + ": ") : null, r.detail)))
          : h("p", { class: "ok-box" }, "No named risks."))),
    h("h2", {}, "Changes it would commit"),
    (plan.diff || []).map((f) => h("section", { class: "card" }, h("h3", {}, f.flag, " ", h("span", { class: "badge" }, f.change)),
      sideBySide("now", f.from, `at version ${plan.to}`, f.to))));
  if ((plan.changes || []).length || plan.metadata || plan.evaluators) {
    const reason = h("input", { type: "text", class: "wide", required: true });
    const doit = h("button", { class: "danger", type: "button" }, info.protected ? "Request this rollback" : "Roll back");
    const out = h("div", { "aria-live": "polite" });
    doit.addEventListener("click", async () => {
      fail(null);
      try {
        const r = await api.post(api.envPath(env, "/rollback"), { toVersion: plan.to, flags: flagsWanted, reason: reason.value });
        if (r.status === 202) say(`Change request ${r.body.changeRequest.id} opened for the rollback.`);
        else { say(`Rolled back: ${env} is now at version ${r.body.version}.`, true); go(envHash(env, "/history")); }
      } catch (err) { fail(err); }
    });
    add(body, h("section", { class: "card" }, h("h2", {}, "Apply"), h("div", { class: "row" }, h("div", { class: "stack wide" }, field("Reason", reason)), doit), out));
  }
}

// ---- fleet ----------------------------------------------------------------

async function fleet(body, env) {
  const holder = h("div", {});
  const refresh = h("button", { type: "button" }, "Refresh");
  add(body, title(`Fleet of ${env}`), h("p", { class: "actions" }, refresh, h("span", { class: "muted" }, "refreshes every 5 s")), holder);
  const draw = async () => {
    const r = await api.get(api.envPath(env, "/sidecars"));
    const list = (r.sidecars || []).slice().sort((a, b) => (b.lost - a.lost) || (a.version - b.version) || a.id.localeCompare(b.id));
    const lost = list.filter((s) => s.lost).length, behind = list.filter((s) => s.version < r.version).length;
    add(clear(holder),
      h("p", {}, `${list.length} sidecars · head version ${r.version} · `,
        h("span", { class: "badge " + (behind ? "warn" : "ok") }, `${behind} behind`), h("span", { class: "badge " + (lost ? "bad" : "ok") }, `${lost} lost`)),
      list.length ? table(null, ["Sidecar", "Status", "State", "Version", "Lag", "Via", "Applied", "Last heard"], list.map((s) => [
        s.id,
        s.lost ? h("span", { class: "badge bad" }, "lost") : s.version < r.version ? h("span", { class: "badge warn" }, "behind") : h("span", { class: "badge ok" }, "current"),
        s.state, h("span", { class: "num" }, String(s.version)),
        s.version < r.version ? `${r.version - s.version} versions behind` : "up to date",
        s.via || "", when(s.appliedAt), ago(s.time),
      ]), (i) => ({ class: list[i].lost ? "lost" : list[i].version < r.version ? "behind" : "" }))
        : h("p", { class: "muted" }, "No sidecar has reported for this environment."));
  };
  refresh.addEventListener("click", () => draw().catch(fail));
  await draw();
  timers.push(setInterval(() => draw().catch(fail), 5000));
}

// ---- approvals --------------------------------------------------------------

async function approvals(view, onlyEnv) {
  const names = onlyEnv ? [onlyEnv] : (await api.get("/api/v1/envs")).envs.map((e) => e.name);
  const per = await Promise.all(names.map(async (env) => {
    const [crs, list] = await Promise.all([api.get(api.envPath(env, "/change-requests?state=open")), api.get(api.envPath(env, "/flags"))]);
    const defs = {};
    for (const f of list.flags) defs[f.key] = f;
    return { env, crs: crs.changeRequests || [], defs };
  }));
  const open = per.flatMap((p) => p.crs.map((cr) => ({ cr, defs: p.defs })));
  add(view, title(onlyEnv ? `Approvals in ${onlyEnv}` : "Approvals inbox"),
    h("p", { class: "muted" }, `${plural(open.length, "change request")} waiting. The author of a request cannot decide it; the API enforces that.`));
  for (const { cr, defs } of open) {
    const reason = h("input", { type: "text", class: "wide" });
    const approve = h("button", { class: "primary", type: "button" }, "Approve and apply");
    const reject = h("button", { class: "danger", type: "button" }, "Reject");
    const card = h("section", { class: "card", "aria-labelledby": "cr-" + cr.id, "data-cr": cr.id },
      h("h2", { id: "cr-" + cr.id }, `${cr.env}: change request ${cr.id}`),
      h("p", {}, `by ${cr.author} · ${when(cr.createdAt)} · `, h("em", {}, cr.reason || "(no reason)")),
      (cr.changes || []).map((c) => h("div", {},
        h("h3", {}, `${c.flag} (${c.op}, based on version ${c.baseVersion})`),
        sideBySide(defs[c.flag] ? `current (version ${defs[c.flag].version})` : "current", defs[c.flag]?.definition, "proposed", c.definition))),
      cr.metadata ? h("p", { class: "warn-box" }, "Replaces the flag-set metadata.") : null,
      cr.evaluators ? h("p", { class: "warn-box" }, "Replaces $evaluators.") : null,
      h("div", { class: "row" }, h("div", { class: "stack wide" }, field("Reason for your decision", reason)), approve, reject));
    const decide = async (ok) => {
      fail(null);
      try {
        const r = await api.post(api.envPath(cr.env, `/change-requests/${encodeURIComponent(cr.id)}/${ok ? "approve" : "reject"}`), { reason: reason.value });
        say(ok ? `Approved ${cr.id}: ${cr.env} is now at version ${r.body.changeset.version}.` : `Rejected ${cr.id}.`, true);
        route();
      } catch (err) { fail(err); }
    };
    approve.addEventListener("click", () => decide(true));
    reject.addEventListener("click", () => decide(false));
    view.appendChild(card);
  }
}

// ---- emergencies ------------------------------------------------------------

async function emergencies(view, query) {
  const all = query.get("all") === "1";
  const r = await api.get("/api/v1/emergencies" + (all ? "" : "?reviewed=false"));
  const list = r.emergencies || [];
  add(view, title("Emergency changes to review"),
    h("p", {}, all ? h("a", { href: "#/emergencies" }, "Show only unreviewed") : h("a", { href: "#/emergencies?all=1" }, "Show reviewed ones too")),
    list.length ? null : h("p", { class: "ok-box" }, "Nothing to review."));
  for (const e of list) {
    const note = h("input", { type: "text", class: "wide" });
    const btn = h("button", { class: "primary", type: "button" }, "Mark reviewed");
    btn.addEventListener("click", async () => {
      fail(null);
      try { await api.post(api.envPath(e.env, `/changesets/${e.version}/review`), { note: note.value }); say(`Reviewed ${e.env} v${e.version}.`, true); route(); } catch (err) { fail(err); }
    });
    view.appendChild(h("section", { class: "card" },
      h("h2", {}, `${e.env} v${e.version} `, h("span", { class: "badge bad" }, "emergency"), e.review ? h("span", { class: "badge ok" }, "reviewed by " + e.review.reviewedBy) : null),
      h("p", {}, `${e.author} · ${when(e.time)} · `, h("em", {}, e.reason || "")),
      h("p", {}, "Flags: ", badges((e.changes || []).map((c) => c.flag)), " ",
        h("a", { href: envHash(e.env, `/diff?from=${e.prevVersion}&to=${e.version}`) }, "see the diff")),
      e.review ? null : h("div", { class: "row" }, h("div", { class: "stack wide" }, field("Review note", note)), btn)));
  }
}

// ---- audit --------------------------------------------------------------------

async function audit(view) {
  const out = h("div", { "aria-live": "polite" });
  const verify = h("button", { class: "primary", type: "button" }, "Verify the chain");
  verify.addEventListener("click", async () => {
    clear(out);
    try {
      const v = await api.get("/api/v1/audit/verify");
      add(out, v.ok ? h("p", { class: "ok-box" }, `✓ audit chain intact: ${v.entries} entries, ${v.anchors} anchors checked.`)
        : h("div", { class: "problems" }, h("p", {}, `✗ ${v.problem || "the chain does not verify"} (first bad entry ${v.firstBad})`),
          h("ul", {}, (v.problems || []).map((p) => h("li", {}, `#${p.seq}: ${p.problem}`)))));
    } catch (err) { fail(err); }
  });
  // The API pages forward from the oldest entry; walk to the end (bounded)
  // and keep the newest 200.
  let tail = [], after = 0;
  for (let page = 0; page < 40; page++) {
    const r = await api.get(`/api/v1/audit?after=${after}&limit=500`);
    const got = r.entries || [];
    tail = tail.concat(got).slice(-200);
    if (got.length < 500) break;
    after = got[got.length - 1].seq;
  }
  const list = tail.reverse();
  add(view, title("Audit log"), h("p", { class: "actions" }, verify, h("span", { class: "muted" }, "hash chain, signatures and checkpoints")), out,
    table(`newest ${list.length} entries`, ["#", "Time", "Actor", "Action", "Env", "Target", "Outcome"], list.map((e) => [
      String(e.seq), when(e.time), e.actor, e.action, e.env || "", e.target || "",
      h("span", { class: "badge " + (e.outcome === "denied" || e.outcome === "rejected" || e.outcome === "foreign" ? "bad" : "") }, e.outcome)])));
}

// ---- numbers ------------------------------------------------------------------

// The API writes an undefined statistic (too few units, a zero control
// rate) as null; it shows as "–", never as 0 or NaN.
const DASH = "–";
const finite = (x) => typeof x === "number" && isFinite(x);
function fmt(x, d = 3) { return finite(x) ? x.toFixed(d) : DASH; }
function pct(x, d = 2) { return finite(x) ? (x * 100).toFixed(d) + "%" : DASH; }
function lift(x) { return finite(x) ? (x >= 0 ? "+" : "") + (x * 100).toFixed(1) + "%" : DASH; }
function pval(x) { return finite(x) ? (x < 0.0001 ? "< 0.0001" : x.toFixed(4)) : DASH; }
function ci(iv, f) {
  if (!iv || !finite(iv.estimate)) return DASH;
  return `${f(iv.estimate)} [${f(iv.low)}, ${f(iv.high)}]`;
}

// ---- experiments ------------------------------------------------------------

function verdictClass(verdict, srm) {
  if ((srm && srm.mismatch) || /^BROKEN/.test(verdict || "")) return "bad";
  if (/too early|no longer/.test(verdict || "")) return "warn";
  return "ok";
}

// ifConfigured reads a route of an optional part of the control plane; a
// 501 (that part is not running) is shown as the API's message, and null
// tells the view to stop there.
async function ifConfigured(body, path) {
  try { return await api.get(path); } catch (err) {
    if (err.status !== 501) throw err;
    add(body, h("p", { class: "muted" }, err.message));
    return null;
  }
}

async function experiments(body, env) {
  add(body, title(`Experiments in ${env}`));
  const r = await ifConfigured(body, api.envPath(env, "/experiments"));
  if (!r) return;
  const list = r.experiments || [];
  if (!list.length) {
    add(body, h("p", { class: "muted" }, "No experiment in this environment. A flag becomes one with an \"experiment\" field (docs/experiments.md)."));
    return;
  }
  add(body, table(null, ["Experiment", "Units", "Verdict"], list.map((e) => [
    e.defined ? h("a", { href: envHash(env, "/experiments/" + encodeURIComponent(e.flag)) }, e.flag) : e.flag,
    h("span", { class: "num" }, String(e.units)),
    h("span", { class: "badge wrap " + verdictClass(e.verdict) }, e.verdict),
  ])));
}

async function experimentPage(body, env, key) {
  const rep = await api.get(api.envPath(env, "/experiments/" + encodeURIComponent(key)));
  const broken = rep.srm && rep.srm.mismatch;
  const cls = verdictClass(rep.verdict, rep.srm);
  const variants = (rep.variants || []).slice().sort((a, b) => (b.control ? 1 : 0) - (a.control ? 1 : 0));
  const names = variants.map((v) => v.variant);
  add(body, h("div", { class: "crumbs" }, h("a", { href: envHash(env, "/experiments") }, "Experiments"), " / ", key), title(`Experiment ${key}`),
    h("p", { class: "muted" }, `control: ${rep.control}`, rep.updated ? ` · data up to ${when(rep.updated)}` : " · no data yet", " · ",
      h("a", { href: envHash(env, "/flags/" + encodeURIComponent(key)) }, "the flag")),
    h("div", { class: "verdict " + cls, role: cls === "bad" ? "alert" : "status", "data-verdict": "" },
      broken ? h("strong", { class: "broken" }, "BROKEN — sample ratio mismatch. ") : null,
      h("span", {}, "Verdict: ", h("strong", {}, rep.verdict)),
      broken ? h("p", {}, "The units per variant do not match the declared split (p below " + rep.srm.threshold + "): assignment or exposure logging is broken, and no other number below can be trusted until it is fixed.") : null),
    (rep.warnings || []).length ? h("ul", { class: "warn-box warnings", "aria-label": "Warnings" }, rep.warnings.map((w) => h("li", {}, w))) : null,
    h("section", { class: "card", "aria-labelledby": "units-h" },
      h("h2", { id: "units-h" }, "Units per variant"),
      h("p", {}, "Sample ratio: ", broken ? h("span", { class: "badge bad" }, "mismatch") : h("span", { class: "badge ok" }, "ok"),
        ` χ² ${fmt(rep.srm && rep.srm.chiSquare, 2)}, p ${pval(rep.srm && rep.srm.p)}`,
        rep.unattributedExposures ? ` · ${rep.unattributedExposures} exposures without a targeting key` : "",
        rep.overflowExposures ? ` · ${rep.overflowExposures} exposures over the sidecars' unit cap` : ""),
      table(null, ["Variant", "Units", "Expected share", "Observed share"], variants.map((v) => [
        v.variant + (v.control ? " (control)" : ""), h("span", { class: "num" }, String(v.units)), pct(v.expectedShare), pct(v.observedShare)]))));
  for (const m of rep.metrics || []) {
    const id = "m-" + m.key.replace(/[^A-Za-z0-9_-]/g, "_");
    const mv = (m.variants || []).slice().sort((a, b) => names.indexOf(a.variant) - names.indexOf(b.variant));
    add(body, h("section", { class: "card metric", "aria-labelledby": id, "data-metric": m.key },
      h("h2", { id }, `Metric ${m.key} `, m.guardrail ? h("span", { class: "badge warn" }, "guardrail") : null,
        h("span", { class: "muted" }, ` ${m.better || "higher"} is better`)),
      table(null, ["Variant", "Units", "Converted", "Rate [95% CI]", "Lift [95% CI]", "p", "Mean value [95% CI]", "Outcome"], mv.map((v) => {
        const c = v.vsControl;
        const out = v.variant === rep.control ? "control" : c ? c.outcome : DASH;
        return [
          v.variant, h("span", { class: "num" }, String(v.units)), h("span", { class: "num" }, String(v.converted)),
          h("span", { class: "nowrap", "data-ci": "rate" }, ci(v.conversionRate, pct)),
          h("span", { class: "nowrap", "data-ci": "lift" }, c ? ci(c.conversion && c.conversion.lift, lift) : DASH),
          c ? pval(c.conversion && c.conversion.p) : DASH,
          h("span", { class: "nowrap" }, ci(v.meanValue, (x) => fmt(x, 3))),
          h("span", { class: "badge " + (out === "better" ? "ok" : out === "worse" || out === "hurts guardrail" ? "bad" : "") }, out),
        ];
      })),
      seriesView(rep.series || [], m.key, names)));
  }
}

// seriesView is the conversion rate over time: the chart, and its numbers
// as a table for anyone who cannot see it.
function seriesView(series, metric, names) {
  if (!series.length) return h("p", { class: "muted" }, "No hourly data yet.");
  const last = series[series.length - 1].rates?.[metric] || {};
  const desc = `Cumulative conversion rate of ${metric} per hour, one line per variant, each point with its 95% interval as an error bar. ` +
    `Latest: ${names.map((v) => `${v} ${ci(last[v], pct)}`).join("; ")}.`;
  return h("div", {},
    h("h3", {}, "Conversion rate over time (95% intervals)"),
    h("div", { class: "graph" }, rateChart(series, metric, names, `${metric}: conversion rate per variant over time`, desc)),
    h("details", {}, h("summary", {}, "The chart's data as a table"),
      table(null, ["Hour (UTC)", ...names.map((v) => `${v} [95% CI]`)], series.map((p) => [
        when(p.hour), ...names.map((v) => ci(p.rates?.[metric]?.[v], pct))]))));
}

// ---- incidents and activity ----------------------------------------------

async function incidents(body, env) {
  add(body, title(`Incidents in ${env}`));
  const r = await ifConfigured(body, api.envPath(env, "/incidents"));
  if (!r) return;
  const list = (r.incidents || []).slice().sort((a, b) => new Date(b.start) - new Date(a.start));
  const open = list.filter((i) => i.status === "open").length;
  add(body, h("p", {}, `${plural(list.length, "incident")} · `, h("span", { class: "badge " + (open ? "bad" : "ok") }, `${open} open`)),
    list.length ? table(null, ["Status", "Summary", "Source", "Started", "Ended", "Fallbacks"], list.map((i) => [
      h("span", { class: "badge " + (i.status === "open" ? "bad" : i.recovered ? "ok" : "") }, i.status),
      [h("strong", {}, i.summary), (i.detail || []).length ? h("div", { class: "muted" }, i.detail.join("; ")) : null],
      i.source, when(i.start), i.end ? when(i.end) : "–",
      (i.fallbacks || []).map((f) => h("div", {}, `${f.name}: ${f.answers} answers`)),
    ]), (k) => ({ class: list[k].status === "open" ? "lost" : "" }))
      : h("p", { class: "ok-box" }, "No incident recorded."));
}

async function events(body, env) {
  add(body, title(`Recent activity in ${env}`));
  const r = await ifConfigured(body, api.envPath(env, "/events?limit=100"));
  if (!r) return;
  const list = r.events || [];
  if (!list.length) { add(body, h("p", { class: "muted" }, "Nothing happened yet.")); return; }
  add(body, h("ol", { class: "timeline events", "aria-label": "Recent activity" }, list.map((e) => h("li", { class: e.severity === "critical" ? "emergency" : e.severity === "warning" ? "rollback" : "", "data-type": e.type },
    h("div", {}, h("span", { class: "badge " + (e.severity === "critical" ? "bad" : e.severity === "warning" ? "warn" : "") }, e.type), " ",
      h("strong", {}, e.title), " · ", h("time", { datetime: e.time, title: when(e.time) }, ago(e.time))),
    e.text ? h("div", { class: "meta" }, e.text) : null,
    e.flag ? h("div", { class: "meta" }, h("a", { href: envHash(env, "/flags/" + encodeURIComponent(e.flag)) }, e.flag)) : null))));
}
