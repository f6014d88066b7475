"""Feeds: valid RSS 2.0 / Atom 1.0 / JSON Feed 1.1 / OPML, stable bytes, atomic writes.

feedparser's bozo flag only catches malformed XML, so the required elements
and date formats of each format are checked explicitly with ElementTree.
"""

from __future__ import annotations

import dataclasses
import errno
import html
import io
import json
import os
import re
import shutil
import stat
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import feedparser
import pytest

from feedwatch import feeds
from feedwatch.feeds import (
    FeedMeta,
    render_atom,
    render_json,
    render_opml,
    render_rss,
    write_feeds,
    write_if_changed,
)
from feedwatch.models import Entry

FIXTURES = Path(__file__).parent / "fixtures"
SHANGHAI = ZoneInfo("Asia/Shanghai")
BASE_URL = "http://127.0.0.1:8080/"
ATOM = "{http://www.w3.org/2005/Atom}"
CONTENT_ENCODED = "{http://purl.org/rss/1.0/modules/content/}encoded"
DC_CREATOR = "{http://purl.org/dc/elements/1.1/}creator"
RFC_3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
RFC_822 = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}$"
)
FIRST_SEEN = datetime(2024, 5, 14, 9, 30, 15, 123456, tzinfo=UTC)
ALL_FORMATS = ("rss", "atom", "json")
NOBODY = 65534


def make_entry(n: int, **changes: object) -> Entry:
    published = datetime(2024, 5, 13, 8, 0, tzinfo=SHANGHAI) - timedelta(days=n)
    entry = Entry(
        source="kexue",
        link=f"https://kexue.fm/archives/{1000 + n}",
        title=f"第{n}篇: 熵不变性 $\\log n$",
        title_is_fallback=False,
        teaser_html=f'<p>Teaser {n} with $\\log n$ and <a href="https://kexue.fm/x">link</a>.</p>',
        teaser_text=f"Teaser {n} with $\\log n$ and link.",
        author=None,
        published=published,
        date_exact=True,
        first_seen=FIRST_SEEN,
        last_seen=FIRST_SEEN,
        updated=FIRST_SEEN,
        fingerprint=f"fp{n}",
    )
    return dataclasses.replace(entry, **changes)


def make_meta(**changes: object) -> FeedMeta:
    meta = FeedMeta(
        name="kexue",
        title="科学空间|Scientific Spaces",
        site_url="https://kexue.fm/",
        base_url=BASE_URL,
        updated=datetime(2024, 5, 14, 9, 30, 15, tzinfo=UTC),
        description="渴望成为一个小飞侠",
    )
    return dataclasses.replace(meta, **changes)


def truth_entries() -> list[Entry]:
    """Every distinct fixture entry, newest first, as the store would hand them over."""
    truth = json.loads((FIXTURES / "truth.json").read_text(encoding="utf-8"))
    by_link: dict[str, Entry] = {}
    for page in truth["pages"].values():
        for item in page["entries"]:
            if item["link"] in by_link:
                continue
            published = datetime.fromisoformat(item["date_full"]).replace(tzinfo=SHANGHAI)
            blocks = item["teaser_blocks"]
            by_link[item["link"]] = make_entry(
                0,
                link=item["link"],
                title=item["title"] or item["teaser_first_sentence"][:30] + "…",
                title_is_fallback=item["title"] is None,
                teaser_html="".join(f"<p>{html.escape(b, quote=False)}</p>" for b in blocks),
                teaser_text=" ".join(blocks),
                author=item["author"],
                published=published,
            )
    return sorted(by_link.values(), key=lambda e: e.published, reverse=True)


def render(kind: str, meta: FeedMeta, entries: list[Entry]) -> bytes:
    return {"rss": render_rss, "atom": render_atom, "json": render_json}[kind](meta, entries)


