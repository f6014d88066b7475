"""What an entry's own page says about it: exact dates, author, title and the article body.

Index pages often print "12 Jan" and nothing more; the post's own page is where the year
is. Sites say it in one of a few well-known places, tried from the most to the least
machine-readable: JSON-LD, `article:published_time`-style meta tags, a `<time datetime>`
in the article header, and finally a byline such as "By 苏剑林 | 2022-01-12 | …". Comment
sections and sidebars carry dates too (of comments, of other posts), so those are never
read. Everything here is a pure function of the page's HTML: the caller fetches and stores.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from selectolax.lexbor import LexborHTMLParser, LexborNode

from feedwatch.clean import clean_html
from feedwatch.dates import parse_date
from feedwatch.extract import flatten_deep


@dataclass(frozen=True)
class Article:
    """An entry's own page, read. Dates are aware; None means the page does not say."""

    published: datetime | None
    modified: datetime | None
    author: str | None
    title: str | None
    content_html: str | None


_ARTICLE_TYPE = re.compile(r"(?:Article|Posting|Report)$")
_MAX_JSON_DEPTH = 6

_PUBLISHED_META = ("article:published_time", "og:article:published_time",
                   "og:published_time", "datepublished", "dc.date.issued", "dcterms.issued",
                   "dc.date", "date", "pubdate")  # fmt: skip
_MODIFIED_META = ("article:modified_time", "og:article:modified_time", "og:updated_time",
                  "datemodified", "dc.date.modified", "dcterms.modified")  # fmt: skip
_AUTHOR_META = ("article:author", "author", "dc.creator")
_TITLE_META = ("og:title", "twitter:title", "dc.title")

# Where an article's own header lives, most specific first; `body` is the last resort.
_SCOPES = ("article", "[itemtype*=Article], [itemtype*=Posting]", ".hentry", ".post", ".entry",
           "main", "[role=main]")  # fmt: skip
# Parts of a page that carry other people's or other posts' dates and names.
_NOT_ARTICLE = re.compile(
    r"\b(?:comments?|commentlist|respond|repl(?:y|ies)|sidebar|widgets?|related|footer|share"
    r"|sharing|popular)\b",
    re.IGNORECASE,
)
_NOT_ARTICLE_TAGS = frozenset({"aside", "footer", "nav", "form"})
_MODIFIED_MARK = re.compile(r"modif|updat", re.IGNORECASE)

_BYLINE = re.compile(
    r"^\s*(?:by\s+|作者\s*[:：]?\s*)(?P<author>[^|·•,\n]+?)\s*(?:[|·•,]|\s(?:on|at)\s|\d{4}|$)",
    re.IGNORECASE,
)
_BYLINE_CLASS = re.compile(r"\b(?:byline|post-meta|entry-meta|article-meta|post-info|meta)\b")
_BYLINE_SELECTORS = (".post-meta, .byline, .entry-meta, .article-meta, .post-info, .meta, "
                     "p, div, span, header")  # fmt: skip
_MAX_BYLINE = 300

_JUNK_TAGS = frozenset({"script", "style", "noscript", "template", "form", "nav", "aside",
                        "footer", "button", "input", "textarea", "select", "iframe"})  # fmt: skip
_BODY_SELECTORS = ("[itemprop=articleBody]", ".post-body", ".entry-content", ".post-content",
                   ".article-content", ".article-body", "article", "main")  # fmt: skip
_MIN_BODY_TEXT = 50


def parse_article(
    html: str,
    url: str,
    *,
    tz: tzinfo,
    want_content: bool = False,
    content_selector: str | None = None,
) -> Article:
    """Read an entry's own page. Never raises on what the page contains.

    Each field comes from the first source that has it, so a page with a broken JSON-LD
    block still gets its date from meta tags or the byline. A date counts only with its
    year (the year is what the index page could not tell); one without a zone is in `tz`.
    The body is only extracted when `want_content`, because it is the costly part.
    """
    tree = LexborHTMLParser(html)
    # Each lookup below walks up from an element to its article: on a hostile
    # 10,000-level chain, minutes of CPU unless the chain is flattened first.
    flatten_deep(tree)
    ld = list(_json_ld_articles(tree))
    meta = _meta(tree)
    scope = _scope(tree)
    byline = _byline(scope)

    published = _first_date(
        [
            *(_text(obj.get(key)) for obj in ld for key in ("datePublished", "dateCreated")),
            *(meta.get(key) for key in _PUBLISHED_META),
            *_header_times(scope, modified=False),
            byline[1] if byline else None,
        ],
        tz,
    )
    modified = _first_date(
        [
            *(_text(obj.get("dateModified")) for obj in ld),
            *(meta.get(key) for key in _MODIFIED_META),
            *_header_times(scope, modified=True),
        ],
        tz,
    )
    author = _first_text(
        [
            *(_ld_author(obj.get("author")) for obj in ld),
            *(meta.get(key) for key in _AUTHOR_META if not _is_url(meta.get(key))),
            byline[0] if byline else None,
            *(_node_text(node) for node in _in_article(scope, "[rel=author], .author")),
        ]
    )
    title = _first_text(
        [
            *(_text(obj.get(key)) for obj in ld for key in ("headline", "name")),
            *(meta.get(key) for key in _TITLE_META),
            *(_node_text(node) for node in _in_article(scope, "h1")),
            _node_text(tree.css_first("title")),
        ]
    )
    content = _content(tree, html, url, content_selector) if want_content else None
    return Article(published, modified, author, title, content)


