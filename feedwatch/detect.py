"""Guess the selectors of an index page that has none configured.

The detector only proposes CSS selectors; the normal extractor then runs with them, so an
auto-detected source behaves exactly like a configured one and its selectors can be shown,
stored and pasted into config.toml.

How: every link to a distinct page of the same site is walked up a few levels, and every
parent that holds at least three link-bearing children of one tag (and class) is a
candidate list of entries. Candidates are scored by how many entries they have, whether
their links are distinct, how much non-link text (teasers), dates, headings, read-more
links and semantic markup (article, h-entry, microdata, JSON-LD) they carry, and are
penalised when they sit in a header, nav, aside or footer or under class names such as
sidebar, widget or menu. The best few get a CSS selector that must match exactly their
blocks (or more blocks of the very same shape, like the year groups of an archive),
and the winner's blocks are then compared with each other to find the title, link,
date, author and teaser elements they have in common. Every selector is checked against
the page before it is returned.

Cost: one walk over the page's links (a bounded number of levels each, stopping where an
earlier link's walk went) plus work on a sample of the blocks of the few candidates that
could win: a candidate is only scored once the most it could score (its region and
count at their face value) might beat the ones scored already, so sidebars, widgets and
footers are mostly never read. Detection stays within a small multiple of one extraction
(bench/micro.py measures it on a 100 KB page).
"""

from __future__ import annotations

import heapq
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from selectolax.lexbor import LexborHTMLParser, LexborNode, SelectolaxError

from feedwatch.models import Selectors

__all__ = ["Detection", "detect"]

MIN_ENTRIES = 3
"""Fewer repetitions than this are not a list: a page with two posts is not detectable."""

MIN_SCORE = 2.5
"""Below this the best candidate is a menu or a comment list rather than entries."""

_MAX_UP = 7
"""How many levels above a link its entry block may be (card > body > h5 > a is 3)."""

_SAMPLE = 12
"""Blocks of a candidate read for its score; _FIELD_SAMPLE for the winner's fields."""
_FIELD_SAMPLE = 16
_TOP = 4
"""Candidates, best first, that get a selector and a rescore with all the blocks it finds."""
_MAX_DEPTH = 12
"""How deep inside an entry block its fields are looked for."""
_MAX_REGION = 40
"""How far up a list's ancestors are read for landmarks and furniture names."""
_TAG = re.compile(r"^[a-z][a-z0-9-]*$")

_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_LANDMARKS = frozenset({"header", "nav", "aside", "footer"})
_INLINE = frozenset({"p", "span", "td", "th", "em", "strong", "b", "i", "small", "label", "font"})
_CONTAINERS = frozenset({"div", "article", "section", "li"})
_NOT_CONTENT = frozenset({"script", "style", "noscript", "template", "-comment", "-text"})
_TEASER_TAGS = frozenset({"div", "p", "section", "blockquote", "dd", "span", "td", "summary"})

# Words in class or id names of page furniture; matched as substrings of the lower-cased
# name, so "widget_recent_entries" and "recentPosts" both hit.
_NOISE_WORDS = (
    "sidebar", "widget", "footer", "navbar", "navigation", "menu", "comment", "recent",
    "related", "popular", "breadcrumb", "pagination", "pager", "tagcloud", "tag-cloud",
    "share", "social", "trending", "most-read", "mostread", "ticker", "carousel", "slider",
    "toolbar", "masthead", "banner", "subnav", "online", "advert", "sponsor", "promo",
    "cookie", "blogroll", "secondary",
)  # fmt: skip
# Whole tokens (class split at - and _) that are too short to match as substrings.
_NOISE_TOKENS = frozenset({"nav", "aside", "side", "tags", "cloud", "ad", "ads", "foot", "head"})
_MAIN_TOKENS = frozenset({"main", "content", "primary", "posts", "articles", "entries", "feed"})
_SEMANTIC_CLASSES = frozenset({"hentry", "h-entry", "post", "entry", "article", "story"})
_ENTRY_WORDS = (
    "post", "entry", "article", "item", "card", "story", "thread", "topic", "news",
    "teaser", "summary", "excerpt", "result",
)  # fmt: skip
# CSS-framework utility classes (Bootstrap, Tailwind) and microformat property classes
# (u-url, p-name): valid, but they say nothing about the element, so they come last when
# naming one. h-entry and h-feed name entries and are not among them.
_UTILITY = re.compile(
    r"^(?:text|bg|d|m[tbsexy]?|p[tbsexy]?|g[xy]?|gap|w|h|mw|mh|vw|vh|col|row|flex|justify"
    r"|align|order|float|position|top|bottom|start|end|shadow|border|rounded|fw|fs|lh|link"
    r"|btn|visually|sr|screen|stretched|overflow|opacity|z|cursor|font|leading|tracking|grid"
    r"|space|min|max|inline|block|hidden|container|clearfix|u|p|dt|e)(?:-|$)(?!entry|feed)",
    re.IGNORECASE,
)
_STATE_CLASSES = frozenset(
    {
        "active", "current", "first", "last", "odd", "even", "sticky", "clearfix", "selected",
        "hidden", "visible", "new", "hot", "open", "closed", "unread", "read", "featured",
        "disabled", "show", "fade", "in", "lazy", "loaded", "is-active", "is-current",
    }
)  # fmt: skip
_CLASS_PREFIXES_TO_AVOID = ("type-", "status-", "format-", "category-", "tag-", "has-", "is-")
_TITLE_WORDS = ("title", "headline", "subject", "topic", "name", "heading")
_TEASER_WORDS = ("summary", "excerpt", "teaser", "body", "content", "text", "desc", "intro")
_DATE_WORDS = ("date", "time", "published", "posted", "meta")
_AUTHOR_WORDS = ("author", "byline", "username", "user", "poster", "creator", "vcard", "fn")
_AUTHOR_HREF = re.compile(r"/(?:author|authors|user|users|u|profile|people|members?)/", re.I)
_TOKEN = re.compile(r"^[A-Za-z_][A-Za-z_-]{0,40}$")

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?(?![a-z])"
)
_YEAR = r"(?:,?\s+(?:19|20)\d{2})?"
_CLOCK = r"(?:,?\s+(?:at\s+)?\d{1,2}:\d{2}(?::\d{2})?(?:\s*[ap]\.?m\.?)?)?"
_DATE = re.compile(
    r"(?<![\da-z])(?:"
    r"(?:19|20)\d{2}\s*[-/.年]\s*\d{1,2}\s*[-/.月]\s*\d{1,2}\s*[日号]?"
    r"|\d{1,2}\s*月\s*\d{1,2}\s*[日号]"
    r"|\d{1,2}[/.]\d{1,2}[/.](?:19|20)?\d{2}"
    r"|\d{1,2}(?:st|nd|rd|th)?\s+(?:of\s+)?" + _MONTH + _YEAR + r"|" + _MONTH + r"\s+\d{1,2}"
    r"(?:st|nd|rd|th)?(?!\d)" + _YEAR + r"|\d+\s+(?:second|minute|hour|day|week|month|year)s?"
    r"\s+ago|yesterday|today|昨天|今天|\d+\s*(?:秒|分钟|小时|天|周)前"
    r")" + _CLOCK,
    re.IGNORECASE,
)
# "2h", "3d ago": how forums and social sites date their lists.
_AGO = re.compile(r"(?<![\w.])\d{1,2}\s?(?:h|hr|hrs|d|w|mo)(?:\s+ago)?(?![\w])", re.IGNORECASE)
_AGO_ONLY = re.compile(
    r"\d{1,3}\s?(?:s|sec|secs|m|min|mins|h|hr|hrs|d|w|wk|wks|mo|y|yr|yrs)(?:\s+ago)?",
    re.IGNORECASE,
)
# What every _DATE and _AGO match contains: a digit or one of these words. Prose without
# any is common in teasers and sidebars, and this scan rules it out several times faster.
_DATE_HINT = re.compile(r"\d|today|yesterday|昨天|今天", re.IGNORECASE)
_READ_MORE = re.compile(
    r"^(?:read\s+more|continue\s+reading|more|keep\s+reading|read\s+the\s+rest|full\s+(?:story"
    r"|article|post)|read\s+(?:full|article|post)|点击阅读全文|阅读全文|阅读更多|继续阅读|查看全文"
    r"|全文|更多|weiterlesen|lire\s+la\s+suite|leer\s+más|続きを読む)\b",
    re.IGNORECASE,
)
_NEXT_TEXTS = frozenset(
    {
        "next", "next page", "next posts", "next entries", "older", "older posts",
        "older entries", "older articles", "older stories", "more posts", "下一页", "下页",
        "下一頁", "后一页", "後一頁", "次へ", "次のページ", "weiter", "nächste",
        "nächste seite", "suivant", "page suivante", "siguiente", "successivo", "следующая",
    }
)  # fmt: skip
_NEXT_SYMBOLS = frozenset({"»", "›", "→", ">", "≫", "⟩"})
_NEXT_STRIP = " \u00a0»›→>≫⟩«‹←<.…:|"
_ENTRY_LD_TYPES = frozenset(
    {
        "BlogPosting", "Article", "NewsArticle", "ListItem", "Posting", "SocialMediaPosting",
        "TechArticle", "Report", "DiscussionForumPosting", "Review", "ScholarlyArticle",
    }
)  # fmt: skip
_ENTRY_ITEMTYPE = re.compile(r"(?:BlogPosting|Article|Posting|CreativeWork)\b")


