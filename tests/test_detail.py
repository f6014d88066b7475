"""detail: exact dates, author, title and body from the fixture article pages.

The fixture pages carry every date source at once (meta, <time>, byline), so each source is
also tested alone on pages rewritten from the fixtures: same theme, same comments and
sidebar (whose dates must never be taken), only one place that says when the post was
published.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import trafilatura
from hypothesis import given, settings
from hypothesis import strategies as st

from feedwatch.clean import html_to_text
from feedwatch.detail import Article, parse_article

FIXTURES = Path(__file__).parent / "fixtures"
TRUTH: dict[str, Any] = json.loads((FIXTURES / "truth.json").read_text(encoding="utf-8"))
ARTICLES: dict[str, dict[str, Any]] = TRUTH["articles"]
SHANGHAI = ZoneInfo("Asia/Shanghai")
PLUS8 = timezone(timedelta(hours=8))

PUBLISHED_META = re.compile(r'<meta property="article:published_time"[^>]*>\n')
BYLINE = re.compile(r'<div class="post-meta">.*?</div>', re.S)
TIME = re.compile(r'<time class="post-date" datetime="[^"]*">([^<]*)</time>')


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def read(page: str, *, tz: Any = SHANGHAI, **kwargs: Any) -> Article:
    return parse_article(page, "https://kexue.fm/archives/1", tz=tz, **kwargs)


def json_ld(data: Any) -> str:
    return f'<script type="application/ld+json">{json.dumps(data, ensure_ascii=False)}</script>'


def with_head(page: str, extra: str) -> str:
    return page.replace("</head>", f"{extra}\n</head>", 1)


def without_dates(name: str) -> str:
    """The fixture page with no date source left: no meta, no byline, no header <time>."""
    page = PUBLISHED_META.sub("", fixture(name))
    return BYLINE.sub('<div class="post-meta"></div>', page, count=1)


def only_source(name: str, source: str) -> str:
    """The fixture page whose one date source is `source`; comments and sidebar stay."""
    truth = ARTICLES[name]
    page = without_dates(name)
    if source == "json-ld":
        data = {
            "@context": "https://schema.org.test",
            "@type": "BlogPosting",
            "headline": truth["title"],
            "datePublished": truth["datetime_attr"],
            "author": {"@type": "Person", "name": truth["author"]},
        }
        return with_head(page, json_ld(data))
    if source == "meta":
        meta = f'<meta property="article:published_time" content="{truth["datetime_attr"]}">'
        return with_head(page, meta)
    if source == "time":
        header = (
            f'<div class="post-meta"><time class="post-date" datetime="{truth["datetime_attr"]}">'
            f"{truth['date']}</time></div>"
        )
        return page.replace('<div class="post-meta"></div>', header, 1)
    assert source == "byline"
    byline = TIME.sub(r'<span class="post-date">\1</span>', BYLINE.search(fixture(name))[0])
    return page.replace('<div class="post-meta"></div>', byline, 1)


@pytest.mark.parametrize("name", sorted(ARTICLES))
def test_fixture_article_gives_exact_published_datetime(name: str) -> None:
    truth = ARTICLES[name]
    article = read(fixture(name))
    assert article.published == datetime.fromisoformat(truth["datetime_attr"])
    assert article.published.utcoffset() == timedelta(hours=8)


@pytest.mark.parametrize("name", sorted(ARTICLES))
def test_fixture_article_gives_author_and_title(name: str) -> None:
    truth = ARTICLES[name]
    article = read(fixture(name))
    assert (article.author, article.title) == (truth["author"], truth["title"])


@pytest.mark.parametrize("source", ["json-ld", "meta", "time"])
@pytest.mark.parametrize("name", sorted(ARTICLES))
def test_each_machine_readable_source_alone_gives_the_exact_datetime(
    name: str, source: str
) -> None:
    article = read(only_source(name, source))
    assert article.published == datetime.fromisoformat(ARTICLES[name]["datetime_attr"])


@pytest.mark.parametrize("name", sorted(ARTICLES))
def test_byline_alone_gives_the_date_in_the_source_zone(name: str) -> None:
    truth = ARTICLES[name]
    article = read(only_source(name, "byline"))
    assert article.published == datetime.fromisoformat(truth["date"]).replace(tzinfo=SHANGHAI)
    assert article.published.utcoffset() == timedelta(hours=8)
    assert article.author == truth["author"]


@pytest.mark.parametrize("name", sorted(ARTICLES))
def test_comment_and_sidebar_dates_are_never_taken(name: str) -> None:
    page = without_dates(name)
    assert "<time datetime=" in page  # the comments still carry dated <time>s
    assert read(page).published is None


def test_comments_inside_the_article_element_are_not_read() -> None:
    page = without_dates("article-8847.html")
    comments = page[page.index('<div id="comments">') : page.index("</main>")]
    page = page.replace(comments, "").replace("</article>", f"{comments}</article>", 1)
    assert read(page).published is None


def test_the_article_holding_the_h1_is_read_not_a_related_post() -> None:
    related = (
        '<article class="teaser"><h2>Other post</h2>'
        '<time datetime="2019-05-05T05:05:00+08:00">2019-05-05</time></article>'
    )
    page = only_source("article-9431.html", "time").replace("<main", f"{related}<main", 1)
    assert read(page).published == datetime(2023, 1, 12, 9, 48, tzinfo=PLUS8)


def test_malformed_json_ld_falls_through_to_meta() -> None:
    broken = '<script type="application/ld+json">{"@type": "BlogPosting", "datePublished": '
    article = read(with_head(only_source("article-8847.html", "meta"), broken))
    assert article.published == datetime(2022, 1, 12, 10, 5, tzinfo=PLUS8)


@pytest.mark.parametrize(
    "data",
    [
        ["not an object", 3, None, {"@type": 7}],
        {"@type": "BlogPosting", "datePublished": 20220112, "author": {"name": ["x"]}},
        {"@type": "BlogPosting", "datePublished": "12 Jan"},
        {"@type": "Organization", "datePublished": "2030-01-01T00:00:00Z"},
    ],
    ids=["junk-list", "wrong-value-types", "no-year", "not-an-article"],
)
def test_unusable_json_ld_falls_through_to_meta(data: Any) -> None:
    article = read(with_head(only_source("article-8847.html", "meta"), json_ld(data)))
    assert article.published == datetime(2022, 1, 12, 10, 5, tzinfo=PLUS8)


def test_json_ld_inside_graph_gives_date_author_and_headline() -> None:
    data = {
        "@context": "https://schema.org.test",
        "@graph": [
            {"@type": "WebSite", "name": "Site", "datePublished": "2001-01-01"},
            {
                "@type": ["NewsArticle"],
                "headline": "Graph headline",
                "datePublished": "2021-06-01T08:00:00Z",
                "dateModified": "2021-06-02T09:30:00+02:00",
                "author": [{"@type": "Person", "name": "Ada"}, {"name": "Bob"}],
            },
        ],
    }
    article = read(with_head(without_dates("article-8847.html"), json_ld(data)))
    assert article.published == datetime(2021, 6, 1, 8, 0, tzinfo=UTC)
    assert article.modified == datetime(2021, 6, 2, 9, 30, tzinfo=timezone(timedelta(hours=2)))
    assert (article.author, article.title) == ("Ada", "Graph headline")


def test_json_ld_in_a_top_level_list_is_read() -> None:
    data = [{"@type": "BreadcrumbList"}, {"@type": "Article", "datePublished": "2020-02-29"}]
    article = read(with_head(without_dates("article-9431.html"), json_ld(data)))
    assert article.published == datetime(2020, 2, 29, tzinfo=SHANGHAI)


def test_sources_are_tried_in_order_json_ld_meta_time_byline() -> None:
    page = fixture("article-8847.html")  # meta, <time> and byline: all 2022-01-12
    ld = json_ld({"@type": "BlogPosting", "datePublished": "2022-01-11T01:02:03+08:00"})
    assert read(with_head(page, ld)).published == datetime(2022, 1, 11, 1, 2, 3, tzinfo=PLUS8)
    no_meta = PUBLISHED_META.sub("", page).replace(
        'datetime="2022-01-12T10:05:00+08:00"', 'datetime="2022-01-12T23:59:00+08:00"'
    )
    assert read(no_meta).published == datetime(2022, 1, 12, 23, 59, tzinfo=PLUS8)


def test_date_without_zone_is_in_the_source_zone() -> None:
    ld = json_ld({"@type": "BlogPosting", "datePublished": "2022-01-12T10:05:00"})
    page = with_head(without_dates("article-8847.html"), ld)
    assert read(page, tz=SHANGHAI).published == datetime(2022, 1, 12, 10, 5, tzinfo=SHANGHAI)
    assert read(page, tz=UTC).published == datetime(2022, 1, 12, 10, 5, tzinfo=UTC)


def test_modified_time_comes_from_meta_and_is_not_the_published_date() -> None:
    meta = '<meta property="article:modified_time" content="2023-05-01T12:00:00+08:00">'
    article = read(with_head(fixture("article-8847.html"), meta))
    assert article.modified == datetime(2023, 5, 1, 12, 0, tzinfo=PLUS8)
    assert article.published == datetime(2022, 1, 12, 10, 5, tzinfo=PLUS8)


def test_updated_time_element_is_the_modified_date() -> None:
    page = without_dates("article-9588.html").replace(
        '<div class="post-meta"></div>',
        '<div class="post-meta"><time class="entry-date updated" datetime="2024-01-02T03:04:05Z">'
        'x</time> <time class="entry-date published" datetime="2023-04-10T11:22:00+08:00">'
        "y</time></div>",
        1,
    )
    article = read(page)
    assert article.published == datetime(2023, 4, 10, 11, 22, tzinfo=PLUS8)
    assert article.modified == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_author_url_in_meta_is_not_a_name() -> None:
    page = fixture("article-8847.html").replace(
        '<meta property="article:author" content="苏剑林">',
        '<meta property="article:author" content="https://example.org/su">',
    )
    assert read(page).author == "苏剑林"


def test_paragraph_starting_with_by_is_no_byline() -> None:
    page = without_dates("article-8847.html").replace(
        '<meta property="article:author" content="苏剑林">', ""
    )
    page = page.replace('<div class="post-body">', '<div class="post-body"><p>By the way, hi.</p>')
    assert read(page).author is None


def test_page_without_anything_gives_an_empty_article() -> None:
    assert read("") == Article(None, None, None, None, None)
    assert read("<p>no dates here, 12 Jan</p>", want_content=True).published is None


@pytest.mark.parametrize("name", sorted(ARTICLES))
def test_content_has_the_body_but_not_the_comments(name: str) -> None:
    truth = ARTICLES[name]
    content = read(fixture(name), want_content=True).content_html
    assert content is not None
    text = html_to_text(content)
    assert text.startswith(truth["teaser_first_sentence"])
    for block in truth["teaser_blocks"]:
        assert block in text
    assert "(占位段落三)" in text  # the filler stands for the rest of the post
    assert "comment" not in content
    assert "请问" not in text and "发表评论" not in text
    assert "转载到请包括本文地址" not in text
    assert "<script" not in content and "zoomImage" not in content


def test_content_links_are_absolute() -> None:
    content = read(fixture("article-8847.html"), want_content=True).content_html
    assert content is not None
    assert 'href="https://kexue.fm/archives/8838"' in content
    assert 'href="/archives' not in content


def test_content_is_not_extracted_unless_wanted() -> None:
    assert read(fixture("article-8847.html")).content_html is None


def test_content_selector_picks_the_element_and_drops_comment_sections() -> None:
    content = read(fixture("article-9431.html"), want_content=True, content_selector="#main")
    assert content.content_html is not None
    text = html_to_text(content.content_html)
    assert ARTICLES["article-9431.html"]["teaser_first_sentence"] in text
    assert "post-near" not in content.content_html  # <nav> is page furniture
    assert "回复" not in text and "Leo" not in text


def test_content_selector_matching_nothing_gives_no_content() -> None:
    article = read(fixture("article-8847.html"), want_content=True, content_selector=".nope")
    assert article.content_html is None


def test_post_body_is_used_when_the_extractor_finds_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(trafilatura, "extract", lambda *args, **kwargs: None)
    content = read(fixture("article-9588.html"), want_content=True).content_html
    assert content is not None
    text = html_to_text(content)
    assert text.startswith(ARTICLES["article-9588.html"]["teaser_first_sentence"])
    assert "(占位段落三)" in text and "<script" not in content


def test_largest_text_block_is_the_last_resort(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trafilatura, "extract", lambda *args, **kwargs: None)
    prose = "<p>" + "A long paragraph of real prose. " * 5 + "</p>"
    page = f"<div class='nav'><p>Home</p></div><div class='x'>{prose}{prose}</div>"
    content = read(page, want_content=True).content_html
    assert content is not None
    assert content.count("<p>") == 2


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "<article>", "</article>", "<time datetime='2022-13-45'>", "By x | 2022-01-12",
                '<script type="application/ld+json">', "</script>", '{"@graph": [', "[[[[",
                '"datePublished": "9999-99-99"', "<meta content='' property='date'>", "<p>",
                "\x00", "&#0;", "<div id='comments'>", "2022-02-30", "}", "$x$",
            ]
        )
    ).map("".join)
)  # fmt: skip
def test_any_page_parses_without_raising(page: str) -> None:
    article = read(page, want_content=True)
    assert article.published is None or article.published.tzinfo is not None
