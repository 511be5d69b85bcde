// dom.js: building the page without innerHTML. Every string from the API
// (flag names, reasons, descriptions) becomes a text node, so nothing the
// API returns can run as markup, and the CSP forbids inline script anyway.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = !!v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

// add appends children (nodes, strings, arrays of them) to el; the DOM's
// own append would turn an array into the text "[object …]".
export function add(el, ...children) { append(el, children); return el; }

export function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }

let ids = 0;
export function uid(prefix) { ids += 1; return prefix + "-" + ids; }

// field is a labelled control: the label names it for screen readers.
export function field(label, control, hint) {
  const id = control.id || uid("f");
  control.id = id;
  const hintEl = hint ? h("span", { class: "muted", id: id + "-hint" }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("label", { for: id }, label, control, hintEl);
}

export function when(t) {
  if (!t) return "";
  const d = new Date(t);
  if (isNaN(d)) return String(t);
  if (d.getUTCFullYear() < 2) return ""; // Go's zero time: never happened
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z").replace(/:\d\dZ$/, "Z");
}

export function ago(t) {
  const s = Math.round((Date.now() - new Date(t).getTime()) / 1000);
  if (!isFinite(s)) return "";
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

export function pretty(v) {
  if (v === undefined || v === null) return "";
  return JSON.stringify(v, null, 2);
}

// lineDiff aligns two texts by their longest common subsequence of lines
// and returns rows {l, r, k}: k is "same", or "chg" with the removed line
// (l) and/or the added one (r); a missing side is null. Rows line up, so
// both columns of a side-by-side view stay aligned.
export function lineDiff(a, b) {
  const x = a ? a.split("\n") : [], y = b ? b.split("\n") : [];
  const n = x.length, m = y.length;
  const rows = [];
  if (n * m > 4e6) { // too big to align: show both whole
    for (let i = 0; i < Math.max(n, m); i++) rows.push({ l: x[i] ?? null, r: y[i] ?? null, k: "chg" });
    return rows;
  }
  const L = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) {
    L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  }
  let i = 0, j = 0, dels = [], adds = [];
  const flush = () => {
    for (let k = 0; k < Math.max(dels.length, adds.length); k++) rows.push({ l: dels[k] ?? null, r: adds[k] ?? null, k: "chg" });
    dels = []; adds = [];
  };
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) { flush(); rows.push({ l: x[i++], r: y[j++], k: "same" }); }
    else if (j < m && (i >= n || L[i][j + 1] >= L[i + 1][j])) adds.push(y[j++]);
    else dels.push(x[i++]);
  }
  flush();
  return rows;
}

// sideBySide shows two JSON values next to each other with the changed
// lines marked (removed on the left, added on the right). Unchanged runs
// longer than twice the context fold into one "unchanged lines" marker, so
// the change is on screen without scrolling through the whole definition.
export function sideBySide(leftTitle, leftVal, rightTitle, rightVal, context = 3) {
  const rows = lineDiff(pretty(leftVal), pretty(rightVal));
  const near = rows.map(() => false);
  rows.forEach((r, i) => {
    if (r.k !== "same") for (let d = -context; d <= context; d++) if (rows[i + d]) near[i + d] = true;
  });
  const shown = [];
  for (let i = 0; i < rows.length; i++) {
    if (near[i] || !rows.some((r) => r.k !== "same")) { shown.push(rows[i]); continue; }
    let k = i;
    while (k < rows.length && !near[k]) k++;
    shown.push({ fold: k - i });
    i = k - 1;
  }
  const line = (r, side) => {
    if (r.fold) return h("span", { class: "fold" }, `  ⋯ ${r.fold} unchanged lines`);
    const t = side === "l" ? r.l : r.r;
    if (t === null) return h("span", { class: "gap" }, " ");
    const mark = r.k === "same" ? "" : side === "l" ? "del" : "add";
    return h("span", { class: mark }, (mark === "add" ? "+ " : mark === "del" ? "- " : "  ") + t);
  };
  const col = (title, val, side, absent) => h("div", {},
    h("h4", {}, title),
    val === undefined || val === null ? h("p", { class: "muted" }, absent)
      : h("pre", { class: "dl", tabindex: "0", "aria-label": title }, shown.map((r) => line(r, side))));
  return h("div", { class: "side" }, col(leftTitle, leftVal, "l", "(absent)"), col(rightTitle, rightVal, "r", "(absent: deleted)"));
}

// changedFields names the top-level fields whose values differ.
export function changedFields(a, b) {
  const keys = new Set([...Object.keys(a || {}), ...Object.keys(b || {})]);
  return [...keys].filter((k) => JSON.stringify(a?.[k]) !== JSON.stringify(b?.[k])).sort();
}

// table builds a table from column headers and rows of cells.
export function table(caption, headers, rows, rowAttrs) {
  return h("table", {},
    caption ? h("caption", { class: "muted" }, caption) : null,
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows.map((r, i) => h("tr", rowAttrs ? rowAttrs(i) : {}, r.map((c) => h("td", {}, c))))));
}
