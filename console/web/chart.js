// chart.js: an experiment's conversion rate over time, drawn as SVG. Each
// variant is a line through its hourly cumulative rate, with the 95 %
// interval of every point as an error bar, so a reader sees both where the
// rates are heading and how sure the data is. The picture is an image for
// screen readers (title, description); the same numbers are in a table
// beside it.

import { s } from "./graph.js";

// Colours tell variants apart and are also told apart by the legend's
// order and the table; the first is the control's.
const COLOURS = ["#5b6470", "#1f4e8c", "#b35900", "#1a7f37", "#8e44ad", "#b42318"];

const W = 900, H = 300, L = 56, R = 150, T = 16, B = 44;

const finite = (x) => typeof x === "number" && isFinite(x);

// rateChart draws metric's series for variants (control first). Points
// whose rate is null (no units yet) are left out; an interval bound that
// is null draws no bar.
export function rateChart(series, metric, variants, titleText, descText) {
  const pts = variants.map(() => []);
  series.forEach((p, i) => {
    const m = (p.rates || {})[metric] || {};
    variants.forEach((v, j) => { if (m[v] && finite(m[v].estimate)) pts[j].push({ i, ...m[v] }); });
  });
  let top = 0;
  for (const list of pts) for (const p of list) top = Math.max(top, finite(p.high) ? p.high : p.estimate);
  top = niceTop(top);
  const n = Math.max(series.length, 1);
  const step = (W - L - R) / n;
  // Variants side by side within an hour, so their bars never overlap.
  const x = (i, j) => L + step * i + step * (j + 1) / (variants.length + 1);
  const y = (v) => T + (H - T - B) * (1 - v / top);
  const id = "c" + Math.random().toString(36).slice(2, 8);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-labelledby": `${id}-t ${id}-d`, class: "chart" },
    s("title", { id: id + "-t" }, titleText), s("desc", { id: id + "-d" }, descText));
  for (let k = 0; k <= 4; k++) {
    const v = top * k / 4;
    svg.appendChild(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    svg.appendChild(s("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, Number((v * 100).toFixed(2)) + "%"));
  }
  const every = Math.max(1, Math.ceil(n / 8));
  series.forEach((p, i) => {
    if (i % every) return;
    svg.appendChild(s("text", { x: L + step * (i + 0.5), y: H - B + 16, "text-anchor": "middle", class: "axis" }, hourLabel(p.hour)));
  });
  svg.appendChild(s("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle", class: "axis" }, "hour (UTC), cumulative"));
  pts.forEach((list, j) => {
    const c = COLOURS[j % COLOURS.length];
    const g = s("g", { class: "variant", "data-variant": variants[j], stroke: c, fill: c });
    if (list.length > 1) g.appendChild(s("polyline", { points: list.map((p) => `${x(p.i, j)},${y(p.estimate)}`).join(" "), fill: "none", class: "rate" }));
    for (const p of list) {
      if (finite(p.low) && finite(p.high)) {
        const cx = x(p.i, j);
        g.appendChild(s("g", { class: "errorbar" },
          s("line", { x1: cx, x2: cx, y1: y(p.low), y2: y(p.high) }),
          s("line", { x1: cx - 4, x2: cx + 4, y1: y(p.low), y2: y(p.low) }),
          s("line", { x1: cx - 4, x2: cx + 4, y1: y(p.high), y2: y(p.high) })));
      }
      g.appendChild(s("circle", { cx: x(p.i, j), cy: y(p.estimate), r: 3.5 }));
    }
    svg.appendChild(g);
    const ly = T + 8 + j * 20;
    svg.appendChild(s("g", { class: "legend" },
      s("line", { x1: W - R + 14, x2: W - R + 34, y1: ly, y2: ly, stroke: c, "stroke-width": 3 }),
      s("text", { x: W - R + 40, y: ly + 4 }, variants[j] + (j === 0 ? " (control)" : ""))));
  });
  return svg;
}

// niceTop rounds the axis's top up to 1, 2, 4 or 8 times a power of ten,
// so its four gridlines fall on round numbers.
function niceTop(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 4, 8, 10]) if (v <= m * p) return Math.min(1, m * p);
  return 1;
}

function hourLabel(t) {
  const d = new Date(t);
  if (isNaN(d)) return "";
  return d.toISOString().slice(5, 13).replace("T", " ") + "h";
}