def listed_links(kind: str, data: bytes) -> list[str]:
    if kind == "json":
        return [item["url"] for item in json.loads(data)["items"]]
    root = ET.fromstring(data)
    if kind == "rss":
        return [item.findtext("link") for item in root.iter("item")]
    return [e.find(f"{ATOM}link").get("href") for e in root.iter(f"{ATOM}entry")]


def listed_titles(kind: str, data: bytes) -> list[str]:
    if kind == "json":
        return [item["title"] for item in json.loads(data)["items"]]
    root = ET.fromstring(data)
    if kind == "rss":
        return [item.findtext("title") for item in root.iter("item")]
    return [e.findtext(f"{ATOM}title") for e in root.iter(f"{ATOM}entry")]


def rfc3339(text: str | None) -> datetime:
    assert text is not None and RFC_3339.match(text), text
    return datetime.fromisoformat(text)


def rfc822(text: str | None) -> datetime:
    assert text is not None and RFC_822.match(text), text
    return parsedate_to_datetime(text)


def leftover_temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# --- RSS 2.0 ---------------------------------------------------------------


def test_rss_has_required_channel_elements_and_self_link() -> None:
    meta = make_meta()
    data = render_rss(meta, [make_entry(0), make_entry(1)])

    assert feedparser.parse(data).bozo == 0
    root = ET.fromstring(data)
    assert root.tag == "rss" and root.get("version") == "2.0"
    channel = root.find("channel")
    assert channel.findtext("title") == "科学空间|Scientific Spaces"
    assert channel.findtext("link") == "https://kexue.fm/"
    assert channel.findtext("description") == "渴望成为一个小飞侠"
    assert channel.findtext("generator") == "feedwatch"
    assert rfc822(channel.findtext("lastBuildDate")) == meta.updated
    self_links = [ln for ln in channel.findall(f"{ATOM}link") if ln.get("rel") == "self"]
    assert [ln.get("href") for ln in self_links] == [f"{BASE_URL}kexue.rss"]
    assert self_links[0].get("type") == "application/rss+xml"


def test_rss_items_have_permalink_guid_link_title_and_rfc822_pubdate() -> None:
    entries = [make_entry(0), make_entry(1), make_entry(2)]
    items = ET.fromstring(render_rss(make_meta(), entries)).findall("channel/item")

    assert len(items) == 3
    for item, entry in zip(items, entries, strict=True):
        guid = item.find("guid")
        assert guid.text == entry.link and guid.get("isPermaLink") == "true"
        assert item.findtext("link") == entry.link
        assert item.findtext("title") == entry.title
        assert rfc822(item.findtext("pubDate")) == entry.published
        assert item.findtext("description") == entry.teaser_html


def test_rss_channel_description_falls_back_to_title() -> None:
    data = render_rss(make_meta(description=""), [make_entry(0)])

    channel = ET.fromstring(data).find("channel")
    assert channel.findtext("description") == "科学空间|Scientific Spaces"


def test_rss_author_is_dc_creator_not_an_invalid_author_element() -> None:
    data = render_rss(make_meta(), [make_entry(0, author="苏剑林"), make_entry(1)])

    first, second = ET.fromstring(data).findall("channel/item")
    assert first.findtext(DC_CREATOR) == "苏剑林"
    assert first.find("author") is None
    assert second.find(DC_CREATOR) is None


def test_rss_full_content_goes_to_content_encoded_and_teaser_stays_description() -> None:
    entry = make_entry(0, content_html="<p>Full <em>text</em> $x^2$</p>")

    item = ET.fromstring(render_rss(make_meta(), [entry])).find("channel/item")
    assert item.findtext("description") == entry.teaser_html
    assert item.findtext(CONTENT_ENCODED) == "<p>Full <em>text</em> $x^2$</p>"


# --- Atom 1.0 --------------------------------------------------------------


