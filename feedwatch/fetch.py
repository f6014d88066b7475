"""One HTTP client for a whole run: conditional GET, redirects, size and time caps, charsets.

Every response comes from someone else's server, so `Fetcher.get` either returns a `Page`
or raises `FetchError` with a short human cause; nothing else escapes it. Bodies are
decompressed here, in bounded steps, rather than by httpx: httpx inflates each network
chunk in one call, so a 64 KB chunk of a gzip bomb becomes ~64 MB at once (and a brotli
chunk far more) before any size check could run.
"""

from __future__ import annotations

import asyncio
import codecs
import email.utils
import errno
import functools
import hashlib
import re
import socket
import ssl
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType, TracebackType
from typing import Protocol

import aiohttp
import brotli
import httpx
from charset_normalizer import from_bytes
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import AiohttpResponseStream

from feedwatch.models import Page, Validators

MAX_REDIRECTS = 10
ACCEPT = "text/html,application/xhtml+xml;q=0.9,text/plain;q=0.8,*/*;q=0.5"
ACCEPT_ENCODING = "gzip, deflate, br"
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml", "text/plain"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# "default" is whichever transport bench/transport.py showed fastest while passing every
# test in tests/test_fetch.py: aiohttp, ~3x httpx's own pool per Fetcher.get at 20 requests
# in flight (~12x for the bare clients; httpx's request/response layer eats the rest).
TRANSPORTS = ("default", "httpx", "aiohttp")
DEFAULT_TRANSPORT = "aiohttp"

_STEP = 64 * 1024  # most decompressed bytes produced per decompressor call
_READ_SIZE = 256 * 1024  # most raw bytes per read from the aiohttp transport
_MAX_HEADER_LINE = 64 * 1024
_SNIFF = 4096  # how far into the body a <meta charset> is looked for, as browsers do
_CAUSE_MAX = 200

