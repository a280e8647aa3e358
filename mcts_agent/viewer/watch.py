"""``mcts-agent view --watch``: a page that follows a run in progress.

A small HTTP server on 127.0.0.1 (never another interface) serves the page at ``/`` and
its data at ``/data.json``; the data is rebuilt when ``trees.jsonl`` has grown or changed
(the page polls once a second and shows the new trees).
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from . import page_data
from .page import embed_json, render
from .sources import file_version, folder_kind, trees_path

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


class WatchServer:
    """Serves ``path``'s page on ``127.0.0.1:port`` (0: a free port) from a thread."""

    def __init__(self, path: str | Path, *, port: int = 0, **options: Any) -> None:
        self.path, self.options = Path(path), options
        self._lock = threading.Lock()
        self._version: str | None = None
        self._data: dict[str, Any] = {}
        self.server = ThreadingHTTPServer((HOST, port), self._handler())
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/"

    def watched_file(self) -> Path:
        """The file whose growth means new data."""
        kind = folder_kind(self.path)
        if kind == "iterate":
            return self.path / "rounds.json"
        if kind == "critics":
            return self.path / "critics.json" if self.path.is_dir() else self.path
        return trees_path(self.path)

    def data(self) -> dict[str, Any]:
        """The page's data, rebuilt only when the watched file changed."""
        with self._lock:
            version = file_version(self.watched_file())
            if version != self._version:
                self._data = page_data(self.path, **self.options)
                self._data["version"] = version
                self._version = version
            return self._data

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
                route = self.path.split("?", 1)[0]
                if route in ("/", "/index.html"):
                    self._send(render(watcher.data(), watch=True), "text/html")
                elif route == "/data.json":
                    self._send(embed_json({**watcher.data(), "watch": True}),
                               "application/json")
                else:
                    self.send_error(404)

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


__all__ = ["HOST", "WatchServer", "serve"]
