/* mcts-agent viewer: the run page (task list, tree, node panel) and the page's start. */
"use strict";

const FILTERS = {
  all: () => true,
  solved: (t) => t.solved === true,
  unsolved: (t) => t.solved === false,
  errors: (t) => t.status === "environment_error" || (t.stats.counts.environment_errors || 0) > 0,
  overflow: (t) => t.status === "context_overflow",
};
const SORTS = {
  id: (a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
  tokens: (a, b) => b.stats.tokens - a.stats.tokens,
  nodes: (a, b) => b.stats.nodes - a.stats.nodes,
};

class RunApp {
  constructor(root, data) {
    this.data = data;
    this.root = root;
    this.view = null;
    this.current = null;
    root.appendChild(this.header());
    const main = el("main");
    this.treesView = el("div", { class: "view active", id: "trees-view" });
    main.appendChild(this.treesView);
    if (data.critics) {
      this.criticsView = el("div", { class: "view", id: "critics-view" });
      this.criticsView.appendChild(criticsDashboard(data.critics));
      main.appendChild(this.criticsView);
    }
    root.appendChild(main);
    this.sidebar();
    this.center = el("section", { class: "tree" });
    this.panel = el("aside", { class: "panel", id: "node-panel" },
      el("div", { class: "empty", text: "Click a node to see its step, statistics and critic." }));
    this.treesView.appendChild(this.center);
    this.treesView.appendChild(this.panel);
    this.renderList();
    const wanted = data.initial_task && data.tasks.find((t) => t.id === data.initial_task);
    const first = wanted || this.visibleTasks()[0];
    if (first) this.open(first.id);
    else this.center.appendChild(el("div", { class: "note", text: "No trees in this run yet." }));
    if (data.watch) this.watch();
    document.addEventListener("keydown", (event) => {
      if (!this.view || event.target.closest("input, select, textarea")) return;
      if (!this.treesView.classList.contains("active")) return;
      if (this.view.onKey(event.key)) event.preventDefault();
    });
  }

  header() {
    const d = this.data;
    const head = el("header", { class: "top" },
      el("h1", { text: "mcts-agent" }), el("span", { class: "source", text: d.source }));
    this.baseline = el("div", { class: "baseline", id: "baselines" });
    head.appendChild(this.baseline);
    this.renderBaselines();
    if (d.critics) {
      const tabs = el("div", { class: "tabs" });
      const show = (which) => {
        for (const b of tabs.children) b.classList.toggle("active", b.dataset.tab === which);
        this.treesView.classList.toggle("active", which === "trees");
        this.criticsView.classList.toggle("active", which === "critics");
      };
      tabs.appendChild(el("button", { class: "active", "data-tab": "trees", text: "Trees",
        onclick: () => show("trees") }));
      tabs.appendChild(el("button", { "data-tab": "critics", text: "Critics",
        onclick: () => show("critics") }));
      head.appendChild(tabs);
    }
    if (d.watch) {
      this.liveNote = el("span", { class: "live", id: "live", text: "● live" });
      head.appendChild(this.liveNote);
    }
    return head;
  }

  /* the run's baselines beside the search, on the same tasks (summary.json) */
  renderBaselines() {
    const s = this.data.summary, box = this.baseline;
    box.textContent = "";
    const stat = (label, value) => box.appendChild(el("span", { class: "stat" }, label + " ",
      el("b", { text: value })));
    const n = this.data.tasks.length;
    const solved = this.data.tasks.filter((t) => t.solved).length;
    stat("MCTS solved", `${solved}/${n}`);
    if (s && s.greedy_solved !== null && s.greedy_solved !== undefined) {
      stat("greedy", `${s.greedy_solved}/${s.tasks}`);
      stat("best-of-N (same tokens)", `${s.best_of_n_solved}/${s.tasks}`);
      stat("tokens MCTS / best-of-N", `${fmt(s.tokens)} / ${fmt(s.baseline_tokens)}`);
    } else {
      box.appendChild(el("span", { class: "note", text: "no baselines in this run" }));
    }
  }

  sidebar() {
    const aside = el("aside", { class: "tasks" });
    this.search = el("input", { id: "task-search", type: "search",
      placeholder: "search tasks (id or problem)", oninput: () => this.renderList() });
    this.filter = el("select", { id: "task-filter", onchange: () => this.renderList() },
      ...[["all", "all tasks"], ["solved", "solved"], ["unsolved", "unsolved"],
        ["errors", "environment errors"], ["overflow", "context overflow"]]
        .map(([v, label]) => el("option", { value: v, text: label })));
    this.sort = el("select", { id: "task-sort", onchange: () => this.renderList() },
      ...[["id", "sort by id"], ["tokens", "most tokens first"], ["nodes", "most nodes first"]]
        .map(([v, label]) => el("option", { value: v, text: label })));
    this.count = el("div", { class: "count", id: "task-count" });
    aside.appendChild(el("div", { class: "controls" }, this.search, this.filter, this.sort,
      this.count));
    this.list = el("ul", { class: "task-list", id: "task-list" });
    this.list.addEventListener("click", (event) => {
      const li = event.target.closest("li[data-task]");
      if (li) this.open(li.dataset.task);
    });
    aside.appendChild(this.list);
    this.treesView.appendChild(aside);
  }

  visibleTasks() {
    const query = (this.search ? this.search.value : "").trim().toLowerCase();
    const keep = FILTERS[this.filter ? this.filter.value : "all"];
    return this.data.tasks
      .filter((t) => keep(t) && (!query || t.id.toLowerCase().includes(query) ||
        t.problem.toLowerCase().includes(query)))
      .sort(SORTS[this.sort ? this.sort.value : "id"]);
  }

  renderList() {
    const tasks = this.visibleTasks();
    this.list.textContent = "";
    for (const t of tasks) {
      const [cls, word] = t.status !== "finished" ? ["error", t.status.replace("_", " ")]
        : t.solved === true ? ["solved", "solved"] : t.solved === false ? ["unsolved", "unsolved"]
          : ["unknown", "unjudged"];
      this.list.appendChild(el("li", { "data-task": t.id,
        class: this.current && t.id === this.current.id ? "selected" : null },
      el("div", {}, el("span", { class: "tid", text: t.id }),
        el("span", { class: `badge ${cls}`, text: word })),
      el("div", { class: "problem", text: oneLine(t.problem, 80) }),
      el("div", { class: "meta",
        text: `${fmt(t.stats.nodes)} nodes · ${fmt(t.stats.tokens)} tokens` })));
    }
    this.count.textContent = `${tasks.length} of ${this.data.tasks.length} tasks`;
  }

  open(id) {
    const task = this.data.tasks.find((t) => t.id === id);
    if (!task) return;
    this.current = task;
    for (const li of this.list.children) li.classList.toggle("selected", li.dataset.task === id);
    this.center.textContent = "";
    this.panel.textContent = "";
    this.panel.appendChild(el("div", { class: "empty",
      text: "Click a node to see its step, statistics and critic." }));
    this.center.appendChild(taskHead(task));
    const toolbar = el("div", { class: "toolbar" });
    this.center.appendChild(toolbar);
    const mined = minedRows(task);
    if (mined) this.center.appendChild(mined);
    const started = performance.now();
    this.view = new TreeView(task, this.data.env_kind, this.center, this.panel);
    this.view.refresh();
    for (const a of this.center.querySelectorAll("a.node-link[data-goto]")) {
      a.addEventListener("click", () => this.view.select(Number(a.dataset.goto)));
    }
    fillToolbar(toolbar, this.view);
    afterPaint(() => {
      timings.treePainted = performance.now();
      timings.treeDraw = performance.now() - started;
    });
  }

  /* --watch: poll the server for a newer trees.jsonl and show the new trees */
  watch() {
    const poll = async () => {
      try {
        const reply = await fetch("data.json?since=" + encodeURIComponent(this.data.version),
          { cache: "no-store" });
        if (reply.status === 200) {
          const fresh = await reply.json();
          if (fresh.version !== this.data.version) this.update(fresh);
        }
        this.liveNote.textContent = "● live";
      } catch (err) {
        this.liveNote.textContent = "○ server gone";
      }
      setTimeout(poll, 1000);
    };
    setTimeout(poll, 1000);
  }

  update(fresh) {
    const keep = { ...fresh, watch: true };
    this.data = keep;
    this.renderBaselines();
    this.renderList();
    if (!this.current && keep.tasks.length) this.open(this.visibleTasks()[0].id);
    else if (this.current) this.current = keep.tasks.find((t) => t.id === this.current.id);
    timings.updates = (timings.updates || 0) + 1;
  }
}

function taskHead(task) {
  const facts = el("div", { class: "facts" });
  const fact = (k, v) => facts.appendChild(el("span", {}, `${k}: `, el("b", { text: v })));
  fact("task", task.id);
  fact("solved", task.solved === null ? "unknown" : task.solved ? "yes" : "no");
  fact("answer", task.answer === null ? "—" : oneLine(task.answer, 60));
  if (task.reference !== null) fact("reference", oneLine(task.reference, 60));
  if (task.status !== "finished") fact("status", task.status.replace("_", " "));
  fact("nodes", fmt(task.stats.nodes));
  fact("tokens", fmt(task.stats.tokens));
  fact("waves", fmt(task.stats.waves));
  fact("seconds", fmt(task.stats.seconds, 2));
  for (const [k, v] of Object.entries(task.stats.counts)) if (v) fact(k.replace(/_/g, " "), fmt(v));
  if (task.stats.first_error) fact("first error", task.stats.first_error);
  const head = el("div", { class: "task-head", id: "task-head" },
    el("div", { class: "problem", text: task.problem }), facts);
  if (task.baseline) head.appendChild(baselineFacts(task.baseline));
  return head;
}

/* what greedy decoding and best-of-N answered on this task (the run's baselines.jsonl) */
function baselineFacts(b) {
  const mark = (correct) => (correct ? " ✓" : " ✗");
  const answer = (a) => (a === null ? "—" : oneLine(a, 40));
  return el("div", { class: "facts task-baselines", id: "task-baselines" },
    el("span", {}, "greedy: ", el("b", { text: answer(b.greedy_answer) + mark(b.greedy_correct) }),
      ` (${fmt(b.greedy_tokens)} tokens)`),
    el("span", {}, `best-of-${b.samples}: `,
      el("b", { text: answer(b.best_answer) + mark(b.best_correct) }),
      ` (${fmt(b.best_tokens)} tokens)`));
}

function fillToolbar(bar, view) {
  const button = (id, text, fn) => bar.appendChild(el("button", { id, text, onclick: fn }));
  button("expand-all", "Expand all", () => {
    const started = performance.now();
    view.expandAll();
    afterPaint(() => { timings.expandAll = performance.now() - started; });
  });
  button("collapse-all", "Collapse all", () => view.collapseAll());
  button("show-pv", "Principal variation", () => {
    view.collapseAll();
    view.select(view.task.pv[view.task.pv.length - 1]);
  });
  if (view.task.chosen !== null) {
    button("show-chosen", "Chosen answer", () => view.select(view.task.chosen));
  }
  bar.appendChild(findBox(view));
  const dot = (fill, shape) => svg("svg", { width: 12, height: 12 }, shape === "square"
    ? svg("rect", { x: 1, y: 1, width: 10, height: 10, fill, stroke: "#333" })
    : svg("circle", { cx: 6, cy: 6, r: 5, fill, stroke: "#333" }));
  bar.appendChild(el("div", { class: "legend" },
    el("span", {}, dot(valueColor(0)), " value 0 "), el("span", {}, dot(valueColor(0.5)), " 0.5 "),
    el("span", {}, dot(valueColor(1)), " 1"), el("span", {}, dot("#fff", "square"), " terminal"),
    ...["size: visits", "✓/✗ verifier", "⊘ dead end", "⎇ grafted", "★ answer", "▲▼ pair",
      "blue: principal variation", "arrow keys move"].map((text) => el("span", { text }))));
}

/* find steps by their text: Enter goes to the next match (its path opens) */
function findBox(view) {
  const count = el("span", { class: "find-count", id: "find-count" });
  let matches = [], at = -1, query = "";
  const input = el("input", { id: "find-node", type: "search", placeholder: "find a step…",
    size: 18 });
  input.addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    const wanted = input.value.trim().toLowerCase();
    if (wanted !== query) {
      query = wanted;
      const actions = view.task.nodes.action;
      matches = [];
      if (wanted) for (let i = 0; i < view.n; i++) {
        if (actions[i].toLowerCase().includes(wanted)) matches.push(i);
      }
      at = -1;
    }
    if (!matches.length) { count.textContent = query ? "no match" : ""; return; }
    at = (at + 1) % matches.length;
    view.select(matches[at]);
    count.textContent = `${at + 1} of ${matches.length}`;
  });
  return el("span", { class: "find" }, input, " ", count);
}

