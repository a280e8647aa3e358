/* mcts-agent viewer: one task's tree, drawn lazily.

   Only expanded subtrees are laid out, and only the rows in (or near) the scrolled window are
   in the DOM, so a 10,000-node tree costs the same to draw as a small one. */
"use strict";

const ROW = 24, INDENT = 22, LEFT = 30, OVERSCAN = 25;

class TreeView {
  constructor(task, envKind, host, panel) {
    this.task = task;
    this.envKind = envKind;
    this.panel = panel;
    this.n = task.nodes.parent.length;
    this.selected = null;
    this.build();
    this.mount(host);
    this.expandPath(task.pv[task.pv.length - 1], false);
    this.expanded[0] = 1;
  }

  /* children sorted by visits (then value, then age), depths, subtree sizes, pair index */
  build() {
    const { parent, visits, value } = this.task.nodes;
    const n = this.n;
    this.children = Array.from({ length: n }, () => []);
    this.depth = new Int32Array(n);
    for (let i = 1; i < n; i++) {
      this.children[parent[i]].push(i);
      this.depth[i] = this.depth[parent[i]] + 1;
    }
    const key = (i) => (value[i] === null ? -1 : value[i]);
    for (const kids of this.children) {
      if (kids.length > 1) kids.sort((a, b) => visits[b] - visits[a] || key(b) - key(a) || a - b);
    }
    this.size = new Int32Array(n).fill(1);
    for (let i = n - 1; i > 0; i--) this.size[parent[i]] += this.size[i];
    this.maxVisits = 1;  // the root's visits are everyone's: scale by its children's
    for (let i = 1; i < n; i++) if (visits[i] > this.maxVisits) this.maxVisits = visits[i];
    this.expanded = new Uint8Array(n);
    this.rowOf = new Int32Array(n).fill(-1);
    this.pairsOf = new Map();
    for (const pair of this.task.pairs) {
      for (const [node, role] of [[pair.chosen, "chosen"], [pair.rejected, "rejected"]]) {
        if (node === null || node >= n) continue;
        if (!this.pairsOf.has(node)) this.pairsOf.set(node, []);
        this.pairsOf.get(node).push({ pair, role });
      }
    }
  }

  mount(host) {
    this.scroll = el("div", { id: "tree-scroll" });
    this.canvas = el("div", { id: "tree-canvas" });
    this.layer = svg("svg", { class: "tree-svg" });
    this.canvas.appendChild(this.layer);
    this.scroll.appendChild(this.canvas);
    host.appendChild(this.scroll);
    this.scroll.addEventListener("scroll", () => this.schedule());
    this.layer.addEventListener("click", (event) => this.onClick(event));
    this.layer.addEventListener("dblclick", (event) => {
      const g = event.target.closest("g.node");
      if (g) this.toggle(Number(g.dataset.node));
    });
  }

  onClick(event) {
    const g = event.target.closest("g.node");
    if (!g) return;
    const id = Number(g.dataset.node);
    if (event.target.closest(".toggle")) this.toggle(id);
    else this.select(id);
  }

