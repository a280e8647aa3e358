"""Benchmarks write their tables into ``docs/results.md``, each in its own marked section."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, key: str, body: str) -> None:
    """Put ``body`` between ``<!-- key:begin -->`` and ``<!-- key:end -->`` in ``path``,
    replacing what was there (or appending the section); the rest of the file stays."""
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    section = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Results\n\n"
    if begin in text and end in text:
        text = text[:text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
