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
// and returns both sides with each line marked same/del/add.
export function lineDiff(a, b) {
  const x = a ? a.split("\n") : [], y = b ? b.split("\n") : [];
  if (x.length * y.length > 4e6) {
    return { left: x.map((t) => ({ t, k: "del" })), right: y.map((t) => ({ t, k: "add" })) };
  }
  const n = x.length, m = y.length;
  const L = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) {
    L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  }
  const left = [], right = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) { left.push({ t: x[i++], k: "same" }); right.push({ t: y[j++], k: "same" }); }
    else if (j < m && (i >= n || L[i][j + 1] >= L[i + 1][j])) right.push({ t: y[j++], k: "add" });
    else left.push({ t: x[i++], k: "del" });
  }
  return { left, right };
}

// sideBySide shows two JSON values next to each other with the changed
// lines marked (removed on the left, added on the right).
export function sideBySide(leftTitle, leftVal, rightTitle, rightVal) {
  const { left, right } = lineDiff(pretty(leftVal), pretty(rightVal));
  const col = (title, lines, absent) => h("div", {},
    h("h4", {}, title),
    lines.length ? h("pre", { class: "dl", tabindex: "0", "aria-label": title },
      lines.map((l) => h("span", { class: l.k === "same" ? "" : l.k }, (l.k === "add" ? "+ " : l.k === "del" ? "- " : "  ") + l.t)))
      : h("p", { class: "muted" }, absent));
  return h("div", { class: "side" }, col(leftTitle, left, "(absent)"), col(rightTitle, right, "(absent: deleted)"));
}

// table builds a table from column headers and rows of cells.
export function table(caption, headers, rows, rowAttrs) {
  return h("table", {},
    caption ? h("caption", { class: "muted" }, caption) : null,
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows.map((r, i) => h("tr", rowAttrs ? rowAttrs(i) : {}, r.map((c) => h("td", {}, c))))));
}
