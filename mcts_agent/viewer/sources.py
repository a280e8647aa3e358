"""What a path holds, read into the data of one page.

Three kinds of folder: a search run (``trees.jsonl``, with ``summary.json``, the mined
``data/`` and an ``eval-critic`` report under ``critics/`` when they exist), an ``iterate``
folder (``rounds.json`` and ``round_K/search/``), and an ``eval-critic`` report folder
(``critics.json``). Trees are read only through :class:`~mcts_agent.trees.ResultFile`.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from ..errors import UserError
from ..files import read_marker
from ..trees import ReplayedTree, ResultFile, TreeRecord
from .model import tree_view

log = logging.getLogger(__name__)

Kind = Literal["run", "iterate", "critics"]
MAX_REPLAYED_NODES = 3000
"""Most nodes per run whose observations are replayed (agent runs; a game step each)."""


def folder_kind(path: Path) -> Kind:
    """What ``path`` holds; a one-line usage error when it is none of the three."""
    if path.is_file():
        if path.name == "critics.json":
            return "critics"
        return "run"
    if not path.is_dir():
        raise UserError(f"{path} does not exist; pass a run folder of `mcts-agent search`, its "
                        "trees.jsonl, an `iterate` folder or an `eval-critic` report folder")
    if (path / "trees.jsonl").is_file() or (path / "config.yaml").is_file():
        return "run"  # a search run (config.yaml first: a run just started has no tree yet)
    if (path / "rounds.json").is_file() or any(path.glob("round_*/eval.json")):
        return "iterate"
    if (path / "critics.json").is_file():
        return "critics"
    raise UserError(f"{path} holds no trees.jsonl, rounds.json or critics.json; pass a run "
                    "folder of `mcts-agent search`, an `iterate` folder or an `eval-critic` "
                    "report folder")


def trees_path(path: Path) -> Path:
    """The trees.jsonl of a run folder, or the file itself."""
    return path / "trees.jsonl" if path.is_dir() else path


# ----------------------------------------------------------------------------- search runs


def run_data(path: Path, pairs: Path | None = None, *, observations: bool = True,
             records: list[TreeRecord] | None = None) -> dict[str, Any]:
    """A search run as the page's data: every task's tree, the mined pairs and splices that
    belong to it, the run's summary (baselines) and its critic report."""
    trees = trees_path(path)
    folder = trees.parent
    file = ResultFile(trees)
    if records is None:
        records = file.read()
    env = run_environment(folder)
    kind = environment_kind(env)
    pair_rows = _rows_by_task(_pairs_file(folder, pairs, "pairs"))
    splice_rows = _rows_by_task(_pairs_file(folder, None, "spliced"))
    from ..search.baselines import read_baselines

    budget = [MAX_REPLAYED_NODES]
    baselines, _ = read_baselines(folder / "baselines.jsonl")
    tasks = [tree_view(r, pair_rows.get(r.task.id, ()), splice_rows.get(r.task.id, ()),
                       _observations(r, env, budget) if observations and kind == "agent"
                       else None, baselines.get(r.task.id))
             for r in records]
    critics = folder / "critics" / "critics.json"
    return {
        "kind": "run", "title": str(folder), "source": str(trees), "env_kind": kind,
        "environment": _environment_name(folder), "tasks": tasks,
        "summary": read_marker(folder / "summary.json"),
        "skipped": {str(k): v for k, v in file.skipped.items()},
        "critics": critics_data(critics)["critics"] if critics.is_file() else None,
        "version": file_version(trees),
    }


def file_version(path: Path) -> str:
    """Changes whenever the file grows or is rewritten (what ``--watch`` polls)."""
    try:
        stat = path.stat()
    except OSError:
        return "missing"
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def run_environment(folder: Path) -> Any | None:
    """The environment a run was grown in, rebuilt from its config.yaml; None when that is
    not possible here (the viewer then shows what the records alone say)."""
    from ..registry import environments
    from ..search.run import run_environment_spec

    try:
        spec = run_environment_spec(folder)
        if spec is None or spec.name not in environments.names():
            return None
        return environments.create(spec.name, **(spec.args or {}))
    except Exception as err:  # a missing optional package, a plug-in that fails: view anyway
        log.warning("cannot rebuild the environment of %s (%s); observations and code "
                    "highlighting are off", folder, err)
        return None


