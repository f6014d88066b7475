"""Selector detection: the reference blog with no selectors, and a corpus of other shapes.

Every check runs the detected selectors through the real extractor, because that is how
an auto-detected source is polled. `pytest -s` prints the per-page precision/recall table.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from feedwatch.clean import canonical_url
from feedwatch.dates import parse_date
from feedwatch.detect import Detection, detect
from feedwatch.extract import compile_check, extract, parse
from feedwatch.models import Extraction

FIXTURES = Path(__file__).parent / "fixtures"
CORPUS = FIXTURES / "corpus"
TRUTH: dict[str, Any] = json.loads((FIXTURES / "truth.json").read_text(encoding="utf-8"))
REFERENCE = TRUTH["pages"]
ARTICLES = sorted(TRUTH["articles"])
OTHER = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(CORPUS.glob("*.json"))}
ALL = [*REFERENCE, *OTHER]


def _truth(name: str) -> dict[str, Any]:
    return REFERENCE[name] if name in REFERENCE else OTHER[name]


def _html(name: str) -> str:
    path = CORPUS / f"{name}.html" if name in OTHER else FIXTURES / name
    return path.read_text(encoding="utf-8")


@cache
def _run(name: str) -> tuple[Detection, Extraction]:
    html, url = _html(name), _truth(name)["page_url"]
    found = detect(html, url)
    assert found is not None, f"nothing detected on {name}"
    return found, extract(html, url, found.selectors, found.next_page)


def _day(text: str | None, attr: str | None) -> tuple[int | None, int, int] | None:
    parts = parse_date(text, attr)
    return (parts.year, parts.month, parts.day) if parts else None


@dataclass(frozen=True)
class Row:
    """One page of the precision/recall table."""

    page: str
    truth: int
    found: int
    precision: float
    recall: float
    link_and_title: float
    date: float

    def line(self) -> str:
        return (
            f"{self.page:<17} {self.truth:>5} {self.found:>5} {self.precision:>9.2f} "
            f"{self.recall:>6.2f} {self.link_and_title:>14.2f} {self.date:>5.2f}"
        )


def _row(name: str) -> Row:
    _, extraction = _run(name)
    want = {e["link"]: e for e in _truth(name)["entries"]}
    got = {e.link: e for e in extraction.entries}
    hits = [link for link in got if link in want]
    right = [link for link in hits if (got[link].title or None) == want[link]["title"]]
    dated = [
        link
        for link in hits
        if _day(got[link].date_text, got[link].date_attr)
        == _day(want[link]["date"], want[link]["datetime_attr"])
    ]
    return Row(
        page=name.removesuffix(".html"),
        truth=len(want),
        found=len(got),
        precision=len(hits) / len(got) if got else 0.0,
        recall=len(hits) / len(want),
        link_and_title=len(right) / len(want),
        date=len(dated) / len(want),
    )


# --------------------------------------------------------------------------- reference blog


@pytest.mark.parametrize("name", list(REFERENCE))
def test_reference_page_yields_every_entry_link_in_order(name: str) -> None:
    found, extraction = _run(name)
    want = [e["link"] for e in REFERENCE[name]["entries"]]
    assert [e.link for e in extraction.entries] == want
    assert found.count == REFERENCE[name]["entry_count"]


@pytest.mark.parametrize("name", list(REFERENCE))
def test_reference_page_dates_equal_truth(name: str) -> None:
    _, extraction = _run(name)
    want = [(e["date"], e["datetime_attr"]) for e in REFERENCE[name]["entries"]]
    assert [(e.date_text, e.date_attr) for e in extraction.entries] == want


@pytest.mark.parametrize("name", list(REFERENCE))
def test_reference_page_titles_equal_truth_and_missing_titles_stay_missing(name: str) -> None:
    _, extraction = _run(name)
    assert [e.title for e in extraction.entries] == [e["title"] for e in REFERENCE[name]["entries"]]


@pytest.mark.parametrize("name", list(REFERENCE))
def test_reference_page_authors_equal_truth(name: str) -> None:
    _, extraction = _run(name)
    assert [e.author for e in extraction.entries] == [
        e["author"] for e in REFERENCE[name]["entries"]
    ]


@pytest.mark.parametrize("name", list(REFERENCE))
def test_reference_page_next_page_equals_truth(name: str) -> None:
    _, extraction = _run(name)
    assert extraction.next_page == REFERENCE[name]["next_page"]


def test_reference_teaser_drops_the_read_more_paragraph() -> None:
    found, extraction = _run("home-1.html")
    assert found.selectors.teaser == "div.post-body"
    assert "a.more-link" in found.selectors.exclude
    first = extraction.entries[0]
    assert first.teaser_text.startswith("《从熵不变性看Attention的Scale操作》")
    assert "点击阅读全文" not in first.teaser_html


@pytest.mark.parametrize("later", ["home-2.html", "home-3.html"])
def test_selectors_detected_on_page_one_find_every_entry_of_later_pages(later: str) -> None:
    """Stored selectors must survive page 2's untitled entries (read-more link only)."""
    found, _ = _run("home-1.html")
    page = REFERENCE[later]
    extraction = extract(_html(later), page["page_url"], found.selectors, found.next_page)
    assert [e.link for e in extraction.entries] == [e["link"] for e in page["entries"]]
    assert extraction.next_page == page["next_page"]