/* the task's mined pairs and splices, as lists under the toolbar */
function minedRows(task) {
  if (!task.pairs.length && !task.splices.length) return null;
  const box = el("div", { class: "pairs-list", id: "mined-rows" });
  const t = task.nodes;
  const link = (i) => el("a", { class: "node-link", "data-goto": i, text: `#${i}` });
  if (task.pairs.length) {
    const details = el("details", { class: "pairs" },
      el("summary", { text: `Preference pairs (${task.pairs.length})` }));
    details.appendChild(el("table", {},
      el("tr", {}, ...["parent", "chosen", "rejected", "margin", "confidence", "chosen step",
        "rejected step"].map((h) => el("th", { text: h }))),
      ...task.pairs.map((p) => el("tr", {}, el("td", {}, link(p.parent)),
        el("td", {}, link(p.chosen)), el("td", {}, link(p.rejected)),
        el("td", { text: fmt(p.margin, 2) }), el("td", { text: fmt(p.confidence, 3) }),
        el("td", { text: oneLine(t.action[p.chosen] || "", 50) }),
        el("td", { text: oneLine(t.action[p.rejected] || "", 50) })))));
    box.appendChild(details);
  }
  if (task.splices.length) {
    const details = el("details", { class: "splices", open: true },
      el("summary", { text: `Splices (${task.splices.length}): bad prefix → revision → good ` +
        "continuation" }));
    for (const s of task.splices) details.appendChild(spliceBlock(task, s, link));
    box.appendChild(details);
  }
  return box;
}

