"""extract: index pages → RawEntry lists, checked against the fixtures' truth.json."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from selectolax.lexbor import LexborHTMLParser

from feedwatch import extract as extract_module
from feedwatch.clean import fallback_title, first_sentence
from feedwatch.extract import compile_check, extract, parse
from feedwatch.models import Extraction, RawEntry, Selectors

FIXTURES = Path(__file__).parent / "fixtures"
TRUTH = json.loads((FIXTURES / "truth.json").read_text(encoding="utf-8"))
INDEX_PAGES = sorted(TRUTH["pages"])
NEXT_PAGE = "div.pagination a.next"
SELECTORS = Selectors(
    entry="div.post",
    title="h2.post-title a",
    link="h2.post-title a, a.more-link",
    date=".post-date",
    author=".post-meta .author",
    teaser=".post-body",
    exclude=("p.more", "a.more-link", "script"),
)
# A minimal configuration for hand-written pages.
SIMPLE = Selectors(entry="div.post", title="h2 a", link="h2 a", teaser=".body")
HOSTILE_PAGE = """<html><head><title>t</title></head><body>
<div class="post">
  <h2><a href="/p/1" onclick="x()">Title ]]&gt; with\x01 control&#x1; and &#xD800; chars</a></h2>
  <div class="body">
    <p onclick="steal()" style="position:fixed">Hello <b onmouseover="x()">world</b>.</p>
    <script>document.cookie</script>
    <iframe src="https://evil.example.com/">frame text</iframe>
    <p><a href="javascript:alert(1)">js</a> <a href="data:text/html,x">data</a>
       <img src="data:image/png;base64,AAAA" alt="d"> <img src="/ok.png" alt="ok"></p>
    <p>cdata ]]&gt; end \x0b vertical tab &#xFFFF; nonchar</p>
  </div>