def environment_kind(env: Any | None) -> str:
    """``agent`` (interactive episodes), ``code`` (programs) or ``text`` (reasoning steps)."""
    if env is None:
        return "text"
    if getattr(env, "interactive", False) and callable(getattr(env, "messages", None)):
        return "agent"
    return "code" if getattr(env, "keep_indent", False) else "text"


def _environment_name(folder: Path) -> str | None:
    from ..search.run import run_environment_spec

    try:
        spec = run_environment_spec(folder)
    except UserError:
        return None
    return None if spec is None else spec.name


def _observations(record: TreeRecord, env: Any, budget: list[int]) -> dict[int, str]:
    """What the environment answered after each node's action (the last user turn of the
    replayed episode), while the run's replay budget lasts."""
    out: dict[int, str] = {}
    try:
        tree = ReplayedTree(record, env)
        for i in range(len(record.nodes)):
            if budget[0] <= 0:
                break
            budget[0] -= 1
            messages = env.messages(tree.state(i))
            if messages and messages[-1].get("role") == "user":
                out[i] = str(messages[-1].get("content", ""))
    except Exception as err:  # a game that fails to replay (ReplayError) or to answer
        log.warning("task %s: observations not replayed (%s)", record.task.id, err)
    return out


def _pairs_file(folder: Path, given: Path | None, name: str) -> Path | None:
    """The mined rows to show: ``--pairs`` (a file or a folder), else ``RUN/data/NAME.jsonl``."""
    if given is not None:
        candidate = given / f"{name}.jsonl" if given.is_dir() else given
        if not candidate.exists():
            raise UserError(f"no {name} rows at {candidate}; pass the folder `mcts-agent pairs` "
                            "wrote (RUN/data by default) or its pairs.jsonl")
        return candidate
    default = folder / "data" / f"{name}.jsonl"
    return default if default.is_file() else None


def _rows_by_task(path: Path | None) -> dict[str, list[dict[str, Any]]]:
    if path is None:
        return {}
    from ..data import read_rows

    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in read_rows(path):
        if isinstance(row, Mapping) and row.get("task_id") is not None:
            out[str(row["task_id"])].append(dict(row))
    return out


# ----------------------------------------------------------------------------- iterate


ROUND_FIELDS = ("round", "greedy_acc", "pass_at_1", "pass_at_k", "k", "distinct_correct",
                "diversity", "pick_acc", "exploitation", "rows", "search_tokens", "solved",
                "train_loss", "train_seconds", "search_seconds", "tokens")


def iterate_data(folder: Path) -> dict[str, Any]:
    """An ``iterate`` folder: one row per round (``rounds.json``, or the rounds' own
    ``eval.json`` while the first round is still running) and which rounds have trees."""
    rows = _round_rows(folder)
    for row in rows:
        trees = folder / f"round_{row['round']}" / "search" / "trees.jsonl"
        row["trees"] = str(trees) if trees.is_file() else None
    return {"kind": "iterate", "title": str(folder), "source": str(folder), "rounds": rows,
            "version": file_version(folder / "rounds.json")}


def _round_rows(folder: Path) -> list[dict[str, Any]]:
    table = folder / "rounds.json"
    if table.is_file():
        try:
            loaded = json.loads(table.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UserError(f"cannot read {table} ({err}); rerun `mcts-agent iterate` with the "
                            "same --out to rewrite it") from err
        if isinstance(loaded, list):
            return [{k: row.get(k) for k in ROUND_FIELDS} for row in loaded
                    if isinstance(row, dict) and isinstance(row.get("round"), int)]
    rows = []
    for marker in sorted(folder.glob("round_*/eval.json")):
        row = read_marker(marker)
        if row is not None and isinstance(row.get("round"), int):
            rows.append({k: row.get(k) for k in ROUND_FIELDS})
    return sorted(rows, key=lambda r: r["round"])


# ----------------------------------------------------------------------------- eval-critic


def critics_data(path: Path) -> dict[str, Any]:
    """An ``eval-critic`` report (``critics.json``): each critic's scores and reliability
    bins."""
    report = path / "critics.json" if path.is_dir() else path
    try:
        loaded = json.loads(report.read_text(encoding="utf-8"))
        critics = loaded["critics"]
        if not isinstance(critics, dict):
            raise TypeError("'critics' is not an object")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise UserError(f"cannot read the critic report {report} ({err}); rerun "
                        "`mcts-agent eval-critic`") from err
    return {"kind": "critics", "title": str(report.parent), "source": str(report),
            "critics": [{"name": name, **score} for name, score in critics.items()
                        if isinstance(score, dict)],
            "version": file_version(report)}