_CHARSET_PARAM = re.compile(r"""charset\s*=\s*["']?\s*([^"';,\s]+)""", re.I)
_META_CHARSET = re.compile(rb"""<meta\s[^>]*?charset\s*=\s*["']?\s*([a-z0-9_.:+-]+)""", re.I)
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([a-z0-9_.:+-]+)""", re.I)
_ASCII = bytes(range(128))
# WHATWG labels Python does not know.
_LABELS = {"x-gbk": "gb18030", "x-x-big5": "big5hkscs", "cn-big5": "big5hkscs"}
# Servers say gb2312/gbk/big5/latin-1 but mean the superset browsers decode them as;
# decoding with the narrower codec turns common characters into errors.
_SUPERSETS = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "big5": "big5hkscs",
    "iso8859-1": "cp1252",
    "ascii": "cp1252",
    "euc_kr": "cp949",
    "shift_jis": "cp932",
}
# Python "text encodings" no web page uses; utf-7 is an XSS vector.
_REFUSED = frozenset(
    {"utf-7", "unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined"}
)


class FetchError(Exception):
    """Why one GET produced no page; `str(err)` is the cause shown to the user."""

    def __init__(
        self,
        url: str,
        cause: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(cause)
        self.url = url
        self.cause = cause
        self.status = status
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.cause


class Fetcher:
    """One connection pool per run, politely limited per host.

    Requests go to the httpx transport directly, not through an httpx.AsyncClient: the
    client's per-request layers (merging headers, cookies and URLs into a new request,
    the auth and redirect loops, wrapping the response stream) cost more CPU than the
    transport's own work on a 304, and none of them applies here. Redirects are followed
    by hand (`_get`), a transport passed to a client never gets the environment's proxies,
    and the cookies are kept as a client would keep them (`_Session.send`).
    """

    def __init__(
        self, *, max_connections: int = 64, per_host: int = 2, transport: str = "default"
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {transport!r}; expected one of {TRANSPORTS}")
        self.transport = DEFAULT_TRANSPORT if transport == "default" else transport
        self._max_connections = max_connections
        self._per_host = per_host
        self._slots = asyncio.Semaphore(max_connections)
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self._session: _Session | None = None

    async def __aenter__(self) -> Fetcher:
        limits = httpx.Limits(
            max_connections=self._max_connections,
            max_keepalive_connections=self._max_connections,
        )
        self._session = _Session(_make_transport(self.transport, limits), httpx.Cookies())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.transport.aclose()
            self._session = None

    async def get(
        self,
        url: str,
        *,
        validators: Validators | None,
        timeout: float,
        max_bytes: int,
        user_agent: str,
        accept_any: bool = False,
    ) -> Page:
        """GET `url`; the whole exchange, body and redirects included, ends within `timeout`.

        The wait for a free slot is not counted: a page queued behind a slow sibling on
        the same host has not failed.
        """
        if self._session is None:
            raise RuntimeError("Fetcher.get called outside 'async with Fetcher()'")
        session = self._session
        try:
            parsed = _parse_url(url)
            host = parsed.host
        except Exception as exc:
            raise FetchError(url, _describe(exc, timeout)) from exc
        host_slot = self._hosts.get(host)
        if host_slot is None:
            host_slot = self._hosts[host] = asyncio.Semaphore(self._per_host)
        async with host_slot, self._slots:
            started = time.monotonic()
            try:
                async with asyncio.timeout(timeout):
                    return await _get(
                        session,
                        url,
                        parsed,
                        old=validators or Validators(),
                        timeout=timeout,
                        max_bytes=max_bytes,
                        user_agent=user_agent,
                        accept_any=accept_any,
                        started=started,
                    )
            except FetchError:
                raise
            except Exception as exc:
                raise FetchError(url, _describe(exc, timeout)) from exc


@dataclass(frozen=True)
class _Session:
    """What the requests of one Fetcher share: the connection pool and the cookie jar."""

    transport: httpx.AsyncBaseTransport
    cookies: httpx.Cookies

    async def send(self, request: httpx.Request) -> httpx.Response:
        """One exchange, with cookies sent and kept as httpx.AsyncClient does it, but
        their (costly) bookkeeping skipped when there is nothing to send or keep."""
        if self.cookies:
            self.cookies.set_cookie_header(request)
        response = await self.transport.handle_async_request(request)
        response.request = request
        if "set-cookie" in response.headers:
            self.cookies.extract_cookies(response)
        return response


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """Loading the CA bundle costs ~50 ms; one context serves every Fetcher of the process."""
    return httpx.create_ssl_context()


def _make_transport(name: str, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    if name == "httpx":
        return httpx.AsyncHTTPTransport(verify=_ssl_context(), limits=limits)

    def session() -> aiohttp.ClientSession:
        # httpx keeps the cookies; a second jar in aiohttp would resend them twice.
        # Decompression stays off: _Decoder does it with bounded output.
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limits.max_connections or 0, ssl=_ssl_context()),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            # aiohttp stops at 8 KB per header line, httpx near 100 KB for all of them;
            # real sites do send 10-20 KB Content-Security-Policy and Set-Cookie lines.
            max_line_size=_MAX_HEADER_LINE,
            max_field_size=_MAX_HEADER_LINE,
        )

    return _AiohttpTransport(verify=_ssl_context(), limits=limits, client=session)


class _AiohttpTransport(AiohttpTransport):
    """httpx-aiohttp's transport, reading the body in larger pieces.

    Its stock 16 KB reads cost ~7 trips through httpx's stream layers per 100 KB page,
    which bench/transport.py showed as a visible share of a request's CPU time. Memory
    stays bounded: aiohttp buffers at most ~128 KB per connection, and _Decoder bounds
    what a piece decompresses to.
    """

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if isinstance(response.stream, AiohttpResponseStream):
            response.stream.CHUNK_SIZE = _READ_SIZE
        return response


async def _get(
    session: _Session,
    url: str,
    current: httpx.URL,
    *,
    old: Validators,
    timeout: float,
    max_bytes: int,
    user_agent: str,
    accept_any: bool,
    started: float,
) -> Page:
    """Follow redirects by hand so that no redirect body is ever read (httpx reads them whole)."""
    # What httpx.AsyncClient would send: keep-alive asked for, as HTTP/1.0 servers want.
    headers = {
        "Connection": "keep-alive",
        "Accept": ACCEPT,
        "Accept-Encoding": ACCEPT_ENCODING,
        "User-Agent": user_agent,
    }
    # Validators are the server's own strings, sent back untouched; one that could not be
    # sent as a header is dropped rather than failing the source on every poll.
    if old.etag and _header_safe(old.etag):
        headers["If-None-Match"] = old.etag
    if old.last_modified and _header_safe(old.last_modified):
        headers["If-Modified-Since"] = old.last_modified
    extensions = {"timeout": _timeout(timeout)}
    for _ in range(MAX_REDIRECTS + 1):
        response = await session.send(
            httpx.Request("GET", current, headers=headers, extensions=extensions)
        )
        try:
            location = response.headers.get("location")
            if response.status_code not in REDIRECT_STATUSES or not location:
                return await _page(
                    response,
                    url,
                    old=old,
                    max_bytes=max_bytes,
                    accept_any=accept_any,
                    started=started,
                )
            current = response.url.join(location.strip())
        finally:
            await response.aclose()
    raise FetchError(url, "too many redirects")


@functools.lru_cache(maxsize=4096)
def _parse_url(url: str) -> httpx.URL:
    """A source's index URL is parsed once, not on every poll (httpx.URL is immutable)."""
    return httpx.URL(url)