@dataclass(frozen=True)
class Detection:
    """What detection proposes for a page: selectors the extractor runs as they are."""

    selectors: Selectors
    next_page: str | None
    score: float
    count: int


def detect(html: str, url: str, *, tree: LexborHTMLParser | None = None) -> Detection | None:
    """The selectors of the page's entry list, or None when nothing on it looks like one.

    `tree` is `html` already parsed (extract.parse), which saves parsing it twice.
    """
    doc = tree if tree is not None else LexborHTMLParser(html)
    body = doc.body
    site = _Site.of(url)
    if body is None or site is None:
        return None
    links = doc.css("a[href]")
    found = _best_candidate(doc, body, links, site)
    if found is None:
        return None
    selector, members, score = found
    selectors = _fields(selector, members, site) if score >= MIN_SCORE else None
    if selectors is None:
        return None
    return Detection(
        selectors=selectors,
        next_page=_next_page(doc, links, site),
        score=round(score, 3),
        count=len(members),
    )


# --------------------------------------------------------------------------- links


class _Site:
    """The page's own site, for telling entry links from links elsewhere. Keys are
    memoised by href and by node, because pages repeat the same links many times; and
    so are the texts of elements, which the nested candidates of one list (the post, its
    body, its paragraphs) and the next-page search read over and over."""

    def __init__(self, base: str, host: str, page_key: str) -> None:
        self.base = base
        self.host = host
        self.page_key = page_key
        self._by_href: dict[str, str | None] = {}
        self._by_node: dict[int, str | None] = {}
        self._texts: dict[int, str] = {}

    @classmethod
    def of(cls, url: str) -> _Site | None:
        try:
            parts = urlsplit(url)
            hostname = parts.hostname
        except ValueError:
            return None
        if parts.scheme not in ("http", "https") or not hostname:
            return None
        return cls(url, _bare_host(hostname), _path_key(parts.path, parts.query))

    def link(self, node: LexborNode) -> str | None:
        """`key` of a link element's href."""
        ident = node.mem_id
        if ident in self._by_node:
            return self._by_node[ident]
        key = self.key(node.attributes.get("href"))
        self._by_node[ident] = key
        return key

    def text(self, node: LexborNode) -> str:
        """`_text` of an element of this page."""
        ident = node.mem_id
        text = self._texts.get(ident)
        if text is None:
            text = self._texts[ident] = _text(node)
        return text

    def key(self, href: str | None) -> str | None:
        """The path and query a same-site link points to; None for other sites, other
        schemes, the page itself and the site's front page (which every logo links to)."""
        if not href:
            return None
        if href in self._by_href:
            return self._by_href[href]
        key = self._key(href.strip())
        self._by_href[href] = key
        return key

    def _key(self, href: str) -> str | None:
        if not href or href[0] == "#":
            return None
        if href[0] == "/" and href[1:2] != "/":
            path, _, query = href.partition("#")[0].partition("?")
            key = _path_key(path, query)
        elif href.startswith(("http://", "https://")):
            rest = href.partition("//")[2].partition("#")[0]
            slash, ask = rest.find("/"), rest.find("?")
            cut = slash if ask < 0 or 0 <= slash < ask else ask
            cut = cut if cut >= 0 else len(rest)
            host = rest[:cut].rpartition("@")[2]
            host = host[1:].partition("]")[0] if host[:1] == "[" else host.partition(":")[0]
            if _bare_host(host) != self.host:
                return None
            path, _, query = rest[cut:].partition("?")
            key = _path_key(path, query)
        else:
            try:
                parts = urlsplit(urljoin(self.base, href))
                hostname = parts.hostname
            except ValueError:
                return None
            if parts.scheme not in ("http", "https") or not hostname:
                return None
            if _bare_host(hostname) != self.host:
                return None
            key = _path_key(parts.path, parts.query)
        return None if key in (self.page_key, "/") else key


