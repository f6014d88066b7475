"""Selectors → entries: what one index page lists, cleaned but not yet dated or stored.

The page is a remote site's markup, so nothing here may raise on it: a selector that
does not compile or matches nothing yields nothing, never an exception.
"""

from __future__ import annotations

from collections.abc import Iterator

from selectolax.lexbor import LexborHTMLParser, LexborNode, SelectolaxError

from feedwatch.clean import canonical_url, clean_html, html_to_text, strip_illegal_xml
from feedwatch.models import Extraction, RawEntry, Selectors

MAX_TITLE = 300
MAX_SHORT_TEXT = 200  # author, date text and datetime attribute

# Link texts of "read the whole post" links, compared case-insensitively after surrounding
# dots, ellipses, arrows and brackets are stripped ("点击阅读全文..." and WordPress's
# "(more…)" match).
READ_MORE_TEXTS = frozenset(
    {
        "点击阅读全文", "阅读全文", "阅读更多", "继续阅读", "查看全文",
        "read more", "continue reading", "more", "keep reading",
        "read the rest of this entry",
    }
)  # fmt: skip
_READ_MORE_DECORATION = " \u00a0.…»›→>«‹←<[]()【】"
# Inline elements that may wrap a read-more link inside its paragraph.
_INLINE_WRAPPERS = frozenset({"span", "strong", "b", "em", "i", "small", "u"})
_NOT_CONTENT = "script, style, noscript, template"
_CAPTION_TAGS = ("p", "figcaption")
# Elements this deep are reduced to their text: no real page nests formatting that far, and
# every later HTML parse (sanitizer, text) of a hostile 10,000-level chain costs quadratic time.
MAX_DEPTH = 100
_TOO_DEEP = ":root" + " > *" * MAX_DEPTH


def parse(html: str) -> LexborHTMLParser:
    """Parse a page. Every page goes through here once, so the tree can be shared by
    extraction and selector detection; both get it already flattened."""
    tree = LexborHTMLParser(strip_illegal_xml(html))
    flatten_deep(tree)
    return tree


def flatten_deep(tree: LexborHTMLParser) -> None:
    """Reduce elements nested deeper than MAX_DEPTH to their text, scripts and styles in them
    dropped: walks up or down a hostile 10,000-level chain (detection's, the detail page's
    article lookups) cost quadratic time, seconds to minutes of CPU for one page."""
    for node in _select(tree, _TOO_DEEP):
        for code in _select(node, _NOT_CONTENT):
            code.decompose()
        node.replace_with(node.text(deep=True))


def compile_check(selector: str) -> None:
    """Raise ValueError naming the problem if `selector` is not a CSS selector lexbor can
    compile; config calls this so that a typo fails before anything is fetched."""
    if not isinstance(selector, str) or not selector.strip():
        raise ValueError("empty CSS selector")
    if strip_illegal_xml(selector) != selector:
        raise ValueError(f"CSS selector {selector!r} contains control characters")
    try:
        LexborHTMLParser("").css(selector)
    except (SelectolaxError, UnicodeError) as exc:
        raise ValueError(f"invalid CSS selector {selector!r}: {exc}") from None


def extract(
    html: str,
    url: str,
    selectors: Selectors,
    next_page: str | None = None,
    *,
    tree: LexborHTMLParser | None = None,
) -> Extraction:
    """The entries of one index page, in page order, plus its next-page URL and title.

    `tree` is the already parsed `html` (from `parse`); it is left untouched, because the
    teaser clean-up edits a private copy. Entries without a usable http(s) link are
    skipped, and a link seen earlier on the page is not listed again.
    """
    doc = tree.clone() if tree is not None else parse(html)
    page_url = canonical_url(url, url)
    base = _base_url(doc, url)
    page_title = _page_title(doc)
    next_url = _next_page(doc, next_page, base, page_url)
    for node in _select(doc, _NOT_CONTENT):
        node.decompose()
    for node in _select(doc, _TOO_DEEP):
        node.replace_with(node.text(deep=True))

    link_chain = _split_selector_list(selectors.link) if selectors.link else ()
    entries: list[RawEntry] = []
    seen: set[str] = set()
    for node in _select(doc, selectors.entry):
        title_node = _first(node, selectors.title)
        link = _entry_link(node, link_chain, title_node, base, page_url)
        if link is None or link in seen:
            continue
        seen.add(link)
        date_text, date_attr = _date(node, selectors.date)
        teaser_html = _teaser_html(node, selectors, base)
        entries.append(
            RawEntry(
                link=link,
                title=_short_text(title_node, MAX_TITLE),
                date_text=date_text,
                date_attr=date_attr,
                author=_short_text(_first(node, selectors.author), MAX_SHORT_TEXT),
                teaser_html=teaser_html,
                teaser_text=html_to_text(teaser_html),
                position=len(entries) + 1,
            )
        )
    return Extraction(entries=tuple(entries), next_page=next_url, page_title=page_title)


