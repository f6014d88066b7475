"""feedwatch.fetch against a real, fault-injecting HTTP server on 127.0.0.1.

Every network test runs once per transport, so the faster transport can only be the
default if it keeps every behaviour below.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import socket
import ssl
import struct
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import brotli
import pytest

from feedwatch.fetch import ACCEPT, Fetcher, FetchError, decode_html, parse_retry_after
from feedwatch.models import Page, Validators

CAP = 1_000_000
HTML = "text/html; charset=utf-8"
ZH = "苏剑林的科学空间：变分自编码器、扩散模型与注意力机制的数学原理。我们从最简单的例子讲起。"
ZH_TW = "繁體中文測試：臺灣與香港的網站仍然常用這種編碼，裡面的字與簡體不同。"
PAGE = f"<!doctype html><html><head><title>t</title></head><body><p>{ZH}</p></body></html>"
PAGE_BYTES = PAGE.encode()
LAST_MODIFIED = "Sun, 06 Nov 1994 08:49:37 GMT"
BOMB_SIZE = 10 * 1024 * 1024
# Self-signed for 127.0.0.1, valid until 2126; only ever presented by the test server.
SELF_SIGNED = """-----BEGIN CERTIFICATE-----
MIIBkTCCATagAwIBAgIURjXWT1yBR6MNKqjRXeJQ6Jdf4XowCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJMTI3LjAuMC4xMCAXDTI2MTEyMzE2NDIyM1oYDzIxMjYxMDMw
MTY0MjIzWjAUMRIwEAYDVQQDDAkxMjcuMC4wLjEwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAATcO9ud1OD1YxNDG2tLx7Ox5tbvM7oNvj7C2Ui2i2xYgQGwoClvzzGK
h70eWvxWS4qVRpoxunZ1DcSR3Qge7WrEo2QwYjAdBgNVHQ4EFgQU44my/1062biC
n5iA9gNzPx0oy8QwHwYDVR0jBBgwFoAU44my/1062biCn5iA9gNzPx0oy8QwDwYD
VR0TAQH/BAUwAwEB/zAPBgNVHREECDAGhwR/AAABMAoGCCqGSM49BAMCA0kAMEYC
IQDSb7Xyp7qFgAZcn9Fw/mkmFo806Ibn5UboqxMai8hkIQIhAJiB8MKboGzL9ZgI
D+sEe42PF7AfCMOv8kxPmVGpCMG+
-----END CERTIFICATE-----
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgkWCMLWgQIoS0ekPm
2fdUwVxJRhPXpOLZme1RR4qVnxehRANCAATcO9ud1OD1YxNDG2tLx7Ox5tbvM7oN
vj7C2Ui2i2xYgQGwoClvzzGKh70eWvxWS4qVRpoxunZ1DcSR3Qge7WrE
-----END PRIVATE KEY-----
"""


def gbk_page(meta: bool) -> bytes:
    head = '<meta charset="gbk">' if meta else ""
    body = "".join(f"<p>{ZH}</p>" for _ in range(5))
    return f"<html><head>{head}<title>标题</title></head><body>{body}</body></html>".encode("gbk")


@functools.cache
def gzip_bomb() -> bytes:
    return gzip.compress(bytes(BOMB_SIZE), compresslevel=9)


@functools.cache
def brotli_bomb() -> bytes:
    return brotli.compress(bytes(BOMB_SIZE), quality=5)


class Site:
    """What the server saw, so tests can assert on requests and not only on responses."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.requests: list[tuple[str, Message]] = []
            self.in_flight = 0
            self.max_in_flight = 0

    def seen(self, path: str) -> list[Message]:
        with self.lock:
            return [headers for p, headers in self.requests if p == path]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        site = self.server.site
        with site.lock:
            site.requests.append((path, self.headers))
        ROUTES.get(path, not_found)(self)

    def reply(
        self, body: bytes = PAGE_BYTES, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        for name, value in ({"Content-Type": HTML} if headers is None else headers).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def start_body(self, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", HTML)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(b"<html><body>")
        self.wfile.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.site = Site()

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients hanging up on stalled or oversized bodies is the point of those tests."""


def not_found(h: Handler) -> None:
    h.reply(b"not found", 404)


def plain(h: Handler) -> None:
    h.reply()


def gzipped(h: Handler) -> None:
    h.reply(gzip.compress(PAGE_BYTES), headers={"Content-Type": HTML, "Content-Encoding": "gzip"})


def brotli_page(h: Handler) -> None:
    h.reply(brotli.compress(PAGE_BYTES), headers={"Content-Type": HTML, "Content-Encoding": "br"})


def deflate_raw(h: Handler) -> None:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    body = c.compress(PAGE_BYTES) + c.flush()
    h.reply(body, headers={"Content-Type": HTML, "Content-Encoding": "deflate"})


def corrupt_gzip(h: Handler) -> None:
    h.reply(
        b"\x1f\x8b" + bytes(range(200)), headers={"Content-Type": HTML, "Content-Encoding": "gzip"}
    )


def etag(h: Handler) -> None:
    if h.headers.get("If-None-Match") == '"v1"':
        h.reply(b"", 304, {"ETag": '"v1"'})
    else:
        h.reply(headers={"Content-Type": HTML, "ETag": '"v1"'})


def etag_rotates(h: Handler) -> None:
    if h.headers.get("If-None-Match") == '"v1"':
        h.reply(b"", 304, {"ETag": '"v2"'})
    else:
        h.reply(headers={"Content-Type": HTML, "ETag": '"v1"'})


def last_modified(h: Handler) -> None:
    if h.headers.get("If-Modified-Since") == LAST_MODIFIED:
        h.reply(b"", 304, {})
    else:
        h.reply(headers={"Content-Type": HTML, "Last-Modified": LAST_MODIFIED})


def status(code: int, headers: dict[str, str] | None = None) -> Callable[[Handler], None]:
    return lambda h: h.reply(b"<html>error</html>", code, {"Content-Type": HTML, **(headers or {})})


def too_many_requests(h: Handler) -> None:
    when = datetime.now(UTC) + timedelta(seconds=90)
    h.reply(b"slow down", 429, {"Retry-After": format_datetime(when, usegmt=True)})


def redirect(location: str, code: int = 302) -> Callable[[Handler], None]:
    return lambda h: h.reply(b"", code, {"Location": location})


def reset(h: Handler) -> None:
    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    h.connection.close()
    h.close_connection = True


def stall(h: Handler) -> None:
    h.start_body(100_000)
    h.server.site.release.wait(5)
    h.close_connection = True


def trickle(h: Handler) -> None:
    """One byte every 50 ms: no single read ever times out, the whole request must."""
    h.start_body(1000)
    for _ in range(100):
        if h.server.site.release.wait(0.05):
            break
        h.wfile.write(b"x")
        h.wfile.flush()
    h.close_connection = True


def big(h: Handler) -> None:
    h.reply(b"x" * (2 * CAP))


def big_chunked(h: Handler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", HTML)
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    chunk = b"y" * 65536
    for _ in range(2 * CAP // len(chunk) + 1):
        h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    h.wfile.write(b"0\r\n\r\n")


def bomb(encoding: str, body: Callable[[], bytes]) -> Callable[[Handler], None]:
    return lambda h: h.reply(body(), headers={"Content-Type": HTML, "Content-Encoding": encoding})


def truncated(h: Handler) -> None:
    h.start_body(1000)
    h.close_connection = True


def hang_up(h: Handler) -> None:
    h.close_connection = True


MALFORMED = {
    "/raw/not-http": b"HELLO THERE\r\n\r\n",
    "/raw/bad-status": b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
    "/raw/no-colon": b"HTTP/1.1 200 OK\r\nContent-Type text/html\r\nContent-Length: 2\r\n\r\nhi",
    "/raw/bad-length": b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\nhi",
    "/raw/two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 9\r\n\r\nhi",
    "/raw/bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n",
    "/raw/huge-header": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
}


def raw(h: Handler) -> None:
    h.wfile.write(MALFORMED[urlsplit(h.path).path])
    h.close_connection = True


def slow(h: Handler) -> None:
    site = h.server.site
    with site.lock:
        site.in_flight += 1
        site.max_in_flight = max(site.max_in_flight, site.in_flight)
    time.sleep(0.15)
    with site.lock:
        site.in_flight -= 1
    h.reply()


def long_header(h: Handler) -> None:
    h.reply(headers={"Content-Type": HTML, "Content-Security-Policy": "a" * 20_000})


def sets_cookie(h: Handler) -> None:
    h.reply(headers={"Content-Type": HTML, "Set-Cookie": "visited=yes; Path=/"})


def sets_cookie_and_redirects(h: Handler) -> None:
    h.reply(b"", 302, {"Location": "/plain", "Set-Cookie": "gate=passed; Path=/"})


def typed(content_type: str | None, body: bytes = PAGE_BYTES) -> Callable[[Handler], None]:
    return lambda h: h.reply(
        body, headers={} if content_type is None else {"Content-Type": content_type}
    )


ROUTES: dict[str, Callable[[Handler], None]] = {
    "/plain": plain,
    "/gzip": gzipped,
    "/br": brotli_page,
    "/deflate-raw": deflate_raw,
    "/corrupt-gzip": corrupt_gzip,
    "/etag": etag,
    "/etag-rotates": etag_rotates,
    "/last-modified": last_modified,
    "/500": status(500),
    "/503": status(503, {"Retry-After": "120"}),
    "/429": too_many_requests,
    "/300": status(300),
    "/r1": redirect("/r2", 301),
    "/r2": redirect("r3"),
    "/r3": redirect("/plain", 307),
    "/loop": redirect("/loop"),
    "/sets-cookie": sets_cookie,
    "/cookie-gate": sets_cookie_and_redirects,
    "/reset": reset,
    "/stall": stall,
    "/trickle": trickle,
    "/big": big,
    "/big-chunked": big_chunked,
    "/gzip-bomb": bomb("gzip", gzip_bomb),
    "/brotli-bomb": bomb("br", brotli_bomb),
    **dict.fromkeys(MALFORMED, raw),
    "/truncated": truncated,
    "/hang-up": hang_up,
    "/slow": slow,
    "/long-header": long_header,
    "/gbk-meta": typed("text/html", gbk_page(meta=True)),
    "/gbk-lie-meta": typed("text/html; charset=utf-8", gbk_page(meta=True)),
    "/gbk-lie": typed("text/html; charset=utf-8", gbk_page(meta=False)),
    "/gb2312-label": typed("text/html; charset=gb2312", f"<p>{ZH}朱镕基 €</p>".encode("gb18030")),
    "/bom": typed("text/html", b"\xef\xbb\xbf" + PAGE_BYTES),
    "/big5": typed("text/html; charset=big5", f"<p>{ZH_TW}</p>".encode("big5")),
    "/bad-utf8": typed(HTML, PAGE_BYTES.replace("。".encode(), b"\xff\xc3(")),
    "/pdf": typed("application/pdf", b"%PDF-1.4 binary"),
    "/json": typed("application/json; charset=utf-8", b'{"a": 1}'),
    "/text": typed("text/plain; charset=utf-8", ZH.encode()),
    "/untyped": typed(None),
    "/empty": typed(HTML, b""),
}


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.site.release.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def tls_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pem = tmp_path_factory.mktemp("tls") / "self-signed.pem"
    pem.write_text(SELF_SIGNED)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem)
    srv = Server()
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def site(server: Server) -> Site:
    server.site.reset()
    return server.site


@pytest.fixture
def base(server: Server, site: Site) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(params=["httpx", "aiohttp"])
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


def fetch(
    url: str,
    transport: str,
    *,
    validators: Validators | None = None,
    timeout: float = 5.0,
    max_bytes: int = CAP,
    user_agent: str = "feedwatch-test/1.0",
    accept_any: bool = False,
) -> Page:
    async def run() -> Page:
        async with Fetcher(transport=transport) as fetcher:
            return await fetcher.get(
                url,
                validators=validators,
                timeout=timeout,
                max_bytes=max_bytes,
                user_agent=user_agent,
                accept_any=accept_any,
            )

    return asyncio.run(run())


def fetch_error(url: str, transport: str, **kwargs: Any) -> FetchError:
    with pytest.raises(FetchError) as info:
        fetch(url, transport, **kwargs)
    assert info.value.url == url
    return info.value


# --- plain pages and content codings ---------------------------------------------------


def test_plain_page_is_decoded_with_its_metadata(base: str, transport: str) -> None:
    page = fetch(f"{base}/plain", transport)
    assert (page.status, page.text, page.encoding) == (200, PAGE, "utf-8")
    assert page.url == page.final_url == f"{base}/plain"
    assert page.size == len(PAGE_BYTES)
    assert page.content_type == "text/html"
    assert 0 < page.elapsed < 5


def test_user_agent_and_accept_encoding_are_sent(base: str, site: Site, transport: str) -> None:
    fetch(f"{base}/plain", transport, user_agent="probe/7")
    (headers,) = site.seen("/plain")
    assert headers["User-Agent"] == "probe/7"
    assert [e.strip() for e in headers["Accept-Encoding"].split(",")] == ["gzip", "deflate", "br"]


def test_html_is_asked_for_on_a_kept_alive_connection(
    base: str, site: Site, transport: str
) -> None:
    fetch(f"{base}/plain", transport)
    (headers,) = site.seen("/plain")
    assert headers["Accept"] == ACCEPT
    assert headers["Connection"] == "keep-alive"
    assert headers["Host"] == base.removeprefix("http://")


def test_gzip_body_is_decompressed(base: str, transport: str) -> None:
    assert fetch(f"{base}/gzip", transport).text == PAGE


def test_brotli_body_is_decompressed(base: str, transport: str) -> None:
    assert fetch(f"{base}/br", transport).text == PAGE


def test_raw_deflate_body_is_decompressed(base: str, transport: str) -> None:
    assert fetch(f"{base}/deflate-raw", transport).text == PAGE


def test_body_hash_and_size_are_of_decompressed_bytes(base: str, transport: str) -> None:
    page = fetch(f"{base}/gzip", transport)
    assert page.validators.body_hash == hashlib.sha256(PAGE_BYTES).hexdigest()
    assert page.size == len(PAGE_BYTES)


def test_corrupt_gzip_fails_cleanly(base: str, transport: str) -> None:
    assert str(fetch_error(f"{base}/corrupt-gzip", transport)) == "corrupt compressed body"


# --- conditional GET -----------------------------------------------------------------


def test_etag_is_stored_and_sent_back_for_a_304(base: str, site: Site, transport: str) -> None:
    first = fetch(f"{base}/etag", transport)
    assert first.validators.etag == '"v1"'
    second = fetch(f"{base}/etag", transport, validators=first.validators)
    assert [h["If-None-Match"] for h in site.seen("/etag")] == [None, '"v1"']
    assert (second.status, second.text, second.size, second.not_modified) == (304, None, 0, True)
    assert second.validators == first.validators


def test_304_takes_a_new_etag_and_keeps_the_rest(base: str, transport: str) -> None:
    old = Validators(etag='"v1"', last_modified=LAST_MODIFIED, body_hash="abc")
    page = fetch(f"{base}/etag-rotates", transport, validators=old)
    assert page.status == 304
    assert page.validators == Validators(etag='"v2"', last_modified=LAST_MODIFIED, body_hash="abc")


def test_last_modified_is_echoed_verbatim(base: str, site: Site, transport: str) -> None:
    first = fetch(f"{base}/last-modified", transport)
    assert first.validators.last_modified == LAST_MODIFIED
    second = fetch(f"{base}/last-modified", transport, validators=first.validators)
    assert [h["If-Modified-Since"] for h in site.seen("/last-modified")] == [None, LAST_MODIFIED]
    assert second.status == 304


def test_unsendable_validator_is_dropped_not_fatal(base: str, site: Site, transport: str) -> None:
    page = fetch(f"{base}/etag", transport, validators=Validators(etag='"v1"\r\nX-Evil: 1'))
    assert page.status == 200
    assert site.seen("/etag")[0]["If-None-Match"] is None


# --- HTTP errors and redirects -------------------------------------------------------


def test_server_error_carries_status(base: str, transport: str) -> None:
    err = fetch_error(f"{base}/500", transport)
    assert (str(err), err.cause, err.status, err.retry_after) == ("HTTP 500", "HTTP 500", 500, None)


def test_503_retry_after_seconds_is_parsed(base: str, transport: str) -> None:
    err = fetch_error(f"{base}/503", transport)
    assert (err.status, err.retry_after) == (503, 120.0)


def test_429_retry_after_date_is_parsed(base: str, transport: str) -> None:
    err = fetch_error(f"{base}/429", transport)
    assert err.status == 429
    assert err.retry_after is not None and 80 < err.retry_after <= 90


def test_3xx_without_location_fails(base: str, transport: str) -> None:
    err = fetch_error(f"{base}/300", transport)
    assert (err.status, str(err)) == (300, "HTTP 300 without a Location to follow")


def test_redirect_chain_is_followed_to_final_url(base: str, transport: str) -> None:
    page = fetch(f"{base}/r1", transport)
    assert (page.url, page.final_url, page.text) == (f"{base}/r1", f"{base}/plain", PAGE)


def test_redirect_loop_stops_after_ten_redirects(base: str, site: Site, transport: str) -> None:
    err = fetch_error(f"{base}/loop", transport)
    assert str(err) == "too many redirects"
    assert len(site.seen("/loop")) == 11


# --- cookies -------------------------------------------------------------------------
# Kept for the Fetcher's lifetime, as a browser (or httpx.AsyncClient) keeps them: some
# sites answer a first visit with a cookie and want it back before they serve the page.


def fetch_in_turn(urls: list[str], transport: str) -> None:
    async def run() -> None:
        async with Fetcher(transport=transport) as fetcher:
            for url in urls:
                await fetcher.get(url, validators=None, timeout=5, max_bytes=CAP, user_agent="t")

    asyncio.run(run())


def test_a_cookie_set_by_a_response_is_sent_with_later_requests(
    base: str, site: Site, transport: str
) -> None:
    fetch_in_turn([f"{base}/sets-cookie", f"{base}/plain"], transport)
    assert [h["Cookie"] for h in site.seen("/sets-cookie")] == [None]
    assert [h["Cookie"] for h in site.seen("/plain")] == ["visited=yes"]


def test_a_cookie_set_by_a_redirect_is_sent_to_its_target(
    base: str, site: Site, transport: str
) -> None:
    fetch_in_turn([f"{base}/cookie-gate"], transport)
    assert [h["Cookie"] for h in site.seen("/plain")] == ["gate=passed"]


def test_a_cookie_is_not_sent_to_another_host(base: str, site: Site, transport: str) -> None:
    other = base.replace("127.0.0.1", "localhost")
    fetch_in_turn([f"{base}/sets-cookie", f"{other}/plain"], transport)
    assert [h["Cookie"] for h in site.seen("/plain")] == [None]


def test_cookies_do_not_outlive_their_fetcher(base: str, site: Site, transport: str) -> None:
    fetch_in_turn([f"{base}/sets-cookie"], transport)
    fetch_in_turn([f"{base}/plain"], transport)
    assert [h["Cookie"] for h in site.seen("/plain")] == [None]


# --- network faults ------------------------------------------------------------------


def test_connection_reset_is_reported(base: str, transport: str) -> None:
    assert str(fetch_error(f"{base}/reset", transport)) == "connection reset"


def test_connection_refused_is_reported(transport: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert str(fetch_error(f"http://127.0.0.1:{port}/", transport)) == "connection refused"


def test_untrusted_certificate_is_reported(tls_base: str, transport: str) -> None:
    err = fetch_error(f"{tls_base}/plain", transport)
    assert str(err) == "SSL certificate verification failed: self-signed certificate"


def test_stall_mid_body_times_out_in_time(base: str, transport: str) -> None:
    started = time.monotonic()
    err = fetch_error(f"{base}/stall", transport, timeout=0.5)
    assert str(err) == "timeout after 0.5s"
    assert time.monotonic() - started < 1.2


def test_trickling_body_times_out_in_time(base: str, transport: str) -> None:
    started = time.monotonic()
    err = fetch_error(f"{base}/trickle", transport, timeout=0.5)
    assert str(err) == "timeout after 0.5s"
    assert time.monotonic() - started < 1.2


def test_body_cut_short_is_reported(base: str, transport: str) -> None:
    assert str(fetch_error(f"{base}/truncated", transport)) == "connection closed mid-body"


def test_server_hanging_up_without_response_is_reported(base: str, transport: str) -> None:
    err = fetch_error(f"{base}/hang-up", transport)
    assert str(err) == "connection closed by the server"


def test_long_header_line_is_accepted(base: str, transport: str) -> None:
    assert fetch(f"{base}/long-header", transport).text == PAGE


@pytest.mark.parametrize("path", MALFORMED)
def test_malformed_response_is_a_protocol_error(base: str, transport: str, path: str) -> None:
    assert str(fetch_error(base + path, transport)).startswith("protocol error")


def test_unsupported_scheme_fails_cleanly(transport: str) -> None:
    assert str(fetch_error("ftp://127.0.0.1/x", transport)).startswith("unsupported URL")


def test_invalid_url_fails_cleanly(transport: str) -> None:
    assert str(fetch_error("http://[::1/", transport)).startswith("invalid URL")


# --- size caps -----------------------------------------------------------------------


def test_declared_length_over_cap_fails(base: str, transport: str) -> None:
    assert str(fetch_error(f"{base}/big", transport)) == f"response larger than {CAP} bytes"


def test_chunked_body_over_cap_is_cut(base: str, transport: str) -> None:
    err = fetch_error(f"{base}/big-chunked", transport)
    assert (str(err), err.status) == (f"response larger than {CAP} bytes", 200)


@pytest.mark.parametrize("path", ["/gzip-bomb", "/brotli-bomb"])
def test_compression_bomb_is_cut_without_inflating_it(base: str, transport: str, path: str) -> None:
    compressed = len(gzip_bomb() if path == "/gzip-bomb" else brotli_bomb())
    assert compressed < CAP < BOMB_SIZE
    tracemalloc.start()
    try:
        err = fetch_error(base + path, transport)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(err) == f"response larger than {CAP} bytes"
    assert peak < 4 * CAP < BOMB_SIZE


# --- content types -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "media"), [("/pdf", "application/pdf"), ("/json", "application/json")]
)
def test_non_html_type_is_refused(base: str, transport: str, path: str, media: str) -> None:
    assert str(fetch_error(base + path, transport)) == f"not an HTML page: {media}"


def test_accept_any_takes_non_html(base: str, transport: str) -> None:
    page = fetch(f"{base}/json", transport, accept_any=True)
    assert (page.text, page.content_type) == ('{"a": 1}', "application/json")


def test_text_plain_is_accepted(base: str, transport: str) -> None:
    assert fetch(f"{base}/text", transport).text == ZH


def test_missing_content_type_is_accepted(base: str, transport: str) -> None:
    page = fetch(f"{base}/untyped", transport)
    assert (page.text, page.content_type) == (PAGE, None)


def test_empty_200_is_an_empty_page(base: str, transport: str) -> None:
    page = fetch(f"{base}/empty", transport)
    assert (page.status, page.text, page.size) == (200, "", 0)
    assert page.validators.body_hash == hashlib.sha256(b"").hexdigest()


# --- charsets ------------------------------------------------------------------------


def test_gbk_page_with_meta_charset(base: str, transport: str) -> None:
    page = fetch(f"{base}/gbk-meta", transport)
    assert page.encoding == "gb18030"
    assert page.text is not None and ZH in page.text and "标题" in page.text


def test_gbk_labelled_utf8_falls_back_to_meta(base: str, transport: str) -> None:
    page = fetch(f"{base}/gbk-lie-meta", transport)
    assert page.encoding == "gb18030"
    assert page.text is not None and ZH in page.text


def test_gbk_labelled_utf8_without_meta_is_detected(base: str, transport: str) -> None:
    page = fetch(f"{base}/gbk-lie", transport)
    assert page.encoding == "gb18030"
    assert page.text is not None and ZH in page.text


def test_gb2312_label_decodes_characters_outside_gb2312(base: str, transport: str) -> None:
    page = fetch(f"{base}/gb2312-label", transport)
    assert (page.text, page.encoding) == (f"<p>{ZH}朱镕基 €</p>", "gb18030")


def test_big5_page(base: str, transport: str) -> None:
    page = fetch(f"{base}/big5", transport)
    assert (page.text, page.encoding) == (f"<p>{ZH_TW}</p>", "big5hkscs")


def test_utf8_bom_is_stripped(base: str, transport: str) -> None:
    page = fetch(f"{base}/bom", transport)
    assert (page.text, page.encoding) == (PAGE, "utf-8")


def test_invalid_utf8_bytes_are_replaced(base: str, transport: str) -> None:
    page = fetch(f"{base}/bad-utf8", transport)
    assert page.encoding == "utf-8"
    assert page.text == PAGE.replace("。", "\ufffd\ufffd(")


def test_latin1_header_on_utf8_body_is_read_as_utf8() -> None:
    assert decode_html(PAGE_BYTES, "text/html; charset=iso-8859-1") == (PAGE, "utf-8")


def test_latin1_header_on_latin1_body_is_read_as_cp1252() -> None:
    assert decode_html("café “x”".encode("cp1252"), "text/html; charset=ISO-8859-1") == (
        "café “x”",
        "cp1252",
    )


def test_bytes_to_bytes_codec_label_is_ignored() -> None:
    assert decode_html(PAGE_BYTES, "text/html; charset=base64") == (PAGE, "utf-8")


def test_utf7_label_is_refused() -> None:
    assert decode_html(b"+ADw-script+AD4-", "text/html; charset=utf-7") == (
        "+ADw-script+AD4-",
        "utf-8",
    )


# --- concurrency ---------------------------------------------------------------------


def concurrent_max(
    base: str, site: Site, transport: str, *, per_host: int, max_connections: int
) -> int:
    async def run() -> None:
        async with Fetcher(
            per_host=per_host, max_connections=max_connections, transport=transport
        ) as fetcher:
            await asyncio.gather(
                *(
                    fetcher.get(
                        f"{base}/slow", validators=None, timeout=5, max_bytes=CAP, user_agent="t"
                    )
                    for _ in range(6)
                )
            )

    asyncio.run(run())
    assert len(site.seen("/slow")) == 6
    return site.max_in_flight


def test_at_most_per_host_requests_in_flight(base: str, site: Site, transport: str) -> None:
    assert concurrent_max(base, site, transport, per_host=2, max_connections=64) == 2


def test_at_most_max_connections_in_flight(base: str, site: Site, transport: str) -> None:
    assert concurrent_max(base, site, transport, per_host=10, max_connections=3) == 3


# --- pure helpers --------------------------------------------------------------------


def test_retry_after_delta_seconds() -> None:
    assert parse_retry_after(" 42 ") == 42.0


def test_retry_after_http_date() -> None:
    now = datetime(2024, 5, 13, 12, 0, tzinfo=UTC)
    assert parse_retry_after("Mon, 13 May 2024 12:02:00 GMT", now) == 120.0


def test_retry_after_in_the_past_is_zero() -> None:
    now = datetime(2024, 5, 13, 12, 0, tzinfo=UTC)
    assert parse_retry_after("Mon, 13 May 2024 11:00:00 GMT", now) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "１２"])
def test_retry_after_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value) is None


def test_unknown_transport_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown transport"):
        Fetcher(transport="curl")
