"""A real HTTP site on 127.0.0.1 for tests: pages can be added, edited and broken at will.

Each path maps to a `Route`; the server honours ETag / Last-Modified with 304s
like a well-behaved web server, records every request (so tests can assert on
conditional headers), and lets a route's `fault` misbehave (reset, stall,
oversized body, …) for the failure tests.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"
TRUTH: dict[str, Any] = json.loads((FIXTURES / "truth.json").read_text(encoding="utf-8"))
ORIGIN = "https://kexue.fm"


@dataclass
class Route:
    body: bytes
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    validators: bool = True
    last_modified: str = field(default_factory=lambda: formatdate(usegmt=True))
    gzip: bool = False
    fault: Callable[[BaseHTTPRequestHandler], None] | None = None
    delay: float = 0.0  # seconds before answering: a run slow enough to interrupt


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    status: int


class Site:
    """A threaded HTTP server whose routes tests change while it runs."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return

            def do_GET(self) -> None:
                site._handle(self, head=False)

            def do_HEAD(self) -> None:
                site._handle(self, head=True)

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        # A short poll interval: shutdown() waits up to one interval, once per test.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def start(self) -> Site:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str) -> str:
        return self.base + path

    def put(self, path: str, body: str | bytes, **kwargs: Any) -> Route:
        data = body.encode("utf-8") if isinstance(body, str) else body
        route = Route(data, **kwargs)
        with self.lock:
            self.routes[path] = route
        return route

    def redirect(self, path: str, location: str, status: int = 302) -> Route:
        """A bodiless redirect from `path` to `location` (relative or absolute)."""
        return self.put(path, b"", status=status, headers={"Location": location})

    def requests_to(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def fixture(self, name: str) -> str:
        """A fixture page with its kexue.fm links pointing at this site instead."""
        text = (FIXTURES / name).read_text(encoding="utf-8")
        return text.replace(ORIGIN, self.base)

    def serve_fixture_site(self) -> None:
        """Every fixture page at the path truth.json gives it, plus the article pages."""
        for name, page in TRUTH["pages"].items():
            self.put(_path(page["page_url"]), self.fixture(name))
        for name, article in TRUTH["articles"].items():
            self.put(_path(article["link"]), self.fixture(name))

    def local(self, url: str) -> str:
        return url.replace(ORIGIN, self.base)

    def _handle(self, handler: BaseHTTPRequestHandler, *, head: bool) -> None:
        path = handler.path
        with self.lock:
            route = self.routes.get(path)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        if route is not None and route.delay:
            time.sleep(route.delay)
        if route is None:
            self._record(path, headers, 404)
            _send(handler, 404, b"not found", {"Content-Type": "text/plain"}, head)
            return
        if route.fault is not None:
            self._record(path, headers, -1)
            route.fault(handler)
            return
        body = route.body
        out = {"Content-Type": route.content_type, **route.headers}
        if route.validators and route.status == 200:
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            out["ETag"] = etag
            out["Last-Modified"] = route.last_modified
            if headers.get("if-none-match") == etag or (
                "if-none-match" not in headers
                and headers.get("if-modified-since") == route.last_modified
            ):
                self._record(path, headers, 304)
                _send(handler, 304, b"", {"ETag": etag}, head=True)
                return
        if route.gzip and "gzip" in headers.get("accept-encoding", ""):
            body = gzip.compress(body)
            out["Content-Encoding"] = "gzip"
        self._record(path, headers, route.status)
        _send(handler, route.status, body, out, head)

    def _record(self, path: str, headers: dict[str, str], status: int) -> None:
        with self.lock:
            self.requests.append(Request(path, headers, status))


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up mid-request (timeouts under test) are expected, not errors."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        return


def _send(
    handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str], head: bool
) -> None:
    handler.send_response(status)
    for key, value in headers.items():
        handler.send_header(key, value)
    if status != 304:
        handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if not head:
        handler.wfile.write(body)


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3] if url.count("/") >= 3 else "/"


def reset_connection(handler: BaseHTTPRequestHandler) -> None:
    """Close the socket with RST instead of answering."""
    handler.connection.setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
    )
    handler.connection.close()
    handler.close_connection = True


def stall(seconds: float) -> Callable[[BaseHTTPRequestHandler], None]:
    """Send headers and half a body, then hang: a timeout must end the poll, not us."""

    def fault(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        handler.wfile.write(b"<html><body>" + b"x" * 1000)
        handler.wfile.flush()
        time.sleep(seconds)
        handler.close_connection = True

    return fault


def cut_off(sent: bytes, promised: int) -> Callable[[BaseHTTPRequestHandler], None]:
    """Promise `promised` bytes, send `sent`, hang up: a body cut short by the server."""

    def fault(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html; charset=utf-8")
        handler.send_header("Content-Length", str(promised))
        handler.end_headers()
        handler.wfile.write(sent)
        handler.wfile.flush()
        handler.close_connection = True

    return fault


def endless(total: int, chunk: int = 64 * 1024) -> Callable[[BaseHTTPRequestHandler], None]:
    """A chunked body of `total` bytes with no Content-Length to refuse it by: only counting
    the bytes as they arrive can stop it."""

    def fault(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html; charset=utf-8")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        piece = b"<p>" + b"x" * (chunk - 7) + b"</p>\n"
        with contextlib.suppress(OSError):  # the client hangs up at its size cap
            for _ in range(total // len(piece) + 1):
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            handler.wfile.write(b"0\r\n\r\n")
        handler.close_connection = True

    return fault


def gzip_bomb(inflated: int) -> Callable[[BaseHTTPRequestHandler], None]:
    """A small gzip body that inflates to `inflated` bytes of HTML-looking whitespace."""
    body = gzip.compress(b"<html><body>" + b" " * inflated, compresslevel=9)

    def fault(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html; charset=utf-8")
        handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        with contextlib.suppress(OSError):
            handler.wfile.write(body)
        handler.close_connection = True

    return fault


class Receiver:
    """A webhook on 127.0.0.1 that keeps the JSON body of every POST apprise sends it."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.paths.append(self.path)
                receiver.messages.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def titles(self) -> list[str]:
        return [m["title"] for m in self.messages]