def _bare_host(host: str) -> str:
    host = host.lower()
    return host[4:] if host.startswith("www.") else host


def _path_key(path: str, query: str) -> str:
    return (path or "/") + ("?" + query if query else "")


# --------------------------------------------------------------------------- names


def _classes(node: LexborNode) -> list[str]:
    """Class names fit for a stable selector: no digits (post-9588), no states (active)."""
    raw = node.attributes.get("class")
    if not raw:
        return []
    return [
        c
        for c in raw.split()
        if _TOKEN.match(c)
        and c.lower() not in _STATE_CLASSES
        and not c.lower().startswith(_CLASS_PREFIXES_TO_AVOID)
    ]


def _id(node: LexborNode) -> str | None:
    value = node.attributes.get("id")
    return value if value and _TOKEN.match(value) else None


def _own(node: LexborNode) -> str:
    """tag.class.class of a node: the way a selector names it."""
    return node.tag + "".join("." + c for c in _classes(node))


def _class_rank(name: str) -> tuple[int, int]:
    """Order for picking one class of several: entry-ish words first, utility classes
    last, shorter first."""
    if _UTILITY.match(name):
        return (2, len(name))
    low = name.lower()
    return (0 if any(w in low for w in _ENTRY_WORDS) else 1, len(name))


def _noise_hits(node: LexborNode) -> int:
    """How many furniture words the node's class and id contain."""
    names = " ".join(filter(None, (node.attributes.get("class"), node.attributes.get("id"))))
    if not names:
        return 0
    low = names.lower()
    hits = sum(1 for w in _NOISE_WORDS if w in low)
    tokens = set(re.split(r"[\s_-]+", low))
    return hits + len(tokens & _NOISE_TOKENS)


def _is_main(node: LexborNode) -> bool:
    if node.tag == "main" or node.attributes.get("role") == "main":
        return True
    names = " ".join(filter(None, (node.attributes.get("class"), node.attributes.get("id"))))
    return bool(set(re.split(r"[\s_-]+", names.lower())) & _MAIN_TOKENS)


def _region(node: LexborNode | None, seen: dict[int, tuple[bool, int, bool]]) -> float:
    """Score factor for where a list sits: landmarks and furniture names cost, the main
    content area earns a little. `seen` keeps what each ancestor says, as the lists of a
    page share most of theirs."""
    landmark = False
    words = 0
    main = False
    for _ in range(_MAX_REGION):
        if node is None or node.tag in ("body", "html", "-document"):
            break
        ident = node.mem_id
        says = seen.get(ident)
        if says is None:
            says = seen[ident] = (node.tag in _LANDMARKS, _noise_hits(node), _is_main(node))
        landmark = landmark or says[0]
        words += says[1]
        main = main or says[2]
        node = node.parent
    factor = 0.2 if landmark else 1.0
    factor *= 0.4 ** min(words, 2)
    return factor * (1.25 if main else 1.0)


def _text(node: LexborNode) -> str:
    return " ".join(node.text(deep=True, separator=" ").split())


def _element_children(node: LexborNode) -> Iterator[LexborNode]:
    for child in node.iter():
        if child.tag not in _NOT_CONTENT:
            yield child


# --------------------------------------------------------------------------- candidates


@dataclass
class _Candidate:
    members: list[LexborNode]
    tag: str
    parent: LexborNode
    homogeneity: float = 1.0
    score: float = 0.0
    region: float = 1.0


def _best_candidate(
    doc: LexborHTMLParser, body: LexborNode, links: list[LexborNode], site: _Site
) -> tuple[str, list[LexborNode], float] | None:
    """(entry selector, the blocks it matches, score) of the most entry-like list.

    Scores first come from each candidate's own blocks; a candidate's selector may then
    take in more blocks of the same shape (other year groups), so the best few are
    rescored with everything their selector matches."""
    jsonld = _jsonld_keys(doc, site)
    candidates = list(_candidates(body, links, site))
    seen: dict[int, tuple[bool, int, bool]] = {}
    for cand in candidates:
        cand.region = _region(cand.parent, seen) * (0.4 ** min(_noise_hits(cand.members[0]), 2))
    marks = _Marks.of(doc)
    ranking = _Ranking(candidates, site, jsonld, marks)
    best: tuple[str, list[LexborNode], float] | None = None
    placed_count = tried = 0
    while tried < 2 * _TOP and placed_count < _TOP:
        # A candidate scoring under half the best so far ends the search.
        cand = ranking.next(-math.inf if best is None else best[2] / 2)
        if cand is None:
            break
        tried += 1
        placed = _entry_selector(doc, cand)
        if placed is None:
            continue
        placed_count += 1
        selector, members = placed
        if len(members) != len(cand.members):
            cand.members = members
            cand.score = _score(cand, site, jsonld, marks)
        if best is None or cand.score > best[2]:
            best = (selector, members, cand.score)
    return best


class _Ranking:
    """The candidates best first, in the order a stable sort by score gives, scoring each
    only once it could come next: a sidebar list's region factor caps its score far below
    the posts', so most of a page's lists are never read."""

    def __init__(
        self, candidates: list[_Candidate], site: _Site, jsonld: set[str], marks: _Marks
    ) -> None:
        self.site = site
        self.jsonld = jsonld
        self.marks = marks
        self.pending = sorted(enumerate(candidates), key=lambda ic: _bound(ic[1]), reverse=True)
        self.at = 0
        self.scored: list[tuple[float, int, _Candidate]] = []

    def next(self, floor: float) -> _Candidate | None:
        """The next candidate, None when there is none or it scores below `floor`."""
        scored = self.scored
        while self.at < len(self.pending):
            index, cand = self.pending[self.at]
            bound = _bound(cand)
            if bound < floor or (scored and bound < -scored[0][0]):
                break
            cand.score = _score(cand, self.site, self.jsonld, self.marks)
            heapq.heappush(scored, (-cand.score, index, cand))
            self.at += 1
        if not scored or -scored[0][0] < floor:
            return None
        return heapq.heappop(scored)[2]


def _bound(cand: _Candidate) -> float:
    """The most `_score` can give the candidate: every blocks-dependent factor at its best
    (content at 7, the others at 1), plus a margin for rounding."""
    inline = 0.5 if cand.tag in _INLINE else 1.0
    return (
        math.log2(1 + len(cand.members)) * 7.0 * cand.homogeneity**2 * inline * cand.region * 1.01
    )


