"""`refresh` against a hostile or broken site: one named test per fault.

Every test runs two sources in the same refresh, a "victim" whose page misbehaves and a
"bystander" that gains one entry. For a network or HTTP fault the guarantee is that the
victim fails within its poll timeout with a clear cause, its feed files, stored entries
and page validators are exactly as before, and the bystander is written as if nothing
happened. For hostile content the entry is cleaned instead, and the feeds stay
well-formed XML that feedparser reads without complaint and that carry no executable
markup.
"""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import feedparser
import pytest
from lxml import etree
from selectolax.lexbor import LexborHTMLParser

from feedwatch import config as config_mod
from feedwatch.config import Config
from feedwatch.models import Entry, PollResult, SourceStatus, Validators
from feedwatch.poll import refresh
from feedwatch.store import Store
from tests.conftest import run_cli, write_config
from tests.site import Site, cut_off, endless, gzip_bomb, reset_connection, stall

CAP = 300_000
TIMEOUT = 1.0
SELECT = """
[sources.select]
entry = "div.post"
title = "h2 a"
link = "h2 a"
teaser = "div.teaser"
"""
SOURCES = f"""
[[sources]]
name = "victim"
url = "{{base}}/victim/"
timeout = "{TIMEOUT:g}s"
{SELECT}

[[sources]]
name = "bystander"
url = "{{base}}/bystander/"
{SELECT}
"""
ACTIVE_ELEMENTS = "script, iframe, frame, object, embed, style, form, svg, base, meta, link"
SAFE_SCHEMES = ("http://", "https://", "mailto:")
ATOM = "{http://www.w3.org/2005/Atom}"
FORMATS = ("rss", "atom", "json")


def post(slug: str, title: str, teaser: str = "<p>正文。</p>") -> str:
    return (
        f'<div class="post"><h2><a href="/p/{slug}">{title}</a></h2>'
        f'<div class="teaser">{teaser}</div></div>'
    )


def page(*posts: str, head: str = '<meta charset="utf-8">') -> str:
    return (
        f"<!doctype html><html><head>{head}<title>Index</title></head>"
        f"<body>{''.join(posts)}</body></html>"
    )


VICTIM = [post("v1", "第一篇"), post("v2", "Second post"), post("v3", "第三篇 third")]
BYSTANDER = [post("b1", "Bystander one"), post("b2", "Bystander two")]


@dataclass(frozen=True)
class Snapshot:
    """Everything a failed poll must leave exactly as it was."""

    feeds: dict[str, bytes]
    entries: dict[str, Entry]
    page_state: Validators | None


class World:
    """The two-source site and its config, already refreshed once with good pages."""

    def __init__(self, site: Site, tmp_path: Path) -> None:
        self.site = site
        self.feeds = tmp_path / "feeds"
        site.put("/victim/", page(*VICTIM))
        site.put("/bystander/", page(*BYSTANDER))
        path = write_config(tmp_path, SOURCES.format(base=site.base), f"max_bytes = {CAP}")
        self.config: Config = config_mod.load(path)
        first = self.refresh()
        assert first["victim"].ok and first["victim"].new == 3, first
        assert first["bystander"].ok and first["bystander"].new == 2, first

    def refresh(self, *names: str) -> dict[str, PollResult]:
        sources = [s for s in self.config.sources if not names or s.name in names]
        return {r.source: r for r in asyncio.run(refresh(self.config, sources))}

    def store(self) -> Store:
        return Store(self.config.state)

    def snapshot(self, name: str) -> Snapshot:
        feeds = {ext: (self.feeds / f"{name}.{ext}").read_bytes() for ext in FORMATS}
        with self.store() as store:
            url = self.site.url(f"/{name}/")
            return Snapshot(feeds, store.entries(name), store.page_state(name, url))

    def status(self, name: str) -> SourceStatus:
        with self.store() as store:
            status = store.status(name)
        assert status is not None
        return status

    def entry_link(self, slug: str) -> str:
        return self.site.url(f"/p/{slug}")