@pytest.mark.parametrize("name", ARTICLES)
def test_single_article_page_is_not_an_index(name: str) -> None:
    assert detect(_html(name), TRUTH["articles"][name]["link"]) is None


# --------------------------------------------------------------------------- corpus


def test_precision_recall_table_meets_the_thresholds() -> None:
    rows = [_row(name) for name in ALL]
    print()
    print(f"{'page':<17} {'truth':>5} {'found':>5} {'precision':>9} {'recall':>6} "
          f"{'link+title ok':>14} {'date':>5}")  # fmt: skip
    for row in rows:
        print(row.line())
    corpus = rows[len(REFERENCE) :]
    right = sum(row.link_and_title * row.truth for row in corpus)
    total = sum(row.truth for row in corpus)
    print(f"corpus: {right:.0f} of {total} entries with the right link and title")
    for row in rows[: len(REFERENCE)]:
        assert (row.precision, row.recall, row.link_and_title) == (1.0, 1.0, 1.0), row
    for row in corpus:
        assert row.precision == 1.0, row
        assert row.link_and_title >= 0.95, row
    assert right >= 0.95 * total


@pytest.mark.parametrize("name", list(OTHER))
def test_corpus_entry_blocks_never_sit_in_header_nav_sidebar_or_footer(name: str) -> None:
    found, _ = _run(name)
    tree = parse(_html(name))
    noise = {n.mem_id for n in tree.css(OTHER[name]["noise"])}
    assert noise
    blocks = tree.css(found.selectors.entry)
    assert len(blocks) == OTHER[name]["entry_count"]
    for block in blocks:
        node = block
        while node is not None:
            assert node.mem_id not in noise, (name, block.html[:120])
            node = node.parent


@pytest.mark.parametrize("name", list(OTHER))
def test_corpus_reports_no_link_that_only_furniture_has(name: str) -> None:
    _, extraction = _run(name)
    page = OTHER[name]
    tree = parse(_html(name))
    furniture = {
        canonical_url(a.attributes.get("href"), page["page_url"])
        for region in tree.css(page["noise"])
        for a in region.css("a[href]")
    } - {e["link"] for e in page["entries"]}
    assert len(furniture) >= 3
    assert not furniture & {e.link for e in extraction.entries}


@pytest.mark.parametrize("name", list(OTHER))
def test_corpus_titles_and_dates_equal_truth(name: str) -> None:
    _, extraction = _run(name)
    want = OTHER[name]["entries"]
    assert [e.title for e in extraction.entries] == [e["title"] for e in want]
    assert [_day(e.date_text, e.date_attr) for e in extraction.entries] == [
        _day(e["date"], e["datetime_attr"]) for e in want
    ]


