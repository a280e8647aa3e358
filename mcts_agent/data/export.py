"""Mined rows on disk: JSONL (for people and tools), Parquet (for ``load_dataset``) and a
dataset card describing every dataset in the folder."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..files import write_atomic
from ..trees import jsonable

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_STATS = ".stats.json"


def write_rows(
    rows: list[dict[str, Any]], out_dir: str | Path, name: str, *,
    stats: Mapping[str, Any] | None = None, description: str = "",
) -> dict[str, Path]:
    """Write ``rows`` as ``out_dir/{name}.jsonl`` and ``{name}.parquet`` (none when empty),
    ``stats`` (plus ``rows`` and ``description``) as ``{name}.stats.json``, and regenerate
    ``out_dir/README.md`` from every dataset in the folder.

    The stats file is written last, so its presence means the dataset is complete."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"dataset name {name!r}: use letters, digits, '_' or '-' (it becomes "
                         "a file name and a load_dataset config name)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"jsonl": out / f"{name}.jsonl"}
    write_atomic(paths["jsonl"], "".join(
        json.dumps(row, ensure_ascii=False, default=jsonable) + "\n" for row in rows))
    parquet = out / f"{name}.parquet"
    if rows:
        _write_parquet(rows, parquet, name)
        paths["parquet"] = parquet
    else:
        parquet.unlink(missing_ok=True)  # a stale file from an earlier run would contradict
    record = {"rows": len(rows), **dict(stats or {})}
    if description:
        record["description"] = description
    paths["stats"] = out / f"{name}{_STATS}"
    write_atomic(paths["stats"], json.dumps(record, indent=2, default=jsonable) + "\n")
    paths["card"] = write_card(out)
    return paths


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows from a ``.jsonl`` or ``.parquet`` file, or from a folder holding one dataset
    written by :func:`write_rows`. Malformed JSONL lines are skipped with a warning."""
    path = Path(path)
    if path.is_dir():
        path = _dataset_file(path)
    if not path.exists():
        raise FileNotFoundError(f"no rows at {path}; mine them first (`mcts-agent pairs` or "
                                "write_rows)")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix in (".jsonl", ".json"):
        return _read_jsonl(path)
    raise ValueError(f"{path}: read_rows reads .jsonl or .parquet files, or a folder written "
                     "by write_rows")


def write_card(out_dir: str | Path) -> Path:
    """(Re)write ``out_dir/README.md`` describing every dataset in the folder."""
    out = Path(out_dir)
    names = _dataset_names(out)
    configs = [{"config_name": name,
                "data_files": [{"split": "train", "path": f"{name}.parquet"}]}
               for name in names if (out / f"{name}.parquet").exists()]
    front = yaml.safe_dump({"configs": configs, "tags": ["mcts-agent", "tree-search"]},
                           sort_keys=False) if configs else "tags:\n- mcts-agent\n"
    lines = [
        "---", front.rstrip(), "---", "", "# Data mined from search trees by mcts-agent", "",
        "Each dataset is a JSONL file and, when it has rows, a Parquet file: "
        '`load_dataset("parquet", data_files="NAME.parquet")`, or '
        '`load_dataset("path/to/this/folder", "NAME")`.', "",
    ]
    for name in names:
        lines += _section(out, name)
    card = out / "README.md"
    write_atomic(card, "\n".join(lines).rstrip() + "\n")
    return card


# ----------------------------------------------------------------------------- card


def _section(out: Path, name: str) -> list[str]:
    stats_file = out / f"{name}{_STATS}"
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    description = stats.pop("description", "")
    summary = _summary(out / f"{name}.parquet")
    lines = [f"## {name}", ""]
    if description:
        lines += [str(description), ""]
    lines.append(f"- rows: {summary.get('rows', 0)}")
    if summary.get("columns"):
        lines.append("- columns: " + ", ".join(f"`{c}`" for c in summary["columns"]))
    for column in ("strategy", "depth"):
        if column in summary:
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(summary[column].items()))
            lines.append(f"- by {column}: {counts}")
    for column in ("margin", "confidence"):
        if column in summary:
            lines.append(f"- mean {column}: {summary[column]:.3f}")
    stats.pop("rows", None)
    if stats:
        lines += ["", "| count | value |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in sorted(stats.items())]
    return [*lines, ""]


def _summary(parquet: Path) -> dict[str, Any]:
    """Row count, columns, counts by strategy/depth and mean margin/confidence."""
    if not parquet.exists():
        return {"rows": 0}
    import pyarrow.parquet as pq

    schema_names = pq.read_schema(parquet).names
    wanted = [c for c in ("strategy", "depth", "margin", "confidence") if c in schema_names]
    table = pq.read_table(parquet, columns=wanted).to_pydict() if wanted else {}
    summary: dict[str, Any] = {"rows": pq.ParquetFile(parquet).metadata.num_rows,
                               "columns": schema_names}
    for column in ("strategy", "depth"):
        if column in table:
            summary[column] = Counter(table[column])
    for column in ("margin", "confidence"):
        values = [v for v in table.get(column, []) if v is not None]
        if values:
            summary[column] = sum(values) / len(values)
    return summary


# ----------------------------------------------------------------------------- files


def _dataset_names(out: Path) -> list[str]:
    names = {p.name.removesuffix(_STATS) for p in out.glob(f"*{_STATS}")}
    names |= {p.stem for p in out.glob("*.parquet")}
    return sorted(names)


def _dataset_file(folder: Path) -> Path:
    """The one dataset in ``folder``: its JSONL (always written), else its Parquet."""
    names = _dataset_names(folder) or sorted({p.stem for p in folder.glob("*.jsonl")})
    if not names:
        raise FileNotFoundError(f"{folder} holds no dataset; mine one first (`mcts-agent "
                                "pairs` or write_rows)")
    if len(names) > 1:
        raise ValueError(f"{folder} holds several datasets ({', '.join(names)}); pass one "
                         f"file, e.g. {folder / names[0]}.jsonl")
    jsonl = folder / f"{names[0]}.jsonl"
    return jsonl if jsonl.exists() else folder / f"{names[0]}.parquet"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows, bad = [], 0
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                row, reason = None, str(err)
            else:
                reason = f"a {type(row).__name__}, not an object"
            if not isinstance(row, dict):
                bad += 1
                log.warning("%s:%d: skipping a malformed row (%s)", path, number, reason)
                continue
            rows.append(row)
    if bad:
        log.warning("%s: skipped %d malformed line(s), read %d rows", path, bad, len(rows))
    return rows


def _write_parquet(rows: list[dict[str, Any]], path: Path, name: str) -> None:
    import pyarrow as pa
    from datasets import Dataset
    from datasets.utils import (
        disable_progress_bars,
        enable_progress_bars,
        is_progress_bar_enabled,
    )

    tmp = path.with_name(path.name + ".tmp")
    shown = is_progress_bar_enabled()
    disable_progress_bars()  # a one-batch bar per file is noise in the CLI
    try:
        Dataset.from_list(rows).to_parquet(str(tmp))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as err:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"rows of {name!r} cannot be written as Parquet ({err}); each column "
                         "needs one type across all rows") from err
    finally:
        if shown:
            enable_progress_bars()
    tmp.replace(path)