def test_atom_has_required_feed_elements() -> None:
    meta = make_meta()
    data = render_atom(meta, [make_entry(0), make_entry(1)])

    assert feedparser.parse(data).bozo == 0
    feed = ET.fromstring(data)
    assert feed.tag == f"{ATOM}feed"
    assert feed.findtext(f"{ATOM}id") == f"{BASE_URL}kexue.atom"
    assert feed.findtext(f"{ATOM}title") == "科学空间|Scientific Spaces"
    assert rfc3339(feed.findtext(f"{ATOM}updated")) == meta.updated
    assert feed.findtext(f"{ATOM}author/{ATOM}name") == "科学空间|Scientific Spaces"
    assert feed.findtext(f"{ATOM}generator") == "feedwatch"
    links = {ln.get("rel"): ln.get("href") for ln in feed.findall(f"{ATOM}link")}
    assert links == {"self": f"{BASE_URL}kexue.atom", "alternate": "https://kexue.fm/"}


def test_atom_entries_have_stable_id_dates_and_html_summary() -> None:
    entries = [make_entry(0), make_entry(1, updated=FIRST_SEEN + timedelta(hours=3))]
    feed = ET.fromstring(render_atom(make_meta(), entries))

    atom_entries = feed.findall(f"{ATOM}entry")
    assert len(atom_entries) == 2
    for node, entry in zip(atom_entries, entries, strict=True):
        assert node.findtext(f"{ATOM}id") == entry.link
        assert node.findtext(f"{ATOM}title") == entry.title
        assert rfc3339(node.findtext(f"{ATOM}published")) == entry.published
        assert rfc3339(node.findtext(f"{ATOM}updated")) == entry.updated.replace(microsecond=0)
        assert node.find(f"{ATOM}link").get("href") == entry.link
        summary = node.find(f"{ATOM}summary")
        assert summary.get("type") == "html" and summary.text == entry.teaser_html


def test_atom_never_puts_markup_in_a_text_construct() -> None:
    entries = [make_entry(0, content_html="<p>Full <b>body</b></p>"), make_entry(1)]
    feed = ET.fromstring(render_atom(make_meta(), entries))

    offenders = [
        el.tag
        for el in feed.iter()
        if el.get("type", "text") == "text"
        and el.tag in {f"{ATOM}{t}" for t in ("summary", "content", "subtitle", "rights")}
        and "<" in (el.text or "")
    ]
    assert offenders == []
    assert [el.get("type") for el in feed.iter(f"{ATOM}summary")] == ["html", "html"]
    content = feed.find(f"{ATOM}entry/{ATOM}content")
    assert content.get("type") == "html" and content.text == "<p>Full <b>body</b></p>"
    assert feed.findall(".//*[@type='text']") == []


def test_atom_feed_author_is_omitted_when_every_entry_names_one() -> None:
    entries = [make_entry(0, author="苏剑林"), make_entry(1, author="Bob")]
    feed = ET.fromstring(render_atom(make_meta(), entries))

    assert feed.find(f"{ATOM}author") is None
    names = [e.findtext(f"{ATOM}author/{ATOM}name") for e in feed.iter(f"{ATOM}entry")]
    assert names == ["苏剑林", "Bob"]


def test_empty_feeds_are_still_valid() -> None:
    meta = make_meta()

    rss = ET.fromstring(render_rss(meta, []))
    atom = ET.fromstring(render_atom(meta, []))
    assert rss.findall("channel/item") == [] and rss.findtext("channel/title")
    assert atom.findall(f"{ATOM}entry") == [] and atom.findtext(f"{ATOM}author/{ATOM}name")
    assert json.loads(render_json(meta, []))["items"] == []


# --- JSON Feed 1.1 ---------------------------------------------------------