@pytest.fixture
def world(site: Site, tmp_path: Path) -> World:
    return World(site, tmp_path)


# --- checks shared by every test -------------------------------------------------------


@dataclass(frozen=True)
class FeedItem:
    title: str
    link: str
    html: str


def read_feeds(directory: Path, name: str) -> dict[str, list[FeedItem]]:
    """Each format's items, read strictly: lxml without recovery, feedparser bozo == 0."""
    out: dict[str, list[FeedItem]] = {}
    rss_bytes = (directory / f"{name}.rss").read_bytes()
    atom_bytes = (directory / f"{name}.atom").read_bytes()
    for kind, data in (("rss", rss_bytes), ("atom", atom_bytes)):
        parsed = feedparser.parse(data)
        assert parsed.bozo == 0, (kind, parsed.get("bozo_exception"))
    rss = etree.fromstring(rss_bytes)
    out["rss"] = [
        FeedItem(
            item.findtext("title") or "",
            item.findtext("link") or "",
            (item.findtext("description") or "")
            + (item.findtext("{http://purl.org/rss/1.0/modules/content/}encoded") or ""),
        )
        for item in rss.iter("item")
    ]
    atom = etree.fromstring(atom_bytes)
    out["atom"] = [
        FeedItem(
            entry.findtext(f"{ATOM}title") or "",
            entry.find(f"{ATOM}link").get("href"),
            (entry.findtext(f"{ATOM}summary") or "") + (entry.findtext(f"{ATOM}content") or ""),
        )
        for entry in atom.iter(f"{ATOM}entry")
    ]
    items = json.loads((directory / f"{name}.json").read_bytes())["items"]
    out["json"] = [FeedItem(i["title"], i["url"], i["content_html"]) for i in items]
    return out


def assert_no_active_markup(html: str) -> None:
    """What a feed reader would render from an item's HTML: nothing that runs code."""
    body = LexborHTMLParser(html).body
    if body is None:
        return
    assert body.css(ACTIVE_ELEMENTS) == [], html
    for node in body.css("*"):
        for attr, value in node.attributes.items():
            assert not attr.lower().startswith("on"), html
            if attr.lower() in ("href", "src", "action", "formaction", "srcset"):
                assert (value or "").lower().startswith(SAFE_SCHEMES), html


def safe_items(directory: Path, name: str) -> dict[str, list[FeedItem]]:
    """The feed items after asserting all three formats are well-formed and inert, and
    agree with each other on titles and links."""
    items = read_feeds(directory, name)
    for kind in FORMATS:
        for item in items[kind]:
            assert_no_active_markup(item.html)
    rss, atom, js = ([(i.title, i.link) for i in items[k]] for k in FORMATS)
    assert rss == atom == js
    return items


def assert_fails_cleanly(world: World, cause: str) -> PollResult:
    """Refresh with the victim broken: it fails in time with `cause`, changes nothing, and
    the bystander's new entry is written all the same."""
    before = world.snapshot("victim")
    world.site.put("/bystander/", page(*BYSTANDER, post("b3", "Bystander news")))
    started = time.monotonic()
    results = world.refresh()
    elapsed = time.monotonic() - started
    victim, bystander = results["victim"], results["bystander"]
    assert (victim.ok, victim.error) == (False, cause)
    assert elapsed < world.config.source("victim").poll_timeout
    assert world.snapshot("victim") == before
    status = world.status("victim")
    assert (status.ok, status.error, status.consecutive_failures) == (False, cause, 1)
    assert (bystander.ok, bystander.new) == (True, 1)
    titles = [i.title for i in safe_items(world.feeds, "bystander")["atom"]]
    assert "Bystander news" in titles
    safe_items(world.feeds, "victim")
    return victim


