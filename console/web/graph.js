// graph.js: the prerequisite graph of a rollback, drawn as SVG. Columns go
// from prerequisites (left) to the flags that depend on them (right); an
// arrow reads "is a prerequisite of". Rolled-back flags are amber, flags
// affected through prerequisites are red.

const NS = "http://www.w3.org/2000/svg";
export function s(tag, attrs, ...kids) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const k of kids) el.appendChild(typeof k === "string" ? document.createTextNode(k) : k);
  return el;
}

// prereqsOf maps each flag to its prerequisites ({flag: variant}).
export function dependencyGraph(defs, rolled, affected) {
  const pre = {};
  for (const [k, d] of Object.entries(defs)) pre[k] = (d && d.prerequisites) || {};
  const linked = {};
  const link = (a, b) => { (linked[a] ||= new Set()).add(b); (linked[b] ||= new Set()).add(a); };
  for (const [k, p] of Object.entries(pre)) for (const q of Object.keys(p)) link(k, q);
  // The picture holds every flag connected to a rolled-back or affected one.
  const shown = new Set();
  const stack = [...rolled, ...affected];
  while (stack.length) {
    const k = stack.pop();
    if (shown.has(k)) continue;
    shown.add(k);
    for (const n of linked[k] || []) stack.push(n);
  }
  const depth = {};
  const depthOf = (k, seen) => {
    if (depth[k] !== undefined) return depth[k];
    if (seen.has(k)) return 0; // a cycle (validation rejects them): stop
    seen.add(k);
    let d = 0;
    for (const q of Object.keys(pre[k] || {})) if (shown.has(q)) d = Math.max(d, depthOf(q, seen) + 1);
    depth[k] = d;
    return d;
  };
  for (const k of shown) depthOf(k, new Set());
  const edges = [];
  for (const k of shown) for (const [q, v] of Object.entries(pre[k] || {})) if (shown.has(q)) edges.push({ from: q, to: k, variant: v });
  return { nodes: [...shown].sort(), depth, edges };
}

export function drawGraph(g, rolled, affected, title) {
  const W = 200, H = 34, GX = 90, GY = 16, PAD = 16, LEG = 28;
  const cols = [];
  for (const k of g.nodes) (cols[g.depth[k]] ||= []).push(k);
  // Order each column by the mean row of its prerequisites (already
  // placed, to the left), so edges cross less.
  const row = {};
  const pre = {};
  for (const e of g.edges) (pre[e.to] ||= []).push(e.from);
  cols.forEach((col, c) => {
    if (!col) return;
    if (c > 0) {
      const score = (k) => { const ps = (pre[k] || []).filter((q) => row[q] !== undefined); return ps.length ? ps.reduce((a, q) => a + row[q], 0) / ps.length : 1e9; };
      col.sort((a, b) => score(a) - score(b) || a.localeCompare(b));
    }
    col.forEach((k, r) => { row[k] = r; });
  });
  const pos = {};
  cols.forEach((col, c) => (col || []).forEach((k, r) => { pos[k] = { x: PAD + c * (W + GX), y: PAD + LEG + r * (H + GY) }; }));
  const width = PAD * 2 + Math.max(1, cols.length) * (W + GX) - GX;
  const height = PAD * 2 + LEG + Math.max(1, ...cols.map((c) => (c || []).length)) * (H + GY) - GY;
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "graph-title" },
    s("title", { id: "graph-title" }, title),
    s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      s("path", { d: "M0,0 L10,5 L0,10 z", fill: "#5b6470" }))));
  const legend = s("g", { class: "legend" });
  [["rolled back", "rolled"], ["affected through prerequisites", "affected"], ["unchanged", ""]].forEach(([label, cls], i) => {
    const x = PAD + i * 210;
    legend.appendChild(s("g", { class: "node " + cls }, s("rect", { x, y: PAD - 6, width: 14, height: 14, rx: 3 })));
    legend.appendChild(s("text", { x: x + 20, y: PAD + 5 }, label));
  });
  svg.appendChild(legend);
  for (const e of g.edges) {
    const a = pos[e.from], b = pos[e.to];
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    svg.appendChild(s("path", { class: "edge", d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, "marker-end": "url(#arrow)" }));
    // The label sits at the prerequisite's end: "payment-api-v2 = on".
    svg.appendChild(s("text", { x: x1 + 8, y: y1 + (y2 > y1 ? -5 : y2 < y1 ? 13 : -5), class: "edge-label", "font-size": 11, fill: "#5b6470" }, "= " + e.variant));
  }
  for (const k of g.nodes) {
    const p = pos[k];
    const cls = rolled.includes(k) ? "rolled" : affected.includes(k) ? "affected" : "";
    const label = k.length > 26 ? k.slice(0, 25) + "…" : k;
    svg.appendChild(s("g", { class: "node " + cls, "data-flag": k },
      s("title", {}, k + (cls ? " (" + (cls === "rolled" ? "rolled back" : "affected") + ")" : "")),
      s("rect", { x: p.x, y: p.y, width: W, height: H, rx: 5 }),
      s("text", { x: p.x + 10, y: p.y + H / 2 + 4 }, label)));
  }
  return svg;
}
