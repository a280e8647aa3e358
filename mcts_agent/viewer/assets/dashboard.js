/* mcts-agent viewer: dashboards of iterate rounds and of eval-critic reports (SVG charts
   with hover values and legends that switch series on and off). */
"use strict";

const PALETTE = ["#1f4fd1", "#1e8a3a", "#c0392b", "#b7791f", "#7b3fb5", "#138d90", "#555"];

/* a line chart over rounds (or any x); series: [{key, label}]; rows: objects */
function lineChart(title, rows, xKey, series, { percent = false, width = 430, height = 240,
  xLabel = "round", id = null } = {}) {
  const m = { l: 52, r: 12, t: 10, b: 34 };
  const w = width - m.l - m.r, h = height - m.t - m.b;
  const card = el("div", { class: "card chart", id });
  card.appendChild(el("h3", { text: title }));
  const points = series.map((s) => rows.filter((r) => typeof r[s.key] === "number")
    .map((r) => [r[xKey], r[s.key]]));
  const all = points.flat();
  if (!all.length) {
    card.appendChild(el("div", { class: "note", text: "no values yet" }));
    return card;
  }
  const xs = rows.map((r) => r[xKey]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let y0 = Math.min(0, ...all.map((p) => p[1])), y1 = Math.max(...all.map((p) => p[1]));
  if (percent) { y0 = 0; y1 = Math.max(1e-9, Math.min(1, y1 * 1.1) || 1); }
  if (y1 <= y0) y1 = y0 + 1;
  const X = (v) => m.l + ((v - x0) / (x1 - x0)) * w, Y = (v) => m.t + h - ((v - y0) / (y1 - y0)) * h;
  const label = (v) => (percent ? (100 * v).toFixed(0) + "%" : fmt(v, Math.abs(v) < 10 ? 2 : 0));
  const plot = svg("svg", { width, height, class: "chart-svg" });
  for (let k = 0; k <= 4; k++) {
    const v = y0 + ((y1 - y0) * k) / 4;
    plot.appendChild(svg("line", { class: "grid", x1: m.l, x2: m.l + w, y1: Y(v), y2: Y(v) }));
    plot.appendChild(svg("text", { x: m.l - 6, y: Y(v) + 4, "text-anchor": "end", text: label(v) }));
  }
  for (const v of xs) {
    plot.appendChild(svg("text", { x: X(v), y: m.t + h + 16, "text-anchor": "middle", text: v }));
  }
  plot.appendChild(svg("text", { x: m.l + w / 2, y: height - 2, "text-anchor": "middle",
    text: xLabel }));
  plot.appendChild(svg("line", { class: "axis", x1: m.l, x2: m.l, y1: m.t, y2: m.t + h }));
  plot.appendChild(svg("line", { class: "axis", x1: m.l, x2: m.l + w, y1: m.t + h, y2: m.t + h }));
  const groups = series.map((s, k) => {
    const color = PALETTE[k % PALETTE.length];
    const g = svg("g", { class: "series-group", "data-series": s.key });
    g.appendChild(svg("polyline", { class: "series", stroke: color,
      points: points[k].map(([a, b]) => `${X(a)},${Y(b)}`).join(" ") }));
    for (const [a, b] of points[k]) {
      const dot = svg("circle", { cx: X(a), cy: Y(b), r: 4, fill: color, class: "point",
        "data-value": b });
      dot.addEventListener("mousemove", (e) => tooltip(`${s.label}\n${xLabel} ${a}: ` +
        (percent ? pct(b) : fmt(b)), e));
      dot.addEventListener("mouseleave", () => tooltip(null));
      g.appendChild(dot);
    }
    plot.appendChild(g);
    return g;
  });
  card.appendChild(plot);
  card.appendChild(legendRow(series.map((s) => ({ label: s.label, key: s.key })), groups));
  return card;
}

/* one clickable entry per plotted group: a click hides or shows the group */
function legendRow(entries, groups) {
  const legend = el("div", { class: "legend-row" });
  entries.forEach(({ label, key }, k) => {
    const attrs = { class: "legend-item", style: `color:${PALETTE[k % PALETTE.length]};` +
      " margin-right:10px", text: "● " + label };
    if (key !== undefined) attrs["data-series"] = key;
    const item = el("span", attrs);
    item.addEventListener("click", () => {
      item.classList.toggle("off");
      groups[k].classList.toggle("hidden");
    });
    legend.appendChild(item);
  });
  return legend;
}

function iterateDashboard(root, data) {
  root.appendChild(el("header", { class: "top" }, el("h1", { text: "mcts-agent · iterate" }),
    el("span", { class: "source", text: data.source })));
  const main = el("main");
  const board = el("div", { class: "dashboard", id: "iterate-dashboard" });
  main.appendChild(el("div", { class: "view active" }, board));
  root.appendChild(main);
  const rows = data.rounds;
  if (!rows.length) {
    board.appendChild(el("div", { class: "note", text: "No round has finished yet." }));
    return;
  }
  const k = rows.find((r) => r.k)?.k ?? "k";
  const cards = el("div", { class: "cards" });
  cards.appendChild(lineChart("Held-out accuracy", rows, "round", [
    { key: "greedy_acc", label: "greedy" }, { key: "pass_at_1", label: "pass@1" },
    { key: "pass_at_k", label: `pass@${k}` }], { percent: true, id: "chart-accuracy" }));
  cards.appendChild(lineChart("B-STaR: exploration and exploitation", rows, "round", [
    { key: "diversity", label: "diversity (exploration)" },
    { key: "pick_acc", label: `majority of ${k} right` },
    { key: "exploitation", label: "exploitation (when some sample is right)" }],
  { percent: true, id: "chart-bstar" }));
  cards.appendChild(lineChart("Distinct correct solutions", rows, "round", [
    { key: "distinct_correct", label: `distinct correct of ${k}` }], { id: "chart-distinct" }));
  cards.appendChild(lineChart("Rows mined", rows, "round", [{ key: "rows", label: "rows" }],
    { id: "chart-rows" }));
  cards.appendChild(lineChart("Search tokens", rows, "round", [
    { key: "search_tokens", label: "tokens" }], { id: "chart-tokens" }));
  cards.appendChild(lineChart("Training loss", rows, "round", [
    { key: "train_loss", label: "loss" }], { id: "chart-loss" }));
  board.appendChild(cards);
  board.appendChild(roundsTable(rows));
}

function roundsTable(rows) {
  const columns = [["round", "round"], ["greedy_acc", "greedy"], ["pass_at_1", "pass@1"],
    ["pass_at_k", "pass@k"], ["diversity", "diversity"], ["pick_acc", "majority"],
    ["exploitation", "exploitation"], ["rows", "rows mined"], ["solved", "solved in search"],
    ["search_tokens", "search tokens"], ["train_loss", "loss"]];
  const percent = new Set(["greedy_acc", "pass_at_1", "pass_at_k", "diversity", "pick_acc",
    "exploitation"]);
  return el("table", { class: "rounds", id: "rounds-table" },
    el("tr", {}, ...columns.map(([, h]) => el("th", { text: h })), el("th", { text: "trees" })),
    ...rows.map((r) => el("tr", {}, ...columns.map(([key]) => el("td", {
      text: percent.has(key) ? pct(r[key]) : fmt(r[key]) })),
    el("td", {}, r.trees_href ? el("a", { href: r.trees_href, class: "round-link",
      text: `round ${r.round} trees` }) : "—"))));
}

function criticsDashboard(critics) {
  const board = el("div", { class: "dashboard", id: "critics-dashboard" });
  const cards = el("div", { class: "cards" });
  cards.appendChild(reliabilityChart(critics));
  cards.appendChild(aurocChart(critics));
  board.appendChild(cards);
  const columns = ["name", "nodes", "positives", "auroc", "auroc_unfinished", "brier", "ece",
    "log_loss", "mean_value", "seconds", "tokens"];
  board.appendChild(el("table", { class: "rounds", id: "critics-table" },
    el("tr", {}, ...columns.map((c) => el("th", { text: c.replace(/_/g, " ") }))),
    ...critics.map((c) => el("tr", {}, ...columns.map((k) => el("td", { text: fmt(c[k]) }))))));
  return board;
}

/* observed rate against predicted value per bin, one line per critic, area ∝ count */
function reliabilityChart(critics, size = 320) {
  const m = 40, w = size - 2 * m;
  const card = el("div", { class: "card chart", id: "chart-reliability" },
    el("h3", { text: "Reliability (observed vs predicted)" }));
  const plot = svg("svg", { width: size, height: size });
  const X = (v) => m + v * w, Y = (v) => m + w - v * w;
  for (let k = 0; k <= 4; k++) {
    const v = k / 4;
    plot.appendChild(svg("line", { class: "grid", x1: X(0), x2: X(1), y1: Y(v), y2: Y(v) }));
    plot.appendChild(svg("text", { x: X(0) - 6, y: Y(v) + 4, "text-anchor": "end", text: v }));
    plot.appendChild(svg("text", { x: X(v), y: Y(0) + 16, "text-anchor": "middle", text: v }));
  }
  plot.appendChild(svg("line", { class: "axis", x1: X(0), y1: Y(0), x2: X(1), y2: Y(1),
    "stroke-dasharray": "4 3" }));
  const most = Math.max(1, ...critics.flatMap((c) => (c.calibration || {}).counts || []));
  const groups = critics.map((c, k) => {
    const cal = c.calibration || { predicted: [], observed: [], counts: [] };
    const color = PALETTE[k % PALETTE.length];
    const g = svg("g", { "data-series": c.name });
    g.appendChild(svg("polyline", { class: "series", stroke: color,
      points: cal.predicted.map((p, j) => `${X(p)},${Y(cal.observed[j])}`).join(" ") }));
    cal.predicted.forEach((p, j) => {
      const dot = svg("circle", { cx: X(p), cy: Y(cal.observed[j]), fill: color, class: "point",
        r: 2 + 6 * Math.sqrt(cal.counts[j] / most) });
      dot.addEventListener("mousemove", (e) => tooltip(`${c.name}\npredicted ${fmt(p, 2)}, ` +
        `observed ${fmt(cal.observed[j], 2)}\n${cal.counts[j]} nodes`, e));
      dot.addEventListener("mouseleave", () => tooltip(null));
      g.appendChild(dot);
    });
    plot.appendChild(g);
    return g;
  });
  card.appendChild(plot);
  card.appendChild(legendRow(critics.map((c) => ({ label: `${c.name} (ECE ${fmt(c.ece, 3)})` })),
    groups));
  return card;
}

function aurocChart(critics, width = 380) {
  const rowH = 26, m = { l: 120, r: 50, t: 10 };
  const height = m.t + critics.length * rowH * 2 + 30;
  const card = el("div", { class: "card chart", id: "chart-auroc" },
    el("h3", { text: "AUROC per critic (all nodes / unfinished nodes)" }));
  const plot = svg("svg", { width, height });
  const w = width - m.l - m.r, X = (v) => m.l + v * w;
  plot.appendChild(svg("line", { class: "axis", x1: X(0.5), x2: X(0.5), y1: m.t,
    y2: height - 20, "stroke-dasharray": "3 3" }));
  plot.appendChild(svg("text", { x: X(0.5), y: height - 6, "text-anchor": "middle",
    text: "0.5 = chance" }));
  critics.forEach((c, k) => {
    const y = m.t + k * rowH * 2;
    plot.appendChild(svg("text", { x: m.l - 6, y: y + rowH - 4, "text-anchor": "end",
      text: c.name }));
    [["auroc", 0], ["auroc_unfinished", 1]].forEach(([key, j]) => {
      const v = typeof c[key] === "number" && Number.isFinite(c[key]) ? c[key] : 0;
      plot.appendChild(svg("rect", { x: X(0), y: y + j * (rowH - 4), width: X(v) - X(0),
        height: rowH - 8, fill: PALETTE[k % PALETTE.length], opacity: j ? 0.5 : 0.9 }));
      plot.appendChild(svg("text", { x: X(v) + 4, y: y + j * (rowH - 4) + rowH / 2 - 2,
        text: fmt(c[key], 3) }));
    });
  });
  card.appendChild(plot);
  return card;
}