def refresh_victim(world: World, html: str | bytes, **route: object) -> dict[str, FeedItem]:
    """Serve `html` as the victim's page, refresh it, and return its Atom items by link."""
    world.site.put("/victim/", html, **route)
    result = world.refresh("victim")["victim"]
    assert result.ok, result.error
    return {i.link: i for i in safe_items(world.feeds, "victim")["atom"]}


# --- HTTP errors -----------------------------------------------------------------------


def test_http_500_fails_the_source_and_keeps_its_feed(world: World) -> None:
    world.site.put("/victim/", "<h1>Internal Server Error</h1>", status=500)
    assert_fails_cleanly(world, "HTTP 500")


def test_http_502_fails_the_source_and_keeps_its_feed(world: World) -> None:
    world.site.put("/victim/", "<h1>Bad Gateway</h1>", status=502)
    assert_fails_cleanly(world, "HTTP 502")


def test_http_503_with_retry_after_reports_the_delay(world: World) -> None:
    world.site.put("/victim/", "busy", status=503, headers={"Retry-After": "120"})
    assert assert_fails_cleanly(world, "HTTP 503").retry_after == 120.0


def test_http_429_with_retry_after_date_reports_the_delay(world: World) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    world.site.put("/victim/", "slow down", status=429, headers={"Retry-After": when})
    retry_after = assert_fails_cleanly(world, "HTTP 429").retry_after
    assert retry_after is not None and 80 < retry_after <= 90


def test_a_failure_is_shown_in_the_cli_summary_with_exit_1(world: World) -> None:
    world.site.put("/victim/", "down", status=503)
    result = run_cli("refresh", "--config", str(world.config.path))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "victim: error: HTTP 503",
        "bystander: 0 new, 0 updated, 2 seen",
    ]


# --- redirects -------------------------------------------------------------------------


def test_301_302_chain_is_followed_and_links_resolve_against_the_final_page(
    world: World,
) -> None:
    world.site.redirect("/moved/", "/final/index.html", 302)
    relative = '<div class="post"><h2><a href="next">Relative link</a></h2></div>'
    world.site.put("/final/index.html", page(*VICTIM, relative))
    items = refresh_victim(world, b"", status=301, headers={"Location": "/moved/"})
    assert set(items) == {world.entry_link(s) for s in ("v1", "v2", "v3")} | {
        world.site.url("/final/next")
    }


def test_redirect_loop_fails_after_ten_hops(world: World) -> None:
    world.site.redirect("/victim/", "/victim/")
    assert_fails_cleanly(world, "too many redirects")
    assert len(world.site.requests_to("/victim/")) == 1 + 11


def test_redirect_to_a_file_url_fails_without_reading_it(world: World) -> None:
    world.site.redirect("/victim/", "file:///etc/passwd")
    before = world.snapshot("victim")
    result = world.refresh("victim")["victim"]
    assert not result.ok and result.error is not None
    assert result.error.startswith("unsupported URL")
    assert world.snapshot("victim") == before


# --- network faults --------------------------------------------------------------------


def test_connection_reset_fails_the_source(world: World) -> None:
    world.site.put("/victim/", b"", fault=reset_connection)
    assert_fails_cleanly(world, "connection reset")


def test_body_stalling_past_the_timeout_fails_within_the_timeout(world: World) -> None:
    world.site.put("/victim/", b"", fault=stall(3 * TIMEOUT))
    started = time.monotonic()
    assert_fails_cleanly(world, f"timeout after {TIMEOUT:g}s")
    assert time.monotonic() - started < TIMEOUT + 1.5


def test_body_cut_off_mid_transfer_fails_the_source(world: World) -> None:
    sent = page(*VICTIM, post("v4", "never finished")).encode()[:-40]
    world.site.put("/victim/", b"", fault=cut_off(sent, len(sent) + 5000))
    assert_fails_cleanly(world, "connection closed mid-body")


# --- size caps: cut at the cap, never buffered whole -----------------------------------


