"""``--leaderboard.port N``: the leaderboard page and its ``summary.json`` over HTTP, read-only.

Standard library only (:mod:`http.server`). Exactly three paths answer (``/``, ``/leaderboard.html``,
``/summary.json``); anything else is 404 and any method but GET/HEAD is refused, so nothing else of
the state folder can be read through it. It binds to 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

logger = logging.getLogger(__name__)


def _handler(page: Path, summary: Path) -> type[BaseHTTPRequestHandler]:
    routes = {
        "/": (page, "text/html; charset=utf-8"),
        "/leaderboard.html": (page, "text/html; charset=utf-8"),
        "/summary.json": (summary, "application/json"),
    }

    class LeaderboardHandler(BaseHTTPRequestHandler):
        server_version = "finetune-leaderboard"

        def _send(self, *, body: bool) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                self.send_error(HTTPStatus.NOT_FOUND, "only /, /leaderboard.html and /summary.json")
                return
            path, kind = route
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                self.send_error(HTTPStatus.SERVICE_UNAVAILABLE, "no finished step yet")
                return
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_GET(self) -> None:
            self._send(body=True)

        def do_HEAD(self) -> None:
            self._send(body=False)

        def log_message(self, format: str, *args: object) -> None:
            logger.debug("leaderboard %s: " + format, self.address_string(), *args)

    return LeaderboardHandler


def serve_leaderboard(page: Path, *, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Start serving ``page`` and the ``summary.json`` beside it from a daemon thread; returns the
    server (``server.server_address`` has the port when ``port`` is 0; ``shutdown()`` stops it)."""
    page = Path(page)
    server = ThreadingHTTPServer((host, port), _handler(page, page.with_name("summary.json")))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="leaderboard-http", daemon=True)
    thread.start()
    bound_host, bound_port = server.server_address[:2]
    logger.info("leaderboard served at http://%s:%d/", bound_host, bound_port)
    return server