def _candidates(body: LexborNode, links: list[LexborNode], site: _Site) -> Iterator[_Candidate]:
    """Parents with at least MIN_ENTRIES link-bearing children of one tag, split by class;
    and parents of one shape whose few such children add up (news sections of two)."""
    body_id = body.mem_id
    parents: dict[int, tuple[LexborNode, dict[int, LexborNode]]] = {}
    # The lowest level each element was climbed from: a walk that reaches an element some
    # earlier walk climbed from as low or lower would only repeat that walk, so it stops.
    climbed: dict[int, int] = {}
    for link in links:
        if site.link(link) is None:
            continue
        child = link
        for level in range(_MAX_UP):
            seen = climbed.get(child.mem_id)
            if seen is not None and seen <= level:
                break
            climbed[child.mem_id] = level
            parent = child.parent
            if parent is None:
                break
            pid = parent.mem_id
            if pid == body_id:
                break
            entry = parents.get(pid)
            if entry is None:
                entry = parents[pid] = (parent, {})
            entry[1].setdefault(child.mem_id, child)
            child = parent
    linked = {ident for _, children in parents.values() for ident in children}
    tags_of = {pid: [c.tag for c in children.values()] for pid, (_, children) in parents.items()}
    # A group of parents below adds up only with a parent of two or more linked children
    # in it, so a parent of one joins a group only if one of those shares its tags.
    pairs = {
        (parent.tag, tag)
        for pid, (parent, _) in parents.items()
        if len(tags_of[pid]) > 1
        for tag in tags_of[pid]
    }
    few: dict[tuple[tuple[str, ...], str], list[LexborNode]] = {}
    for pid, (parent, _) in parents.items():
        tags = tags_of[pid]
        # Most parents are links' single-child wrappers: no tag of theirs can repeat.
        per_tag = Counter(tags) if len(tags) >= MIN_ENTRIES else dict.fromkeys(tags, 1)
        shape: tuple[str, ...] | None = None
        for tag, count in per_tag.items():
            if not _TAG.match(tag):
                continue
            if count >= MIN_ENTRIES:
                siblings = [c for c in parent.iter() if c.tag == tag]
                yield from _split_by_class(parent, siblings, linked)
            elif len(tags) > 1 or (parent.tag, tag) in pairs:
                shape = shape or _shape(parent)
                few.setdefault((shape, tag), []).append(parent)
    for (_, tag), group in few.items():
        if len(group) < 2:
            continue
        total = sum(1 for parent in group for c in parent.iter() if c.mem_id in linked)
        if total >= max(MIN_ENTRIES, 1.5 * len(group)):
            siblings = [c for parent in group for c in parent.iter() if c.tag == tag]
            yield from _split_by_class(group[0], siblings, linked)


def _shape(node: LexborNode) -> tuple[str, ...]:
    """Tag and class of a node and its parent: what makes two containers the same kind."""
    shape: list[str] = []
    current: LexborNode | None = node
    for _ in range(2):
        if current is None:
            break
        shape.append(current.tag + "." + (current.attributes.get("class") or ""))
        current = current.parent
    return tuple(shape)


def _split_by_class(
    parent: LexborNode, siblings: list[LexborNode], linked: set[int]
) -> Iterator[_Candidate]:
    """One candidate per class shared by at least MIN_ENTRIES of the siblings, plus the
    siblings of that tag regardless of class when no class covers them all."""
    tag = siblings[0].tag
    classes = {s.mem_id: _classes(s) for s in siblings}
    counts = Counter(c for names in classes.values() for c in set(names))
    seen: set[frozenset[int]] = set()
    for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], _class_rank(kv[0]))):
        members = [s for s in siblings if name in classes[s.mem_id]]
        ids = frozenset(m.mem_id for m in members)
        if ids in seen or sum(1 for i in ids if i in linked) < MIN_ENTRIES:
            continue
        seen.add(ids)
        yield _descend(_Candidate(members, tag, parent))
    ids = frozenset(s.mem_id for s in siblings)
    if ids not in seen and sum(1 for i in ids if i in linked) >= MIN_ENTRIES:
        homogeneity = _homogeneity(siblings, classes, counts)
        yield _descend(_Candidate(siblings, tag, parent, homogeneity=homogeneity))


def _homogeneity(
    siblings: list[LexborNode], classes: dict[int, list[str]], counts: Counter[str]
) -> float:
    """Share of siblings alike by class or, failing that, by the tags of their children:
    low for a notice, the posts and the pager all being divs of one parent."""
    bare = sum(1 for names in classes.values() if not names)
    top = max(bare, max(counts.values(), default=0))
    if top == len(siblings):
        return 1.0
    by_children = Counter(frozenset(c.tag for c in _element_children(s)) for s in siblings)
    return max(top, max(by_children.values(), default=0)) / len(siblings)


def _descend(cand: _Candidate) -> _Candidate:
    """Replace wrapper blocks (grid columns, list items) whose only content is one block
    element by that element: `div.card` names an entry better than `div.col`."""
    members = cand.members
    while True:
        inner: list[LexborNode] = []
        for m in members:
            kids = list(_element_children(m))
            if len(kids) != 1 or kids[0].tag not in _CONTAINERS or m.text(deep=False).strip():
                return cand
            inner.append(kids[0])
        if len({k.tag for k in inner}) != 1:
            return cand
        cand = _Candidate(inner, inner[0].tag, members[0], cand.homogeneity)
        members = inner


def _sample(items: list[LexborNode], size: int) -> list[LexborNode]:
    if len(items) <= size:
        return items
    step = len(items) / size
    return [items[int(i * step)] for i in range(size)]


def _score(cand: _Candidate, site: _Site, jsonld: set[str], marks: _Marks) -> float:
    """How much a candidate looks like the page's entries, from a sample of its blocks.

    The count only counts logarithmically, so a 30-link tag cloud cannot outweigh eight
    posts with teasers; the products make a single bad trait (shared links, all-link text,
    a sidebar) sink a candidate however long it is."""
    sample = _sample(cand.members, _SAMPLE)
    primaries: list[str] = []
    linked = dated = headed = more = semantic = in_ld = 0
    text_total = link_text_total = keys_total = 0
    for m in sample:
        text = site.text(m)
        keyed = [(a, k) for a in m.css("a[href]") if (k := site.link(a)) is not None]
        link_texts = [site.text(a) for a, _ in keyed]
        link_text = sum(len(t) for t in link_texts)
        text_total += len(text)
        link_text_total += min(link_text, len(text))
        keys_total += len({k for _, k in keyed})
        if keyed:
            linked += 1
            primary = _primary_key(m, keyed, site, marks)
            primaries.append(primary)
            in_ld += primary in jsonld
            more += any(_READ_MORE.match(t) for t in link_texts)
        if m.tag in _HEADINGS or marks.headings.first(m) is not None:
            headed += 1
        head = text[:600]
        if marks.times.first(m) is not None or _mentions_date(head):
            dated += 1
        semantic += _is_semantic(m)
    n = len(sample)
    if not linked:
        return 0.0
    coverage = linked / n
    distinct = len(set(primaries)) / linked
    nonlink = max(0, text_total - link_text_total) / n
    density = link_text_total / text_total if text_total else 1.0
    avg_keys = keys_total / n
    count = len(cand.members) * coverage
    content = (
        1.0
        + 1.5 * min(1.0, nonlink / 120)
        + 1.2 * dated / n
        + 1.2 * headed / n
        + 0.5 * more / linked
        + 0.6 * semantic / n
        + 1.0 * in_ld / linked
    )
    score = math.log2(1 + count) * content
    score *= coverage**2 * distinct**2 * cand.homogeneity**2
    score *= 1.0 - 0.5 * density
    score *= min(1.0, 8.0 / avg_keys) if avg_keys else 1.0
    if cand.tag in _INLINE:
        score *= 0.5
    return score * cand.region