def test_json_feed_has_the_required_fields_of_version_1_1() -> None:
    entries = [make_entry(0, author="苏剑林"), make_entry(1)]
    doc = json.loads(render_json(make_meta(), entries))

    version = urlsplit(doc["version"])  # the spec's version identifier, a URL never fetched
    assert (version.scheme, version.netloc, version.path) == (
        "https",
        "jsonfeed.org",
        "/version/1.1",
    )
    assert doc["title"] == "科学空间|Scientific Spaces"
    assert doc["home_page_url"] == "https://kexue.fm/"
    assert doc["feed_url"] == f"{BASE_URL}kexue.json"
    assert doc["description"] == "渴望成为一个小飞侠"
    for item, entry in zip(doc["items"], entries, strict=True):
        assert item["id"] == entry.link and item["url"] == entry.link
        assert item["title"] == entry.title
        assert item["content_html"] == entry.teaser_html
        assert item["summary"] == entry.teaser_text
        assert rfc3339(item["date_published"]) == entry.published
        assert rfc3339(item["date_modified"]) == entry.updated.replace(microsecond=0)
    assert doc["items"][0]["authors"] == [{"name": "苏剑林"}]
    assert "authors" not in doc["items"][1]


def test_json_feed_prefers_full_content_and_keeps_summary_short() -> None:
    long_text = "长" * 1000
    entry = make_entry(0, content_html="<p>Full body</p>", teaser_text=long_text)
    item = json.loads(render_json(make_meta(), [entry]))["items"][0]

    assert item["content_html"] == "<p>Full body</p>"
    assert len(item["summary"]) == feeds.SUMMARY_CHARS
    assert item["summary"] == "长" * (feeds.SUMMARY_CHARS - 1) + "…"


def test_json_feed_is_utf8_without_ascii_escapes() -> None:
    data = render_json(make_meta(), [make_entry(0)])

    assert "第0篇".encode() in data and b"\\u" not in data


# --- OPML ------------------------------------------------------------------


def test_opml_has_one_outline_per_feed_pointing_at_its_atom_file() -> None:
    metas = [
        make_meta(),
        make_meta(name="blog", title="A & B <blog>", site_url="https://b.example.test/"),
    ]
    data = render_opml(metas, BASE_URL)

    root = ET.fromstring(data)
    assert root.tag == "opml" and root.get("version") == "2.0"
    assert root.findtext("head/title") == "feedwatch"
    outlines = root.findall("body/outline")
    assert [(o.get("text"), o.get("title")) for o in outlines] == [
        ("科学空间|Scientific Spaces", "科学空间|Scientific Spaces"),
        ("A & B <blog>", "A & B <blog>"),
    ]
    assert [o.get("xmlUrl") for o in outlines] == [
        f"{BASE_URL}kexue.atom",
        f"{BASE_URL}blog.atom",
    ]
    assert [o.get("htmlUrl") for o in outlines] == ["https://kexue.fm/", "https://b.example.test/"]
    assert {o.get("type") for o in outlines} == {"rss"}
    assert render_opml(metas, BASE_URL) == data


# --- shared behaviour ------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_FORMATS)
def test_entries_are_listed_in_the_given_order(kind: str) -> None:
    # Deliberately not sorted by date: the caller's order must win over feedgen's prepend.
    entries = [make_entry(2), make_entry(0), make_entry(5), make_entry(1)]

    links = listed_links(kind, render(kind, make_meta(), entries))
    assert links == [e.link for e in entries]


@pytest.mark.parametrize("kind", ALL_FORMATS)
def test_identical_input_renders_identical_bytes(kind: str) -> None:
    entries = [make_entry(n) for n in range(5)]
    copies = [dataclasses.replace(e) for e in entries]

    assert render(kind, make_meta(), entries) == render(kind, make_meta(), copies)


@pytest.mark.parametrize("kind", ALL_FORMATS)
def test_feed_dates_come_from_the_input_not_the_clock(kind: str) -> None:
    old = datetime(2019, 3, 4, 5, 6, 7, tzinfo=UTC)
    entries = [make_entry(0, published=old, first_seen=old, last_seen=old, updated=old)]
    data = render(kind, make_meta(updated=old), entries)

    years = set(re.findall(rb"\b(20\d\d)-\d\d-\d\dT|\b\d\d \w{3} (20\d\d) ", data))
    found = {y for pair in years for y in pair if y}
    assert found == {b"2019"}