def _select(node: LexborNode | LexborHTMLParser, selector: str | None) -> list[LexborNode]:
    """`node.css(selector)` that treats a selector lexbor rejects as matching nothing."""
    if not selector:
        return []
    try:
        return node.css(selector)
    except (SelectolaxError, UnicodeError):
        return []


def _first(node: LexborNode | LexborHTMLParser, selector: str | None) -> LexborNode | None:
    if not selector:
        return None
    try:
        return node.css_first(selector)
    except (SelectolaxError, UnicodeError):
        return None


def _split_selector_list(selector: str) -> tuple[str, ...]:
    """Split "h2 a, a.more-link" at its top-level commas (not those inside :is(...),
    [attr="a,b"] or escapes), so each alternative can be tried in turn."""
    parts: list[str] = []
    depth = 0
    quote = ""
    start = 0
    escaped = False
    for i, ch in enumerate(selector):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(selector[start:i])
            start = i + 1
    parts.append(selector[start:])
    return tuple(part.strip() for part in parts if part.strip())


def _norm(text: str) -> str:
    return " ".join(strip_illegal_xml(text).split())


def _short_text(node: LexborNode | None, limit: int) -> str | None:
    """Whitespace-normalised text of `node`, cut to `limit` characters; None if empty."""
    if node is None:
        return None
    text = _norm(node.text(deep=True))
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text or None


def _base_url(doc: LexborHTMLParser, url: str) -> str:
    base = _first(doc, "base[href]")
    if base is not None:
        resolved = canonical_url(base.attributes.get("href"), url)
        if resolved is not None:
            return resolved
    return url


def _page_title(doc: LexborHTMLParser) -> str | None:
    head = doc.head
    title = _first(head, "title") if head is not None else None
    return _short_text(title, MAX_TITLE)


def _next_page(
    doc: LexborHTMLParser, selector: str | None, base: str, page_url: str | None
) -> str | None:
    """The next index page: the configured selector's href, else rel="next" (which only
    applies when no selector is configured); never the page itself."""
    if selector:
        candidates = _select(doc, selector)
    else:
        candidates = _select(doc, "link[rel~=next i][href], a[rel~=next i][href]")
    for node in candidates:
        href = _href(node, base)
        if href is not None:
            return None if href == page_url else href
    return None


def _href(node: LexborNode, base: str) -> str | None:
    """The canonical http(s) URL of `node`'s href, or of its first descendant link when
    the selector picked a container such as the title heading."""
    href = node.attributes.get("href")
    if href is None:
        inner = _first(node, "a[href]")
        href = inner.attributes.get("href") if inner is not None else None
    return canonical_url(href, base)


def _entry_link(
    entry: LexborNode,
    link_chain: tuple[str, ...],
    title_node: LexborNode | None,
    base: str,
    page_url: str | None,
) -> str | None:
    """The entry's identity: the first usable href of each link selector alternative in
    turn; without a link selector the title's link, else the entry's first link. A link
    back to the index page itself (href="#") identifies nothing."""
    for node in _link_candidates(entry, link_chain, title_node):
        href = _href(node, base)
        if href is not None and href != page_url:
            return href
    return None


