"""Stored entries → RSS 2.0, Atom 1.0, JSON Feed 1.1 and an OPML list, written only on change.

Feed readers poll often and key on bytes (ETag, Last-Modified), so the output
is a pure function of its input: no clock, no random ids, no dict-order
accidents. Every date comes from the entries or from `FeedMeta.updated`, so an
unchanged source yields byte-identical files that `write_if_changed` leaves
alone (mtime included).

Entries are clean by contract, yet one stray control character would make the
whole XML document malformed for every subscriber, so every string is filtered
here once more before it reaches lxml or json.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from feedgen.entry import FeedEntry
from feedgen.feed import FeedGenerator
from lxml import etree

from feedwatch.models import Entry

GENERATOR = "feedwatch"
OPML_FORMAT = 1
"""Bump when render_opml, or the feed meta it lists, writes something else for the
same sources: the OPML index is only rendered again when its inputs change."""
JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
UPDATED_MARKER = " (updated)"
SUMMARY_CHARS = 280
# An edit within this slack of the first sighting is the same observation, not an update.
_UPDATE_SLACK = timedelta(seconds=1)
# XML 1.0 forbids C0 controls (but tab/LF/CR), lone surrogates, U+FFFE and U+FFFF; it
# discourages C1 controls and U+FDD0..U+FDEF, which the W3C validator flags. None is text.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")
_SPACE = re.compile(r"\s+")
_NEW_FILE_MODE = 0o644
_RESCAN_S = 60.0
_temp_listings: dict[str, tuple[float, list[str]]] = {}


@dataclass(frozen=True)
class FeedMeta:
    """What a feed says about itself; `updated` is the newest entry change, never "now"."""

    name: str
    title: str
    site_url: str
    base_url: str
    updated: datetime
    description: str = ""
    announce_updates: bool = False


def render_rss(meta: FeedMeta, entries: Sequence[Entry]) -> bytes:
    """RSS 2.0 with atom:link rel=self, guid = link, dc:creator for authors (RSS wants e-mails)."""
    return _rss(meta, _generator(meta, entries))


def render_atom(meta: FeedMeta, entries: Sequence[Entry]) -> bytes:
    """Atom 1.0 (RFC 4287) with summary/content typed as HTML, never HTML in a text construct."""
    return _atom(meta, _generator(meta, entries))


def render_json(meta: FeedMeta, entries: Sequence[Entry]) -> bytes:
    """JSON Feed 1.1, built by hand because feedgen does not write it; keys sorted for stability."""
    feed: dict[str, object] = {
        "version": JSON_FEED_VERSION,
        "title": _feed_title(meta),
        "home_page_url": _clean(meta.site_url),
        "feed_url": _feed_url(meta.base_url, meta.name, "json"),
        "items": [_json_item(meta, entry) for entry in _unique(entries)],
    }
    if description := _clean(meta.description).strip():
        feed["description"] = description
    # Compact separators keep json on its C encoder; indentation would force the Python one.
    text = json.dumps(feed, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return (text + "\n").encode("utf-8")


def render_opml(feeds: Sequence[FeedMeta], base_url: str) -> bytes:
    """One outline per feed, pointing at its Atom file under `base_url`; dateless, so stable."""
    root = etree.Element("opml", version="2.0")
    head = etree.SubElement(root, "head")
    etree.SubElement(head, "title").text = GENERATOR
    body = etree.SubElement(root, "body")
    for meta in feeds:
        title = _feed_title(meta)
        outline = etree.SubElement(body, "outline")
        outline.set("type", "rss")
        outline.set("text", title)
        outline.set("title", title)
        outline.set("xmlUrl", _feed_url(base_url, meta.name, "atom"))
        outline.set("htmlUrl", _clean(meta.site_url))
        if description := _clean(meta.description).strip():
            outline.set("description", description)
    return etree.tostring(root, pretty_print=True, encoding="UTF-8", xml_declaration=True)


def write_if_changed(path: Path, data: bytes) -> bool:
    """Atomically replace `path` with `data` unless it already holds exactly these bytes.

    Readers and the HTTP server must never see a half-written feed, hence the
    temp file in the same directory (same file system) and `os.replace`. The
    temp file never outlives a failure; the OSError still reaches the caller,
    who keeps the old feed. No fsync: the rename alone already gives old-or-new
    after a process crash, only a power cut could leave an empty file, and a
    feed is always re-rendered from the store, while six fsyncs per changed
    source cost more than the rest of its poll.
    """
    try:
        current = path.stat()
        if current.st_size == len(data) and path.read_bytes() == data:
            return False
        mode = current.st_mode & 0o777
    except FileNotFoundError:
        mode = _NEW_FILE_MODE
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return True


EXTENSIONS = ("rss", "atom", "json")
"""The files `write_feeds` writes for a source, NAME.EXT each."""


def present_files(output_dir: Path, *, check_sizes: bool) -> tuple[frozenset[str], bool]:
    """The names of the files in `output_dir`, and whether an empty feed file was left out.

    One listing answers a whole refresh's "is this feed there?", where a stat per file
    cost ~10 ms per 1000 sources. `check_sizes` also stats every feed file and leaves
    out the empty ones: feeds are written without fsync, so a power cut can leave one
    empty, and its source's next poll must render it again.
    """
    try:
        entries = list(os.scandir(output_dir))
    except OSError:
        return frozenset(), False
    names = {entry.name for entry in entries}
    empty = False
    if check_sizes:
        suffixes = tuple(f".{ext}" for ext in EXTENSIONS)
        for entry in entries:
            try:
                if entry.name.endswith(suffixes) and entry.stat().st_size == 0:
                    names.discard(entry.name)
                    empty = True
            except OSError:
                names.discard(entry.name)
    return frozenset(names), empty


def write_feeds(output_dir: Path, meta: FeedMeta, entries: Sequence[Entry]) -> list[Path]:
    """Write NAME.rss, NAME.atom and NAME.json; return only the paths whose bytes changed.

    A temp file of this feed still lying here was left by a writer killed mid-write:
    polls of one source never overlap (the poll's source lock), so it is removed.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in _stale_temps(output_dir, meta.name):
        (output_dir / stale).unlink(missing_ok=True)
    fg = _generator(meta, entries)
    rendered = (
        (output_dir / f"{meta.name}.rss", _rss(meta, fg)),
        (output_dir / f"{meta.name}.atom", _atom(meta, fg)),
        (output_dir / f"{meta.name}.json", render_json(meta, entries)),
    )
    return [path for path, data in rendered if write_if_changed(path, data)]


def _stale_temps(output_dir: Path, name: str) -> list[str]:
    """Temp files named for feed `name`, from a listing of `output_dir` at most _RESCAN_S old.

    Listing a directory of thousands of feeds costs milliseconds, and doing it for
    every write made a cold refresh quadratic in the number of sources; writers are
    killed rarely, so their leftovers can wait for the next listing.
    """
    key = str(output_dir)
    now = time.monotonic()
    listed = _temp_listings.get(key)
    if listed is None or now - listed[0] > _RESCAN_S:
        temps = [n for n in os.listdir(output_dir) if n.startswith(".") and n.endswith(".tmp")]
        listed = _temp_listings[key] = (now, temps)
    prefix = f".{name}."
    stale = [n for n in listed[1] if n.startswith(prefix)]
    if stale:
        listed[1][:] = [n for n in listed[1] if not n.startswith(prefix)]
    return stale


def _rss(meta: FeedMeta, fg: FeedGenerator) -> bytes:
    _self_link(meta, fg, "rss")
    return fg.rss_str(pretty=True, encoding="UTF-8", xml_declaration=True)


def _atom(meta: FeedMeta, fg: FeedGenerator) -> bytes:
    _self_link(meta, fg, "atom")
    return fg.atom_str(pretty=True, encoding="UTF-8", xml_declaration=True)


def _self_link(meta: FeedMeta, fg: FeedGenerator, kind: str) -> None:
    """RSS and Atom each point at their own file; the rest of one generator serves both."""
    self_url = _feed_url(meta.base_url, meta.name, kind)
    # feedgen turns the last link() into the RSS channel <link>: self first, alternate last.
    fg.link(
        [
            {"href": self_url, "rel": "self", "type": f"application/{kind}+xml"},
            {"href": _clean(meta.site_url), "rel": "alternate", "type": "text/html"},
        ],
        replace=True,
    )


def _generator(meta: FeedMeta, entries: Sequence[Entry]) -> FeedGenerator:
    """Feed and entries, built once for both XML formats (building costs more than writing)."""
    unique = list(_unique(entries))
    fg = FeedGenerator()
    fg.load_extension("dc", atom=False, rss=True)
    title = _feed_title(meta)
    # Atom's id; RSS has none.
    fg.id(_feed_url(meta.base_url, meta.name, "atom"))
    fg.title(title)
    fg.description(_clean(meta.description).strip() or title)
    fg.updated(_moment(meta.updated))
    fg.generator(GENERATOR)
    # RFC 4287 wants a feed-level author unless every entry names one.
    if not unique or any(not _author(entry) for entry in unique):
        fg.author({"name": title})
    for entry in unique:
        # add_entry prepends by default; the caller's order (newest first) is the feed's order.
        _fill_entry(meta, entry, fg.add_entry(order="append"))
    return fg


def _fill_entry(meta: FeedMeta, entry: Entry, fe: FeedEntry) -> None:
    link = _clean(entry.link)
    fe.guid(link, permalink=True)
    fe.title(_entry_title(meta, entry))
    fe.link(href=link, rel="alternate", type="text/html")
    fe.published(_moment(entry.published))
    fe.updated(_moment(entry.updated))
    if teaser := _clean(entry.teaser_html).strip():
        fe.summary(teaser, type="html")
    if content := _clean(entry.content_html or "").strip():
        fe.content(content, type="html")
    if author := _author(entry):
        fe.author({"name": author})
        fe.dc.dc_creator(author)


def _json_item(meta: FeedMeta, entry: Entry) -> dict[str, object]:
    link = _clean(entry.link)
    item: dict[str, object] = {
        "id": link,
        "url": link,
        "title": _entry_title(meta, entry),
        "content_html": _clean(entry.content_html or "").strip() or _clean(entry.teaser_html),
        "date_published": _moment(entry.published).isoformat(),
        "date_modified": _moment(entry.updated).isoformat(),
    }
    if summary := _short(_clean(entry.teaser_text)):
        item["summary"] = summary
    if author := _author(entry):
        item["authors"] = [{"name": author}]
    return item


def _entry_title(meta: FeedMeta, entry: Entry) -> str:
    """The title, or the link when there is none (both formats require a non-blank title)."""
    title = _SPACE.sub(" ", _clean(entry.title)).strip() or _clean(entry.link)
    if meta.announce_updates and _moment(entry.updated) > _moment(entry.first_seen) + _UPDATE_SLACK:
        title += UPDATED_MARKER
    return title


def _feed_title(meta: FeedMeta) -> str:
    return _SPACE.sub(" ", _clean(meta.title)).strip() or meta.name


def _author(entry: Entry) -> str:
    return _SPACE.sub(" ", _clean(entry.author or "")).strip()


def _unique(entries: Sequence[Entry]) -> Iterator[Entry]:
    """Keep the first (newest) of entries sharing a link: one id twice is invalid Atom."""
    seen: set[str] = set()
    for entry in entries:
        link = _clean(entry.link)
        if link not in seen:
            seen.add(link)
            yield entry


def _short(text: str) -> str:
    text = _SPACE.sub(" ", text).strip()
    if len(text) <= SUMMARY_CHARS:
        return text
    return text[: SUMMARY_CHARS - 1].rstrip() + "…"


def _clean(text: str) -> str:
    return _NOT_XML.sub("", text)


def _moment(value: datetime) -> datetime:
    """A datetime that prints as valid RFC 3339 and RFC 822.

    Whole seconds keep the files tidy; naive values are taken as UTC rather
    than crashing a feed; offsets with seconds (historic local mean time, e.g.
    Asia/Shanghai before 1901) exist in neither format, so those go to UTC.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=UTC)
    offset = value.utcoffset()
    if offset is not None and offset % timedelta(minutes=1):
        value = value.astimezone(UTC)
    return value.replace(microsecond=0)


def _feed_url(base_url: str, name: str, extension: str) -> str:
    base = _clean(base_url)
    return f"{base if base.endswith('/') else base + '/'}{name}.{extension}"