function pathBetween(task, from, to) {
  const parent = task.nodes.parent, out = [];
  for (let p = to; p !== null && p !== from; p = parent[p]) out.unshift(p);
  return out;
}

function spliceBlock(task, s, link) {
  const t = task.nodes;
  const steps = (ids) => ids.map((i) => oneLine(t.action[i], 120)).join("\n");
  const bad = pathBetween(task, 0, s.bad), good = pathBetween(task, s.branch, s.good);
  return el("div", { class: "splice" },
    el("div", {}, "branch ", link(s.branch), " · bad ", link(s.bad),
      ` (value ${fmt(s.bad_value, 2)})`, " · good ", link(s.good),
      ` (value ${fmt(s.good_value, 2)})`),
    el("div", { class: "part bad", text: "bad prefix:\n" + steps(bad) }),
    el("div", { class: "part revision", text: "revision: " + (s.revision || "") }),
    el("div", { class: "part good", text: "good continuation:\n" + steps(good) }));
}

function dashboard(root, data) {
  root.textContent = "";
  if (data.kind === "iterate") iterateDashboard(root, data);
  else {
    root.appendChild(el("header", { class: "top" }, el("h1", { text: "mcts-agent · critics" }),
      el("span", { class: "source", text: data.source })));
    const main = el("main");
    main.appendChild(el("div", { class: "view active" }, criticsDashboard(data.critics)));
    root.appendChild(main);
  }
  if (data.watch) {
    root.querySelector("header.top").appendChild(el("span", { class: "live", id: "live",
      text: "● live" }));
  }
}

/* --watch on a dashboard: draw it again when the server has newer rounds */
function watchDashboard(root, data) {
  let version = data.version;
  const poll = async () => {
    try {
      const reply = await fetch("data.json", { cache: "no-store" });
      const fresh = await reply.json();
      if (fresh.version !== version) {
        version = fresh.version;
        dashboard(root, fresh);
        timings.updates = (timings.updates || 0) + 1;
      }
    } catch (err) {
      const live = document.getElementById("live");
      if (live) live.textContent = "○ server gone";
    }
    setTimeout(poll, 1000);
  };
  setTimeout(poll, 1000);
}

function boot() {
  const data = JSON.parse(document.getElementById("viewer-data").textContent);
  const root = document.getElementById("app");
  timings.dataParsed = performance.now();
  if (data.kind === "run") window.viewerApp = new RunApp(root, data);
  else {
    dashboard(root, data);
    if (data.watch) watchDashboard(root, data);
  }
  afterPaint(() => { timings.firstPaint = performance.now(); });
}

boot();
