"""The HTTP side of the daemon: an ASGI app that serves output_dir to feed readers.

Feed readers poll often and almost always get `304 Not Modified`, so that is the hot path: one
`lstat` and a dict lookup, no read. Validators (ETag, Last-Modified) and the precomputed header
lists are cached per file, keyed by what `lstat` says about it; the bytes are read only when they
must be sent, and a gzip copy is kept (bounded) for the current version of each file. Feed files
are small and live in the page cache, so reading them inline beats handing the read to a thread.

Only plain files directly inside output_dir with a feed-shaped name are ever opened: the name is
checked against a fixed pattern and symlinks are refused, so no path outside output_dir is
reachable whatever a request's path says.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import html
import json
import os
import re
import socket
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.utils import formatdate, parsedate_to_datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send


@dataclass(frozen=True)
class FeedListing:
    """One row of the index page, as the daemon knows the source."""

    name: str
    title: str
    updated: datetime | None
    entries: int
    last_error: str | None


_FEED_PATH = re.compile(r"/[a-z0-9_-]+\.(rss|atom|json)")
_OPML_FILE = "index.opml"
_CONTENT_TYPES = {
    "rss": b"application/rss+xml; charset=utf-8",
    "atom": b"application/atom+xml; charset=utf-8",
    "json": b"application/feed+json; charset=utf-8",
    "opml": b"text/x-opml; charset=utf-8",
}
_FORMATS = (
    ("atom", "application/atom+xml", "Atom"),
    ("rss", "application/rss+xml", "RSS"),
    ("json", "application/feed+json", "JSON Feed"),
)
_CACHE_CONTROL = b"max-age=300"
_GZIP_CACHE_BYTES = 16 * 1024 * 1024
# Smaller bodies gain nothing from gzip: the header overhead eats the saving.
_GZIP_MIN_SIZE = 256
_GRACEFUL_SHUTDOWN_SECONDS = 3.0

_Headers = tuple[tuple[bytes, bytes], ...]
_StatKey = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class _Version:
    """What is known about one version of one file, enough to answer a conditional request."""

    key: _StatKey
    etag: bytes
    etag_gzip: bytes
    last_modified: bytes
    mtime: int
    head_identity: _Headers
    head_gzip: _Headers
    not_modified_identity: _Headers
    not_modified_gzip: _Headers


def _stat_key(st: os.stat_result) -> _StatKey:
    # A feed is replaced with os.replace, so the inode changes even when the coarse
    # filesystem clock gives two writes the same mtime.
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _new_version(st: os.stat_result, body: bytes, content_type: bytes) -> _Version:
    digest = hashlib.blake2b(body, digest_size=12).hexdigest().encode()
    # The gzip representation has different bytes, so a strong ETag must differ too;
    # If-None-Match accepts either since both stand for the same file version.
    etag = b'"' + digest + b'"'
    etag_gzip = b'"' + digest + b'-gz"'
    last_modified = formatdate(st.st_mtime, usegmt=True).encode()
    # A 304 repeats only what a cache needs to update its copy (RFC 9110 §15.4.5); with an
    # ETag that is not Last-Modified, and every header costs on this hot path.
    cache = ((b"cache-control", _CACHE_CONTROL), (b"vary", b"Accept-Encoding"))
    common = ((b"last-modified", last_modified), *cache)
    return _Version(
        key=_stat_key(st),
        etag=etag,
        etag_gzip=etag_gzip,
        last_modified=last_modified,
        mtime=int(st.st_mtime),
        head_identity=((b"content-type", content_type), (b"etag", etag), *common),
        head_gzip=(
            (b"content-type", content_type),
            (b"etag", etag_gzip),
            (b"content-encoding", b"gzip"),
            *common,
        ),
        not_modified_identity=((b"etag", etag), *cache),
        not_modified_gzip=((b"etag", etag_gzip), *cache),
    )


@lru_cache(maxsize=128)
def _accepts_gzip(accept_encoding: bytes) -> bool:
    """Whether gzip is acceptable, honouring `q=0` and `*` (RFC 9110 §12.5.3)."""
    gzip_q: float | None = None
    star_q: float | None = None
    for item in accept_encoding.decode("latin-1").split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        q = 1.0
        for param in params.split(";"):
            pname, _, pvalue = param.partition("=")
            if pname.strip().lower() == "q":
                try:
                    q = float(pvalue.strip())
                except ValueError:
                    q = 0.0
        if coding in ("gzip", "x-gzip"):
            gzip_q = q
        elif coding == "*":
            star_q = q
    if gzip_q is not None:
        return gzip_q > 0
    return star_q is not None and star_q > 0


@lru_cache(maxsize=128)
def _http_date(value: bytes) -> float | None:
    try:
        when = parsedate_to_datetime(value.decode("latin-1"))
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    # HTTP dates are GMT; a zone-less one ("-0000") must not be read as local time.
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _etag_matches(if_none_match: bytes, version: _Version) -> bool:
    """Weak comparison (RFC 9110 §13.1.2) against either representation's tag."""
    if if_none_match == version.etag or if_none_match == version.etag_gzip:
        return True
    for tag in if_none_match.split(b","):
        tag = tag.strip()
        if tag == b"*":
            return True
        if tag.startswith(b"W/"):
            tag = tag[2:]
        if tag == version.etag or tag == version.etag_gzip:
            return True
    return False