def peak_memory(run: object) -> int:
    tracemalloc.start()
    try:
        run()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_body_over_the_size_cap_is_cut_with_bounded_memory(world: World) -> None:
    world.site.put("/victim/", b"", fault=endless(100 * CAP))
    peak = peak_memory(lambda: assert_fails_cleanly(world, f"response larger than {CAP} bytes"))
    assert peak < 20 * CAP < 100 * CAP


def test_declared_length_over_the_cap_is_refused_unread(world: World) -> None:
    world.site.put("/victim/", page(post("x", "big", "<p>" + "x" * 2 * CAP + "</p>")))
    assert_fails_cleanly(world, f"response larger than {CAP} bytes")


def test_gzip_bomb_is_cut_at_the_cap_with_bounded_memory(world: World) -> None:
    inflated = 200 * CAP
    bomb = gzip_bomb(inflated)
    world.site.put("/victim/", b"", fault=bomb)
    peak = peak_memory(lambda: assert_fails_cleanly(world, f"response larger than {CAP} bytes"))
    assert peak < 20 * CAP < inflated


# --- content that is not an index page ------------------------------------------------


def test_pdf_content_type_fails_as_not_html(world: World) -> None:
    world.site.put("/victim/", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", content_type="application/pdf")
    assert_fails_cleanly(world, "not an HTML page: application/pdf")


def test_json_content_type_fails_as_not_html(world: World) -> None:
    world.site.put("/victim/", b'{"posts": []}', content_type="application/json")
    assert_fails_cleanly(world, "not an HTML page: application/json")


def test_empty_200_fails_as_no_entries_and_keeps_the_feed(world: World) -> None:
    world.site.put("/victim/", b"")
    assert_fails_cleanly(world, f"selectors matched no entries on {world.site.url('/victim/')}")


def test_truncated_html_keeps_the_entries_it_completes(world: World) -> None:
    html = page(*VICTIM, post("v4", "Fourth post")).encode()
    cut = html[: html.index(b"Fourth post") + 6]
    items = refresh_victim(world, cut)
    assert set(items) == {world.entry_link(s) for s in ("v1", "v2", "v3", "v4")}
    assert items[world.entry_link("v4")].title == "Fourth"


def test_ten_thousand_levels_of_nesting_are_flattened_in_bounded_time(world: World) -> None:
    deep_teaser = "<div>" * 10_000 + "<p>deep text</p>" + "</div>" * 10_000
    unclosed = "<span><b><i>" * 3_400
    html = page(*VICTIM, post("deep", "Deep post", deep_teaser)).replace(
        "</body>", unclosed + "</body>"
    )
    started = time.monotonic()
    items = refresh_victim(world, html)
    assert time.monotonic() - started < 5
    assert set(items) == {world.entry_link(s) for s in ("v1", "v2", "v3", "deep")}
    teaser = items[world.entry_link("deep")].html
    # Beyond 100 levels markup becomes its text: no reader gets 10,000 nested tags.
    assert "deep text" in teaser and len(teaser) < 10_000


def test_entries_buried_ten_thousand_levels_deep_fail_cleanly(world: World) -> None:
    html = page("<div>" * 10_000, *VICTIM, post("v4", "Fourth"), "</div>" * 10_000)
    world.site.put("/victim/", html)
    assert_fails_cleanly(world, f"selectors matched no entries on {world.site.url('/victim/')}")


# --- charsets --------------------------------------------------------------------------


CJK_TITLES = ["變分自編碼器與擴散模型", "注意力機制的數學原理", "深度學習中的泛化"]


def cjk_page(head: str = "") -> str:
    return page(*(post(f"c{i}", t, f"<p>{t}。</p>") for i, t in enumerate(CJK_TITLES)), head=head)


def test_gbk_bytes_labelled_utf8_are_read_as_gbk(world: World) -> None:
    simplified = ["变分自编码器与扩散模型", "注意力机制的数学原理", "深度学习中的泛化"]
    html = page(*(post(f"c{i}", t, f"<p>{t}。</p>") for i, t in enumerate(simplified)), head="")
    items = refresh_victim(world, html.encode("gbk"), content_type="text/html; charset=utf-8")
    assert [items[world.entry_link(f"c{i}")].title for i in range(3)] == simplified


def test_utf8_with_bom_and_no_charset_is_read_as_utf8(world: World) -> None:
    body = b"\xef\xbb\xbf" + cjk_page().encode()
    items = refresh_victim(world, body, content_type="text/html")
    assert [items[world.entry_link(f"c{i}")].title for i in range(3)] == CJK_TITLES


def test_big5_page_is_read_as_big5(world: World) -> None:
    body = cjk_page().encode("big5")
    items = refresh_victim(world, body, content_type="text/html; charset=big5")
    assert [items[world.entry_link(f"c{i}")].title for i in range(3)] == CJK_TITLES


def test_invalid_utf8_bytes_become_replacement_characters(world: World) -> None:
    body = page(post("bad", "Bad \xff bytes", "<p>x\xc3( y</p>"), *VICTIM).encode("utf-8")
    body = body.replace("\xff".encode(), b"\xff").replace(b"\xc3\x83(", b"\xc3(")
    items = refresh_victim(world, body)
    assert items[world.entry_link("bad")].title == "Bad \ufffd bytes"
    assert len(items) == 4


# --- hostile entries: cleaned, never executable ---------------------------------------


def test_script_in_title_and_teaser_is_removed_with_its_code(world: World) -> None:
    title = "Safe title<script>alert('title')</script>"
    teaser = "<p>kept</p><script>alert('teaser')</script><SCRIPT src=//evil/x.js></SCRIPT>"
    item = refresh_victim(world, page(post("s", title, teaser)))[world.entry_link("s")]
    assert item.title == "Safe title"
    assert "kept" in item.html and "alert" not in item.html and "evil" not in item.html


def test_iframe_object_and_embed_are_removed(world: World) -> None:
    teaser = (
        '<p>kept</p><iframe src="https://evil.example.com/">fallback</iframe>'
        '<object data="x.swf"></object><embed src="x.swf">'
    )
    item = refresh_victim(world, page(post("f", "Frames", teaser)))[world.entry_link("f")]
    assert "kept" in item.html and "evil" not in item.html and "fallback" not in item.html


def test_event_handler_attributes_are_removed(world: World) -> None:
    teaser = (
        '<p onclick="steal()">kept</p><img src="/i.png" onerror="steal()">'
        '<a href="/x" onmouseover="steal()">link</a><svg onload="steal()"></svg>'
    )
    item = refresh_victim(world, page(post("h", "Handlers", teaser)))[world.entry_link("h")]
    assert "steal" not in item.html
    assert f'src="{world.site.url("/i.png")}"' in item.html


@pytest.mark.parametrize(
    "href",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        " java\tscript:alert(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "vbscript:msgbox(1)",
    ],
)
def test_javascript_and_data_urls_are_removed_from_teasers(world: World, href: str) -> None:
    teaser = f'<p>kept <a href="{href}">click</a></p><img src="{href}">'
    item = refresh_victim(world, page(post("u", "URLs", teaser)))[world.entry_link("u")]
    assert "kept" in item.html and "click" in item.html
    assert "alert" not in item.html and "base64" not in item.html and "msgbox" not in item.html