</div>
</body></html>"""


def load(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def extract_fixture(name: str, selectors: Selectors = SELECTORS) -> Extraction:
    page = TRUTH["pages"][name]
    return extract(load(name), page["page_url"], selectors, NEXT_PAGE)


def truth_pairs(name: str) -> list[tuple[RawEntry, dict]]:
    """Each extracted entry with its truth entry; the counts are asserted equal first so a
    short extraction cannot pass by zipping fewer pairs."""
    got = extract_fixture(name).entries
    want = TRUTH["pages"][name]["entries"]
    assert len(got) == len(want) == TRUTH["pages"][name]["entry_count"]
    return list(zip(got, want, strict=True))


def page(body: str, head: str = "") -> str:
    return f"<html><head>{head}</head><body>{body}</body></html>"


def one_entry(
    body: str, selectors: Selectors = SIMPLE, url: str = "https://example.com/"
) -> RawEntry:
    result = extract(page(body), url, selectors)
    assert len(result.entries) == 1
    return result.entries[0]


def img_srcs(html: str) -> list[str | None]:
    return [node.attributes.get("src") for node in LexborHTMLParser(html).css("img")]


@pytest.mark.parametrize("name", INDEX_PAGES)
def test_every_truth_entry_is_found_once_in_page_order(name: str) -> None:
    links = [entry.link for entry in extract_fixture(name).entries]
    assert links == [entry["link"] for entry in TRUTH["pages"][name]["entries"]]


@pytest.mark.parametrize("name", INDEX_PAGES)
def test_positions_count_from_one_in_page_order(name: str) -> None:
    positions = [entry.position for entry in extract_fixture(name).entries]
    assert positions == [entry["position"] for entry in TRUTH["pages"][name]["entries"]]


@pytest.mark.parametrize("name", INDEX_PAGES)
def test_titles_match_truth_and_missing_titles_are_none(name: str) -> None:
    for got, want in truth_pairs(name):
        assert got.title == want["title"], want["link"]


@pytest.mark.parametrize("name", INDEX_PAGES)
def test_date_text_and_datetime_attribute_match_truth(name: str) -> None:
    for got, want in truth_pairs(name):
        assert (got.date_text, got.date_attr) == (want["date"], want["datetime_attr"])


@pytest.mark.parametrize("name", INDEX_PAGES)
def test_authors_match_truth(name: str) -> None:
    for got, want in truth_pairs(name):
        assert got.author == want["author"]


@pytest.mark.parametrize("name", INDEX_PAGES)
def test_teaser_text_is_the_truth_blocks_with_latex_verbatim(name: str) -> None:
    for got, want in truth_pairs(name):
        assert got.teaser_text == " ".join(want["teaser_blocks"]), want["link"]
        if want["teaser_first_sentence"]:
            assert want["teaser_first_sentence"] in got.teaser_text


@pytest.mark.parametrize("name", INDEX_PAGES)
def test_no_read_more_link_in_any_teaser(name: str) -> None:
    for got, _ in truth_pairs(name):
        assert "点击阅读全文" not in got.teaser_html
        assert "more-link" not in got.teaser_html


@pytest.mark.parametrize("name", INDEX_PAGES)
def test_teaser_images_are_absolute_and_match_truth(name: str) -> None:
    for got, want in truth_pairs(name):
        assert img_srcs(got.teaser_html) == want["images"]


@pytest.mark.parametrize("name", INDEX_PAGES)
def test_image_captions_appear_once_in_teasers(name: str) -> None:
    for got, want in truth_pairs(name):
        for caption in want["image_captions"]:
            assert got.teaser_html.count(caption) == 1
            assert got.teaser_text.count(caption) == 1


@pytest.mark.parametrize("name", INDEX_PAGES)
def test_no_script_or_style_in_teasers(name: str) -> None:
    for got, _ in truth_pairs(name):
        assert "<script" not in got.teaser_html
        assert "MathJax" not in got.teaser_html
        assert "onclick" not in got.teaser_html
        assert "style=" not in got.teaser_html


@pytest.mark.parametrize("name", INDEX_PAGES)
def test_next_page_and_page_title_match_truth(name: str) -> None:
    result = extract_fixture(name)
    assert result.next_page == TRUTH["pages"][name]["next_page"]
    assert result.page_title == TRUTH["pages"][name]["page_title"]


@pytest.mark.parametrize("name", ["home-1.html", "home-2.html", "mixed-1.html"])
def test_read_more_link_and_its_paragraph_removed_without_exclude(name: str) -> None:
    entries = extract_fixture(name, replace(SELECTORS, exclude=())).entries
    assert len(entries) == 8
    for entry in entries:
        assert "点击阅读全文" not in entry.teaser_html
        assert "<p></p>" not in entry.teaser_html
        assert "<script" not in entry.teaser_html


def test_untitled_entries_get_a_fallback_title_from_their_first_sentence() -> None:
    untitled = [
        (got, want)
        for name in INDEX_PAGES
        for got, want in truth_pairs(name)
        if want["title"] is None
    ]
    assert len(untitled) == 4
    for got, want in untitled:
        title = fallback_title(got.teaser_text)
        sentence = want["teaser_first_sentence"]
        assert len(title) <= 80
        if len(sentence) <= 80 and first_sentence(got.teaser_text) == sentence:
            assert title == sentence
        else:
            assert title.endswith("…")
            assert title[:-1] == got.teaser_text[: len(title) - 1]
            assert title.startswith(sentence[:40])


def test_fallback_titles_of_untitled_fixture_entries() -> None:
    titles = {
        got.link: fallback_title(got.teaser_text)
        for name in INDEX_PAGES
        for got, want in truth_pairs(name)
        if want["title"] is None
    }
    assert titles["https://kexue.fm/archives/9112"] == (
        "可能有读者留意到,这次更新相对来说隔得比较久了。"
    )
    assert titles["https://kexue.fm/archives/2214"].startswith("阿达马不等式 设有$n$阶实矩阵")


def test_link_falls_back_to_the_read_more_link_when_there_is_no_title_link() -> None:
    entries = {entry.link: entry for entry in extract_fixture("home-2.html").entries}
    entry = entries["https://kexue.fm/archives/9112"]
    assert entry.title is None
    assert entry.position == 2


def test_link_alternatives_are_tried_in_selector_order_not_document_order() -> None:
    body = (
        '<div class="post"><a class="more" href="/more">x</a><h2><a href="/title">T</a></h2></div>'
    )
    selectors = Selectors(entry="div.post", link="h2 a, a.more")
    assert one_entry(body, selectors).link == "https://example.com/title"


def test_link_alternative_without_usable_href_falls_through_to_the_next() -> None:
    body = (
        '<div class="post"><h2><a href="javascript:;">T</a></h2>'
        '<a class="more" href="/p/1#more">more</a></div>'
    )
    selectors = Selectors(entry="div.post", title="h2 a", link="h2 a, a.more")
    entry = one_entry(body, selectors)
    assert (entry.link, entry.title) == ("https://example.com/p/1", "T")


def test_link_selector_list_with_commas_inside_brackets_is_split_correctly() -> None:
    body = '<div class="post"><a data-x="a,b" href="/one">1</a><a href="/two">2</a></div>'
    selectors = Selectors(entry="div.post", link='a[data-x="a,b"], a')
    assert one_entry(body, selectors).link == "https://example.com/one"


def test_without_link_selector_the_title_link_is_used() -> None:
    body = '<div class="post"><a href="/date">5 Jun</a><h2><a href="/post">T</a></h2></div>'
    selectors = Selectors(entry="div.post", title="h2")
    assert one_entry(body, selectors).link == "https://example.com/post"


def test_without_link_or_title_selector_the_first_link_is_used() -> None:
    body = '<div class="post"><p>x <a href="/first">a</a> <a href="/second">b</a></p></div>'
    assert one_entry(body, Selectors(entry="div.post")).link == "https://example.com/first"


def test_entries_without_a_usable_link_are_skipped() -> None:
    body = (
        '<div class="post"><h2><a href="javascript:void(0)">a</a></h2></div>'
        '<div class="post"><h2>no link</h2></div>'
        '<div class="post"><h2><a href="#">self</a></h2></div>'
        '<div class="post"><h2><a href="mailto:x@y.z">mail</a></h2></div>'
        '<div class="post"><h2><a href="/real">real</a></h2></div>'
    )
    result = extract(page(body), "https://example.com/", SIMPLE)
    assert [(e.link, e.position) for e in result.entries] == [("https://example.com/real", 1)]


def test_duplicate_links_on_a_page_keep_the_first_entry() -> None:
    body = (
        '<div class="post"><h2><a href="/p/1">first</a></h2></div>'
        '<div class="post"><h2><a href="https://example.com:443/p/1#c">again</a></h2></div>'
        '<div class="post"><h2><a href="/p/2">second</a></h2></div>'
    )
    result = extract(page(body), "https://example.com/", SIMPLE)
    assert [(e.title, e.position) for e in result.entries] == [("first", 1), ("second", 2)]


def test_base_href_resolves_relative_links_and_images() -> None:
    html = page(
        '<div class="post"><h2><a href="p/1">T</a></h2>'
        '<div class="body"><img src="i.png"><a href="q">q</a></div></div>',
        head='<base href="/blog/">',
    )
    entry = extract(html, "https://example.com/index.html", SIMPLE).entries[0]
    assert entry.link == "https://example.com/blog/p/1"
    assert img_srcs(entry.teaser_html) == ["https://example.com/blog/i.png"]
    assert 'href="https://example.com/blog/q"' in entry.teaser_html


def test_date_spans_are_joined_with_a_space() -> None:
    body = (
        '<div class="post"><h2><a href="/p">T</a></h2>'
        '<div class="d"><span class="day">10</span><span class="month">Apr</span></div></div>'
    )
    entry = one_entry(body, replace(SIMPLE, date=".d"))
    assert (entry.date_text, entry.date_attr) == ("10 Apr", None)


def test_datetime_attribute_of_a_descendant_time_element() -> None:
    body = (
        '<div class="post"><h2><a href="/p">T</a></h2><p class="meta">Posted '
        '<time datetime="2024-05-13T22:06:00+08:00">May 13, 2024</time></p></div>'
    )
    entry = one_entry(body, replace(SIMPLE, date=".meta"))
    assert (entry.date_text, entry.date_attr) == (
        "Posted May 13, 2024",
        "2024-05-13T22:06:00+08:00",
    )


def test_missing_optional_parts_are_none_or_empty() -> None:
    entry = one_entry('<div class="post"><h2><a href="/p"> </a></h2></div>')
    assert (entry.title, entry.date_text, entry.author, entry.teaser_html, entry.teaser_text) == (
        None,
        None,
        None,
        "",
        "",
    )


def test_read_more_labels_are_recognised_in_several_languages() -> None:
    body = (
        '<div class="post"><h2><a href="/p">T</a></h2><div class="body">'
        "<p>Kept text.</p>"
        '<p><a href="/p">Read more »</a></p>'
        '<p> <a href="/p">Continue reading…</a> </p>'
        '<p><a href="/p">MORE</a></p>'
        '<p><a href="/p">阅读全文&hellip;</a></p>'
        '<a href="/p">继续阅读...</a>'
        '<p><strong><a href="/p">(more…)</a></strong></p>'
        '<p><a href="/p">[Read More →]</a></p>'
        "</div></div>"
    )
    entry = one_entry(body)
    assert entry.teaser_html == "<p>Kept text.</p>"


def test_read_more_paragraph_with_other_text_keeps_that_text() -> None:
    body = (
        '<div class="post"><h2><a href="/p">T</a></h2><div class="body">'
        '<p>The end of the teaser. <a href="/p">Read more</a></p>'
        '<p>See <a href="/other">the more detailed post</a>.</p></div></div>'
    )
    entry = one_entry(body)
    assert entry.teaser_text == "The end of the teaser. See the more detailed post."


def test_caption_duplicated_in_alt_is_kept_once() -> None:
    body = (
        '<div class="post"><h2><a href="/p">T</a></h2><div class="body">'
        '<p><a href="/big.png"><img src="/small.png" alt="A cast iron wok"></a></p>\n'
        "<!-- caption --><p>A cast iron wok</p>"
        '<figure><img src="/f.png" alt="Figure one"><figcaption>Figure one</figcaption></figure>'
        '<p><img src="/o.png" alt="Other picture"></p><p>Different caption</p>'
        "</div></div>"
    )
    entry = one_entry(body)
    alts = [n.attributes.get("alt") for n in LexborHTMLParser(entry.teaser_html).css("img")]
    assert alts == ["", "", "Other picture"]
    assert entry.teaser_html.count("A cast iron wok") == 1
    assert entry.teaser_html.count("Figure one") == 1


def test_exclude_selectors_remove_elements_from_the_teaser_only() -> None:
    body = (
        '<div class="post"><h2><a href="/p">T</a></h2><div class="body">'
        '<p>keep</p><div class="ad">buy now</div><p class="share">share</p></div></div>'
    )
    entry = one_entry(body, replace(SIMPLE, exclude=(".ad", "div.post p.share")))
    assert entry.teaser_html == "<p>keep</p>"


def test_extract_with_a_given_tree_parses_nothing_and_leaves_the_tree_intact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    html = load("home-1.html")
    tree = parse(html)
    before = tree.html
    calls: list[str] = []

    def counting_parse(text: str) -> LexborHTMLParser:
        calls.append(text)
        return parse(text)

    monkeypatch.setattr(extract_module, "parse", counting_parse)
    result = extract(html, "https://kexue.fm/", SELECTORS, NEXT_PAGE, tree=tree)
    assert calls == []
    assert len(result.entries) == 8
    assert tree.html == before
    assert extract(html, "https://kexue.fm/", SELECTORS, NEXT_PAGE, tree=tree) == result


def test_extract_without_a_tree_parses_the_page_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def counting_parse(text: str) -> LexborHTMLParser:
        calls.append(text)
        return parse(text)

    monkeypatch.setattr(extract_module, "parse", counting_parse)
    extract(load("home-1.html"), "https://kexue.fm/", SELECTORS, NEXT_PAGE)
    assert len(calls) == 1


def test_next_page_from_rel_next_when_no_selector_is_configured() -> None:
    html = page("<a rel='prev' href='/1'>prev</a>", head='<link rel="next" href="/page/3/#top">')
    assert (
        extract(html, "https://example.com/page/2/", SIMPLE).next_page
        == "https://example.com/page/3/"
    )
    html = page("<a rel='nofollow next' href='?page=3'>next</a>")
    assert (
        extract(html, "https://example.com/list", SIMPLE).next_page
        == "https://example.com/list?page=3"
    )


def test_next_page_equal_to_the_current_page_is_none() -> None:
    html = page('<div class="pagination"><a class="next" href="/page/2/#">»</a></div>')
    assert extract(html, "https://example.com/page/2/", SIMPLE, NEXT_PAGE).next_page is None


def test_next_page_selector_without_match_ignores_rel_next() -> None:
    html = page("", head='<link rel="next" href="/page/3/">')
    assert extract(html, "https://example.com/page/2/", SIMPLE, NEXT_PAGE).next_page is None


def test_hostile_teaser_is_sanitized() -> None:
    entry = extract(HOSTILE_PAGE, "https://example.com/", SIMPLE).entries[0]
    html = entry.teaser_html
    for banned in ("<script", "document.cookie", "<iframe", "frame text", "onclick", "onmouseover",
                   "style=", "javascript:", "data:", "\x0b", "\uffff", "]]>"):  # fmt: skip
        assert banned not in html, banned
    assert img_srcs(html) == [None, "https://example.com/ok.png"]
    assert entry.teaser_text == "Hello world. js data cdata ]]> end vertical tab nonchar"


def test_hostile_title_has_no_illegal_characters() -> None:
    entry = extract(HOSTILE_PAGE, "https://example.com/", SIMPLE).entries[0]
    assert entry.title == "Title ]]> with control and \ufffd chars"
    assert entry.link == "https://example.com/p/1"


def test_100_kb_title_is_capped() -> None:
    entry = one_entry(f'<div class="post"><h2><a href="/p">{"长" * 100_000}</a></h2></div>')
    assert entry.title == "长" * 299 + "…"


def test_deeply_nested_markup_does_not_raise() -> None:
    nested = "<div>" * 10_000 + "deep text" + "</div>" * 10_000
    body = f'<div class="post"><h2><a href="/p">T</a></h2><div class="body">{nested}</div></div>'
    entry = one_entry(body)
    assert entry.teaser_text == "deep text"
    assert entry.teaser_html.count("<div>") < extract_module.MAX_DEPTH
    assert extract(nested, "https://example.com/", SIMPLE).entries == ()


@pytest.mark.parametrize(
    "html",
    [
        "",
        "\x00\x01\x02 \ud800\udfff \ufffe",
        bytes(range(256)).decode("latin-1") * 20,
        "<div class='post'><h2><a href='http://[::1'>x</a>",
        "<<<>>></div></h2><a href=",
        "<div class=post><a href=/p>" + "<p>" * 2000,
    ],
)
def test_garbage_input_does_not_raise(html: str) -> None:
    result = extract(html, "https://example.com/", SELECTORS, NEXT_PAGE)
    assert isinstance(result, Extraction)
    assert all(entry.link.startswith("https://example.com/") for entry in result.entries)


def test_invalid_selectors_match_nothing_instead_of_raising() -> None:
    bad = Selectors(entry="div.post", title="h2[", link="a:has(", date="::x", teaser=">>")
    html = load("home-1.html")
    assert extract(html, "https://kexue.fm/", bad, "div[").entries == ()
    result = extract(html, "https://kexue.fm/", replace(bad, link=None), "div[")
    assert len(result.entries) == 8
    assert result.entries[0].title is None
    assert result.entries[0].teaser_html == ""
    assert result.next_page is None
    assert extract(html, "https://kexue.fm/", replace(bad, entry="div[")).entries == ()


def test_page_without_entries_yields_none() -> None:
    result = extract(load("article-9588.html"), "https://kexue.fm/archives/9588", SELECTORS)
    assert (result.entries, result.page_title is not None) == ((), True)


@pytest.mark.parametrize("selector", ["div.post", "h2.post-title a, a.more-link", "a[rel~=next i]"])
def test_compile_check_accepts_valid_selectors(selector: str) -> None:
    compile_check(selector)


@pytest.mark.parametrize("selector", ["", "  ", "div[", "a:has(", "h2 a,", "::before", "a\x00"])
def test_compile_check_rejects_invalid_selectors_with_a_message(selector: str) -> None:
    with pytest.raises(ValueError, match="selector"):
        compile_check(selector)


FRAGMENT = st.sampled_from(
    [
        "<script>x</script>",
        "<iframe src=x>",
        "<a href='javascript:x'>j</a>",
        "<img src='data:x' onerror=y>",
        "]]>",
        "\x00",
        "\x0b",
        "&#xD800;",
        "&#1;",
        "\ufffe",
        "科学空间。",
        "$a&amp;b$",
        "<p>",
        "</div>",
        "<h2>",
        "<a href='/p'>",
        "点击阅读全文...",
        "Read more",
    ]
)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.one_of(FRAGMENT, TEXT), max_size=8), min_size=1, max_size=5))
def test_extract_never_raises_on_entry_like_html(entries: list[list[str]]) -> None:
    body = "".join(
        f'<div class="post"><h2><a href="/p/{i}">{"".join(parts)}</a></h2>'
        f'<div class="body">{"".join(parts)}</div></div>'
        for i, parts in enumerate(entries)
    )
    result = extract(page(body), "https://example.com/", SIMPLE)
    for entry in result.entries:
        assert entry.link.startswith("https://example.com/")
        for text in (entry.title or "", entry.teaser_html, entry.teaser_text):
            assert not any(ord(c) < 32 and c not in "\t\n\r" for c in text)
            assert not any(c in "\ufffe\uffff" or 0xD800 <= ord(c) <= 0xDFFF for c in text)
        assert "<script" not in entry.teaser_html
        assert "javascript:" not in entry.teaser_html