@pytest.mark.parametrize("kind", ALL_FORMATS)
def test_duplicate_links_are_listed_once(kind: str) -> None:
    entries = [make_entry(0), make_entry(1), make_entry(0, title="older copy")]

    data = render(kind, make_meta(), entries)
    assert listed_links(kind, data) == [entries[0].link, entries[1].link]
    assert "older copy" not in data.decode()


@pytest.mark.parametrize("kind", ALL_FORMATS)
def test_announced_update_appends_marker_to_title(kind: str) -> None:
    edited = make_entry(0, updated=FIRST_SEEN + timedelta(hours=2))
    meta = make_meta(announce_updates=True)

    titles = listed_titles(kind, render(kind, meta, [edited, make_entry(1)]))
    assert titles == [make_entry(0).title + " (updated)", make_entry(1).title]


@pytest.mark.parametrize("kind", ALL_FORMATS)
def test_update_marker_needs_announce_updates(kind: str) -> None:
    edited = make_entry(0, updated=FIRST_SEEN + timedelta(hours=2))

    titles = listed_titles(kind, render(kind, make_meta(), [edited]))
    assert titles == [make_entry(0).title]


def test_update_within_one_second_of_first_seen_is_not_marked() -> None:
    same_poll = make_entry(0, updated=FIRST_SEEN + timedelta(seconds=1))
    meta = make_meta(announce_updates=True)

    assert listed_titles("atom", render_atom(meta, [same_poll])) == [make_entry(0).title]


@pytest.mark.parametrize("kind", ALL_FORMATS)
def test_hostile_teaser_is_stripped_of_xml_illegal_characters_and_still_parses(kind: str) -> None:
    hostile = (
        "<p>a ]]> b \x00\x08\x0b\x1b\x7f\x85\ud800\ufffe\uffff end</p><![CDATA[x]]></description>"
    )
    entry = make_entry(
        0,
        title="bad\x00 title\x1b",
        teaser_html=hostile,
        teaser_text="a ]]> b \x00 end",
        author="Eve\x0c",
        content_html="<p>\x01]]>]]></p>",
    )
    data = render(kind, make_meta(title="科学\x00空间"), [entry])

    if kind == "json":
        doc = json.loads(data)
        text, title = doc["items"][0]["summary"], doc["items"][0]["title"]
        assert doc["items"][0]["authors"] == [{"name": "Eve"}]
    else:
        assert feedparser.parse(data).bozo == 0
        parsed = feedparser.parse(data).entries[0]
        text, title = parsed.summary, parsed.title
        assert ET.fromstring(data) is not None
    assert title == "bad title"
    assert "]]>" in text
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]", text)
    assert not re.search(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]", data)


@pytest.mark.parametrize("kind", ALL_FORMATS)
def test_historic_zone_offsets_still_give_valid_dates(kind: str) -> None:
    # Asia/Shanghai before 1901 is local mean time, +08:05:43: valid in neither RFC.
    old = datetime(1899, 1, 2, 3, 4, 5, tzinfo=SHANGHAI)
    data = render(kind, make_meta(), [make_entry(0, published=old)])

    if kind == "json":
        published = json.loads(data)["items"][0]["date_published"]
        assert rfc3339(published) == old
    elif kind == "rss":
        assert rfc822(ET.fromstring(data).findtext("channel/item/pubDate")) == old
    else:
        assert rfc3339(ET.fromstring(data).findtext(f"{ATOM}entry/{ATOM}published")) == old