@pytest.mark.parametrize("name", list(OTHER))
def test_corpus_next_page_equals_truth(name: str) -> None:
    _, extraction = _run(name)
    assert extraction.next_page == OTHER[name]["next_page"]


def test_year_groups_of_an_archive_are_one_list() -> None:
    found, _ = _run("archive-headings")
    assert found.selectors.entry == "section.archive-year > ul > li"
    assert found.count == 12


def test_untitled_block_gets_its_link_from_the_permalink_elsewhere_in_it() -> None:
    found, extraction = _run("wp-blog")
    assert found.selectors.link == "h2.entry-title a, span.posted-on a"
    aside = extraction.entries[1]
    assert (aside.link, aside.title) == (
        "https://northwind-notes.com.test/2024/05/08/aside-rain-gauge/",
        None,
    )


def test_card_grid_entry_selector_excludes_the_sidebar_cards_of_the_same_class() -> None:
    found, _ = _run("cards-grid")
    tree = parse(_html("cards-grid"))
    assert len(tree.css("div.card")) > found.count == len(tree.css(found.selectors.entry)) == 9


@pytest.mark.parametrize("name", ALL)
def test_every_detected_selector_compiles_as_config(name: str) -> None:
    found, _ = _run(name)
    selectors = found.selectors
    for selector in (
        selectors.entry, selectors.title, selectors.link, selectors.date, selectors.author,
        selectors.teaser, *selectors.exclude, found.next_page,
    ):  # fmt: skip
        if selector is not None:
            compile_check(selector)


# --------------------------------------------------------------------------- small pages


def _page(main: str, side: str = "", head: str = "") -> str:
    return (
        f"<!doctype html><html><head><title>t</title>{head}</head><body>"
        f'<div class="top"><a href="/">Home</a> <a href="/about/">About</a></div>'
        f'<div class="wrap"><div class="left">{main}</div><div class="right">{side}</div></div>'
        "</body></html>"
    )


def _post(n: int, title: bool = True) -> str:
    heading = f'<h2><a href="/p/{n}/">Post number {n}</a></h2>' if title else "<h2></h2>"
    return (
        f'<div class="entry">{heading}<time datetime="2024-05-{n:02d}">May {n}</time>'
        f"<p>Some teaser text for post {n}, long enough to read like a real summary.</p>"
        f'<a class="more" href="/p/{n}/">Read more</a></div>'
    )


def test_long_sidebar_list_with_dates_loses_to_fewer_entries_with_teasers() -> None:
    side = "<h3>Recent posts</h3><ul>" + "".join(
        f'<li><a href="/p/{n}/">Post number {n}</a> <span>May {n}, 2024</span></li>'
        for n in range(1, 16)
    )
    found = detect(
        _page("".join(_post(n) for n in (1, 2, 3)), side + "</ul>"), "https://b.org.test/"
    )
    assert found is not None
    assert (found.selectors.entry, found.count) == ("div.entry", 3)


def test_link_falls_back_to_read_more_when_a_heading_has_no_link() -> None:
    html = _page("".join(_post(n, title=n != 2) for n in (1, 2, 3, 4)))
    found = detect(html, "https://b.org.test/")
    assert found is not None
    assert found.selectors.link == "h2 a, a.more"
    links = [e.link for e in extract(html, "https://b.org.test/", found.selectors).entries]
    assert links == [f"https://b.org.test/p/{n}/" for n in (1, 2, 3, 4)]


def test_next_page_is_the_page_number_after_the_current_one() -> None:
    pager = (
        '<div class="pages"><a href="/blog/">1</a><span class="current">2</span>'
        '<a href="/blog/page/3/">3</a><a href="/blog/page/4/">4</a></div>'
    )
    html = _page("".join(_post(n) for n in (1, 2, 3)) + pager)
    found = detect(html, "https://b.org.test/blog/page/2/")
    assert found is not None
    assert found.next_page == "span.current + a"
    extraction = extract(html, "https://b.org.test/blog/page/2/", found.selectors, found.next_page)
    assert extraction.next_page == "https://b.org.test/blog/page/3/"