class _Matches:
    """The first element a selector matches in each element of the page, so that
    `first(node)` is `node.css_first(selector)` (lexbor matches against the whole tree and
    includes the node itself): the first match in page order with the node among its
    ancestors. Lexbor parses a selector anew on every call, which for a small block costs
    more than the match; this parses it once and climbs each ancestor once."""

    def __init__(self, doc: LexborHTMLParser, selector: str) -> None:
        self.below: dict[int, LexborNode] = {}
        for match in _css(doc, selector):
            node: LexborNode | None = match
            # An ancestor already holds an earlier match, and so do all above it.
            while node is not None and node.mem_id not in self.below:
                self.below[node.mem_id] = match
                node = node.parent

    def first(self, node: LexborNode) -> LexborNode | None:
        return self.below.get(node.mem_id)


@dataclass(frozen=True)
class _Marks:
    """What a block's score asks of its headings, dates and heading links."""

    headings: _Matches
    times: _Matches
    heading_links: _Matches

    @classmethod
    def of(cls, doc: LexborHTMLParser) -> _Marks:
        return cls(
            _Matches(doc, "h1, h2, h3, h4, h5, h6"),
            _Matches(doc, "time, [datetime]"),
            _Matches(doc, "h1 a[href], h2 a[href], h3 a[href], h4 a[href], h5 a[href]"),
        )


def _mentions_date(text: str) -> bool:
    if _DATE_HINT.search(text) is None:
        return False
    return _DATE.search(text) is not None or _AGO.search(text) is not None


def _primary_key(
    m: LexborNode, keyed: list[tuple[LexborNode, str]], site: _Site, marks: _Marks
) -> str:
    """The link that names the block: in (or around) its heading, else the first with text."""
    heading = marks.heading_links.first(m)
    if heading is not None:
        key = site.link(heading)
        if key is not None:
            return key
    for a, key in keyed:
        if site.text(a):
            return key
    return keyed[0][1]


def _is_semantic(m: LexborNode) -> bool:
    if m.tag == "article":
        return True
    attrs = m.attributes
    if _ENTRY_ITEMTYPE.search(attrs.get("itemtype") or ""):
        return True
    if (attrs.get("itemprop") or "") in ("blogPost", "itemListElement"):
        return True
    return bool(set((attrs.get("class") or "").split()) & _SEMANTIC_CLASSES)


def _jsonld_keys(doc: LexborHTMLParser, site: _Site) -> set[str]:
    """Same-site URLs that JSON-LD calls posts or list items: a strong hint when present."""
    keys: set[str] = set()
    for script in doc.css('script[type="application/ld+json"]'):
        try:
            data = json.loads(script.text(deep=True))
        except (ValueError, RecursionError):
            continue
        for url in _ld_urls(data, depth=0):
            key = site.key(url)
            if key is not None:
                keys.add(key)
    return keys


def _ld_urls(data: object, depth: int) -> Iterator[str]:
    """URLs of the post-like objects in a JSON-LD document, whatever its nesting."""
    if depth > 8:
        return
    if isinstance(data, list):
        for item in data:
            yield from _ld_urls(item, depth + 1)
    elif isinstance(data, dict):
        kinds = data.get("@type")
        names = {kinds} if isinstance(kinds, str) else set()
        if isinstance(kinds, list):
            names = {k for k in kinds if isinstance(k, str)}
        if names & _ENTRY_LD_TYPES:
            for name in ("url", "@id", "mainEntityOfPage", "item"):
                value = data.get(name)
                if isinstance(value, str):
                    yield value
                elif isinstance(value, dict) and isinstance(value.get("url"), str):
                    yield value["url"]
        for value in data.values():
            if isinstance(value, dict | list):
                yield from _ld_urls(value, depth + 1)


# --------------------------------------------------------------------------- entry selector


def _css(node: LexborNode | LexborHTMLParser, selector: str) -> list[LexborNode]:
    try:
        return node.css(selector)
    except SelectolaxError:
        return []


def _css_first(node: LexborNode | LexborHTMLParser, selector: str) -> LexborNode | None:
    try:
        return node.css_first(selector)
    except SelectolaxError:
        return None


def _entry_selector(doc: LexborHTMLParser, cand: _Candidate) -> tuple[str, list[LexborNode]] | None:
    """The first selector, simplest first, that matches the candidate's blocks and
    otherwise only blocks of the very same shape; with everything it matches."""
    ids = {m.mem_id for m in cand.members}
    shape = _parent_shape(cand.members[0])
    for selector in _entry_selectors(cand):
        matched = _css(doc, selector)
        if not ids.issubset(m.mem_id for m in matched):
            continue
        extras = [m for m in matched if m.mem_id not in ids]
        if all(_parent_shape(e) == shape for e in extras):
            return selector, matched
    return None


def _parent_shape(node: LexborNode) -> tuple[str, ...]:
    parent = node.parent
    return _shape(parent) if parent is not None else ()


def _entry_selectors(cand: _Candidate) -> Iterator[str]:
    first = cand.members[0]
    common = set(_classes(first))
    for m in cand.members[1:]:
        common &= set(_classes(m))
    names = sorted(common, key=_class_rank)
    anchors = list(_anchors(first.parent))
    for name in names:
        target = f"{cand.tag}.{name}"
        yield target
        if _class_rank(name)[0] == 0:
            for anchor, path in anchors:
                yield f"{anchor} > {path}{target}"
                yield f"{anchor} {target}"
    for anchor, path in anchors:
        yield f"{anchor} > {path}{cand.tag}"
    yield cand.tag