@pytest.mark.parametrize("kind", ("rss", "atom"))
def test_fixture_cjk_titles_and_latex_teasers_round_trip_through_feedparser(kind: str) -> None:
    entries = truth_entries()
    parsed = feedparser.parse(render(kind, make_meta(), entries))

    assert parsed.bozo == 0
    assert len(parsed.entries) == len(entries) == 33
    for got, entry in zip(parsed.entries, entries, strict=True):
        assert got.title == entry.title
        assert got.link == entry.link
        assert entry.teaser_text.split(" ")[0] in html.unescape(got.summary)
    by_link = {e.link: e for e in parsed.entries}
    jl = by_link["https://kexue.fm/archives/9588"]
    assert "多乘上一个$\\log n$,理论上有助于增强长度外推性" in jl.summary
    assert "\\begin{equation}Attention(Q,K,V)" in jl.summary


def test_fixture_entries_round_trip_through_json_feed() -> None:
    entries = truth_entries()
    items = json.loads(render_json(make_meta(), entries))["items"]

    assert [i["title"] for i in items] == [e.title for e in entries]
    assert [i["content_html"] for i in items] == [e.teaser_html for e in entries]
    assert [rfc3339(i["date_published"]) for i in items] == [e.published for e in entries]
    by_id = {i["id"]: i for i in items}
    assert by_id["https://kexue.fm/archives/9588"]["title"] == "从JL引理看熵不变性Attention"
    assert by_id["https://kexue.fm/archives/6051"]["authors"] == [{"name": "苏剑林"}]


def test_render_time_for_fifty_entries_is_small() -> None:
    entries = (truth_entries() * 2)[:50]
    entries = [dataclasses.replace(e, link=f"{e.link}?n={i}") for i, e in enumerate(entries)]
    meta = make_meta()
    render_rss(meta, entries)

    started = time.perf_counter()
    for _ in range(5):
        render_rss(meta, entries)
        render_atom(meta, entries)
        render_json(meta, entries)
    per_round = (time.perf_counter() - started) / 5
    # Measured at ~15 ms; the bound only catches an accidental quadratic or per-call heavy set-up.
    assert per_round < 1.0


# --- writing ---------------------------------------------------------------


def test_write_if_changed_creates_a_readable_file(tmp_path: Path) -> None:
    target = tmp_path / "kexue.rss"

    assert write_if_changed(target, b"<rss/>") is True
    assert target.read_bytes() == b"<rss/>"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert leftover_temp_files(tmp_path) == []


def test_write_if_changed_renames_from_a_temp_file_in_the_same_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Same directory means same file system, so os.replace is an atomic rename.
    renames: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def spy(src: str, dst: Path) -> None:
        renames.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(feeds.os, "replace", spy)
    target = tmp_path / "kexue.rss"
    write_if_changed(target, b"<rss/>")

    assert [(src.parent, dst) for src, dst in renames] == [(tmp_path, target)]
    assert renames[0][0].name.startswith(".kexue.rss.")


def test_write_if_changed_leaves_identical_bytes_and_mtime_alone(tmp_path: Path) -> None:
    target = tmp_path / "kexue.atom"
    write_if_changed(target, b"same bytes")
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))
    inode = target.stat().st_ino

    assert write_if_changed(target, b"same bytes") is False
    assert target.stat().st_mtime_ns == 1_000_000_000
    assert target.stat().st_ino == inode


def test_write_if_changed_replaces_changed_bytes_keeping_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "kexue.json"
    target.write_bytes(b"old")
    target.chmod(0o640)

    assert write_if_changed(target, b"new!") is True
    assert target.read_bytes() == b"new!"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def write_where_permissions_apply(target: Path, data: bytes) -> str:
    """Call write_if_changed and name the error it raised ("" for none).

    Root ignores directory permissions, so under root (containers, CI) the
    call runs in a forked child that has dropped to the unprivileged `nobody`.
    """
    if os.geteuid() != 0:
        try:
            write_if_changed(target, data)
        except OSError as error:
            return type(error).__name__
        return ""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        outcome = "child failed"
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            write_if_changed(target, data)
            outcome = ""
        except OSError as error:
            outcome = type(error).__name__
        finally:
            os.write(write_end, outcome.encode())
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as pipe:
        return pipe.read().decode()