def test_next_page_is_left_to_rel_next_when_the_page_has_one() -> None:
    head = '<link rel="next" href="/page/2/">'
    html = _page("".join(_post(n) for n in (1, 2, 3)), head=head)
    found = detect(html, "https://b.org.test/")
    assert found is not None
    assert found.next_page is None
    extraction = extract(html, "https://b.org.test/", found.selectors, found.next_page)
    assert extraction.next_page == "https://b.org.test/page/2/"


def test_json_ld_item_list_decides_between_two_lists_of_the_same_shape() -> None:
    def items(kind: str) -> str:
        return f'<ul class="{kind}">' + "".join(
            f'<li><a href="/{kind}/{n}/">A {kind} item called {n}</a> <span>May {n + 1}</span></li>'
            for n in range(5)
        ) + "</ul>"  # fmt: skip

    ld = json.dumps(
        {
            "@type": "ItemList",
            "itemListElement": [
                {"@type": "ListItem", "url": f"https://b.org.test/stories/{n}/"} for n in range(5)
            ],
        }
    )
    head = f'<script type="application/ld+json">{ld}</script>'
    lists = items("guides") + items("stories")
    plain = detect(_page(lists), "https://b.org.test/")
    hinted = detect(_page(lists, head=head), "https://b.org.test/")
    assert plain is not None and hinted is not None
    assert (plain.selectors.entry, hinted.selectors.entry) == ("ul.guides > li", "ul.stories > li")


def test_forum_rows_dated_only_by_relative_times_get_their_date_cell() -> None:
    rows = "".join(
        f'<tr class="topic"><td><a class="title" href="/t/{n}">Topic number {n}</a></td>'
        f'<td><a href="/u/someone">someone</a></td><td class="age">{n + 1}h</td></tr>'
        for n in range(6)
    )
    html = _page(f"<table><tbody>{rows}</tbody></table>")
    found = detect(html, "https://forum.b.org.test/latest")
    assert found is not None
    assert (found.selectors.entry, found.selectors.date) == ("tr.topic", "td.age")
    dates = [
        e.date_text
        for e in extract(html, "https://forum.b.org.test/latest", found.selectors).entries
    ]
    assert dates == [f"{n + 1}h" for n in range(6)]


@pytest.mark.parametrize(
    ("html", "url"),
    [
        ("", "https://b.org.test/"),
        ("plain text, no markup", "https://b.org.test/"),
        ("<ul><li><a href='/a'>a</a></li><li><a href='/b'>b</a></li></ul>", "https://b.org.test/"),
        (_page("".join(_post(n) for n in (1, 2, 3))), "ftp://b.org/"),
        (_page("".join(_post(n) for n in (1, 2, 3))), "not a url"),
    ],
)
def test_pages_without_an_entry_list_give_none(html: str, url: str) -> None:
    assert detect(html, url) is None


def test_links_to_other_sites_are_never_entries() -> None:
    html = _page("".join(_post(n) for n in (1, 2, 3)))
    assert (
        detect(
            html.replace('href="/p/', 'href="https://elsewhere.net.test/p/'), "https://b.org.test/"
        )
        is None
    )


def test_given_tree_is_used_as_is_and_left_unchanged() -> None:
    html = _html("home-2.html")
    url = REFERENCE["home-2.html"]["page_url"]
    tree = parse(html)
    before = tree.html
    assert detect(html, url, tree=tree) == detect(html, url)
    assert tree.html == before


def test_hostile_nesting_and_link_floods_finish_quickly() -> None:
    deep = "<div>" * 3000 + "".join(_post(n) for n in (1, 2, 3)) + "</div>" * 3000
    flood = _page("".join(f'<a href="/t/{n}">{n}</a>' for n in range(20000)))
    started = time.perf_counter()
    found = detect(deep, "https://b.org.test/")
    detect(flood, "https://b.org.test/")
    assert time.perf_counter() - started < 10
    assert found is not None and found.count == 3
