"""One self-contained HTML file: the page's data as a JSON blob inside a template with the
stylesheet and scripts of this package inlined. No request leaves the page: no CDN, no
font, no image that is not drawn by the page itself."""

from __future__ import annotations

import json
import math
from importlib import resources
from typing import Any

ASSETS = ("viewer.css", "common.js", "tree.js", "dashboard.js", "app.js")
"""Inlined in this order (``app.js`` starts the page)."""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<style>{css}</style>
</head>
<body>
<div id="app"></div>
<script type="application/json" id="viewer-data">{data}</script>
<script>{js}</script>
</body>
</html>
"""

OFFLINE_CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
               "img-src data:; connect-src 'none'")
"""The file may reach nothing: even a stray URL in a tree's text is never fetched."""

WATCH_CSP = OFFLINE_CSP.replace("connect-src 'none'", "connect-src 'self'")
"""Under ``--watch`` the page may poll its own server for new trees, and nothing else."""


def asset(name: str) -> str:
    """The text of one of the package's page assets."""
    return resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def embed_json(data: Any) -> str:
    """``data`` as JSON that is safe inside a ``<script>`` element (no ``</script>``, no
    ``<!--``, and the two line separators JavaScript once refused)."""
    text = json.dumps(finite(data), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def finite(data: Any) -> Any:
    """``data`` with NaN and infinities as None (JSON has neither; reports may hold them)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    return data


def render(data: dict[str, Any], *, watch: bool = False) -> str:
    """The page for ``data`` (from :mod:`mcts_agent.viewer.sources`)."""
    from html import escape

    js = "\n".join(asset(name) for name in ASSETS if name.endswith(".js"))
    return _TEMPLATE.format(
        csp=WATCH_CSP if watch else OFFLINE_CSP,
        title=escape(f"mcts-agent · {data.get('title', '')}"),
        css=asset("viewer.css"), data=embed_json({**data, "watch": watch}), js=js)