def _anchors(node: LexborNode | None, limit: int = 4) -> Iterator[tuple[str, str]]:
    """Ways to name `node` in a selector, with the tag path from the named node down to
    it: by class or id where it has one, else by its tag and on up to a named ancestor."""
    path = ""
    for _ in range(limit):
        if node is None or node.tag in ("body", "html", "-document"):
            return
        names = sorted(_classes(node), key=_class_rank)
        ident = _id(node)
        for name in names[:3]:
            yield f"{node.tag}.{name}", path
        if ident:
            yield f"{node.tag}#{ident}", path
        if names or ident:
            return
        if _TAG.match(node.tag):
            yield node.tag, path
        path = f"{node.tag} > {path}"
        node = node.parent


# --------------------------------------------------------------------------- fields


@dataclass
class _Slot:
    """Elements that play the same part in each block: same relative selector."""

    key: str
    nodes: dict[int, LexborNode] = field(default_factory=dict)
    depth: int = 0
    order: int = 0

    @property
    def tag(self) -> str:
        return next(iter(self.nodes.values())).tag

    def ids(self) -> set[int]:
        return {node.mem_id for node in self.nodes.values()}


@dataclass
class _Blocks:
    """The sampled entry blocks, every element in them by slot, and the tree above each
    element (up to its block) so containment needs no further walks over the page."""

    sample: list[LexborNode]
    slots: dict[str, _Slot]
    owner: dict[int, _Slot]
    node: dict[int, LexborNode]
    parent: dict[int, int]

    def ancestors(self, ids: set[int]) -> set[int]:
        """`ids` and every element above them inside their blocks."""
        out: set[int] = set()
        for ident in ids:
            while ident in self.parent and ident not in out:
                out.add(ident)
                ident = self.parent[ident]
        return out

    def inside(self, ident: int, ids: set[int]) -> bool:
        """Whether element `ident` is one of `ids` or below one of them."""
        while ident in self.parent:
            if ident in ids:
                return True
            ident = self.parent[ident]
        return False


def _fields(entry: str, members: list[LexborNode], site: _Site) -> Selectors | None:
    """The entry selector with title, link, date, author and teaser selectors relative to
    one entry; None when the blocks have no link in common."""
    blocks = _blocks(_sample(members, _FIELD_SAMPLE))
    title_slot, link_slot, how = _title(blocks, site)
    if link_slot is None:
        return None
    heading = _named(title_slot, blocks, _TITLE_WORDS)
    if title_slot is link_slot:
        link = heading
    else:
        inner = (f"{heading} a",) if how == "inner" and heading else ()
        link = _validated(link_slot, blocks.sample, *inner)
    if link is None:
        return None
    title = link if how == "inner" else heading
    fallback = _fallback_link(blocks, link_slot, site)
    taken = _ids(title_slot) | link_slot.ids()
    date_slot = _date_slot(blocks, taken)
    author_slot = _author_slot(blocks, taken | _ids(date_slot))
    teaser_slot = _teaser_slot(blocks, taken | _ids(date_slot) | _ids(author_slot))
    teaser = _named(teaser_slot, blocks, _TEASER_WORDS)
    return Selectors(
        entry=entry,
        title=title,
        link=f"{link}, {fallback}" if fallback else link,
        date=_named(date_slot, blocks, _DATE_WORDS),
        author=_named(author_slot, blocks, ("author",)),
        teaser=teaser,
        exclude=_exclude(blocks, teaser_slot, site) if teaser else (),
    )


def _ids(slot: _Slot | None) -> set[int]:
    return slot.ids() if slot is not None else set()


def _named(slot: _Slot | None, blocks: _Blocks, words: Iterable[str]) -> str | None:
    """The slot's validated selector, preferring its last element named by the one class
    that says what it is (span.author rather than span.author.vcard)."""
    if slot is None:
        return None
    head, _, last = slot.key.rpartition(" ")
    tag, *names = last.split(".")
    prefix = f"{head} " if head else ""
    telling = [f"{prefix}{tag}.{c}" for c in names if any(w in c.lower() for w in words)]
    return _validated(slot, blocks.sample, *telling)


def _blocks(sample: list[LexborNode]) -> _Blocks:
    """Every element of the sampled blocks (down to _MAX_DEPTH) under its relative
    selector: the nearest ancestor with a class inside the block, then the tag path."""
    slots: dict[str, _Slot] = {}
    owner: dict[int, _Slot] = {}
    nodes: dict[int, LexborNode] = {}
    parent: dict[int, int] = {}
    for index, member in enumerate(sample):
        top = member.mem_id
        stack: list[tuple[LexborNode, int, str, str, int]] = [
            (child, top, "", "", 1) for child in reversed(list(_element_children(member)))
        ]
        while stack:
            node, above, anchor, path, depth = stack.pop()
            ident = node.mem_id
            parent[ident] = above
            own = _own(node)
            if own != node.tag:
                key, anchor, path = own, own, ""
            else:
                path = f"{path} > {node.tag}" if path else node.tag
                key = f"{anchor} {path}" if anchor else path
            slot = slots.get(key)
            if slot is None:
                slot = slots[key] = _Slot(key, depth=depth, order=len(slots))
            slot.nodes.setdefault(index, node)
            owner[ident] = slot
            nodes[ident] = node
            if depth < _MAX_DEPTH:
                stack.extend(
                    (child, ident, anchor, path, depth + 1)
                    for child in reversed(list(_element_children(node)))
                )
    return _Blocks(sample, slots, owner, nodes, parent)


def _validated(slot: _Slot, sample: list[LexborNode], *first: str) -> str | None:
    """The first spelling of the slot's selector that, run in each sampled block, finds
    exactly the slot's element there (and nothing where the block has none)."""
    for selector in (*first, *_spellings(slot.key)):
        if all(_same(_css_first(m, selector), slot.nodes.get(i)) for i, m in enumerate(sample)):
            return selector
    return None


def _spellings(key: str) -> Iterator[str]:
    """The key with its last element named by one class (best first), then in full."""
    head, _, last = key.rpartition(" ")
    tag, *names = last.split(".")
    prefix = f"{head} " if head else ""
    if len(names) > 1:
        for name in sorted(names, key=_class_rank):
            yield f"{prefix}{tag}.{name}"
    yield key
    if " " in key and " > " not in key:
        yield key.replace(" ", " > ", 1)


