"""``mcts-agent view --watch``: a page that follows a run in progress.

A small HTTP server on 127.0.0.1 (never another interface) serves the page at ``/`` and
its data at ``/data.json``; the data is rebuilt when the file it comes from has grown or
changed (``trees.jsonl`` of a search, ``rounds.json`` of an ``iterate`` run), and the page
polls once a second. An ``iterate`` run's rounds are served, and followed, at
``/round/K/``.
"""

from __future__ import annotations

import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from . import page_data
from .page import embed_json, render
from .sources import file_version, folder_kind, trees_path

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
_ROUND = re.compile(r"^/round/(\d+)/(data\.json)?$")


class WatchedSource:
    """One path's page data, rebuilt only when the file it is read from changed."""

    def __init__(self, path: Path, options: dict[str, Any]) -> None:
        self.path, self.options = path, options
        self._lock = threading.Lock()
        self._version: str | None = None
        self._data: dict[str, Any] = {}

    def watched_file(self) -> Path:
        """The file whose growth means new data."""
        kind = folder_kind(self.path) if self.path.exists() else "run"
        if kind == "iterate":
            return self.path / "rounds.json"
        if kind == "critics":
            return self.path / "critics.json" if self.path.is_dir() else self.path
        return trees_path(self.path)

    def data(self) -> dict[str, Any]:
        with self._lock:
            version = file_version(self.watched_file())
            if version != self._version:
                self._data = page_data(self.path, **self.options)
                self._data["version"] = version
                if self._data["kind"] == "iterate":
                    for row in self._data["rounds"]:
                        row["trees_href"] = f"round/{row['round']}/" if row["trees"] else None
                self._version = version
            return self._data


class WatchServer:
    """Serves ``path``'s page on ``127.0.0.1:port`` (0: a free port) from a thread."""

    def __init__(self, path: str | Path, *, port: int = 0, **options: Any) -> None:
        self.path = Path(path)
        self.main = WatchedSource(self.path, options)
        self._rounds: dict[int, WatchedSource] = {}
        self.server = ThreadingHTTPServer((HOST, port), self._handler())
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/"

    def data(self) -> dict[str, Any]:
        """The main page's data (rebuilt when its file changed)."""
        return self.main.data()

    def source(self, route: str) -> tuple[WatchedSource, bool] | None:
        """The source a URL path shows and whether it asks for the data (else the page);
        None for an unknown path."""
        if route in ("/", "/index.html", "/data.json"):
            return self.main, route == "/data.json"
        found = _ROUND.match(route)
        if found is None or self.main.data()["kind"] != "iterate":
            return None
        r = int(found.group(1))
        search = self.path / f"round_{r}" / "search"
        if not search.is_dir():
            return None
        if r not in self._rounds:
            self._rounds[r] = WatchedSource(search, {})
        return self._rounds[r], found.group(2) is not None

    def start(self) -> str:
        """Serve in a daemon thread; the page's URL."""
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name="mcts-agent-view")
        self.thread.start()
        return self.url

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        watcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = watcher.source(self.path.split("?", 1)[0])
                if found is None:
                    self.send_error(404)
                    return
                source, wants_data = found
                if wants_data:
                    self._send(embed_json({**source.data(), "watch": True}), "application/json")
                else:
                    self._send(render(source.data(), watch=True), "text/html")

            def _send(self, text: str, kind: str) -> None:
                body = text.encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", f"{kind}; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("view server: " + format, *args)

        return Handler


def serve(path: str | Path, *, port: int = 0, **options: Any) -> WatchServer:
    """A started :class:`WatchServer` (its data is read once first, so a bad path fails
    here rather than in the browser)."""
    server = WatchServer(path, port=port, **options)
    server.data()
    server.start()
    return server


__all__ = ["HOST", "WatchServer", "WatchedSource", "serve"]