def _link_candidates(
    entry: LexborNode, link_chain: tuple[str, ...], title_node: LexborNode | None
) -> Iterator[LexborNode]:
    if link_chain:
        for part in link_chain:
            yield from _select(entry, part)
        return
    if title_node is not None:
        yield title_node
    yield from _select(entry, "a[href]")


def _date(entry: LexborNode, selector: str | None) -> tuple[str | None, str | None]:
    """(date text, datetime attribute) of the entry's date element. Text nodes are joined
    with spaces so "<span>10</span><span>Apr</span>" reads "10 Apr"."""
    node = _first(entry, selector)
    if node is None:
        return None, None
    attr = node.attributes.get("datetime")
    if not attr:
        inner = _first(node, "time[datetime]")
        attr = inner.attributes.get("datetime") if inner is not None else None
    text = _norm(node.text(deep=True, separator=" "))[:MAX_SHORT_TEXT]
    attr = _norm(attr)[:MAX_SHORT_TEXT] if attr else ""
    return text or None, attr or None


def _teaser_html(entry: LexborNode, selectors: Selectors, base: str) -> str:
    """The teaser element's inner HTML without excluded parts and read-more links, with
    image alt text that repeats the caption below it dropped, then sanitized."""
    teaser = _first(entry, selectors.teaser)
    if teaser is None:
        return ""
    for node in _excluded(teaser, selectors.exclude):
        if node.mem_id != teaser.mem_id:
            node.decompose()
    _remove_read_more(teaser)
    _drop_repeated_alt(teaser)
    return clean_html(teaser.inner_html or "", base)


def _excluded(teaser: LexborNode, exclude: tuple[str, ...]) -> list[LexborNode]:
    """Elements matched by any `exclude` selector: one query for the whole list, and one per
    selector only if the list does not compile, so one bad selector does not disable all."""
    if not exclude:
        return []
    try:
        return teaser.css(", ".join(exclude))
    except (SelectolaxError, UnicodeError):
        return [node for selector in exclude for node in _select(teaser, selector)]


def _is_read_more(text: str) -> bool:
    """Whether a link's text is a "read the whole post" label."""
    return _norm(text).strip(_READ_MORE_DECORATION).casefold() in READ_MORE_TEXTS


def _remove_read_more(teaser: LexborNode) -> None:
    """Remove read-more links (by their text, so it works without an `exclude`), and the
    paragraph that only held one (also through inline wrappers such as <strong>)."""
    for link in _select(teaser, "a"):
        if link.mem_id == teaser.mem_id or not _is_read_more(link.text(deep=True)):
            continue
        container = link.parent
        link.decompose()
        while (
            container is not None
            and container.tag in _INLINE_WRAPPERS
            and container.mem_id != teaser.mem_id
            and _is_blank(container)
        ):
            container = container.parent
        if (
            container is not None
            and container.tag == "p"
            and container.mem_id != teaser.mem_id
            and _is_blank(container)
        ):
            container.decompose()


def _is_blank(node: LexborNode) -> bool:
    """No text and no image: nothing a reader would miss."""
    return not _norm(node.text(deep=True)) and not _select(node, "img")


def _drop_repeated_alt(teaser: LexborNode) -> None:
    """Empty an image's alt when the paragraph (or figcaption) right after the image says
    the same, so that text-only readers do not show the caption twice."""
    for img in _select(teaser, "img[alt]"):
        alt = _norm(img.attributes.get("alt") or "")
        if not alt:
            continue
        following = _following_block(img, teaser)
        if (
            following is not None
            and following.tag in _CAPTION_TAGS
            and _norm(following.text(deep=True)) == alt
        ):
            img.attrs["alt"] = ""


def _following_block(node: LexborNode, stop: LexborNode) -> LexborNode | None:
    """The element right after `node` (whitespace and comments skipped), climbing out of
    wrappers like <p> or <a> that `node` ends, but not out of `stop`."""
    current: LexborNode | None = node
    while current is not None and current.mem_id != stop.mem_id:
        sibling = current.next
        while sibling is not None and (
            sibling.is_comment_node or (sibling.is_text_node and not _norm(sibling.text()))
        ):
            sibling = sibling.next
        if sibling is not None:
            return sibling if sibling.is_element_node else None
        current = current.parent
    return None