def test_write_if_changed_in_read_only_dir_raises_and_keeps_old_file() -> None:
    # Not tmp_path: its parents are private to the test user, and `nobody` must reach the file.
    directory = Path(tempfile.mkdtemp(prefix="feedwatch-ro-"))
    target = directory / "kexue.rss"
    target.write_bytes(b"old feed")
    directory.chmod(0o555)
    try:
        assert write_where_permissions_apply(target, b"new feed") == "PermissionError"
        assert target.read_bytes() == b"old feed"
        assert leftover_temp_files(directory) == []
    finally:
        directory.chmod(0o755)
        shutil.rmtree(directory)


def test_write_if_changed_on_full_disk_raises_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "kexue.rss"
    target.write_bytes(b"old feed")

    class FullDisk(io.FileIO):
        def write(self, data: object) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(feeds.os, "fdopen", lambda fd, mode: FullDisk(fd, mode))
    with pytest.raises(OSError) as caught:
        write_if_changed(target, b"new feed")
    assert caught.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old feed"
    assert leftover_temp_files(tmp_path) == []


def test_write_if_changed_failed_rename_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "kexue.rss"
    target.mkdir()
    (target / "occupied").write_bytes(b"x")

    with pytest.raises(OSError):
        write_if_changed(target, b"new feed")
    assert (target / "occupied").read_bytes() == b"x"
    assert leftover_temp_files(tmp_path) == []


def test_write_feeds_writes_three_files_then_nothing_when_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "feeds"
    entries = [make_entry(0), make_entry(1)]

    first = write_feeds(out, make_meta(), entries)
    assert first == [out / "kexue.rss", out / "kexue.atom", out / "kexue.json"]
    mtimes = {p: p.stat().st_mtime_ns for p in first}
    assert write_feeds(out, make_meta(), [dataclasses.replace(e) for e in entries]) == []
    assert {p: p.stat().st_mtime_ns for p in first} == mtimes
    assert feedparser.parse((out / "kexue.rss").read_bytes()).bozo == 0
    assert sorted(p.name for p in out.iterdir()) == ["kexue.atom", "kexue.json", "kexue.rss"]


def test_write_feeds_removes_temp_files_a_killed_writer_left_behind(tmp_path: Path) -> None:
    out = tmp_path / "feeds"
    out.mkdir()
    (out / ".kexue.atom.k1lled.tmp").write_bytes(b"<feed")
    (out / ".other.atom.busy.tmp").write_bytes(b"<feed")
    write_feeds(out, make_meta(), [make_entry(0)])
    assert sorted(p.name for p in out.iterdir()) == [
        ".other.atom.busy.tmp",
        "kexue.atom",
        "kexue.json",
        "kexue.rss",
    ]


def test_write_feeds_rewrites_after_an_entry_changes(tmp_path: Path) -> None:
    entries = [make_entry(0), make_entry(1)]
    write_feeds(tmp_path, make_meta(), entries)
    edited = dataclasses.replace(
        entries[1], teaser_html="<p>Edited teaser</p>", updated=FIRST_SEEN + timedelta(days=1)
    )
    meta = make_meta(updated=edited.updated)

    rewritten = write_feeds(tmp_path, meta, [entries[0], edited])
    assert rewritten == [tmp_path / "kexue.rss", tmp_path / "kexue.atom", tmp_path / "kexue.json"]
    assert b"Edited teaser" in (tmp_path / "kexue.atom").read_bytes()
    assert (
        "Edited teaser"
        in json.loads((tmp_path / "kexue.json").read_bytes())["items"][1]["content_html"]
    )