def _json_ld_articles(tree: LexborHTMLParser) -> Iterator[dict[str, Any]]:
    """Article-like objects of every JSON-LD block, also inside lists and `@graph`."""
    for script in tree.css("script"):
        kind = (script.attributes.get("type") or "").strip().lower()
        if kind != "application/ld+json":
            continue
        try:
            data = json.loads(script.text(deep=True), strict=False)
        except (ValueError, RecursionError):
            continue
        yield from _articles_in(data, 0)


def _articles_in(node: Any, depth: int) -> Iterator[dict[str, Any]]:
    if depth > _MAX_JSON_DEPTH:
        return
    if isinstance(node, list):
        for item in node:
            yield from _articles_in(item, depth + 1)
    elif isinstance(node, dict):
        kinds = node.get("@type")
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if any(isinstance(k, str) and _ARTICLE_TYPE.search(k) for k in kinds):
            yield node
        for key in ("@graph", "mainEntity"):
            if key in node:
                yield from _articles_in(node[key], depth + 1)


def _ld_author(value: Any) -> str | None:
    """The first author's name: JSON-LD writes a string, a Person, or a list of either."""
    if isinstance(value, list):
        return next((name for item in value if (name := _ld_author(item))), None)
    if isinstance(value, dict):
        return _text(value.get("name"))
    return _text(value)


def _meta(tree: LexborHTMLParser) -> dict[str, str]:
    """Meta tags by lowercased property/name/itemprop; the first of each name wins."""
    found: dict[str, str] = {}
    for node in tree.css("meta[content]"):
        attrs = node.attributes
        content = (attrs.get("content") or "").strip()
        for key in ("property", "name", "itemprop"):
            name = (attrs.get(key) or "").strip().lower()
            if name and content:
                found.setdefault(name, content)
    return found


def _scope(tree: LexborHTMLParser) -> LexborNode | None:
    """The element that holds the article and its header, but not the page around it.

    A page of several <article>s (related posts) is read from the one holding the h1.
    """
    h1 = next((h for h in tree.css("h1") if not _outside_article(h, None)), None)
    for selector in _SCOPES:
        candidates = [n for n in tree.css(selector) if not _outside_article(n, None)]
        if not candidates:
            continue
        if h1 is not None:
            for candidate in candidates:
                if _contains(candidate, h1):
                    return candidate
        return candidates[0]
    if h1 is not None and h1.parent is not None:
        return h1.parent.parent or h1.parent
    return tree.body


def _contains(ancestor: LexborNode, node: LexborNode) -> bool:
    # Nodes are compared by mem_id: LexborNode's == compares serialized HTML, which is
    # slow and calls two identical but distinct elements equal.
    current: LexborNode | None = node
    while current is not None:
        if current.mem_id == ancestor.mem_id:
            return True
        current = current.parent
    return False


def _outside_article(node: LexborNode, scope: LexborNode | None) -> bool:
    """Whether `node` sits in a comment section, sidebar or the like below `scope`."""
    stop = scope.mem_id if scope is not None else None
    current: LexborNode | None = node
    while current is not None and current.mem_id != stop and current.tag not in ("body", "html"):
        if current.tag in _NOT_ARTICLE_TAGS:
            return True
        marks = f"{current.attributes.get('id') or ''} {current.attributes.get('class') or ''}"
        if _NOT_ARTICLE.search(marks):
            return True
        current = current.parent
    return False


def _in_article(scope: LexborNode | None, selector: str) -> Iterator[LexborNode]:
    if scope is None:
        return
    for node in scope.css(selector):
        if not _outside_article(node, scope):
            yield node


def _header_times(scope: LexborNode | None, *, modified: bool) -> Iterator[str]:
    """`datetime` attributes of the article's <time>s: publication or modification ones."""
    for node in _in_article(scope, "time[datetime], [itemprop=datePublished][content], "
                                   "[itemprop=dateModified][content]"):  # fmt: skip
        attrs = node.attributes
        marks = " ".join(attrs.get(k) or "" for k in ("class", "itemprop", "id"))
        if bool(_MODIFIED_MARK.search(marks)) == modified:
            value = attrs.get("datetime") or attrs.get("content")
            if value:
                yield value