@functools.lru_cache(maxsize=64)
def _timeout(seconds: float) -> Mapping[str, float | None]:
    """The transports' timeout extension. Sources share a handful of timeouts, and
    building one per request was measurable; a read-only view, since it is shared."""
    return MappingProxyType(httpx.Timeout(seconds).as_dict())


async def _page(
    response: httpx.Response,
    url: str,
    *,
    old: Validators,
    max_bytes: int,
    accept_any: bool,
    started: float,
) -> Page:
    status = response.status_code
    final_url = str(response.url)
    etag = response.headers.get("etag")
    last_modified = response.headers.get("last-modified")
    if status == 304:
        return Page(
            url=url,
            final_url=final_url,
            status=304,
            text=None,
            validators=Validators(
                etag=etag or old.etag,
                last_modified=last_modified or old.last_modified,
                body_hash=old.body_hash,
            ),
            size=0,
            elapsed=time.monotonic() - started,
        )
    if status >= 400:
        raise FetchError(
            url,
            f"HTTP {status}",
            status=status,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    if status >= 300:
        raise FetchError(url, f"HTTP {status} without a Location to follow", status=status)
    content_type = response.headers.get("content-type")
    media = _media_type(content_type)
    if media is not None and media not in HTML_TYPES and not accept_any:
        raise FetchError(url, f"not an HTML page: {media}", status=status)
    body = await _read_body(response, url, max_bytes)
    text, encoding = decode_html(body, content_type)
    return Page(
        url=url,
        final_url=final_url,
        status=status,
        text=text,
        validators=Validators(
            etag=etag,
            last_modified=last_modified,
            body_hash=hashlib.sha256(body).hexdigest(),
        ),
        size=len(body),
        elapsed=time.monotonic() - started,
        encoding=encoding,
        content_type=media,
    )


async def _read_body(response: httpx.Response, url: str, max_bytes: int) -> bytes:
    """The decompressed body, abandoned the moment it grows past `max_bytes`."""
    encodings = [
        value.strip().lower()
        for value in response.headers.get_list("content-encoding", split_commas=True)
    ]
    decoder = _Decoder(encodings)
    too_big = FetchError(
        url, f"response larger than {max_bytes} bytes", status=response.status_code
    )
    length = response.headers.get("content-length", "")
    if not decoder.stages and length.isascii() and length.isdigit() and int(length) > max_bytes:
        raise too_big
    parts: list[bytes] = []
    total = 0

    def keep(pieces: Iterator[bytes]) -> None:
        nonlocal total
        for piece in pieces:
            total += len(piece)
            if total > max_bytes:
                raise too_big
            parts.append(piece)

    async for raw in response.aiter_raw():
        keep(decoder.feed(raw))
    keep(decoder.finish())
    return b"".join(parts)


class _Stage(Protocol):
    def feed(self, data: bytes) -> Iterator[bytes]: ...

    def flush(self) -> Iterator[bytes]: ...


class _ZlibStage:
    """gzip or deflate; `deflate` may come zlib-wrapped or raw, and servers send both."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding in ("gzip", "x-gzip")
        self._d = zlib.decompressobj(zlib.MAX_WBITS | 16 if self._gzip else zlib.MAX_WBITS)
        self._started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            out = self._d.decompress(data, _STEP)
        except zlib.error:
            if self._gzip or self._started:
                raise
            self._d = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self._d.decompress(data, _STEP)
        self._started = self._started or bool(data)
        yield out
        # A full step may leave output pending even when all input was consumed.
        while self._d.unconsumed_tail or (len(out) == _STEP and not self._d.eof):
            out = self._d.decompress(self._d.unconsumed_tail, _STEP)
            yield out

    def flush(self) -> Iterator[bytes]:
        yield self._d.flush()


class _BrotliStage:
    def __init__(self) -> None:
        self._d = brotli.Decompressor()

    def feed(self, data: bytes) -> Iterator[bytes]:
        yield self._d.process(data, output_buffer_limit=_STEP)
        while not self._d.can_accept_more_data():
            yield self._d.process(b"", output_buffer_limit=_STEP)

    def flush(self) -> Iterator[bytes]:
        return iter(())


_STAGES: dict[str, Callable[[str], _Stage]] = {
    "gzip": _ZlibStage,
    "x-gzip": _ZlibStage,
    "deflate": _ZlibStage,
    "br": lambda _: _BrotliStage(),
}


class _Decoder:
    """Undo Content-Encoding in bounded pieces; unknown codings pass through, as browsers do."""

    def __init__(self, encodings: list[str]) -> None:
        # The last coding listed was applied last, so it is undone first.
        self.stages: list[_Stage] = [_STAGES[e](e) for e in reversed(encodings) if e in _STAGES]

    def feed(self, data: bytes) -> Iterator[bytes]:
        return _pipe(self.stages, data, final=False)

    def finish(self) -> Iterator[bytes]:
        return _pipe(self.stages, b"", final=True)


def _pipe(stages: list[_Stage], data: bytes, *, final: bool) -> Iterator[bytes]:
    if not stages:
        if data:
            yield data
        return
    head, rest = stages[0], stages[1:]
    for piece in head.feed(data):
        yield from _pipe(rest, piece, final=False)
    if final:
        for piece in head.flush():
            yield from _pipe(rest, piece, final=False)
        yield from _pipe(rest, b"", final=True)


def decode_html(body: bytes, content_type: str | None) -> tuple[str, str]:
    """Body bytes → (text, codec used).

    Order: BOM (it cannot be there by accident, so it wins, as in the WHATWG sniffing
    algorithm) → Content-Type charset → <meta charset> / XML declaration → UTF-8 →
    charset-normalizer → UTF-8 with replacement. A declared charset that fails badly on
    the bytes is a lie (GBK pages labelled UTF-8 are common) and the next candidate is
    tried; a few bad bytes are damage, and are replaced.
    """
    for bom, codec in (
        (codecs.BOM_UTF8, "utf-8"),
        (b"\xfe\xff", "utf-16-be"),
        (b"\xff\xfe", "utf-16-le"),
    ):
        if body.startswith(bom):
            return body[len(bom) :].decode(codec, "replace"), codec
    if not body:
        return "", "utf-8"
    header = _codec(_header_charset(content_type))
    meta = _codec(_meta_charset(body[:_SNIFF]), from_markup=True)
    # latin-1/ascii/cp1252 decode any bytes, and are what misconfigured servers send by
    # default; as a header they are tried only after the page's own declaration and UTF-8.
    weak_header = header == "cp1252"
    candidates = [(header, 4)] if header and not weak_header else []
    candidates += [(meta, 4), ("utf-8", 0)]
    if weak_header:
        candidates.append((header, 4))
    tried: set[str] = set()
    for codec, slack in candidates:
        if codec is None or codec in tried:
            continue
        tried.add(codec)
        text = _decode_if_plausible(body, codec, slack)
        if text is not None:
            return text, codec
    guess = from_bytes(body).best()
    detected = _codec(guess.encoding) if guess is not None else None
    if detected is not None:
        return body.decode(detected, "replace"), detected
    return body.decode("utf-8", "replace"), "utf-8"


def _decode_if_plausible(body: bytes, codec: str, slack: int) -> str | None:
    """The text, unless more than `slack` errors and over 2% of the non-ASCII bytes fail."""
    try:
        return body.decode(codec)
    except UnicodeError:
        pass
    text = body.decode(codec, "replace")
    errors = text.count("\ufffd")
    if errors <= slack or errors * 50 <= len(body.translate(None, _ASCII)):
        return text
    return None


def _codec(label: str | None, *, from_markup: bool = False) -> str | None:
    """A charset label → the Python codec browsers would use for it, or None."""
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    try:
        name = codecs.lookup(_LABELS.get(label, label)).name
        b"-".decode(name, "replace")  # LookupError for bytes-to-bytes codecs such as base64
    except LookupError:
        return None
    if name in _REFUSED:
        return None
    # A page that could be read as ASCII to find its <meta> is not UTF-16.
    if from_markup and name.startswith(("utf-16", "utf-32")):
        return "utf-8"
    if name == "utf-8-sig":
        return "utf-8"
    return _SUPERSETS.get(name, name)


def _header_charset(content_type: str | None) -> str | None:
    match = _CHARSET_PARAM.search(content_type or "")
    return match.group(1) if match else None


def _meta_charset(head: bytes) -> str | None:
    match = _XML_ENCODING.search(head) or _META_CHARSET.search(head)
    return match.group(1).decode("ascii") if match else None


def _media_type(content_type: str | None) -> str | None:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media or None


def _header_safe(value: str) -> bool:
    return value.isascii() and value.isprintable()


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from `now`: delta-seconds or an HTTP-date; None if unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _describe(exc: BaseException, timeout: float) -> str:
    """A short cause for any failure below us.

    The whole exception chain is searched for the root cause because wrappers hide it:
    httpx-aiohttp, for one, maps every aiohttp connection error, a reset included, to
    httpx.ConnectTimeout.
    """
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in chain:
        chain.append(link)
        link = link.__cause__ or link.__context__
    # Root cause first: aiohttp's wrappers subclass the ssl errors without their fields.
    for e in reversed(chain):
        if isinstance(e, ssl.SSLCertVerificationError):
            reason = getattr(e, "verify_message", None) or e
            return _short(f"SSL certificate verification failed: {reason}")
        if isinstance(e, ssl.SSLError):
            return _short(f"SSL error: {getattr(e, 'reason', None) or e}")
        if isinstance(e, socket.gaierror):
            return "DNS lookup failed"
        if isinstance(e, ConnectionRefusedError) or (
            isinstance(e, OSError) and e.errno == errno.ECONNREFUSED
        ):
            return "connection refused"
        if isinstance(e, ConnectionResetError | BrokenPipeError) or (
            isinstance(e, OSError) and e.errno in (errno.ECONNRESET, errno.EPIPE)
        ):
            return "connection reset"
        if isinstance(e, aiohttp.ServerDisconnectedError):
            return "connection closed by the server"
    for e in chain:
        if isinstance(e, TimeoutError | httpx.TimeoutException | aiohttp.ServerTimeoutError):
            return f"timeout after {timeout:g}s"
        if isinstance(e, httpx.UnsupportedProtocol):
            return _short(f"unsupported URL: {e}")
        if isinstance(e, httpx.InvalidURL):
            return _short(f"invalid URL: {e}")
        if isinstance(e, zlib.error | brotli.error):
            return "corrupt compressed body"
        if isinstance(e, httpx.RemoteProtocolError):
            # httpcore has no finer types; these texts are its two ways of saying "EOF".
            if str(e).startswith("Server disconnected without sending a response"):
                return "connection closed by the server"
            if str(e).startswith("peer closed connection without sending complete message"):
                return "connection closed mid-body"
        if isinstance(e, httpx.RemoteProtocolError | aiohttp.ClientResponseError):
            return _short(f"protocol error: {getattr(e, 'message', None) or e}")
        if isinstance(e, aiohttp.ClientPayloadError):
            return "connection closed mid-body"
    return _short(f"{type(exc).__name__}: {exc}")


def _short(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _CAUSE_MAX else line[: _CAUSE_MAX - 1] + "…"
