"""The feed server: content types, validators, gzip, HEAD, path safety, index and health pages."""

from __future__ import annotations

import asyncio
import gzip
import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import uvloop
from selectolax.lexbor import LexborHTMLParser
from starlette.applications import Starlette

from feedwatch.serve import FeedListing, create_app, make_server

pytestmark = pytest.mark.anyio

ATOM = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<feed xmlns="http://www.w3.org/2005/Atom"><id>https://kexue.fm/</id>'
    "<title>科学空间|Scientific Spaces</title><updated>2024-01-12T08:00:00+08:00</updated>"
    + "".join(
        f"<entry><id>https://kexue.fm/archives/{n}</id><title>第{n}篇</title>"
        f"<updated>2024-01-12T08:00:00+08:00</updated>"
        f'<summary type="html">&lt;p&gt;teaser {n} $x^2$&lt;/p&gt;</summary></entry>'
        for n in range(9580, 9590)
    )
    + "</feed>"
).encode()
RSS = (
    '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>科学空间</title>'
    "<link>https://kexue.fm/</link><description>kexue</description>"
    + "".join(
        f"<item><title>第{n}篇</title><link>https://kexue.fm/archives/{n}</link></item>"
        for n in range(9580, 9590)
    )
    + "</channel></rss>"
).encode()
JSON_FEED = (
    '{"version": "https://jsonfeed.org.test/version/1.1", "title": "科学空间", "items": ['
    + ", ".join(
        f'{{"id": "https://kexue.fm/archives/{n}", "title": "第{n}篇"}}' for n in range(9580, 9590)
    )
    + "]}"
).encode()
OPML = (
    '<?xml version="1.0" encoding="utf-8"?>\n<opml version="2.0"><head><title>feedwatch</title>'
    '</head><body><outline type="rss" text="科学空间" xmlUrl="http://127.0.0.1:8080/kexue.atom"/>'
    "</body></opml>"
).encode()
FILES = {"kexue.atom": ATOM, "kexue.rss": RSS, "kexue.json": JSON_FEED, "index.opml": OPML}
SECRET = b"secret = 'do not serve me'\n"
HOSTILE = '<script>alert("x")</script>" onmouseover="steal()'
UPDATED = datetime(2024, 1, 12, 8, 30, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    """Feeds in output_dir, and secrets next to it that a path trick might reach."""
    out = tmp_path / "feeds"
    out.mkdir()
    for name, data in FILES.items():
        (out / name).write_bytes(data)
    (tmp_path / "config.toml").write_bytes(SECRET)
    (tmp_path / "secret.atom").write_bytes(SECRET)
    return out


def listings_of(rows: Sequence[FeedListing]) -> Callable[[], Sequence[FeedListing]]:
    return lambda: rows


def default_health() -> Mapping[str, Any]:
    return {"ok": True}


@pytest.fixture
def app(output_dir: Path) -> Starlette:
    rows = [FeedListing("kexue", "科学空间|Scientific Spaces", UPDATED, 10, None)]
    return create_app(output_dir, listings=listings_of(rows), health=default_health)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://feeds.test"
    ) as c:
        yield c