def _byline(scope: LexborNode | None) -> tuple[str | None, str] | None:
    """(author, text) of the first "By NAME | DATE | …" line of the article.

    A "By …" line counts only in a byline-like element or with a full date in it, so that
    a paragraph starting "By the way" names no author.
    """
    for node in _in_article(scope, _BYLINE_SELECTORS):
        text = _node_text(node)
        if text is None or len(text) > _MAX_BYLINE:
            continue
        match = _BYLINE.match(text)
        if match is None:
            continue
        parts = parse_date(text)
        dated = parts is not None and parts.year is not None
        if dated or _BYLINE_CLASS.search(node.attributes.get("class") or ""):
            return match.group("author").strip() or None, text
    return None


def _first_date(candidates: Iterable[str | None], tz: tzinfo) -> datetime | None:
    for candidate in candidates:
        if not candidate:
            continue
        parts = parse_date(candidate)
        if parts is None or parts.year is None:
            continue
        try:
            return datetime(
                parts.year,
                parts.month,
                parts.day,
                parts.hour,
                parts.minute,
                parts.second,
                tzinfo=parts.tz or tz,
            )
        except (ValueError, OverflowError):
            continue
    return None


def _first_text(candidates: Iterable[str | None]) -> str | None:
    return next((c for c in candidates if c), None)


def _text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return " ".join(value.split()) or None


def _node_text(node: LexborNode | None) -> str | None:
    if node is None:
        return None
    return _text(node.text(deep=True, separator=""))


def _is_url(value: str | None) -> bool:
    return bool(value) and re.match(r"https?://", value or "") is not None


def _content(tree: LexborHTMLParser, html: str, url: str, selector: str | None) -> str | None:
    """The sanitized article body: the configured element, else trafilatura's reading of
    the page, else the first element that looks like a post body."""
    if selector:
        try:
            node = tree.css_first(selector)
        except Exception:  # selectolax raises several types for a selector it cannot parse
            node = None
        body = _body_html(node)
    else:
        body = _extract(html, url) or _body_html(_heuristic_body(tree))
    if not body:
        return None
    return clean_html(body, url).strip() or None


def _extract(html: str, url: str) -> str | None:
    """trafilatura's main-content HTML, comments and boilerplate left out.

    Imported here: it takes a third of a second to import, and only sources with full
    text ever need it.
    """
    import trafilatura

    try:
        extracted = trafilatura.extract(
            html,
            url=url,
            output_format="html",
            include_comments=False,
            include_links=True,
            include_images=True,
            include_formatting=True,
            include_tables=True,
        )
    except Exception:  # a third-party parser on untrusted HTML: any failure means "no body"
        return None
    if not extracted:
        return None
    body = LexborHTMLParser(extracted).body
    return body.inner_html if body is not None else None


def _heuristic_body(tree: LexborHTMLParser) -> LexborNode | None:
    for selector in _BODY_SELECTORS:
        for node in tree.css(selector):
            if not _outside_article(node, None) and (node.text(deep=True).strip() or
                                                     node.css_first("img")):  # fmt: skip
                return node
    return _largest_text_block(tree)


def _largest_text_block(tree: LexborHTMLParser) -> LexborNode | None:
    """The element with the most paragraph text of its own: where a page keeps its prose."""
    best: LexborNode | None = None
    best_size = _MIN_BODY_TEXT - 1
    for node in tree.css("div, section, td"):
        if _outside_article(node, None):
            continue
        size = sum(len(p.text(deep=True).strip()) for p in node.iter() if p.tag == "p")
        if size > best_size:
            best, best_size = node, size
    return best


def _body_html(node: LexborNode | None) -> str | None:
    """The inner HTML of a body element without scripts, forms, comment sections and the like.

    The page's tree is edited in place: the dates were read before the body is asked for.
    Only the outermost junk elements are removed, because a decomposed element's
    descendants must not be touched afterwards.
    """
    if node is None:
        return None
    junk = [n for n in node.css("*") if _is_junk(n)]
    junk_ids = {n.mem_id for n in junk}
    outermost = [n for n in junk if not _has_ancestor_in(n, junk_ids, node)]
    for element in outermost:
        element.decompose()
    return node.inner_html or None


def _has_ancestor_in(node: LexborNode, ids: set[int], stop: LexborNode) -> bool:
    current = node.parent
    while current is not None and current.mem_id != stop.mem_id:
        if current.mem_id in ids:
            return True
        current = current.parent
    return False


def _is_junk(node: LexborNode) -> bool:
    if node.tag in _JUNK_TAGS:
        return True
    marks = f"{node.attributes.get('id') or ''} {node.attributes.get('class') or ''}"
    return _NOT_ARTICLE.search(marks) is not None
