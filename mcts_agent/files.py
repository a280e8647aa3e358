"""Small file rules every run folder follows: markers are written whole or not at all, and a
marker that cannot be read means the step it marks is redone, never a crash."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, so a reader
    (or a run killed mid-write) never sees half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: str | Path, data: Any) -> None:
    """``data`` as indented JSON, written atomically."""
    write_atomic(path, json.dumps(data, indent=2))


def read_marker(path: str | Path) -> dict[str, Any] | None:
    """The JSON object a finished step left at ``path``; None when there is none, or when it
    is empty or garbage (logged: the step is then redone)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("%s is unreadable (%s); redoing the step it marks", path, err)
        return None
    if not isinstance(data, dict):
        log.warning("%s does not hold a JSON object; redoing the step it marks", path)
        return None
    return data
