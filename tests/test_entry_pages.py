"""Entry pages end to end: `detail = true` dates, full text, MathML and the JSON Feed."""

from __future__ import annotations

import asyncio
import json
import re
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from typing import Any

import feedparser
import pytest

from feedwatch import config as config_mod
from feedwatch import feeds
from feedwatch.poll import refresh
from feedwatch.store import Store
from tests.conftest import KEXUE_SELECT, write_config
from tests.site import FIXTURES, TRUTH, Site

HOME = ["home-1.html", "home-2.html", "home-3.html"]
FETCHED_AT = datetime.fromisoformat(TRUTH["pages"]["home-1.html"]["fetched_at"])
TEMPLATE = TRUTH["articles"]["article-8847.html"]


def home_entries() -> list[dict[str, Any]]:
    return [e for page in HOME for e in TRUTH["pages"][page]["entries"]]


def article_page(site: Site, entry: dict[str, Any]) -> str:
    """An article page in the shape of article-8847.html, for any index entry."""
    html = (FIXTURES / "article-8847.html").read_text(encoding="utf-8")
    title = entry["title"] or f"文章{entry['id']}"
    html = html.replace(TEMPLATE["title"], title)
    html = html.replace(TEMPLATE["datetime_attr"], f"{entry['date_full']}T09:30:00+08:00")
    html = html.replace(TEMPLATE["date"], entry["date_full"])
    html = html.replace("/archives/8847", f"/archives/{entry['id']}")
    return html.replace("https://kexue.fm", site.base)


def serve_articles(site: Site) -> None:
    site.serve_fixture_site()
    for entry in home_entries():
        site.put(f"/archives/{entry['id']}", article_page(site, entry))


def config_with(site: Site, tmp_path: Path, extra: str, settings: str = "") -> Path:
    source = (
        f'[[sources]]\nname = "kexue"\nurl = "{site.url("/")}"\nmax_pages = 3\n'
        f'next_page = "div.pagination a.next"\n{extra}\n{KEXUE_SELECT}'
    )
    return write_config(tmp_path, source, settings)


def poll(config_path: Path) -> list:
    config = config_mod.load(config_path)
    return asyncio.run(refresh(config, config.sources, now=lambda: FETCHED_AT))


def stored(config_path: Path) -> dict:
    store = Store(config_mod.load(config_path).state)
    try:
        return store.entries("kexue")
    finally:
        store.close()


def test_detail_gives_every_backfilled_entry_its_exact_date(site: Site, tmp_path: Path) -> None:
    serve_articles(site)
    config = config_with(site, tmp_path, "detail = true")
    assert poll(config)[0].ok
    entries = stored(config)
    for truth in home_entries():
        entry = entries[site.local(truth["link"])]
        assert entry.published == datetime.fromisoformat(f"{truth['date_full']}T09:30:00+08:00")
        assert entry.date_exact
        assert entry.author == "苏剑林"


def test_a_second_poll_fetches_no_article_page(site: Site, tmp_path: Path) -> None:
    serve_articles(site)
    config = config_with(site, tmp_path, "detail = true")
    poll(config)
    fetched = sum(len(site.requests_to(f"/archives/{e['id']}")) for e in home_entries())
    assert fetched == len(home_entries())
    poll(config)
    again = sum(len(site.requests_to(f"/archives/{e['id']}")) for e in home_entries())
    assert again == fetched


def test_a_failing_article_page_keeps_the_inferred_date_and_is_retried(
    site: Site, tmp_path: Path
) -> None:
    serve_articles(site)
    truth = TRUTH["pages"]["home-2.html"]["entries"][0]
    path = f"/archives/{truth['id']}"
    good = site.routes[path].body
    site.put(path, "down", status=503)
    config = config_with(site, tmp_path, "detail = true")
    poll(config)
    link = site.local(truth["link"])
    assert not stored(config)[link].date_exact
    assert stored(config)[link].published.year != int(truth["date_full"][:4])
    poll(config)
    assert len(site.requests_to(path)) == 2
    site.put(path, good)
    poll(config)
    entry = stored(config)[link]
    assert entry.date_exact and entry.published.date().isoformat() == truth["date_full"]
    atom = feedparser.parse((config.parent / "feeds" / "kexue.atom").read_bytes())
    published = {e.link: e.published for e in atom.entries}
    assert published[link].startswith(truth["date_full"])


def test_detail_retries_are_bounded(site: Site, tmp_path: Path) -> None:
    serve_articles(site)
    truth = TRUTH["pages"]["home-1.html"]["entries"][0]
    path = f"/archives/{truth['id']}"
    site.put(path, "down", status=503)
    config = config_with(site, tmp_path, "detail = true")
    for _ in range(5):
        poll(config)
    assert len(site.requests_to(path)) == 3


def test_full_text_goes_into_the_feed_content(site: Site, tmp_path: Path) -> None:
    serve_articles(site)
    config = config_with(site, tmp_path, 'detail = true\ncontent = "full"')
    poll(config)
    atom = feedparser.parse((config.parent / "feeds" / "kexue.atom").read_bytes())
    assert atom.bozo == 0
    entry = next(e for e in atom.entries if e.link.endswith("/archives/9588"))
    body = entry.content[0].value
    assert TEMPLATE["teaser_first_sentence"][:20] in body
    assert "comment-form" not in body and "<script" not in body
    assert entry.summary != body


def test_math_becomes_mathml_with_the_latex_as_alttext(site: Site, tmp_path: Path) -> None:
    serve_articles(site)
    config = config_with(site, tmp_path, 'math = "mathml"')
    poll(config)
    raw = (config.parent / "feeds" / "kexue.atom").read_bytes()
    atom = feedparser.parse(raw)
    assert atom.bozo == 0
    ET.fromstring(raw)
    summaries = {e.link: e.summary for e in atom.entries}
    for truth in home_entries():
        if not truth["has_math"]:
            continue
        summary = summaries[site.local(truth["link"])]
        assert "<math" in summary, truth["link"]
        assert re.search(r'alttext="[^"]+"', summary)


def test_math_keep_leaves_latex_as_written(site: Site, tmp_path: Path) -> None:
    serve_articles(site)
    config = config_with(site, tmp_path, "")
    poll(config)
    summaries = {
        e.link: e.summary
        for e in feedparser.parse((config.parent / "feeds" / "kexue.atom").read_bytes()).entries
    }
    first = TRUTH["pages"]["home-1.html"]["entries"][0]
    assert "<math" not in summaries[site.local(first["link"])]
    assert "$\\log n$" in summaries[site.local(first["link"])]


@pytest.mark.parametrize("detail", [False, True])
def test_json_feed_lists_every_entry_with_the_required_fields(
    site: Site, tmp_path: Path, detail: bool
) -> None:
    serve_articles(site)
    config = config_with(site, tmp_path, f"detail = {str(detail).lower()}")
    poll(config)
    feed = json.loads((config.parent / "feeds" / "kexue.json").read_text(encoding="utf-8"))
    assert feed["version"] == feeds.JSON_FEED_VERSION
    assert feed["title"] and feed["feed_url"].endswith("/kexue.json")
    assert {item["url"] for item in feed["items"]} == {
        site.local(e["link"]) for e in home_entries()
    }
    for item in feed["items"]:
        assert item["id"] and ("content_html" in item or "content_text" in item)
        datetime.fromisoformat(item["date_published"])
