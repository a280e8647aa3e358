"""See the trees: self-contained HTML views of search runs, ``iterate`` rounds and critic
reports (``mcts-agent view``).

:func:`page_data` reads a path (through the typed loaders) into the page's data,
:func:`write_view` writes the page (one HTML file that works offline from disk), and
:class:`~mcts_agent.viewer.watch.WatchServer` serves a page that follows a run in progress.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .model import principal_variation, tree_view
from .page import render
from .sources import critics_data, folder_kind, iterate_data, run_data, trees_path

__all__ = ["default_out", "page_data", "principal_variation", "render", "tree_view",
           "write_view"]


def page_data(path: str | Path, *, task: str | None = None, pairs: str | Path | None = None,
              observations: bool = True) -> dict[str, Any]:
    """The data of ``path``'s page: a search run (folder or trees.jsonl), an ``iterate``
    folder or an ``eval-critic`` report. ``task`` opens that task first; ``pairs``: mined rows
    to link on the trees (default ``RUN/data``); ``observations``: replay agent episodes to
    show what the environment answered."""
    path = Path(path)
    kind = folder_kind(path)
    if kind == "iterate":
        return iterate_data(path)
    if kind == "critics":
        return critics_data(path)
    data = run_data(path, Path(pairs) if pairs is not None else None,
                    observations=observations)
    if task is not None:
        if not any(t["id"] == task for t in data["tasks"]):
            from ..errors import UserError

            raise UserError(f"no tree for task {task!r} in {trees_path(path)}; `mcts-agent "
                            "view RUN` lists every task")
        data["initial_task"] = task
    return data


def default_out(path: str | Path) -> Path:
    """Where the page goes without ``--out``: ``view.html`` in the folder viewed."""
    path = Path(path)
    return (path if path.is_dir() else path.parent) / "view.html"


def write_view(path: str | Path, out: str | Path | None = None, **options: Any) -> list[Path]:
    """Write the page of ``path`` (see :func:`page_data`) to ``out``; an ``iterate`` folder
    also gets one tree page per round beside it (``NAME-round_K.html``), linked from its
    table. Returns the files written, the main page first."""
    out = Path(out) if out is not None else default_out(path)
    data = page_data(path, **options)
    written = [out]
    if data["kind"] == "iterate":
        for row in data["rounds"]:
            if row.get("trees"):
                page = out.with_name(f"{out.stem}-round_{row['round']}.html")
                _write(page, render(run_data(Path(row["trees"]))))
                row["trees_href"] = page.name
                written.append(page)
    _write(out, render(data))
    return written


def _write(path: Path, text: str) -> None:
    from ..files import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)
