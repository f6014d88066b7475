"""clean: sanitizing teaser HTML, plain text, first sentences and canonical URLs."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from selectolax.lexbor import LexborHTMLParser

from feedwatch.clean import (
    canonical_url,
    clean_html,
    fallback_title,
    first_sentence,
    html_to_text,
    strip_illegal_xml,
)

FIXTURES = Path(__file__).parent / "fixtures"
TRUTH = json.loads((FIXTURES / "truth.json").read_text(encoding="utf-8"))
BASE = "https://kexue.fm/page/2/"
ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def truth_entries_with_teaser() -> list[tuple[str, dict]]:
    """(where, entry) for every index and article entry of truth.json that has a teaser."""
    found = [
        (f"{name}#{entry['position']}", entry)
        for name, page in TRUTH["pages"].items()
        for entry in page["entries"]
        if entry["teaser_blocks"]
    ]
    found += [(name, article) for name, article in TRUTH["articles"].items()]
    return found


def attribute_values(html: str, tag: str, attribute: str) -> list[str | None]:
    return [node.attributes.get(attribute) for node in LexborHTMLParser(html).css(tag)]


def test_clean_html_drops_active_elements_with_their_content() -> None:
    html = (
        "<p>kept</p><script>alert(1)</script><style>p{}</style><iframe>frame</iframe>"
        "<object>obj</object><embed src='x.swf'><form>form text<input name=q></form>"
    )
    cleaned = clean_html(html, BASE)
    assert cleaned == "<p>kept</p>"


def test_clean_html_removes_event_handlers_and_style_attributes() -> None:
    cleaned = clean_html(
        '<p style="color:red" onclick="steal()"><img src="/a.png" onerror="x()" alt="a"></p>',
        BASE,
    )
    assert cleaned == '<p><img src="https://kexue.fm/a.png" alt="a"></p>'


@pytest.mark.parametrize(
    "href",
    [
        "javascript:alert(1)",
        " JavaScript:alert(1)",
        "jav&#x61;script:alert(1)",
        "vbscript:msgbox(1)",
        "data:text/html;base64,PHNjcmlwdD4=",
    ],
)
def test_clean_html_drops_dangerous_url_schemes(href: str) -> None:
    cleaned = clean_html(f'<a href="{href}">x</a><img src="{href}">', BASE)
    assert attribute_values(cleaned, "a", "href") == [None]
    assert attribute_values(cleaned, "img", "src") == [None]


def test_clean_html_keeps_http_https_and_mailto_links() -> None:
    cleaned = clean_html(
        '<a href="http://a.example.test/">1</a><a href="https://b.example.test/x">2</a>'
        '<a href="mailto:me@example.org">3</a>',
        BASE,
    )
    assert attribute_values(cleaned, "a", "href") == [
        "http://a.example.test/",
        "https://b.example.test/x",
        "mailto:me@example.org",
    ]


def test_clean_html_makes_relative_urls_absolute_against_the_base() -> None:
    cleaned = clean_html(
        '<a href="/archives/8838">a</a><a href="next.html">b</a>'
        '<img src="//cdn.example.test/i.png">'
        '<img src="/usr/uploads/2023/11/3713620478.png">',
        BASE,
    )
    assert attribute_values(cleaned, "a", "href") == [
        "https://kexue.fm/archives/8838",
        "https://kexue.fm/page/2/next.html",
    ]
    assert attribute_values(cleaned, "img", "src") == [
        "https://cdn.example.test/i.png",
        "https://kexue.fm/usr/uploads/2023/11/3713620478.png",
    ]


def test_clean_html_removes_xml_illegal_characters() -> None:
    html = "<p>a\x01b\x0bc&#x1;d&#xD800;e&#xFFFE;f\ud800g\ufffeh\tI\nJ</p>"
    cleaned = clean_html(html, BASE)
    assert ILLEGAL_XML.search(cleaned) is None
    assert html_to_text(cleaned) == "abcd\ufffdefgh I J"


def test_clean_html_output_embeds_in_xml() -> None:
    cleaned = clean_html("<p>]]> &lt;![CDATA[ x ]]&gt; \x08 &#0; \ud83d</p>", BASE)
    element = ET.fromstring(f"<summary>{escape(cleaned)}</summary>")
    assert element.text == cleaned
    assert "]]>" not in cleaned


def test_clean_html_keeps_latex_verbatim() -> None:
    html = r"<p>$a &amp; b &lt; c$</p><p>\begin{equation}x_{t+1} = x_t\end{equation}</p>"
    cleaned = clean_html(html, BASE)
    assert html_to_text(cleaned) == r"$a & b < c$ \begin{equation}x_{t+1} = x_t\end{equation}"


def test_clean_html_of_empty_string_is_empty() -> None:
    assert clean_html("", BASE) == ""


def test_html_to_text_separates_blocks_but_not_inline_elements() -> None:
    html = "<h3>Head</h3><p>one<br>two</p><p><a>Adapter</a><a>P-Tuning</a> <em>x</em>y</p>"
    assert html_to_text(html) == "Head one two AdapterP-Tuning xy"


def test_html_to_text_ignores_scripts_styles_and_alt_text() -> None:
    html = "<p>a<script>var s = 1;</script><style>p{}</style><img alt='picture'>b</p>"
    assert html_to_text(html) == "ab"


def test_html_to_text_collapses_whitespace_runs() -> None:
    assert html_to_text("<p>\n  a \t\n b&nbsp;&nbsp;c </p>\n") == "a b c"


def test_html_to_text_of_empty_string_is_empty() -> None:
    assert html_to_text("") == ""


def test_strip_illegal_xml_keeps_tab_newline_cr_and_unicode() -> None:
    text = "\x00a\tb\nc\rd\x1f科学\ud800空间\uffff😀\ufffe"
    assert strip_illegal_xml(text) == "a\tb\nc\rd科学空间😀"


@pytest.mark.parametrize(("where", "entry"), truth_entries_with_teaser())
def test_first_sentence_of_first_teaser_block_matches_truth(where: str, entry: dict) -> None:
    assert first_sentence(entry["teaser_blocks"][0]) == entry["teaser_first_sentence"], where


def test_first_sentence_skips_marks_inside_book_titles_and_math() -> None:
    text = "《为什么?一个问题》中,设$n!$与$$x?$$相等。后面还有!"
    assert first_sentence(text) == "《为什么?一个问题》中,设$n!$与$$x?$$相等。"


def test_first_sentence_keeps_closing_quotes() -> None:
    assert first_sentence("他说“真的吗?”然后走了。") == "他说“真的吗?”"


def test_first_sentence_ends_latin_sentences_at_a_period_before_whitespace() -> None:
    assert first_sentence("Transformers scale well. We test 3.5 times e.g. more.") == (
        "Transformers scale well."
    )


def test_first_sentence_does_not_end_at_abbreviations_initials_or_numbers() -> None:
    text = "See Fig. 2 and e.g. J. Smith on v1.2 in 1. place, done. Rest"
    assert first_sentence(text) == "See Fig. 2 and e.g. J. Smith on v1.2 in 1. place, done."


def test_first_sentence_without_an_end_is_the_whole_text() -> None:
    assert first_sentence("  阿达马不等式  ") == "阿达马不等式"


def test_fallback_title_is_the_first_sentence_when_short() -> None:
    assert fallback_title("可能有读者留意到,这次更新相对来说隔得比较久了。 下一句。") == (
        "可能有读者留意到,这次更新相对来说隔得比较久了。"
    )


def test_fallback_title_ellipsizes_beyond_the_limit() -> None:
    title = fallback_title("字" * 200 + "。", limit=80)
    assert title == "字" * 79 + "…"


def test_fallback_title_of_empty_teaser_is_empty() -> None:
    assert fallback_title("") == ""
    assert fallback_title("   ") == ""


def test_canonical_url_percent_encoded_and_raw_unicode_forms_are_equal() -> None:
    encoded = canonical_url("https://kexue.fm/tag/%E7%B2%BE%E9%80%89/", BASE)
    assert encoded == "https://kexue.fm/tag/%E7%B2%BE%E9%80%89/"
    assert canonical_url("https://kexue.fm/tag/精选/", BASE) == encoded
    assert canonical_url("/tag/%e7%b2%be%e9%80%89/", BASE) == encoded


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        ("/archives/9105", "https://kexue.fm/archives/9105"),
        ("/archives/9105#comments", "https://kexue.fm/archives/9105"),
        ("HTTPS://KeXue.FM:443/archives/9105", "https://kexue.fm/archives/9105"),
        ("http://kexue.fm:80", "http://kexue.fm/"),
        ("http://kexue.fm:8080/x", "http://kexue.fm:8080/x"),
        ("../3/", "https://kexue.fm/page/3/"),
        ("https://kexue.fm/a/./b/../c", "https://kexue.fm/a/c"),
        ("https://kexue.fm/%7Euser/%41", "https://kexue.fm/~user/A"),
        ("https://kexue.fm/a%2fb?x=%2f&y=a b", "https://kexue.fm/a%2Fb?x=%2F&y=a%20b"),
        ("https://kexue.fm/100%", "https://kexue.fm/100%25"),
        ("  /archives/1\n", "https://kexue.fm/archives/1"),
        ("//cdn.example.test/x", "https://cdn.example.test/x"),
        ("https://例子.test/", "https://xn--fsqu00a.test/"),
        ("#", "https://kexue.fm/page/2/"),
    ],
)
def test_canonical_url_normalises(href: str, expected: str) -> None:
    assert canonical_url(href, BASE) == expected


@pytest.mark.parametrize(
    "href",
    [None, "", "   ", "javascript:;", "mailto:a@b.c", "ftp://kexue.fm/", "data:,x", "http://[::1"],
)
def test_canonical_url_rejects_what_is_not_an_http_url(href: str | None) -> None:
    assert canonical_url(href, BASE) is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_canonical_url_never_raises_and_is_idempotent(href: str) -> None:
    url = canonical_url(href, BASE)
    if url is not None:
        assert url.startswith(("http://", "https://"))
        assert canonical_url(url, BASE) == url