async def raw_request(
    app: Starlette, raw_path: str, method: str = "GET", headers: Sequence[tuple[str, str]] = ()
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """A request whose path reaches the app exactly as uvicorn decodes it (percent-decoded,
    dot segments kept), which httpx cannot send because it normalises `..` away; and whose
    response body is seen as the app sent it, which httpx hides for HEAD."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"feeds.test")] + [(k.encode(), v.encode()) for k, v in headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    messages: list[Mapping[str, Any]] = []

    async def receive() -> Mapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Mapping[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return messages[0]["status"], list(messages[0]["headers"]), body


async def raw_get(app: Starlette, raw_path: str) -> tuple[int, bytes]:
    status, _, body = await raw_request(app, raw_path)
    return status, body


@pytest.mark.parametrize(
    ("path", "content_type", "data"),
    [
        ("/kexue.rss", "application/rss+xml; charset=utf-8", RSS),
        ("/kexue.atom", "application/atom+xml; charset=utf-8", ATOM),
        ("/kexue.json", "application/feed+json; charset=utf-8", JSON_FEED),
        ("/index.opml", "text/x-opml; charset=utf-8", OPML),
    ],
)
async def test_feed_file_served_with_its_content_type(
    client: httpx.AsyncClient, path: str, content_type: str, data: bytes
) -> None:
    r = await client.get(path, headers={"accept-encoding": "identity"})
    assert r.status_code == 200
    assert r.headers["content-type"] == content_type
    assert r.content == data
    assert r.headers["content-length"] == str(len(data))


async def test_feed_has_strong_etag_and_last_modified_of_the_file(
    client: httpx.AsyncClient, output_dir: Path
) -> None:
    r = await client.get("/kexue.atom")
    etag = r.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10
    mtime = os.stat(output_dir / "kexue.atom").st_mtime
    assert r.headers["last-modified"] == formatdate(mtime, usegmt=True)
    assert r.headers["cache-control"] == "max-age=300"


async def test_if_none_match_with_current_etag_gets_304_without_body(
    client: httpx.AsyncClient,
) -> None:
    etag = (await client.get("/kexue.atom")).headers["etag"]
    r = await client.get("/kexue.atom", headers={"if-none-match": etag})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == etag
    assert "content-length" not in r.headers


@pytest.mark.parametrize(
    "template",
    ['"stale", {etag}', "W/{etag}", '"a", W/"b" ,{etag}', "*"],
)
async def test_if_none_match_list_weak_and_star_get_304(
    client: httpx.AsyncClient, template: str
) -> None:
    etag = (await client.get("/kexue.rss")).headers["etag"]
    r = await client.get("/kexue.rss", headers={"if-none-match": template.format(etag=etag)})
    assert r.status_code == 304


async def test_if_none_match_with_stale_etag_gets_full_body(client: httpx.AsyncClient) -> None:
    r = await client.get("/kexue.atom", headers={"if-none-match": '"stale-etag"'})
    assert r.status_code == 200
    assert r.content == ATOM


@pytest.mark.parametrize("offset", [0, 3600])
async def test_if_modified_since_not_before_last_modified_gets_304(
    client: httpx.AsyncClient, output_dir: Path, offset: int
) -> None:
    mtime = os.stat(output_dir / "kexue.atom").st_mtime
    since = formatdate(mtime + offset, usegmt=True)
    r = await client.get("/kexue.atom", headers={"if-modified-since": since})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"]


async def test_if_modified_since_before_last_modified_gets_full_body(
    client: httpx.AsyncClient, output_dir: Path
) -> None:
    mtime = os.stat(output_dir / "kexue.atom").st_mtime
    r = await client.get(
        "/kexue.atom", headers={"if-modified-since": formatdate(mtime - 60, usegmt=True)}
    )
    assert r.status_code == 200
    assert r.content == ATOM


async def test_if_none_match_overrides_if_modified_since(
    client: httpx.AsyncClient, output_dir: Path
) -> None:
    mtime = os.stat(output_dir / "kexue.atom").st_mtime
    headers = {
        "if-none-match": '"stale-etag"',
        "if-modified-since": formatdate(mtime + 3600, usegmt=True),
    }
    r = await client.get("/kexue.atom", headers=headers)
    assert r.status_code == 200


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
async def test_head_has_the_get_headers_and_no_body(app: Starlette, encoding: str) -> None:
    accept = [("accept-encoding", encoding)]
    get_status, get_headers, get_body = await raw_request(app, "/kexue.atom", "GET", accept)
    head_status, head_headers, head_body = await raw_request(app, "/kexue.atom", "HEAD", accept)
    assert get_status == head_status == 200
    assert head_headers == get_headers
    assert (b"content-length", str(len(get_body)).encode()) in head_headers
    assert len(get_body) > 0
    assert head_body == b""


async def test_gzip_when_client_accepts_it(client: httpx.AsyncClient) -> None:
    headers = {"accept-encoding": "br;q=1, gzip;q=0.5"}
    async with client.stream("GET", "/kexue.atom", headers=headers) as r:
        raw = b"".join([chunk async for chunk in r.aiter_raw()])
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers["vary"] == "Accept-Encoding"
    assert len(raw) == int(r.headers["content-length"]) < len(ATOM)
    assert gzip.decompress(raw) == ATOM


@pytest.mark.parametrize("accept", ["identity", "gzip;q=0", "br", "*;q=0"])
async def test_no_gzip_when_client_does_not_accept_it(
    client: httpx.AsyncClient, accept: str
) -> None:
    r = await client.get("/kexue.atom", headers={"accept-encoding": accept})
    assert "content-encoding" not in r.headers
    assert r.headers["vary"] == "Accept-Encoding"
    assert r.content == ATOM


async def test_gzip_etag_also_gets_304(client: httpx.AsyncClient) -> None:
    gz = await client.get("/kexue.json", headers={"accept-encoding": "gzip"})
    plain = await client.get("/kexue.json", headers={"accept-encoding": "identity"})
    assert gz.headers["etag"] != plain.headers["etag"]
    for etag in (gz.headers["etag"], plain.headers["etag"]):
        r = await client.get(
            "/kexue.json", headers={"accept-encoding": "gzip", "if-none-match": etag}
        )
        assert r.status_code == 304
        assert r.headers["etag"] == gz.headers["etag"]


async def test_raw_request_helper_reaches_the_feed(app: Starlette) -> None:
    assert await raw_get(app, "/kexue.atom") == (200, ATOM)


@pytest.mark.parametrize(
    "raw_path",
    [
        "/../config.toml",
        "/../secret.atom",
        "/%2e%2e/config.toml",
        "/%2E%2E/secret.atom",
        "/..%2fconfig.toml",
        "/..%2Fsecret.atom",
        "/%2e%2e%2fsecret.atom",
        "//etc/passwd",
        "/etc/passwd",
        "/%2fetc%2fpasswd",
        "/..",
        "/./kexue.atom/../../secret.atom",
        "/kexue.atom%00.txt",
    ],
)
async def test_traversal_attempts_get_404(app: Starlette, raw_path: str) -> None:
    status, body = await raw_get(app, raw_path)
    assert status == 404
    assert b"secret" not in body and b"root:" not in body


async def test_absolute_path_to_a_real_file_gets_404(app: Starlette, output_dir: Path) -> None:
    outside = output_dir.parent / "secret.atom"
    status, body = await raw_get(app, str(outside))
    assert status == 404
    assert SECRET not in body


async def test_symlink_pointing_outside_gets_404(
    client: httpx.AsyncClient, output_dir: Path
) -> None:
    (output_dir / "evil.atom").symlink_to(output_dir.parent / "secret.atom")
    r = await client.get("/evil.atom")
    assert r.status_code == 404
    assert SECRET not in r.content


@pytest.mark.parametrize(
    "name", ["config.toml", "Kexue.atom", ".hidden.atom", "kexue.atom.tmp", "kexue.xml", "a b.rss"]
)
async def test_file_without_a_feed_name_gets_404(
    client: httpx.AsyncClient, output_dir: Path, name: str
) -> None:
    (output_dir / name).write_bytes(SECRET)
    r = await client.get("/" + name)
    assert r.status_code == 404
    assert SECRET not in r.content


async def test_unknown_feed_name_gets_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/nosuchsource.atom")
    assert r.status_code == 404


async def test_directory_named_like_a_feed_gets_404(
    client: httpx.AsyncClient, output_dir: Path
) -> None:
    (output_dir / "dir.atom").mkdir()
    r = await client.get("/dir.atom")
    assert r.status_code == 404


async def test_deleted_feed_gets_404_after_being_served(
    client: httpx.AsyncClient, output_dir: Path
) -> None:
    assert (await client.get("/kexue.rss")).status_code == 200
    (output_dir / "kexue.rss").unlink()
    assert (await client.get("/kexue.rss")).status_code == 404


async def test_post_to_a_feed_is_not_allowed(client: httpx.AsyncClient) -> None:
    r = await client.post("/kexue.atom", content=b"x")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"


async def test_replaced_feed_gets_a_new_etag_and_body(
    client: httpx.AsyncClient, output_dir: Path
) -> None:
    first = await client.get("/kexue.atom")
    new = ATOM.replace("第9589篇".encode(), "第9590篇".encode())
    assert len(new) == len(ATOM)
    old = os.stat(output_dir / "kexue.atom")
    tmp = output_dir / "kexue.atom.tmp"
    tmp.write_bytes(new)
    # Same size and same mtime, as two writes within one tick of a coarse clock give.
    os.utime(tmp, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(tmp, output_dir / "kexue.atom")
    r = await client.get("/kexue.atom", headers={"if-none-match": first.headers["etag"]})
    assert r.status_code == 200
    assert r.content == new
    assert r.headers["etag"] != first.headers["etag"]
    again = await client.get("/kexue.atom", headers={"if-none-match": r.headers["etag"]})
    assert again.status_code == 304


async def test_conditional_hit_does_not_open_the_file(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    etag = (await client.get("/kexue.atom", headers={"accept-encoding": "identity"})).headers[
        "etag"
    ]

    def no_open(*args: object, **kwargs: object) -> int:
        raise AssertionError("a 304 must not read the feed")

    monkeypatch.setattr("feedwatch.serve.os.open", no_open)
    r = await client.get(
        "/kexue.atom", headers={"accept-encoding": "identity", "if-none-match": etag}
    )
    assert r.status_code == 304


async def test_index_page_lists_feeds_with_autodiscovery(output_dir: Path) -> None:
    (output_dir / "other.atom").write_bytes(ATOM)
    rows = [
        FeedListing("kexue", "科学空间|Scientific Spaces", UPDATED, 10, None),
        FeedListing("other", "Other blog", None, 0, "HTTP 503 from https://other.test/"),
    ]
    app = create_app(output_dir, listings=listings_of(rows), health=default_health)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as c:
        r = await c.get("http://feeds.test/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    tree = LexborHTMLParser(r.text)
    found = {
        (n.attributes["type"], n.attributes["href"], n.attributes["title"])
        for n in tree.css('head link[rel="alternate"]')
    }
    assert found == {
        ("application/atom+xml", "/kexue.atom", "科学空间|Scientific Spaces (Atom)"),
        ("application/rss+xml", "/kexue.rss", "科学空间|Scientific Spaces (RSS)"),
        ("application/feed+json", "/kexue.json", "科学空间|Scientific Spaces (JSON Feed)"),
        ("application/atom+xml", "/other.atom", "Other blog (Atom)"),
    }
    cells = [[td.text(strip=True) for td in tr.css("td")] for tr in tree.css("tbody tr")]
    assert cells[0][:5] == ["科学空间|Scientific Spaces", "kexue", "2024-01-12 08:30 UTC", "10", ""]
    assert cells[1][:5] == ["Other blog", "other", "never", "0", rows[1].last_error]
    assert [a.attributes["href"] for a in tree.css("tbody tr")[0].css("a")] == [
        "/kexue.atom",
        "/kexue.rss",
        "/kexue.json",
    ]
    assert tree.css_first('a[href="/index.opml"]') is not None


async def test_index_page_escapes_hostile_title_and_error(output_dir: Path) -> None:
    (output_dir / "evil.atom").write_bytes(ATOM)
    rows = [FeedListing("evil", HOSTILE, UPDATED, 1, HOSTILE)]
    app = create_app(output_dir, listings=listings_of(rows), health=default_health)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as c:
        r = await c.get("http://feeds.test/")
    assert "<script>" not in r.text
    assert "&lt;script&gt;" in r.text
    tree = LexborHTMLParser(r.text)
    assert tree.css("script") == []
    assert [n.attributes for n in tree.css("[onmouseover]")] == []
    link = tree.css_first('head link[rel="alternate"]')
    assert link.attributes["title"] == HOSTILE + " (Atom)"
    assert tree.css_first("td.title").text() == HOSTILE
    assert tree.css_first("td.error").text() == HOSTILE


async def test_index_page_links_use_base_url(output_dir: Path) -> None:
    rows = [FeedListing("kexue", "K", UPDATED, 10, None)]
    app = create_app(
        output_dir,
        listings=listings_of(rows),
        health=default_health,
        base_url="https://example.org/feeds",
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as c:
        r = await c.get("http://feeds.test/")
    tree = LexborHTMLParser(r.text)
    hrefs = sorted(n.attributes["href"] for n in tree.css('head link[rel="alternate"]'))
    assert hrefs == [
        "https://example.org/feeds/kexue.atom",
        "https://example.org/feeds/kexue.json",
        "https://example.org/feeds/kexue.rss",
    ]
    assert tree.css_first('a[href="https://example.org/feeds/index.opml"]') is not None


async def test_healthz_returns_health_as_json(output_dir: Path) -> None:
    health = {
        "ok": True,
        "sources": {"kexue": {"last_poll": UPDATED, "result": "ok", "next_poll": None}},
    }
    app = create_app(output_dir, listings=listings_of([]), health=lambda: health)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as c:
        r = await c.get("http://feeds.test/healthz")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "ok": True,
        "sources": {
            "kexue": {"last_poll": "2024-01-12T08:30:00+00:00", "result": "ok", "next_poll": None}
        },
    }


async def test_make_server_serves_real_requests_and_stops_cleanly(app: Starlette) -> None:
    server = make_server(app, "127.0.0.1", 0)
    host, port = server.address
    assert port != 0
    task = asyncio.create_task(server.serve())
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as c:
        r = await c.get("/kexue.atom")
        assert r.status_code == 200
        assert r.content == ATOM
        assert r.headers["content-encoding"] == "gzip"
        head = await c.head("/kexue.atom", headers={"if-none-match": r.headers["etag"]})
        assert head.status_code == 304
        # Without TCP_NODELAY a small body waits for a delayed ACK, capping readers at ~25/s.
        connections = list(server.server_state.connections)
        assert len(connections) == 1
        sock = connections[0].transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        server.should_exit = True
        await asyncio.wait_for(task, timeout=5)
    assert task.exception() is None
    with pytest.raises(OSError), socket.create_connection((host, port), timeout=1):
        pass


def test_connections_on_the_daemons_uvloop_loop_send_without_nagle_delay(app: Starlette) -> None:
    """The daemon serves on uvloop's loop, not asyncio's: its accepted connections need
    TCP_NODELAY too, or every small response waits for a delayed ACK (~40 ms)."""

    async def accepted_nodelay() -> int:
        server = make_server(app, "127.0.0.1", 0)
        host, port = server.address
        task = asyncio.create_task(server.serve())
        try:
            async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as c:
                assert (await c.get("/kexue.atom")).status_code == 200
                (connection,) = server.server_state.connections
                sock = connection.transport.get_extra_info("socket")
                return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, timeout=5)

    assert uvloop.run(accepted_nodelay()) != 0


def test_make_server_raises_when_the_port_is_taken(app: Starlette) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            make_server(app, "127.0.0.1", port)