def _not_modified(
    version: _Version, if_none_match: bytes | None, if_modified_since: bytes | None
) -> bool:
    if if_none_match is not None:
        return _etag_matches(if_none_match, version)
    if if_modified_since is None:
        return False
    if if_modified_since == version.last_modified:
        return True
    since = _http_date(if_modified_since)
    return since is not None and version.mtime <= since


async def _plain(send: Send, status: int, text: bytes, extra: _Headers = ()) -> None:
    headers = (
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(text)).encode()),
        *extra,
    )
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text})


def _content_type(path: str) -> bytes | None:
    """The content type of a servable `/{file}` path, None for any other path."""
    if path == "/" + _OPML_FILE:
        return _CONTENT_TYPES["opml"]
    match = _FEED_PATH.fullmatch(path)
    return _CONTENT_TYPES[match.group(1)] if match else None


def _is_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


class _FeedFiles:
    """Serves the feed files ahead of Starlette's router, as a raw ASGI middleware.

    Readers' polls are nearly all this, and going through the router, a Request object and
    FileResponse (which re-stats and rebuilds every header) costs several times what the
    304 itself does. Every other path falls through to the routes, and to their 404.
    """

    def __init__(self, app: ASGIApp, output_dir: Path) -> None:
        self._app = app
        self._dir = os.fspath(output_dir)
        self._versions: dict[str, _Version] = {}
        self._gzipped: dict[str, tuple[_StatKey, bytes]] = {}
        self._gzipped_bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = _content_type(scope["path"]) if scope["type"] == "http" else None
        if content_type is None:
            await self._app(scope, receive, send)
            return
        name: str = scope["path"][1:]
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            await _plain(send, 405, b"Method Not Allowed", ((b"allow", b"GET, HEAD"),))
            return

        if_none_match = if_modified_since = accept_encoding = None
        for key, value in scope["headers"]:
            if key == b"if-none-match":
                if_none_match = value if if_none_match is None else if_none_match + b"," + value
            elif key == b"if-modified-since":
                if_modified_since = value
            elif key == b"accept-encoding":
                accept_encoding = value
        use_gzip = accept_encoding is not None and _accepts_gzip(accept_encoding)

        path = self._dir + "/" + name
        try:
            st = os.lstat(path)
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            self._forget(name)
            await _plain(send, 404, b"Not Found")
            return

        version = self._versions.get(name)
        body: bytes | None = None
        if version is None or version.key != _stat_key(st):
            loaded = self._load(name, path, content_type)
            if loaded is None:
                await _plain(send, 404, b"Not Found")
                return
            version, body = loaded

        if (if_none_match is not None or if_modified_since is not None) and _not_modified(
            version, if_none_match, if_modified_since
        ):
            headers = version.not_modified_gzip if use_gzip else version.not_modified_identity
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return

        if body is None:
            loaded = self._load(name, path, content_type)
            if loaded is None:
                await _plain(send, 404, b"Not Found")
                return
            version, body = loaded
        if use_gzip and len(body) >= _GZIP_MIN_SIZE:
            body = self._gzip(name, version.key, body)
            headers = (*version.head_gzip, (b"content-length", str(len(body)).encode()))
        else:
            headers = (*version.head_identity, (b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    def _load(self, name: str, path: str, content_type: bytes) -> tuple[_Version, bytes] | None:
        """Read the file and its identity through one descriptor, so the ETag always
        describes the very bytes that are sent, even if the file is replaced meanwhile."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            self._forget(name)
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self._forget(name)
                return None
            with open(fd, "rb", closefd=False) as f:
                body = f.read()
        except OSError:
            self._forget(name)
            return None
        finally:
            os.close(fd)
        version = self._versions.get(name)
        if version is None or version.key != _stat_key(st):
            version = _new_version(st, body, content_type)
            self._versions[name] = version
        return version, body

    def _gzip(self, name: str, key: _StatKey, body: bytes) -> bytes:
        cached = self._gzipped.pop(name, None)
        if cached is not None:
            self._gzipped_bytes -= len(cached[1])
            if cached[0] != key:
                cached = None
        if cached is None:
            cached = (key, gzip.compress(body, compresslevel=6, mtime=0))
        self._gzipped[name] = cached
        self._gzipped_bytes += len(cached[1])
        while self._gzipped_bytes > _GZIP_CACHE_BYTES and len(self._gzipped) > 1:
            oldest = next(iter(self._gzipped))
            self._gzipped_bytes -= len(self._gzipped.pop(oldest)[1])
        return cached[1]

    def _forget(self, name: str) -> None:
        self._versions.pop(name, None)
        cached = self._gzipped.pop(name, None)
        if cached is not None:
            self._gzipped_bytes -= len(cached[1])


def _format_time(value: datetime | None) -> str:
    if value is None:
        return "never"
    stamp = html.escape(value.isoformat(timespec="seconds"))
    shown = html.escape(value.strftime("%Y-%m-%d %H:%M %Z").strip())
    return f'<time datetime="{stamp}">{shown}</time>'


def _index_html(rows: Sequence[FeedListing], base_url: str, output_dir: str) -> str:
    head: list[str] = []
    body: list[str] = []
    for row in rows:
        title = html.escape(row.title or row.name)
        links: list[str] = []
        for ext, mime, label in _FORMATS:
            file_name = f"{row.name}.{ext}"
            if not _is_file(os.path.join(output_dir, file_name)):
                continue
            href = html.escape(base_url + quote(file_name))
            head.append(
                f'<link rel="alternate" type="{mime}" title="{title} ({label})" href="{href}">'
            )
            links.append(f'<a href="{href}" type="{mime}">{label}</a>')
        error = html.escape(row.last_error) if row.last_error else ""
        body.append(
            f'<tr><td class="title">{title}</td><td>{html.escape(row.name)}</td>'
            f"<td>{_format_time(row.updated)}</td><td>{row.entries}</td>"
            f'<td class="error">{error}</td><td>{" ".join(links)}</td></tr>'
        )
    opml = html.escape(base_url + _OPML_FILE)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            "<title>feedwatch</title>",
            *head,
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}"
            ".error{color:#a00}</style>",
            "</head><body>",
            "<h1>feedwatch</h1>",
            f'<p>{len(rows)} feeds. Subscribe to all: <a href="{opml}" type="text/x-opml">'
            "index.opml</a></p>",
            "<table><thead><tr><th>Title</th><th>Name</th><th>Last update</th>"
            "<th>Entries</th><th>Last error</th><th>Feeds</th></tr></thead><tbody>",
            *body,
            "</tbody></table></body></html>",
        ]
    )


def _json_default(value: object) -> object:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def create_app(
    output_dir: Path,
    *,
    listings: Callable[[], Sequence[FeedListing]],
    health: Callable[[], Mapping[str, Any]],
    base_url: str = "/",
) -> Starlette:
    """The app for `feedwatch run`: feed files, the index page and `/healthz`.

    `listings` and `health` are called per request so the pages always show the daemon's
    current state without this module knowing how the daemon keeps it.
    """
    directory = os.fspath(output_dir)
    prefix = base_url if base_url.endswith("/") else base_url + "/"

    async def index(request: Request) -> Response:
        page = _index_html(listings(), prefix, directory)
        return HTMLResponse(page, headers={"cache-control": "no-cache"})

    async def healthz(request: Request) -> Response:
        payload = json.dumps(dict(health()), default=_json_default, ensure_ascii=False)
        return Response(
            payload, media_type="application/json", headers={"cache-control": "no-store"}
        )

    return Starlette(
        routes=[
            Route("/", index, methods=["GET"], middleware=[Middleware(GZipMiddleware)]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        middleware=[Middleware(_FeedFiles, output_dir=Path(directory))],
    )


class _DaemonServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the daemon and listens on a socket bound
    before it starts, so a busy port is an OSError at setup instead of a SystemExit
    raised inside the daemon's task."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket) -> None:
        super().__init__(config)
        self.socket = sock

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (the real port when 0 was asked for)."""
        host, port = self.socket.getsockname()[:2]
        return host, port

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        await super().serve(sockets if sockets is not None else [self.socket])


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    # The protocol must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that
    # say so, and without it Nagle holds each small body back by a delayed ACK (~40 ms).
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def make_server(app: ASGIApp, host: str, port: int, log_level: str = "warning") -> uvicorn.Server:
    """A uvicorn server for the daemon's own loop: `await server.serve()` in a task, set
    `server.should_exit = True` to stop it (open connections get a few seconds to finish).

    The socket is bound here (raises OSError if the address is taken); `server.address`
    gives the real port when `port` is 0. Logging is left as the daemon configured it.
    """
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level=log_level,
        log_config=None,
        access_log=False,
        server_header=False,
        # Links come from base_url, never from the request, so X-Forwarded-* would only
        # cost a header scan per request.
        proxy_headers=False,
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
    )
    return _DaemonServer(config, _bind(host, port))