  /* display order: a depth-first walk of the expanded part */
  layout() {
    this.rowOf.fill(-1);
    const rows = [];
    const stack = [0];
    while (stack.length) {
      const i = stack.pop();
      this.rowOf[i] = rows.length;
      rows.push(i);
      if (this.expanded[i]) {
        const kids = this.children[i];
        for (let k = kids.length - 1; k >= 0; k--) stack.push(kids[k]);
      }
    }
    this.rows = rows;
    let deepest = 0;
    for (const i of rows) if (this.depth[i] > deepest) deepest = this.depth[i];
    this.canvas.style.height = rows.length * ROW + 40 + "px";
    this.canvas.style.width = LEFT + deepest * INDENT + 900 + "px";
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.draw(); });
  }

  refresh() {
    this.layout();
    this.draw();
  }

  /* the rows in the scrolled window, and the links into them */
  draw() {
    const top = this.scroll.scrollTop, height = this.scroll.clientHeight || 800;
    const first = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
    const last = Math.min(this.rows.length - 1, Math.ceil((top + height) / ROW) + OVERSCAN);
    const layer = this.layer;
    layer.textContent = "";
    layer.style.top = first * ROW + "px";
    layer.setAttribute("height", (last - first + 1) * ROW);
    layer.setAttribute("width", this.canvas.style.width);
    const links = svg("g", { class: "links" }), nodes = svg("g", { class: "nodes" });
    const { parent, flags } = this.task.nodes;
    const y = (row) => (row - first) * ROW + ROW / 2;
    for (let row = first; row <= last; row++) {
      const i = this.rows[row];
      if (i > 0) {
        const p = parent[i];
        const px = LEFT + this.depth[p] * INDENT;
        const cx = LEFT + this.depth[i] * INDENT;
        const pv = flags[i] & FLAG.ON_PV && flags[p] & FLAG.ON_PV;
        links.appendChild(svg("path", {
          class: pv ? "link pv" : "link",
          d: `M${px},${y(this.rowOf[p])}V${y(row)}H${cx - this.radius(i)}`,
        }));
      }
      nodes.appendChild(this.drawNode(i, y(row)));
    }
    this.drawPairs(links, first, last, y);
    layer.appendChild(links);
    layer.appendChild(nodes);
  }

  radius(i) {
    return 3 + 6 * Math.sqrt(Math.min(1, this.task.nodes.visits[i] / this.maxVisits));
  }

  rate(i) {
    const { flags, score, value } = this.task.nodes;
    return flags[i] & FLAG.TERMINAL && score[i] !== null ? score[i] : value[i];
  }

  drawNode(i, y) {
    const t = this.task.nodes, f = t.flags[i];
    const x = LEFT + this.depth[i] * INDENT, r = this.radius(i);
    const classes = ["node"];
    if (f & FLAG.ON_PV) classes.push("pv");
    if (f & FLAG.CHOSEN) classes.push("chosen");
    if (f & FLAG.GRAFTED) classes.push("grafted");
    if (f & FLAG.TERMINAL) classes.push("terminal");
    if (f & FLAG.DEAD_END) classes.push("dead-end");
    if (i === this.selected) classes.push("selected");
    const g = svg("g", { class: classes.join(" "), "data-node": i,
      transform: `translate(${x},${y})` });
    g.appendChild(svg("rect", { class: "hl", x: -26, y: -ROW / 2, width: 1400, height: ROW }));
    const kids = this.children[i].length;
    if (kids) {
      g.appendChild(svg("g", { class: "toggle", "data-expanded": this.expanded[i] ? 1 : 0 },
        svg("rect", { x: -20, y: -5, width: 10, height: 10, rx: 2 }),
        svg("text", { x: -15, y: 0.5, "text-anchor": "middle",
          text: this.expanded[i] ? "−" : "+" })));
    }
    if (f & FLAG.CHOSEN) g.appendChild(svg("circle", { class: "ring", r: r + 4 }));
    const fill = valueColor(this.rate(i));
    g.appendChild(f & FLAG.TERMINAL
      ? svg("rect", { class: "glyph", x: -r, y: -r, width: 2 * r, height: 2 * r, fill })
      : svg("circle", { class: "glyph", r, fill }));
    const text = svg("text", { x: r + 6, y: 1 });
    if (t.score[i] !== null) {
      const ok = t.score[i] >= 1, ko = t.score[i] <= 0;
      text.appendChild(svg("tspan", { class: ok ? "ok verdict" : ko ? "ko verdict" : "mark verdict",
        text: ok ? "✓ " : ko ? "✗ " : `${fmt(t.score[i], 2)} ` }));
    }
    if (f & FLAG.DEAD_END) text.appendChild(svg("tspan", { class: "mark", text: "⊘ " }));
    if (f & FLAG.GRAFTED) text.appendChild(svg("tspan", { class: "mark", text: "⎇ " }));
    if (f & FLAG.CHOSEN) text.appendChild(svg("tspan", { class: "mark", text: "★ " }));
    for (const { pair, role } of this.pairsOf.get(i) || []) {
      text.appendChild(svg("tspan", { class: `pair-${role}`,
        text: role === "chosen" ? `▲m${fmt(pair.margin, 2)} ` : "▼ " }));
    }
    const label = i === 0 ? "(root) " + oneLine(this.task.problem, 70) : oneLine(t.action[i], 90);
    text.appendChild(svg("tspan", { class: "label", text: label }));
    let meta = `  N=${t.visits[i]} V=${fmt(t.value[i], 2)}`;
    if (t.critic[i] !== null) meta += ` c=${fmt(t.critic[i], 2)}`;
    if (kids && !this.expanded[i]) meta += `  [+${this.size[i] - 1}]`;
    text.appendChild(svg("tspan", { class: "meta", text: meta }));
    g.appendChild(text);
    return g;
  }

  /* a dashed arc links the chosen and the rejected sibling of each visible pair */
  drawPairs(layer, first, last, y) {
    for (const pair of this.task.pairs) {
      const a = this.rowOf[pair.chosen] ?? -1, b = this.rowOf[pair.rejected] ?? -1;
      if (a < 0 || b < 0 || Math.max(a, b) < first || Math.min(a, b) > last) continue;
      const x = LEFT + this.depth[pair.chosen] * INDENT - this.radius(pair.chosen) - 2;
      const bulge = 10 + Math.min(30, 2 * Math.abs(a - b));
      const path = svg("path", { class: "pair-link",
        d: `M${x},${y(a)}C${x - bulge},${y(a)} ${x - bulge},${y(b)} ${x},${y(b)}` });
      path.appendChild(svg("title", { text: `pair: #${pair.chosen} preferred to ` +
        `#${pair.rejected}, margin ${fmt(pair.margin, 2)}, confidence ${fmt(pair.confidence, 3)}` }));
      layer.appendChild(path);
    }
  }

  toggle(i) {
    if (!this.children[i].length) return;
    this.expanded[i] ^= 1;
    this.refresh();
  }

  expandAll() {
    for (let i = 0; i < this.n; i++) if (this.children[i].length) this.expanded[i] = 1;
    this.refresh();
  }

  collapseAll() {
    this.expanded.fill(0);
    this.expanded[0] = 1;
    this.refresh();
  }

  /* open every ancestor of node i; optionally scroll it into view */
  expandPath(i, reveal = true) {
    const parent = this.task.nodes.parent;
    for (let p = parent[i]; p !== null && p !== undefined; p = parent[p]) this.expanded[p] = 1;
    if (!reveal) return;
    this.refresh();
    const row = this.rowOf[i];
    const view = this.scroll.clientHeight;
    if (row * ROW < this.scroll.scrollTop || row * ROW > this.scroll.scrollTop + view - ROW) {
      this.scroll.scrollTop = Math.max(0, row * ROW - view / 2);
    }
    this.draw();
  }

  select(i) {
    this.selected = i;
    this.expandPath(i);
    renderPanel(this.panel, this, i);
  }

  /* arrows: ↑/↓ the previous / next row, → open (then the first child), ← close (then the
     parent) */
  onKey(key) {
    const i = this.selected === null ? 0 : this.selected;
    const row = this.rowOf[i];
    if (key === "ArrowDown" && row + 1 < this.rows.length) this.select(this.rows[row + 1]);
    else if (key === "ArrowUp" && row > 0) this.select(this.rows[row - 1]);
    else if (key === "ArrowRight" && this.children[i].length) {
      if (this.expanded[i]) this.select(this.children[i][0]);
      else { this.expanded[i] = 1; this.select(i); }
    } else if (key === "ArrowLeft") {
      if (this.expanded[i] && this.children[i].length) { this.expanded[i] = 0; this.select(i); }
      else if (i > 0) this.select(this.task.nodes.parent[i]);
    } else return false;
    return true;
  }
}

