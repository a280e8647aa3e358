"""`mcts-agent view`: the page a person opens, tested in headless Chromium as they would use
it (click a task, expand nodes, open a node's panel, read what is shown), and the typed
model behind it.

Every page must work offline from disk: the only request it may make is for itself, and it
must log no console error. Folders are made by small scripted runs (``viewer_runs.py``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner
from viewer_runs import (
    agent_run,
    arith_run,
    chromium_executable,
    code_run,
    critics_folder,
    iterate_folder,
    launch_browser,
)

from environments.agent.babyai_game import babyai
from mcts_agent.cli import app
from mcts_agent.contracts import Task
from mcts_agent.search.baselines import read_baselines
from mcts_agent.trees import NodeRecord, ReplayedTree, ResultFile, TreeRecord, TreeStats
from mcts_agent.viewer import page_data, write_view
from mcts_agent.viewer.model import CHOSEN, DEAD_END, GRAFTED, ON_PV, TERMINAL, tree_view
from mcts_agent.viewer.page import embed_json, render
from mcts_agent.viewer.synthetic import synthetic_record
from mcts_agent.viewer.watch import serve

runner = CliRunner()
BENCH = Path(__file__).parents[1] / "bench" / "viewer.py"


# ----------------------------------------------------------------------------- folders


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("viewer")
    arith = arith_run(base / "arith")
    return {"arith": arith, "code": code_run(base / "code"), "agent": agent_run(base / "agent"),
            "critics": critics_folder(base / "critics"),
            "iterate": iterate_folder(base / "iterate", arith)}


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    with playwright_api.sync_playwright() as playwright:
        chromium = launch_browser(playwright)
        yield chromium
        chromium.close()


class Visit:
    """A page opened in the browser, with every request it made and every console error."""

    def __init__(self, browser, url: str, viewport=(1400, 900)):
        self.url = url
        self.page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(url)

    def assert_offline_and_clean(self, allowed_prefix: str | None = None) -> None:
        allowed = allowed_prefix or self.url
        strays = [u for u in self.requests if not u.startswith(allowed)]
        assert strays == [], f"the page requested {strays}"
        assert self.errors == [], f"console errors: {self.errors}"

    def close(self) -> None:
        self.page.close()


@pytest.fixture
def visit(browser):
    opened: list[Visit] = []

    def open_(target, **kwargs) -> Visit:
        url = target if isinstance(target, str) else target.resolve().as_uri()
        opened.append(Visit(browser, url, **kwargs))
        return opened[-1]

    yield open_
    for v in opened:
        v.close()


def wait_for_timing(page, name: str, timeout: float = 30.0) -> float:
    """Poll the page until it has measured ``name`` (``wait_for_function`` polls with an eval
    that the page's content security policy forbids)."""
    deadline = time.monotonic() + timeout
    while (value := page.evaluate(f"() => window.viewerTimings.{name}")) is None:
        assert time.monotonic() < deadline, f"the page never measured {name}"
        page.wait_for_timeout(10)
    return value


def page_file(folder, **options):
    return write_view(folder, **options)[0]


# ----------------------------------------------------------------------------- the run page


def test_a_run_page_lists_tasks_and_filters_searches_and_sorts_them(folders, visit):
    records = ResultFile(folders["arith"] / "trees.jsonl").read()
    v = visit(page_file(folders["arith"]))
    page = v.page
    items = page.locator("#task-list li")
    assert items.count() == len(records)
    assert page.locator("#task-count").inner_text() == f"{len(records)} of {len(records)} tasks"
    page.select_option("#task-filter", "solved")
    solved = sum(bool(r.solved) for r in records)
    assert items.count() == solved
    page.select_option("#task-filter", "all")
    one = records[-1]
    page.fill("#task-search", one.task.problem)
    assert [li.get_attribute("data-task") for li in items.all()] == [one.task.id]
    page.fill("#task-search", "")
    page.select_option("#task-sort", "tokens")
    shown = [li.get_attribute("data-task") for li in items.all()]
    by_tokens = sorted(records, key=lambda r: -r.stats.tokens)
    assert [r.stats.tokens for r in by_tokens] == [
        next(r.stats.tokens for r in records if r.task.id == t) for t in shown]
    v.assert_offline_and_clean()


def test_the_baselines_of_the_run_stand_beside_the_search(folders, visit):
    summary = json.loads((folders["arith"] / "summary.json").read_text())
    v = visit(page_file(folders["arith"]))
    text = v.page.locator("#baselines").inner_text()
    assert f"greedy {summary['greedy_solved']}/{summary['tasks']}" in text
    assert f"best-of-N (same tokens) {summary['best_of_n_solved']}/{summary['tasks']}" in text
    assert f"MCTS solved {summary['mcts_solved']}/{summary['tasks']}" in text
    # and per task: what greedy and best-of-N answered (baselines.jsonl), beside the tree
    baselines, skipped = read_baselines(folders["arith"] / "baselines.jsonl")
    assert skipped == 0 and len(baselines) == summary["tasks"]
    assert sum(b.greedy_correct for b in baselines.values()) == summary["greedy_solved"]
    assert sum(b.best_correct for b in baselines.values()) == summary["best_of_n_solved"]
    task, row = next(iter(baselines.items()))
    v.page.click(f'li[data-task="{task}"]')
    shown = v.page.locator("#task-baselines").inner_text()
    mark = "✓" if row.greedy_correct else "✗"
    assert f"greedy: {row.greedy_answer or '—'} {mark}" in shown
    assert f"best-of-{row.samples}: " in shown and f"({row.best_tokens:,} tokens)" in shown
    v.assert_offline_and_clean()


def test_click_a_task_expand_a_node_and_read_its_panel(folders, visit):
    records = ResultFile(folders["arith"] / "trees.jsonl").read()
    record = max(records, key=lambda r: len(r.nodes))
    v = visit(page_file(folders["arith"]))
    page = v.page
    page.click(f'#task-list li[data-task="{record.task.id}"]')
    assert record.task.problem in page.locator("#task-head").inner_text()
    children = record.children()
    # collapsed, the tree shows the root's children; a child opens with its expander
    page.click("#collapse-all")
    assert page.locator("g.node").count() == 1 + len(children[0])
    collapsed = next(i for i in children[0] if children[i])
    before = page.locator("g.node").count()
    page.click(f'g.node[data-node="{collapsed}"] .toggle')
    for child in children[collapsed]:
        assert page.locator(f'g.node[data-node="{child}"]').count() == 1
    assert page.locator("g.node").count() == before + len(children[collapsed])
    # the node panel: the step in context, statistics with the interval, the verifier
    verified = next(i for i, n in enumerate(record.nodes) if n.score == 1.0)
    page.click("#expand-all")
    page.click(f'g.node[data-node="{verified}"] .label')
    panel = page.locator("#node-panel")
    text = panel.inner_text()
    node = record.nodes[verified]
    assert f"Node #{verified}" in text
    assert panel.locator("pre.step-text .current").inner_text() == node.action
    assert re.search(rf"visits\s+{node.visits}\b", text)
    assert re.search(r"value \(90 % interval\)\s+1\.000\s+\[0\.\d\d, 1\.00\]", text)
    assert "✓ correct" in text and "terminal" in text
    assert re.search(rf"tokens\s+{node.tokens}\b", text)
    v.assert_offline_and_clean()


def test_the_principal_variation_and_the_chosen_answer_are_marked(folders, visit):
    record = ResultFile(folders["arith"] / "trees.jsonl").read()[0]
    view = tree_view(record)
    v = visit(page_file(folders["arith"], task=record.task.id))
    page = v.page
    for i in view["pv"]:
        assert "pv" in page.locator(f'g.node[data-node="{i}"]').get_attribute("class")
    page.click("#show-chosen")
    chosen = view["chosen"]
    assert record.nodes[chosen].answer == record.answer
    assert "chosen" in page.locator(f'g.node[data-node="{chosen}"]').get_attribute("class")
    assert "chosen answer" in page.locator("#node-panel").inner_text()
    v.assert_offline_and_clean()


def test_preference_pairs_are_linked_on_the_tree_with_margin_and_confidence(folders, visit):
    pairs = [json.loads(line) for line in
             (folders["arith"] / "data" / "pairs.jsonl").read_text().splitlines()]
    assert pairs, "the scripted run gives pairs to mine"
    pair = pairs[0]
    v = visit(page_file(folders["arith"], task=pair["task_id"]))
    page = v.page
    page.click(f'g.node[data-node="{pair["chosen_node"]}"] .label')
    assert page.locator("path.pair-link").count() >= 1
    text = page.locator("#node-panel").inner_text()
    assert f"chosen over #{pair['rejected_node']}" in text
    assert f"margin {pair['margin']:.2f}" in text
    assert f"confidence {pair['confidence']:.3f}" in text
    page.click("#mined-rows summary")
    assert page.locator("#mined-rows table tr").count() == 1 + sum(
        p["task_id"] == pair["task_id"] for p in pairs)
    v.assert_offline_and_clean()


def test_code_is_highlighted_and_dead_ends_grafts_and_feedback_are_shown(folders, visit):
    v = visit(page_file(folders["code"]))
    page = v.page
    assert page.locator('g.node[data-node="4"] .mark').text_content().startswith("⊘")  # dead end
    assert "grafted" in page.locator('g.node[data-node="5"]').get_attribute("class")
    page.click('g.node[data-node="2"] .label')
    step = page.locator("#node-panel pre.step-text")
    assert step.locator(".tok-kw", has_text="def").count() == 1
    assert step.locator(".current .tok-kw", has_text="return").count() == 1
    assert step.locator(".current .tok-com").inner_text() == "# add three"
    page.click('g.node[data-node="3"] .label')
    assert "assert f(2) == 7 failed: got 1" in page.locator("#node-panel .feedback").inner_text()
    v.assert_offline_and_clean()


def test_an_agent_tree_shows_observations_and_splices(folders, visit):
    record = ResultFile(folders["agent"] / "trees.jsonl").read()[0]
    splice = json.loads((folders["agent"] / "data" / "spliced.jsonl").read_text())
    v = visit(page_file(folders["agent"]))
    page = v.page
    first = record.children()[0][0]
    page.click(f'g.node[data-node="{first}"] .label')
    panel = page.locator("#node-panel")
    assert panel.locator("pre.step-text").inner_text() == record.nodes[first].action
    env = babyai()  # what the game answered, replayed from the record's actions
    expected = env.messages(ReplayedTree(record, env).state(first))[-1]["content"]
    assert panel.locator("pre.observation").inner_text().strip() == expected.strip()
    splices = page.locator("#mined-rows .splice")
    assert splices.count() == 1
    assert splices.locator(".bad").inner_text().startswith("bad prefix:")
    assert splice["revision"] in splices.locator(".revision").inner_text()
    good = record.nodes[splice["good_node"]].action
    assert good in splices.locator(".good").inner_text()
    v.assert_offline_and_clean()


def test_text_from_the_tree_is_never_markup(tmp_path, visit):
    hostile = '</script><script>window.pwned = 1</script><img src="http://example.com/x">'
    root = NodeRecord(None, "", 0, 2, 0.5, 1.0, 0.0, 0, 0.0, False)
    step = NodeRecord(0, hostile, 1, 1, 0.5, 1.0, -1.0, 3, 0.0, True, feedback=hostile,
                      explanation=hostile + " (why)")
    ResultFile(tmp_path / "trees.jsonl").append(TreeRecord(
        Task("t<1>", hostile), "data", (root, step), None, False, TreeStats(nodes=2)))
    v = visit(page_file(tmp_path))
    page = v.page
    assert page.evaluate("window.pwned") is None
    page.click('g.node[data-node="1"] .label')
    assert hostile in page.locator("#node-panel .feedback").inner_text()
    assert hostile in page.locator("#node-panel .explanation").inner_text()
    v.assert_offline_and_clean()


def test_the_node_panel_shows_each_critic_component_and_the_judges_explanation(tmp_path, visit):
    root = NodeRecord(None, "", 0, 2, 0.5, 1.0, 0.0, 0, 0.0, False)
    step = NodeRecord(0, "2 + 3 = 5", 1, 1, 0.5, 1.0, -1.0, 3, 0.0, True, critic=0.6,
                      disagreement=0.6, feedback="check the sum again",
                      explanation="the sum is right but the order is not",
                      components={"judge": 0.9, "rollout": 0.3})
    ResultFile(tmp_path / "trees.jsonl").append(TreeRecord(
        Task("t1", "2 + 3 = ?"), "inference", (root, step), "5", None, TreeStats(nodes=2)))
    v = visit(page_file(tmp_path))
    v.page.click('g.node[data-node="1"] .label')
    panel = v.page.locator("#node-panel")
    text = panel.inner_text()
    assert "· judge\t0.900" in text and "· rollout\t0.300" in text
    assert panel.locator(".explanation").inner_text() == "the sum is right but the order is not"
    assert panel.locator(".feedback").inner_text() == "check the sum again"
    v.assert_offline_and_clean()


def test_ten_thousand_nodes_paint_and_expand_quickly(tmp_path, visit):
    ResultFile(tmp_path / "trees.jsonl").append(synthetic_record(10_000, seed=0))
    started = time.perf_counter()
    v = visit(page_file(tmp_path))
    page = v.page
    wait_for_timing(page, "treePainted")
    opened = time.perf_counter() - started
    page.click("#expand-all")
    wait_for_timing(page, "expandAll")
    timings = page.evaluate("window.viewerTimings")
    print(f"\n10,000 nodes: first paint {timings['treePainted']:.0f} ms after navigation "
          f"(written and opened in {opened:.2f} s), expand all {timings['expandAll']:.0f} ms, "
          f"{page.locator('g.node').count()} rows in the DOM")
    assert timings["treePainted"] < 5000 and timings["expandAll"] < 5000  # generous: bench/
    assert page.locator("g.node").count() < 500  # only the window is drawn
    page.locator("#tree-scroll").evaluate("s => s.scrollTop = s.scrollHeight")
    page.wait_for_timeout(100)
    assert page.locator("g.node").count() > 0
    v.assert_offline_and_clean()


# ----------------------------------------------------------------------------- dashboards


def test_an_iterate_folder_is_a_dashboard_of_rounds_linking_to_their_trees(folders, visit):
    rows = json.loads((folders["iterate"] / "rounds.json").read_text())
    v = visit(page_file(folders["iterate"]))
    page = v.page
    for chart in ("accuracy", "bstar", "distinct", "rows", "tokens", "loss"):
        assert page.locator(f"#chart-{chart} svg").count() == 1, chart
    points = page.locator("#chart-accuracy .series-group[data-series=greedy_acc] circle")
    assert [float(p.get_attribute("data-value")) for p in points.all()] == [
        r["greedy_acc"] for r in rows]
    points.nth(1).hover()
    assert "38.0 %" in page.locator(".tooltip").inner_text()
    legend = page.locator("#chart-accuracy .legend-item[data-series=pass_at_k]")
    legend.click()  # switches the series off
    assert "hidden" in page.locator(
        "#chart-accuracy .series-group[data-series=pass_at_k]").get_attribute("class")
    assert page.locator("#rounds-table tr").count() == 1 + len(rows)
    v.assert_offline_and_clean()
    page.click("a.round-link")
    page.wait_for_selector("#task-list li")
    assert page.url.endswith("view-round_1.html")
    assert page.locator("#task-list li").count() == len(
        ResultFile(folders["iterate"] / "round_1" / "search" / "trees.jsonl").read())
    assert v.errors == []


def test_an_eval_critic_report_shows_reliability_and_auroc_per_critic(folders, visit):
    report = json.loads((folders["critics"] / "critics.json").read_text())["critics"]
    v = visit(page_file(folders["critics"]))
    page = v.page
    for name, score in report.items():
        bins = len(score["calibration"]["counts"])
        assert page.locator(f'#chart-reliability g[data-series="{name}"] circle').count() == bins
        assert f"{score['auroc']:.3f}" in page.locator("#chart-auroc").inner_text()
    assert page.locator("#critics-table tr").count() == 1 + len(report)
    v.assert_offline_and_clean()


# ----------------------------------------------------------------------------- --watch


def test_watch_follows_a_run_as_trees_are_appended(tmp_path, visit):
    run = tmp_path / "live"  # a run that has started: its settings, no tree yet
    run.mkdir()
    (run / "config.yaml").write_text("environment: {name: arith, args: {}}\n")
    server = serve(run)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        v = visit(server.url)
        page = v.page
        page.wait_for_selector("text=No trees in this run yet.")
        ResultFile(run / "trees.jsonl").append(synthetic_record(30, seed=1, task_id="first"))
        page.wait_for_selector('#task-list li[data-task="first"]', timeout=10_000)
        page.wait_for_selector('g.node[data-node="0"]')  # the first tree opens by itself
        ResultFile(run / "trees.jsonl").append(synthetic_record(40, seed=2, task_id="second"))
        page.wait_for_selector('#task-list li[data-task="second"]', timeout=10_000)
        assert page.locator("#task-list li").count() == 2
        assert "live" in page.locator("#live").inner_text()
        v.assert_offline_and_clean(allowed_prefix=server.url)
    finally:
        server.stop()


# ----------------------------------------------------------------------------- no browser


def test_node_flags_come_from_the_typed_records():
    nodes = (NodeRecord(None, "", 0, 5, 0.6, 1.0, 0.0, 0, 0.0, False),
             NodeRecord(0, "good", 1, 3, 1.0, 0.7, -1.0, 4, 0.0, False),
             NodeRecord(0, "bad", 1, 1, 0.0, 0.3, -3.0, 4, 0.0, True),  # dead end
             NodeRecord(1, "Answer: 4", 2, 2, 1.0, 1.0, -0.5, 3, 0.0, True, answer="4",
                        score=1.0),
             NodeRecord(1, "Answer: 5", 2, 1, 0.0, 0.0, 0.0, 0, 0.0, True, answer="5",
                        score=0.0))  # grafted: no tokens of its own
    view = tree_view(TreeRecord(Task("t", "2+2"), "data", nodes, "4", True))
    flags = view["nodes"]["flags"]
    assert view["pv"] == [0, 1, 3] and view["chosen"] == 3
    assert flags[3] == TERMINAL | ON_PV | CHOSEN
    assert flags[2] == TERMINAL | DEAD_END
    assert flags[4] & GRAFTED and not flags[4] & DEAD_END  # it has an answer: judged wrong
    assert view["nodes"]["lo"][0] < 0.6 < view["nodes"]["hi"][0]


def test_the_page_is_one_file_with_its_data_inlined_safely():
    html = render({"kind": "run", "title": "x", "source": "x", "tasks": [],
                   "note": "</script><!-- \u2028"})
    assert "<script src" not in html and "<link rel=\"stylesheet\"" not in html
    outside = html.replace("http://www.w3.org/2000/svg", "")  # a name, never fetched
    assert "http://" not in outside and "https://" not in outside
    assert embed_json({"a": "</script>"}) == '{"a":"\\u003c/script\\u003e"}'
    assert embed_json({"v": float("nan")}) == '{"v":null}'


def test_view_command_writes_the_page_and_reports_mistakes_in_one_line(folders, tmp_path):
    out = tmp_path / "page.html"
    result = runner.invoke(app, ["view", str(folders["arith"]), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert out.is_file() and "page:" in result.stdout
    data = page_data(folders["arith"])
    assert len(data["tasks"]) == len(ResultFile(folders["arith"] / "trees.jsonl").read())
    moved = tmp_path / "mined"  # --pairs: rows kept elsewhere than RUN/data
    shutil.copytree(folders["arith"] / "data", moved)
    given = page_data(folders["arith"], pairs=moved)
    assert [t["pairs"] for t in given["tasks"]] == [t["pairs"] for t in data["tasks"]]
    assert any(t["pairs"] for t in given["tasks"])
    for args, words in ((["view", str(tmp_path / "nope")], "does not exist"),
                        (["view", str(tmp_path)], "holds no trees.jsonl"),
                        (["view", str(folders["arith"]), "--task", "nope"], "no tree for task"),
                        (["view", str(folders["arith"]), "--pairs", str(tmp_path / "x")],
                         "no pairs rows")):
        result = runner.invoke(app, args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ") and words in lines[0]


def test_the_viewer_benchmark_prints_its_json_line():
    if chromium_executable() is None:
        pytest.skip("no Chromium executable found (apt-get install chromium): the benchmark "
                    "opens its pages in one")
    done = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"first_paint_ms_10k", "expand_all_ms_10k", "sizes"} <= figures.keys()


def test_an_iterate_run_in_its_first_round_shows_the_rounds_measured_so_far(tmp_path):
    (tmp_path / "round_0").mkdir()
    (tmp_path / "round_0" / "eval.json").write_text(json.dumps(
        {"round": 0, "model": "m", "greedy_acc": 0.4, "pass_at_k": 0.6, "k": 4}))
    data = page_data(tmp_path)
    assert data["kind"] == "iterate"
    assert [(r["round"], r["greedy_acc"], r["trees"]) for r in data["rounds"]] == [(0, 0.4, None)]


def test_a_run_with_an_eval_critic_report_has_a_critics_tab(folders, tmp_path, visit):
    run = tmp_path / "run"
    shutil.copytree(folders["arith"], run)
    shutil.copytree(folders["critics"], run / "critics")
    v = visit(page_file(run))
    page = v.page
    assert not page.locator("#critics-view").is_visible()
    page.click('button[data-tab="critics"]')
    assert page.locator("#critics-view #chart-reliability").is_visible()
    assert not page.locator("#trees-view").is_visible()
    v.assert_offline_and_clean()


def test_view_watch_serves_on_localhost_until_interrupted(folders):
    child = subprocess.Popen(
        [sys.executable, "-m", "mcts_agent", "view", str(folders["arith"]), "--watch"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "300"}, preexec_fn=lambda: signal.signal(
            signal.SIGINT, signal.SIG_DFL))
    try:
        line = child.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
        with urllib.request.urlopen(url + "data.json", timeout=10) as reply:
            data = json.loads(reply.read())
        assert len(data["tasks"]) == len(ResultFile(folders["arith"] / "trees.jsonl").read())
    finally:
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    assert "stopped" in out, err


def test_watch_follows_an_iterate_run_round_by_round(folders, tmp_path, visit):
    run = tmp_path / "iterate"
    shutil.copytree(folders["iterate"], run)
    rows = json.loads((run / "rounds.json").read_text())
    (run / "rounds.json").write_text(json.dumps(rows[:2]))  # round 2 still running
    server = serve(run)
    try:
        v = visit(server.url)
        page = v.page
        page.wait_for_selector("#rounds-table")
        assert page.locator("#rounds-table tr").count() == 1 + 2
        (run / "rounds.json").write_text(json.dumps(rows))  # round 2 ends
        deadline = time.monotonic() + 10
        while page.locator("#rounds-table tr").count() != 1 + len(rows):
            assert time.monotonic() < deadline, "the dashboard did not show the new round"
            page.wait_for_timeout(50)
        page.click("a.round-link")  # round 1's trees, served and followed too
        page.wait_for_selector("#task-list li")
        assert page.url == server.url + "round/1/"
        assert page.locator("#task-list li").count() == len(
            ResultFile(run / "round_1" / "search" / "trees.jsonl").read())
        v.assert_offline_and_clean(allowed_prefix=server.url)
    finally:
        server.stop()


def test_arrow_keys_walk_the_tree(folders, visit):
    record = max(ResultFile(folders["arith"] / "trees.jsonl").read(), key=lambda r: len(r.nodes))
    v = visit(page_file(folders["arith"], task=record.task.id))
    page = v.page
    page.click("#collapse-all")
    page.click('g.node[data-node="0"] .label')
    children = record.children()
    first = page.locator("g.node").nth(1).get_attribute("data-node")  # the first child
    page.keyboard.press("ArrowDown")
    assert page.locator("#node-panel h2").inner_text() == f"Node #{first}"
    page.keyboard.press("ArrowLeft")  # back to its parent, the root
    assert page.locator("#node-panel h2").inner_text() == "Root"
    page.keyboard.press("ArrowLeft")  # the root closes
    assert page.locator("g.node").count() == 1
    page.keyboard.press("ArrowRight")  # and opens again
    assert page.locator("g.node").count() == 1 + len(children[0])
    v.assert_offline_and_clean()


def test_find_a_step_in_a_big_tree(tmp_path, visit):
    record = synthetic_record(2_000, seed=3)
    ResultFile(tmp_path / "trees.jsonl").append(record)
    target = max(range(len(record.nodes)), key=lambda i: record.nodes[i].depth)
    wanted = record.nodes[target].action
    v = visit(page_file(tmp_path))
    page = v.page
    page.fill("#find-node", wanted)
    page.press("#find-node", "Enter")
    assert page.locator("#find-count").inner_text() == "1 of 1"
    assert page.locator("#node-panel h2").inner_text() == f"Node #{target}"
    assert "selected" in page.locator(f'g.node[data-node="{target}"]').get_attribute("class")
    v.assert_offline_and_clean()
