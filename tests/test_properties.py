"""Property tests: whatever an index page holds, extraction does not raise and the feeds
built from it are well-formed XML that carry every title and link exactly.

Pages are built from entry-like fragments around random text drawn from all of Unicode
plus the characters that break naive feed writers: C0 controls, U+FFFE/U+FFFF, lone
surrogates (raw and as numeric references), CDATA terminators and CJK.
"""

from __future__ import annotations

import html as htmllib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from feedwatch import clean, detect, extract, feeds, poll
from feedwatch import config as config_mod
from feedwatch.models import Entry, RawEntry, Selectors
from tests.test_faults import ATOM, assert_no_active_markup

BASE = "https://example.org/blog/"
SELECTORS = Selectors(entry="div.post", title="h2 a", link="h2 a", teaser="div.teaser")
META = feeds.FeedMeta(
    name="prop",
    title="Property feed",
    site_url=BASE,
    base_url="http://127.0.0.1:8080/",
    updated=datetime(2024, 5, 1, tzinfo=UTC),
)
T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
# What XML 1.0 cannot carry (feeds.py also drops C1 controls and U+FDD0..U+FDEF).
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
NOT_IN_FEEDS = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]"
)

HOSTILE_CHARS = [
    *map(chr, range(0x20)),
    "\x7f",
    "\x85",
    "\u00a0",
    "\u2028",
    "\ufdd0",
    "\ufffe",
    "\uffff",
    "\ud800",
    "\udfff",
    "\ufffd",
    "]]>",
    "<",
    ">",
    "&",
    '"',
    "'",
    "科学空间",
    "變分",
    "𝔸",
]
HOSTILE_MARKUP = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.example.com/x.js></SCRIPT>",
    '<iframe src="https://evil.example.com/"></iframe>',
    '<img src="x.png" onerror="alert(1)">',
    '<a href="javascript:alert(1)">js</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD4=">data</a>',
    '<svg onload="alert(1)"><circle/></svg>',
    '<object data="x.swf"></object>',
    "<style>body{display:none}</style>",
    '<p style="x" onclick="y">p</p>',
    "<![CDATA[ ]]> ]]>",
    "<!-- ]]> -->",
    "&#xD800;&#xDFFF;&#55357;",
    "&#0;&#1;&#x0B;&#x1F;&#x7F;&#x85;",
    "&#xFFFE;&#xFFFF;&#xFDD0;",
    "<div><div><b><i>unclosed",
    "</div></div></body>",
    "<table><tr><td>cell",
    '<a href="/relative/path">rel</a>',
    '<img src="//cdn.example/i.png" alt="图">',
]

text = st.lists(
    st.one_of(
        st.characters(),
        st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
        st.sampled_from(HOSTILE_CHARS),
    ),
    max_size=30,
).map("".join)
# Markup around escaped text keeps the page's entry structure; raw text may open a comment
# or a <textarea> that swallows the entries after it, which only "never raises" can test.
tame_markup = st.lists(
    st.one_of(st.sampled_from(HOSTILE_MARKUP), text.map(htmllib.escape)), max_size=6
).map("".join)
markup = st.lists(
    st.one_of(st.sampled_from(HOSTILE_MARKUP), text.map(htmllib.escape), text), max_size=6
).map("".join)


@st.composite
def posts(draw: st.DrawFn, *, raw: bool = True) -> tuple[str, list[tuple[str, str]]]:
    """A page of entry-like blocks, and each block's (title text, href text) as written."""
    around = markup if raw else tame_markup
    count = draw(st.integers(min_value=0, max_value=6))
    blocks: list[str] = []
    written: list[tuple[str, str]] = []
    for i in range(count):
        title = draw(text)
        href = f"/p/{i}/" + draw(text)
        written.append((title, href))
        blocks.append(
            f'<div class="post"><h2><a href="{htmllib.escape(href)}">{htmllib.escape(title)}</a>'
            f'</h2><div class="teaser">{draw(around)}</div>{draw(around)}</div>'
        )
    noise = draw(around)
    return f"<html><head><title>{noise}</title></head><body>{''.join(blocks)}</body></html>", (
        written
    )


def normalised(title: str) -> str | None:
    """The title text extraction keeps: XML-illegal characters gone, whitespace collapsed,
    cut to MAX_TITLE with an ellipsis; None when nothing is left."""
    text = " ".join(NOT_XML.sub("", title).split())
    if len(text) > extract.MAX_TITLE:
        text = text[: extract.MAX_TITLE - 1].rstrip() + "…"
    return text or None