/* ----------------------------------------------------------------------- the node panel */

function renderPanel(panel, view, i) {
  const task = view.task, t = task.nodes, f = t.flags[i];
  panel.textContent = "";
  panel.appendChild(el("h2", { text: i === 0 ? "Root" : `Node #${i}` }));
  const chips = el("div", { class: "chips" });
  const chip = (cls, text) => chips.appendChild(el("span", { class: `chip ${cls}`, text }));
  chip("", `depth ${view.depth[i]}`);
  if (f & FLAG.ON_PV) chip("pv", "principal variation");
  if (f & FLAG.CHOSEN) chip("chosen", "chosen answer");
  if (f & FLAG.TERMINAL) chip("terminal", "terminal");
  if (f & FLAG.DEAD_END) chip("dead", "dead end");
  if (f & FLAG.GRAFTED) chip("grafted", "grafted from a rollout");
  panel.appendChild(chips);

  panel.appendChild(el("h3", { text: view.envKind === "agent" ? "Turn" : "Step" }));
  panel.appendChild(stepBlock(view, i));
  const observation = task.observations[String(i)];
  if (view.envKind === "agent") {
    panel.appendChild(el("h3", { text: "Observation" }));
    panel.appendChild(observation === undefined
      ? el("div", { class: "empty", text: "not replayed (the environment was not available)" })
      : el("pre", { class: "step observation", text: observation }));
  }

  panel.appendChild(el("h3", { text: "Statistics" }));
  const interval = t.lo[i] === null ? "" : `  [${fmt(t.lo[i], 2)}, ${fmt(t.hi[i], 2)}]`;
  panel.appendChild(table([
    ["visits", fmt(t.visits[i])],
    ["value (90 % interval)", fmt(t.value[i], 3) + interval],
    ["prior", fmt(t.prior[i], 3)],
    ["log-probability", fmt(t.logprob[i], 3)],
    ["tokens", fmt(t.tokens[i])],
    ["reward", fmt(t.reward[i], 3)],
    ["children", fmt(view.children[i].length)],
    ["answer", t.answer[i] ?? "—"],
    ["verifier", t.score[i] === null ? "not verified"
      : t.score[i] >= 1 ? "✓ correct" : t.score[i] <= 0 ? "✗ wrong" : `score ${fmt(t.score[i])}`],
  ]));

  panel.appendChild(el("h3", { text: "Critic" }));
  const components = Object.entries(t.components[i] || {});
  panel.appendChild(table([
    ["critic value", fmt(t.critic[i], 3)],
    ...components.map(([name, value]) => [`· ${name}`, fmt(value, 3)]),
    ["disagreement (components' max − min)", fmt(t.disagreement[i], 3)],
  ]));
  if (t.explanation[i]) {
    panel.appendChild(el("div", { class: "explanation", text: t.explanation[i] }));
  }
  if (t.feedback[i] && t.feedback[i] !== t.explanation[i]) {
    panel.appendChild(el("div", { class: "feedback", text: t.feedback[i] }));
  }
  if (!t.explanation[i] && !t.feedback[i]) {
    panel.appendChild(el("div", { class: "empty", text: "no explanation or feedback" }));
  }

  const pairs = (view.pairsOf.get(i) || []);
  if (pairs.length) {
    panel.appendChild(el("h3", { text: "Preference pairs" }));
    for (const { pair, role } of pairs) {
      const other = role === "chosen" ? pair.rejected : pair.chosen;
      panel.appendChild(el("div", { class: "pair-item" },
        role === "chosen" ? "chosen over " : "rejected for ",
        nodeLink(view, other),
        ` · margin ${fmt(pair.margin, 2)} · confidence ${fmt(pair.confidence, 3)}`));
    }
  }
}

