"""Screenshots of the viewer for the README, from small real runs with the shipped tiny models.

    python docs/screenshots.py                 # runs under runs/screenshots, PNGs in docs/
    python docs/screenshots.py --runs DIR      # reuse (or make) the runs in DIR

Makes (or reuses) four folders — an arith search with its mined pairs, a code-gen search, a
TextWorld agent search, and a two-round ``iterate`` run — writes their pages with
``mcts-agent view`` and photographs them in headless Chromium (Playwright pointed at the
system's Chromium): ``viewer-math.png``, ``viewer-code.png``, ``viewer-agent.png``,
``viewer-iterate.png``. A few minutes on 2 CPU cores, no downloads.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from mcts_agent.viewer import write_view

DOCS = Path(__file__).parent
ROOT = DOCS.parent
CLI = [sys.executable, "-m", "mcts_agent"]


def sh(*args: str) -> None:
    print("$ mcts-agent " + " ".join(args), flush=True)
    subprocess.run([*CLI, *args], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def make_runs(base: Path) -> dict[str, Path]:
    """The four folders (each made only if it is not there yet)."""
    runs = {"math": base / "arith", "code": base / "code", "agent": base / "agent",
            "iterate": base / "iterate"}
    if not (runs["math"] / "data" / "pairs.jsonl").exists():
        sh("search", "--tasks", "8", "--simulations", "24", "--seed", "1", "--out",
           str(runs["math"]))
        sh("pairs", str(runs["math"]))
    if not (runs["code"] / "summary.json").exists():
        sh("search", "--env", "code-gen", "--model", "mcts_agent/models/tiny-code", "--tasks",
           "4", "--simulations", "16", "--out", str(runs["code"]))
    if not (runs["agent"] / "data" / "spliced.jsonl").exists():
        sh("search", "--env", "textworld-tiny", "--model", "mcts_agent/models/tiny-agent",
           "--tasks", "3", "--simulations", "16", "--out", str(runs["agent"]))
        sh("splice", str(runs["agent"]))
    if not (runs["iterate"] / "rounds.json").exists():
        config = base / "iterate.yaml"
        config.write_text("rounds: 3\ntasks_per_round: 24\neval_tasks: 40\neval_k: 4\n"
                          "rollouts: 2\nsearch: {simulations: 8, stop_when_solved: false}\n"
                          "train: {epochs: 1, threads: 2}\n")
        sh("iterate", "--config", str(config), "--out", str(runs["iterate"]))
    return runs


def most_paired_task(run: Path) -> str | None:
    """The task with the most mined pairs (None when nothing was mined)."""
    from collections import Counter

    from mcts_agent.data import read_rows

    pairs = run / "data" / "pairs.jsonl"
    counts = Counter(row["task_id"] for row in read_rows(pairs)) if pairs.exists() else None
    return counts.most_common(1)[0][0] if counts else None


def shoot_run(browser, page_file: Path, target: Path, *, task: str | None = None,
              pick: str = "chosen") -> None:
    """The run page with a task open (``task``, else the one with most nodes), the tree
    expanded and a node's panel (the chosen answer, or a pair's chosen side, or a node)."""
    page = browser.new_page(viewport={"width": 1500, "height": 860})
    page.goto(page_file.as_uri())
    page.select_option("#task-sort", "nodes")
    item = f'#task-list li[data-task="{task}"]' if task else "#task-list li >> nth=0"
    page.click(item)
    page.click("#expand-all")
    paired = page.locator("g.node:has(.pair-chosen) .label")
    if pick == "pair" and paired.count():
        paired.first.click()
    elif pick in ("chosen", "pair") and page.locator("#show-chosen").count():
        page.click("#show-chosen")
    else:
        nodes = page.locator("g.node")
        nodes.nth(min(2, nodes.count() - 1)).locator(".label").click()
    page.locator("#tree-scroll").evaluate("s => s.scrollTop = 0")
    page.wait_for_timeout(200)
    page.screenshot(path=str(target))
    page.close()
    print(f"wrote {target}")


def shoot_dashboard(browser, page_file: Path, target: Path) -> None:
    page = browser.new_page(viewport={"width": 1440, "height": 1020})
    page.goto(page_file.as_uri())
    page.locator("#chart-accuracy circle").last.hover()
    page.wait_for_timeout(100)
    page.screenshot(path=str(target))
    page.close()
    print(f"wrote {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "screenshots")
    parser.add_argument("--chromium", default=shutil.which("chromium"))
    args = parser.parse_args()
    if not args.chromium:
        raise SystemExit("no Chromium found: apt-get install chromium, or pass --chromium")
    runs = make_runs(args.runs)
    pages = {name: write_view(folder, folder / "view.html")[0] for name, folder in runs.items()}
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium,
                                             args=["--no-sandbox"])
        shoot_run(browser, pages["math"], DOCS / "viewer-math.png",
                  task=most_paired_task(runs["math"]), pick="pair")
        shoot_run(browser, pages["code"], DOCS / "viewer-code.png")
        shoot_run(browser, pages["agent"], DOCS / "viewer-agent.png", pick="node")
        shoot_dashboard(browser, pages["iterate"], DOCS / "viewer-iterate.png")
        browser.close()


if __name__ == "__main__":
    main()