def test_entry_whose_link_is_javascript_is_skipped(world: World) -> None:
    evil = '<div class="post"><h2><a href="javascript:alert(1)">Evil</a></h2></div>'
    items = refresh_victim(world, page(*VICTIM, evil))
    assert set(items) == {world.entry_link(s) for s in ("v1", "v2", "v3")}


def test_cdata_terminator_in_title_and_teaser_round_trips(world: World) -> None:
    html = page(post("c", "a ]]> b &lt;![CDATA[ c", "<p>x ]]&gt; y</p><!--]]>-->"))
    item = refresh_victim(world, html)[world.entry_link("c")]
    assert item.title == "a ]]> b <![CDATA[ c"
    assert "x ]]&gt; y" in item.html


def test_c0_control_characters_raw_and_as_entities_are_removed(world: World) -> None:
    raw = "".join(chr(c) for c in range(0x20) if chr(c) not in "\t\n\r")
    entities = "".join(f"&#{c};" for c in range(1, 0x20)) + "&#x7f;"
    html = page(post("c0", f"Con{raw}trol{entities}s", f"<p>te{raw}xt{entities}</p>"))
    item = refresh_victim(world, html)[world.entry_link("c0")]
    assert item.title.replace(" ", "") == "Controls"
    assert "text" in LexborHTMLParser(item.html).text().replace(" ", "")