def _same(a: LexborNode | None, b: LexborNode | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.mem_id == b.mem_id


def _title(blocks: _Blocks, site: _Site) -> tuple[_Slot | None, _Slot | None, str]:
    """(title slot, link slot, "inner" when the link is inside the title heading).

    The title is the most common heading of the blocks, not a date header, one with a
    link rather than without, the highest-ranking and outermost on a tie; without
    headings, the most title-like link."""
    n = len(blocks.sample)
    headings = [s for s in blocks.slots.values() if s.tag in _HEADINGS and len(s.nodes) >= n / 2]
    if not headings:
        best = _best_link_slot(blocks, site)
        return best, best, ""
    links = {
        s.key: (
            _link_slot_of(blocks, s, site, inside=True),
            _link_slot_of(blocks, s, site, inside=False),
        )
        for s in headings
    }
    heading = max(
        headings,
        key=lambda s: (
            round(len(s.nodes) / n, 1),
            not _dated(s),
            any(links[s.key]),
            -int(s.tag[1]),
            -s.depth,
            -s.order,
        ),
    )
    inner, outer = links[heading.key]
    if inner is not None:
        return heading, inner, "inner"
    return heading, outer or _best_link_slot(blocks, site), ""


def _dated(slot: _Slot) -> bool:
    """Whether the slot's texts are mostly dates, as in date headers above posts."""
    texts = [_text(node) for node in slot.nodes.values()]
    matches = [_DATE.search(t) for t in texts]
    return sum(len(m.group(0)) for m in matches if m) > 0.5 * sum(len(t) for t in texts)


def _link_slot_of(blocks: _Blocks, heading: _Slot, site: _Site, *, inside: bool) -> _Slot | None:
    """The link slot inside the heading (h2 > a) or around it (a > header > h2)."""
    found: Counter[str] = Counter()
    for node in heading.nodes.values():
        link: LexborNode | None = None
        if inside:
            a = node.css_first("a[href]")
            link = a if a is not None and a.mem_id != node.mem_id else None
        else:
            ident = blocks.parent.get(node.mem_id)
            while ident is not None and ident in blocks.node:
                if blocks.node[ident].tag == "a":
                    link = blocks.node[ident]
                    break
                ident = blocks.parent.get(ident)
        if link is not None and site.link(link) is not None and link.mem_id in blocks.owner:
            found[blocks.owner[link.mem_id].key] += 1
    if not found:
        return None
    key, count = found.most_common(1)[0]
    return blocks.slots[key] if count >= len(heading.nodes) / 2 else None


def _link_slots(blocks: _Blocks, site: _Site) -> Iterator[tuple[_Slot, list[str]]]:
    for slot in blocks.slots.values():
        if slot.tag != "a":
            continue
        keys = [k for k in (site.link(a) for a in slot.nodes.values()) if k is not None]
        if len(keys) == len(slot.nodes):
            yield slot, keys


def _best_link_slot(blocks: _Blocks, site: _Site) -> _Slot | None:
    """The link that most looks like a title: in most blocks, distinct, with text,
    title-ish class, not a read-more link."""
    n = len(blocks.sample)
    best: tuple[float, int] | None = None
    chosen: _Slot | None = None
    for slot, keys in _link_slots(blocks, site):
        texts = [_text(a) for a in slot.nodes.values()]
        length = sum(len(t) for t in texts) / len(texts)
        if not length:
            continue
        more = sum(1 for t in texts if _READ_MORE.match(t)) / len(texts)
        titled = any(w in slot.key.rsplit(" ", 1)[-1].lower() for w in _TITLE_WORDS)
        value = (
            (len(slot.nodes) / n)
            * (len(set(keys)) / len(keys))
            * (1 + titled + min(1.0, length / 40))
            * (0.2 if more > 0.5 else 1.0)
        )
        if best is None or (value, -slot.order) > best:
            best, chosen = (value, -slot.order), slot
    return chosen


def _fallback_link(blocks: _Blocks, primary: _Slot, site: _Site) -> str | None:
    """A second link selector for blocks without the title link: one that points where
    the title link points wherever both exist (read-more, permalink, image link)."""
    primary_keys = {i: site.link(a) for i, a in primary.nodes.items()}
    best: tuple[int, int, int] | None = None
    chosen: _Slot | None = None
    for slot, keys in _link_slots(blocks, site):
        if slot.key == primary.key:
            continue
        pairs = [(i, k) for i, k in zip(slot.nodes, keys, strict=True) if i in primary_keys]
        if not pairs or any(primary_keys[i] != k for i, k in pairs):
            continue
        if any("#" in (a.attributes.get("href") or "") for a in slot.nodes.values()):
            continue
        covers = sum(1 for i in slot.nodes if i not in primary_keys)
        more = any(_READ_MORE.match(_text(a)) for a in slot.nodes.values())
        rank = (covers, int(more), len(slot.nodes))
        if best is None or rank > best:
            best, chosen = rank, slot
    return _validated(chosen, blocks.sample) if chosen is not None else None


def _date_slot(blocks: _Blocks, exclude: set[int]) -> _Slot | None:
    """The element with a datetime attribute, else the smallest element whose short text
    is mostly a date, in at least half of the blocks."""
    n = len(blocks.sample)
    best: tuple[float, float, float, int, int] | None = None
    chosen: _Slot | None = None
    for slot in blocks.slots.values():
        if len(slot.nodes) < n / 2:
            continue
        qualities: list[float] = []
        lengths: list[int] = []
        for node in slot.nodes.values():
            if node.mem_id in exclude:
                break
            text = _text(node)
            if len(text) > 80:
                break
            if node.attributes.get("datetime"):
                qualities.append(2.0)
            elif _AGO_ONLY.fullmatch(text):
                qualities.append(1.0)
            else:
                match = _DATE.search(text)
                if match is None:
                    break
                qualities.append(len(match.group(0)) / len(text))
            lengths.append(len(text))
        else:
            quality = sum(qualities) / len(qualities)
            if any(w in slot.key.lower() for w in ("updated", "modified")):
                quality /= 2
            rank = (
                round(len(slot.nodes) / n, 1),
                round(quality, 1),
                -sum(lengths) / len(lengths),
                slot.depth,
                -slot.order,
            )
            if best is None or rank > best:
                best, chosen = rank, slot
    return chosen


def _author_slot(blocks: _Blocks, exclude: set[int]) -> _Slot | None:
    """An element named author (class, itemprop, rel, a profile link) with a short text."""
    n = len(blocks.sample)
    best: tuple[float, float, int] | None = None
    chosen: _Slot | None = None
    for slot in blocks.slots.values():
        if len(slot.nodes) < n / 2:
            continue
        nodes = list(slot.nodes.values())
        first = nodes[0]
        names = (first.attributes.get("class") or "").lower().split()
        kind = 0.0
        if "author" in names or first.attributes.get("itemprop") == "author":
            kind = 2.0
        elif first.attributes.get("rel") == "author" or (
            first.tag == "a" and _AUTHOR_HREF.search(first.attributes.get("href") or "")
        ):
            kind = 1.5
        elif any(w in name for name in names for w in _AUTHOR_WORDS):
            kind = 1.0
        if not kind or any(node.mem_id in exclude for node in nodes):
            continue
        if not all(0 < len(_text(node)) <= 60 for node in nodes):
            continue
        rank = (round(len(nodes) / n, 1), kind, slot.depth)
        if best is None or rank > best:
            best, chosen = rank, slot
    return chosen


def _teaser_slot(blocks: _Blocks, exclude: set[int]) -> _Slot | None:
    """The block's main text: most non-link text over the sample, outermost when a
    container and its paragraph say nearly the same; never one holding the title, the
    link, the date or the author."""
    n = len(blocks.sample)
    blocked = blocks.ancestors(exclude)
    scored: list[tuple[float, _Slot]] = []
    for slot in blocks.slots.values():
        if slot.tag not in _TEASER_TAGS or len(slot.nodes) < n / 3:
            continue
        nodes = list(slot.nodes.values())
        if any(node.mem_id in blocked for node in nodes):
            continue
        total = sum(len(_text(node)) for node in nodes)
        linked = sum(len(_text(a)) for node in nodes for a in node.css("a"))
        if total / n >= 15 and linked < total / 2:
            scored.append((total, slot))
    if not scored:
        return None
    top = max(total for total, _ in scored)
    near = [slot for total, slot in scored if total >= 0.8 * top]
    return min(near, key=lambda s: (s.depth, s.order))


def _exclude(blocks: _Blocks, teaser: _Slot | None, site: _Site) -> tuple[str, ...]:
    """Read-more links (and a paragraph that holds only one) and scripts in the teaser."""
    if teaser is None:
        return ()
    containers = teaser.ids()
    out: list[str] = []
    for slot, _ in _link_slots(blocks, site):
        nodes = list(slot.nodes.values())
        if not all(blocks.inside(a.mem_id, containers) for a in nodes):
            continue
        if not all(_READ_MORE.match(_text(a)) for a in nodes):
            continue
        selector = _validated(slot, blocks.sample)
        if selector is None:
            continue
        wrapper = _wrapper(blocks, slot, containers)
        if wrapper is not None:
            out.append(wrapper)
        out.append(selector)
    if any(node.css_first("script") is not None for node in teaser.nodes.values()):
        out.append("script")
    return tuple(out)


def _wrapper(blocks: _Blocks, links: _Slot, containers: set[int]) -> str | None:
    """The selector of the element each read-more link sits alone in (p.more), unless
    that element is the teaser itself."""
    parents = [blocks.parent.get(a.mem_id) for a in links.nodes.values()]
    slots = {id(blocks.owner.get(p)) for p in parents if p is not None}
    if None in parents or len(slots) != 1 or containers & set(parents):
        return None
    for parent, a in zip(parents, links.nodes.values(), strict=True):
        if parent not in blocks.node or _text(blocks.node[parent]) != _text(a):
            return None
    return _validated(blocks.owner[parents[0]], blocks.sample)


# --------------------------------------------------------------------------- next page


def _next_page(doc: LexborHTMLParser, links: list[LexborNode], site: _Site) -> str | None:
    """A selector for the next-page link; None when the page has rel=next (which the
    extractor follows by itself) or no next page can be told."""
    if doc.css_first('link[rel~="next" i][href], a[rel~="next" i][href]') is not None:
        return None
    wanted, number = _next_keys(site.page_key)
    by_text: list[LexborNode] = []
    by_url: list[LexborNode] = []
    for a in links:
        key = site.link(a)
        if key is None:
            continue
        if _says_next(a, site.text(a)):
            by_text.append(a)
        elif key in wanted and site.text(a) == str(number):
            by_url.append(a)
    for a in by_text + by_url:
        for selector in _next_selectors(a):
            if _same(_css_first(doc, selector), a):
                return selector
    return None


def _says_next(a: LexborNode, text: str) -> bool:
    raw = "".join(text.split())
    if raw in _NEXT_SYMBOLS:
        return True
    words = text.strip(_NEXT_STRIP).casefold()
    label = (a.attributes.get("aria-label") or "").strip(_NEXT_STRIP).casefold()
    return words in _NEXT_TEXTS or label in _NEXT_TEXTS


def _next_keys(page_key: str) -> tuple[set[str], int]:
    """Where page N+1 lives under the usual URL schemes, given page N's path and query;
    and N+1, which a numbered pager link to it shows."""
    path, _, query = page_key.partition("?")
    keys: set[str] = set()
    in_query = re.search(r"(?:^|&)(page|p|pg|paged)=(\d+)", query)
    in_path = re.search(r"/(page/?)?(\d+)/?$", path)
    if in_query:
        number = int(in_query.group(2)) + 1
        keys.add(f"{path}?{query[: in_query.start(2)]}{number}{query[in_query.end(2) :]}")
    elif in_path:
        number = int(in_path.group(2)) + 1
        head = f"{path[: in_path.start()]}/{in_path.group(1) or ''}{number}"
        keys |= {head, head + "/"}
    else:
        number = 2
        trunk = path.rstrip("/")
        keys.add(path + "?" + (query + "&" if query else "") + "page=2")
        keys |= {trunk + form for form in ("/page/2/", "/page/2", "/2/", "/page2/", "/2")}
    return keys, number


def _next_selectors(a: LexborNode) -> Iterator[str]:
    """Selectors that could single out this link, from the most telling: its own class in
    its container, the item after the current page's marker, the last pagination item."""
    own = sorted(_classes(a), key=lambda c: (0 if "next" in c.lower() else 1, len(c)))
    anchors = list(_anchors(a.parent, limit=3))
    for anchor, _ in anchors:
        for name in own:
            yield f"{anchor} a.{name}"
    yield from (f"a.{name}" for name in own)
    for anchor, path in anchors:
        yield f"{anchor} > {path}a" if path else f"{anchor} a"
    for node, suffix in ((a, ""), (a.parent, " a")):
        if node is None:
            continue
        marker = _previous_element(node)
        if marker is not None:
            for name in _current_names(marker):
                yield f"{marker.tag}.{name} + {node.tag}{suffix}"
            if marker.attributes.get("aria-current"):
                yield f"{marker.tag}[aria-current] + {node.tag}{suffix}"
    for anchor, _ in anchors:
        yield f"{anchor} > :last-child a"
        yield f"{anchor} > a:last-child"


def _previous_element(node: LexborNode) -> LexborNode | None:
    sibling = node.prev
    while sibling is not None and not sibling.is_element_node:
        sibling = sibling.prev
    return sibling


def _current_names(node: LexborNode) -> Iterable[str]:
    raw = (node.attributes.get("class") or "").split()
    return [c for c in raw if c.lower() in ("current", "active", "selected", "on", "is-current")]