function table(rows) {
  return el("table", {}, ...rows.map(([k, v]) =>
    el("tr", {}, el("td", { text: k }), el("td", { class: "num", text: v }))));
}

function nodeLink(view, i) {
  return el("a", { class: "node-link", "data-goto": i, text: `#${i}`,
    onclick: () => view.select(i) });
}

/* the node's step in context: the problem and the earlier steps, the step itself marked;
   code highlighted for code tasks */
function stepBlock(view, i) {
  const t = view.task.nodes;
  const path = [];
  for (let p = i; p !== null; p = t.parent[p]) path.unshift(p);
  const pre = el("pre", { class: view.envKind === "code" ? "step step-text code"
    : "step step-text" });
  if (view.envKind === "agent") {
    pre.textContent = i === 0 ? view.task.problem : t.action[i];
    return pre;
  }
  const code = view.envKind === "code";
  const earlier = view.task.problem.replace(/\n?$/, "\n") +
    path.slice(1, -1).map((p) => t.action[p] + "\n").join("");
  const earlierSpan = el("span", { class: "earlier" });
  if (code) highlightPython(earlier, earlierSpan); else earlierSpan.textContent = earlier;
  pre.appendChild(earlierSpan);
  if (i > 0) {
    const current = el("span", { class: "current" });
    if (code) highlightPython(t.action[i], current); else current.textContent = t.action[i];
    pre.appendChild(current);
  }
  return pre;
}