SOURCE = config_mod.from_dict(
    {"sources": [{"name": "prop", "url": "https://example.com/"}]}, Path("config.toml")
).sources[0]


def as_entry(raw: RawEntry, n: int) -> Entry:
    """The entry poll builds from a raw entry, first seen n minutes before T0."""
    at = T0 - timedelta(minutes=n)
    return poll._entry(SOURCE, raw, None, at, "f" * 64, None, at)


def in_feed(text: str) -> str:
    return " ".join(NOT_IN_FEEDS.sub("", text).split())


def parsed_items(entries: list[Entry]) -> dict[str, list[tuple[str, str, str]]]:
    """(title, link, html) of each item of each format, read strictly."""
    rss_bytes = feeds.render_rss(META, entries)
    atom_bytes = feeds.render_atom(META, entries)
    for data in (rss_bytes, atom_bytes):
        parsed = feedparser.parse(data)
        assert parsed.bozo == 0, parsed.get("bozo_exception")
    rss = etree.fromstring(rss_bytes)
    atom = etree.fromstring(atom_bytes)
    items = json.loads(feeds.render_json(META, entries))["items"]
    return {
        "rss": [
            (i.findtext("title"), i.findtext("link"), i.findtext("description") or "")
            for i in rss.iter("item")
        ],
        "atom": [
            (
                e.findtext(f"{ATOM}title"),
                e.find(f"{ATOM}link").get("href"),
                e.findtext(f"{ATOM}summary") or "",
            )
            for e in atom.iter(f"{ATOM}entry")
        ],
        "json": [(i["title"], i["url"], i["content_html"]) for i in items],
    }


FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(page=posts(raw=False))
def test_extraction_keeps_every_title_and_link_exactly(page: tuple[str, list]) -> None:
    html, written = page
    found = extract.extract(html, BASE, SELECTORS)
    expected: dict[str, str | None] = {}
    for title, href in written:
        link = clean.canonical_url(NOT_XML.sub("", href), BASE)
        if link is not None and link != BASE and link not in expected:
            expected[link] = normalised(title)
    assert [(e.link, e.title) for e in found.entries] == list(expected.items())
    for entry in found.entries:
        assert not NOT_XML.search(entry.teaser_html + entry.teaser_text)
        assert_no_active_markup(entry.teaser_html)


@FAST
@given(page=posts())
def test_rss_atom_and_json_parse_and_round_trip_titles_and_links(page: tuple[str, list]) -> None:
    html, _ = page
    raws = extract.extract(html, BASE, SELECTORS).entries
    entries = [as_entry(raw, n) for n, raw in enumerate(raws)]
    expected = [(in_feed(e.title) or in_feed(e.link), in_feed(e.link)) for e in entries]
    for kind, items in parsed_items(entries).items():
        assert [(title, link) for title, link, _ in items] == expected, kind
        for _, _, item_html in items:
            assert_no_active_markup(item_html)


@FAST
@given(page=st.one_of(markup, posts().map(lambda p: p[0])))
def test_detection_and_extraction_never_raise_on_arbitrary_markup(page: str) -> None:
    tree = extract.parse(page)
    found = detect.detect(page, BASE, tree=tree)
    selectors = found.selectors if found is not None else SELECTORS
    for raw in extract.extract(page, BASE, selectors, tree=tree).entries:
        assert raw.link.startswith(("http://", "https://"))
        assert_no_active_markup(raw.teaser_html)


@FAST
@given(
    fields=st.lists(st.tuples(text, text, markup, st.one_of(st.none(), text)), max_size=5),
)
def test_feeds_of_any_stored_strings_are_well_formed(
    fields: list[tuple[str, str, str, str | None]],
) -> None:
    """Entries reach the feed writer from the store and detail pages too: whatever strings
    they hold, every format still parses."""
    entries = [
        Entry(
            source="prop",
            link=f"https://example.org/{n}/{path}",
            title=title,
            title_is_fallback=False,
            teaser_html=teaser,
            teaser_text=teaser,
            author=author,
            published=T0,
            date_exact=True,
            first_seen=T0,
            last_seen=T0,
            updated=T0,
            fingerprint="f" * 64,
            content_html=teaser or None,
        )
        for n, (title, path, teaser, author) in enumerate(fields)
    ]
    items = parsed_items(entries)
    assert len(items["rss"]) == len(items["atom"]) == len(items["json"]) == len(entries)
    for kind in ("rss", "atom", "json"):
        for title, _, _ in items[kind]:
            assert title and not NOT_IN_FEEDS.search(title)