def test_fffe_ffff_and_fdd0_noncharacters_are_removed(world: World) -> None:
    html = page(post("nc", "A\ufffeB\uffffC&#xFFFE;&#xFFFF;&#xFDD0;D", "<p>E\ufffe&#xFFFF;F</p>"))
    item = refresh_victim(world, html)[world.entry_link("nc")]
    assert item.title == "ABCD"
    assert "EF" in item.html


def test_lone_surrogates_via_numeric_entities_do_not_break_store_or_feeds(world: World) -> None:
    html = page(post("sur", "A&#xD800;B&#xDFFF;C&#55357;D", "<p>E&#xDC00;F</p>"), *VICTIM)
    items = refresh_victim(world, html)
    title = items[world.entry_link("sur")].title
    assert title.replace("\ufffd", "") == "ABCD"
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in title)
    with world.store() as store:
        assert store.check() == "ok"


def test_a_100kb_title_is_cut_and_the_feed_stays_valid(world: World) -> None:
    huge = "長" * 50_000 + "x" * 50_000
    item = refresh_victim(world, page(post("long", huge)))[world.entry_link("long")]
    assert item.title == "長" * 299 + "…"
    assert (world.feeds / "victim.atom").stat().st_size < 20_000


def test_hostile_article_page_is_sanitized_and_flattened_in_bounded_time(
    site: Site, tmp_path: Path
) -> None:
    body = (
        "<p>The article body, long enough to be taken for one.</p>"
        '<script>alert(1)</script><iframe src="https://evil.example.com/"></iframe>'
        '<img src="/i.png" onerror="steal()"><a href="javascript:alert(1)">js</a>'
    )
    deep = "<div>" * 10_000 + body + "</div>" * 10_000
    site.put("/articles/", page(post("a1", "Full text")))
    site.put("/p/a1", f"<html><body><article><h1>Full text</h1>{deep}</article></body></html>")
    source = f"""
[[sources]]
name = "articles"
url = "{site.url("/articles/")}"
content = "full"
content_selector = "article"
{SELECT}
"""
    config = config_mod.load(write_config(tmp_path, source))
    started = time.monotonic()
    [result] = asyncio.run(refresh(config, config.sources))
    assert time.monotonic() - started < 5
    assert (result.ok, result.new) == (True, 1), result.error
    [item] = safe_items(config.output_dir, "articles")["atom"]
    assert "The article body" in item.html and "alert" not in item.html


def test_zero_config_page_of_ten_thousand_nested_links_ends_in_bounded_time(
    site: Site, tmp_path: Path
) -> None:
    chain = "".join(f'<div><a href="/x/{i}">link {i}</a>' for i in range(10_000))
    site.put("/auto/", f"<html><body>{chain}</body></html>")
    source = f'[[sources]]\nname = "auto"\nurl = "{site.url("/auto/")}"\n'
    config = config_mod.load(write_config(tmp_path, source))
    started = time.monotonic()
    [result] = asyncio.run(refresh(config, config.sources))
    assert time.monotonic() - started < 5
    assert result.error == (
        f"no entries found on {site.url('/auto/')} (auto-detection found nothing)"
    )
