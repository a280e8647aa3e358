"""How fast the tree viewer is on big trees, in headless Chromium.

For each size, a synthetic tree (``mcts_agent.viewer.synthetic``) is written to a run folder,
its page is written by ``mcts-agent view``'s code, and the page is opened from disk:

- ``first_paint_ms``: from navigation start to the first frame painted after the tree was
  drawn (the page parses its inlined data, lays out the expanded part and draws the rows in
  view), as the page itself measures it (``window.viewerTimings.treePainted``);
- ``expand_all_ms``: from the click on "Expand all" to the frame painted after it;
- ``scroll_ms``: a jump to the bottom of the fully expanded tree, to the next painted frame;
- ``write_s`` and ``page_kb``: writing the HTML file, and its size.

Medians over ``--repeats`` page loads. The last line is one JSON object.

    python bench/viewer.py                    # 1,000 / 10,000 / 30,000 nodes
    python bench/viewer.py --quick            # 10,000 nodes, one load
    python bench/viewer.py --chromium /usr/bin/chromium
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from mcts_agent.trees import ResultFile
from mcts_agent.viewer import write_view
from mcts_agent.viewer.synthetic import synthetic_record

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def wait_for_timing(page, name: str, timeout: float = 30.0) -> float:
    """Poll the page (from outside: its content security policy forbids the eval that
    Playwright's ``wait_for_function`` polls with) until it has measured ``name``."""
    deadline = time.monotonic() + timeout
    while (value := page.evaluate(f"() => window.viewerTimings.{name}")) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page never measured {name}")
        page.wait_for_timeout(10)
    return value


def measure(browser, page_file: Path) -> dict[str, float]:
    """One load of the page: first paint, expand all and a scroll, in milliseconds."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_file.as_uri())
    wait_for_timing(page, "treePainted")
    page.click("#expand-all")
    wait_for_timing(page, "expandAll")
    scroll = page.evaluate("""() => new Promise(done => {
        const box = document.getElementById('tree-scroll'), start = performance.now();
        box.scrollTop = box.scrollHeight;
        requestAnimationFrame(() => requestAnimationFrame(() =>
            requestAnimationFrame(() => done(performance.now() - start))));
    })""")
    timings = page.evaluate("window.viewerTimings")
    rows = page.locator("g.node").count()
    page.close()
    if errors:
        raise SystemExit(f"the page failed: {errors[0]}")
    return {"first_paint_ms": timings["treePainted"], "expand_all_ms": timings["expandAll"],
            "scroll_ms": scroll, "rows_in_dom": rows}


def bench_size(browser, nodes: int, repeats: int, work: Path) -> dict[str, float]:
    run = work / f"tree-{nodes}"
    run.mkdir()
    ResultFile(run / "trees.jsonl").append(synthetic_record(nodes, seed=0))
    started = time.perf_counter()
    [page_file] = write_view(run, run / "view.html")
    write_s = time.perf_counter() - started
    loads = [measure(browser, page_file) for _ in range(repeats)]
    figures = {key: round(statistics.median(load[key] for load in loads), 1)
               for key in loads[0]}
    figures.update(nodes=nodes, write_s=round(write_s, 3),
                   page_kb=round(page_file.stat().st_size / 1024))
    print(f"{nodes:>7,} nodes: first paint {figures['first_paint_ms']:7.1f} ms · expand all "
          f"{figures['expand_all_ms']:6.1f} ms · scroll {figures['scroll_ms']:6.1f} ms · "
          f"{int(figures['rows_in_dom'])} rows in the DOM · page {figures['page_kb']} kB "
          f"written in {figures['write_s']:.2f} s", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 30_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10,000 nodes, one load")
    parser.add_argument("--chromium", default=None, help="Chromium executable")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeats = [10_000], 1
    executable = args.chromium or next(
        (found for name in NAMES if (found := shutil.which(name))), None)
    if executable is None:
        raise SystemExit("no Chromium found: apt-get install chromium, or pass --chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as tmp:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        results = [bench_size(browser, n, args.repeats, Path(tmp)) for n in args.sizes]
        version = browser.version
        browser.close()
    ten = next((r for r in results if r["nodes"] == 10_000), results[-1])
    print(json.dumps({"first_paint_ms_10k": ten["first_paint_ms"],
                      "expand_all_ms_10k": ten["expand_all_ms"], "chromium": version,
                      "repeats": args.repeats, "sizes": results}))


if __name__ == "__main__":
    main()
