"""Teaser HTML and text hygiene: what a remote page wrote, made safe to put in a feed.

Everything here is a pure function of strings, so the extractor, the detail-page
reader and the feed writer all clean text the same way. It knows nothing of
selectors or of the page an HTML fragment came from, only its base URL.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

import nh3
from selectolax.lexbor import LexborHTMLParser

ALLOWED_TAGS = frozenset(
    {
        "p", "br", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "ul", "ol", "li", "a",
        "img", "figure", "figcaption", "em", "strong", "b", "i", "code", "pre", "sub", "sup",
        "span", "div", "table", "thead", "tbody", "tr", "td", "th", "hr",
    }
)  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href"}, "img": {"src", "alt"}, "*": {"title"}}
URL_SCHEMES = frozenset({"http", "https", "mailto"})
# Elements whose content is code, or a widget, never prose: dropped with their content
# rather than unwrapped, so that no script source or form label leaks into the text.
DROPPED_WITH_CONTENT = frozenset(
    {"script", "style", "iframe", "object", "embed", "form", "noscript", "template",
     "textarea", "select", "button", "svg", "canvas", "audio", "video"}
)  # fmt: skip

# XML 1.0 forbids these code points outright; one of them makes a whole feed unreadable.
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Elements that end a line when rendered: their boundaries separate words in the text.
_BLOCKS = (
    "p, div, br, hr, h1, h2, h3, h4, h5, h6, blockquote, ul, ol, li, figure, figcaption, pre, "
    "table, thead, tbody, tr, td, th, section, article, header, footer, aside, nav, dl, dt, dd"
)
_NOT_TEXT = ("script", "style", "noscript", "template")
# Marks block boundaries while the text is taken out; U+2029 never survives whitespace folding.
_BLOCK_BREAK = "\u2029"

_TERMINATORS = frozenset("。！？!?")
_CLOSERS = frozenset("”’」』)）》\"'")
_ABBREVIATIONS = frozenset({"e.g", "i.e", "etc", "vs", "mr", "mrs", "ms", "dr", "fig", "no", "al"})

_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# A %XX escape, a stray %, or a character that is never valid unescaped in a URL.
_ESCAPE_OR_UNSAFE = re.compile(r"%([0-9A-Fa-f]{2})|%|[^\x21-\x7e]|[\"<>\\^`{|}\[\]#]")
_URL_TRIM = "".join(chr(c) for c in range(0x21))


def strip_illegal_xml(text: str) -> str:
    """Remove code points XML 1.0 cannot carry (C0 controls but tab/LF/CR, U+FFFE/U+FFFF,
    lone surrogates), so that any remote text can go into a feed."""
    return _ILLEGAL_XML.sub("", text) if _ILLEGAL_XML.search(text) else text


def clean_html(html: str, base_url: str) -> str:
    """Sanitize an HTML fragment for a feed: an allow-list of formatting tags, no active
    content, only http/https/mailto URLs, every href/src absolute against `base_url`."""
    if not html:
        return ""

    def absolute(url: str) -> str | None:
        # nh3 calls this only for relative URLs; the result must not sneak in a scheme.
        try:
            resolved = urljoin(base_url, url.strip(_URL_TRIM).replace("\\", "/"))
        except ValueError:
            return None
        return resolved if urlsplit(resolved).scheme in ("http", "https") else None

    # Lone surrogates cannot cross into Rust; remove illegal characters before and after,
    # since numeric references such as &#1; only become characters inside the sanitizer.
    cleaned = nh3.clean(
        strip_illegal_xml(html),
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(DROPPED_WITH_CONTENT),
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        url_relative=absolute,
        strip_comments=True,
    )
    return strip_illegal_xml(cleaned).strip()


def html_to_text(html: str) -> str:
    """Plain text of an HTML fragment as a reader sees it: block boundaries and <br> become
    spaces (so paragraphs do not run together), inline markup does not, whitespace runs
    collapse to one space. Image alt text is not text."""
    return " ".join(text_blocks(html))


def text_blocks(html: str) -> list[str]:
    """The non-empty text of each block of an HTML fragment, whitespace collapsed."""
    if not html:
        return []
    tree = LexborHTMLParser(strip_illegal_xml(html))
    body = tree.body
    if body is None:
        return []
    for node in body.css(", ".join(_NOT_TEXT)):
        node.decompose()
    for node in body.css(_BLOCKS):
        node.insert_before(_BLOCK_BREAK)
        node.insert_after(_BLOCK_BREAK)
    text = strip_illegal_xml(body.text(deep=True))
    return [block for part in text.split(_BLOCK_BREAK) if (block := " ".join(part.split()))]


def title_from_teaser(teaser_html: str, limit: int = 80) -> str:
    """A title for an untitled entry: the first sentence of the teaser's first block, so a
    teaser that opens with a heading or an image caption gives that, not a run-on line."""
    blocks = text_blocks(teaser_html)
    return fallback_title(blocks[0], limit) if blocks else ""


def first_sentence(text: str) -> str:
    """The text up to and including its first sentence end, closing quotes kept.

    Ends are 。！？ and ! ? (the reference site's text is NFKC-normalised, so its Chinese
    punctuation is ASCII), and a "." that ends a Latin word before whitespace. Marks inside
    《…》 or $…$ / $$…$$ (LaTeX) do not count. No end → the whole text.
    """
    text = text.strip()
    depth = 0
    in_math = False
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":  # an escaped character (\$, \!) is never a delimiter or an end
            i += 2
            continue
        if ch == "$":
            in_math = not in_math
            i += 2 if text.startswith("$$", i) else 1
            continue
        if not in_math:
            if ch == "《":
                depth += 1
            elif ch == "》":
                depth = max(0, depth - 1)
            elif depth == 0 and (ch in _TERMINATORS or (ch == "." and _ends_latin(text, i))):
                j = i + 1
                while j < n and text[j] in _CLOSERS:
                    j += 1
                return text[:j]
        i += 1
    return text


def _ends_latin(text: str, i: int) -> bool:
    """Whether the "." at `i` ends a Latin sentence: whitespace follows, and it closes a
    word of two or more letters that is not a common abbreviation (so "1. ", "J. " and
    "e.g. " do not end sentences)."""
    if i + 1 < len(text) and not text[i + 1].isspace():
        return False
    start = i
    while start > 0 and (_is_latin_letter(text[start - 1]) or text[start - 1] == "."):
        start -= 1
    word = text[start:i]
    return len(word.replace(".", "")) >= 2 and word.lower() not in _ABBREVIATIONS


def _is_latin_letter(char: str) -> bool:
    return char.isascii() and char.isalpha()


def fallback_title(teaser_text: str, limit: int = 80) -> str:
    """A title for an entry that has none: the teaser's first sentence, cut to `limit`
    characters with "…" so that it still reads as a title in a feed reader's list."""
    sentence = " ".join(first_sentence(strip_illegal_xml(teaser_text)).split())
    if len(sentence) <= limit:
        return sentence
    return sentence[: max(limit - 1, 0)].rstrip() + "…"


def canonical_url(href: str | None, base_url: str) -> str | None:
    """The one spelling of a link used as an entry's identity, or None if it is not an
    http(s) URL.

    Resolved against `base_url`; fragment dropped; scheme and host lowercased (IDNA);
    default port dropped; dot segments removed; percent-encoding normalised (unreserved
    characters decoded, other escapes upper-cased, raw non-ASCII encoded as UTF-8) so the
    raw-Unicode and the percent-encoded spelling of a URL are equal.
    """
    if href is None:
        return None
    # Browsers ignore surrounding whitespace and controls, and newlines/tabs anywhere.
    ref = strip_illegal_xml(href).strip(_URL_TRIM)
    ref = ref.replace("\t", "").replace("\n", "").replace("\r", "").replace("\\", "/")
    if not ref:
        return None
    try:
        parts = urlsplit(urljoin(base_url, ref))
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    netloc = _host(parts)
    if netloc is None:
        return None
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    if parts.username is not None or parts.password is not None:
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{_normalise_escapes(userinfo)}@{netloc}"
    path = _remove_dot_segments(_normalise_escapes(parts.path)) or "/"
    query = _normalise_escapes(parts.query)
    return urlunsplit((scheme, netloc, path, query, ""))


def _host(parts: SplitResult) -> str | None:
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal: urlsplit removed the brackets
        return f"[{host}]"
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def _normalise_escapes(component: str) -> str:
    """RFC 3986 §6.2.2 normalisation of one component: %XX of an unreserved character is
    decoded, other %XX upper-cased, and characters never valid in a URL (non-ASCII, spaces,
    a stray %) encoded as UTF-8; reserved characters keep the form they were written in,
    since "/" and "%2F" (or "&" and "%26" in a query) mean different things."""

    def fix(match: re.Match[str]) -> str:
        hexpair = match.group(1)
        if hexpair is not None:
            char = chr(int(hexpair, 16))
            return char if char in _UNRESERVED else "%" + hexpair.upper()
        return "".join(f"%{b:02X}" for b in match.group(0).encode())

    return _ESCAPE_OR_UNSAFE.sub(fix, component)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for an absolute path, so "/a/./b/../c" and "/a/c" are one URL."""
    if "." not in path:
        return path
    segments = path.split("/")[1:]
    out: list[str] = []
    for segment in segments:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    result = "/" + "/".join(out)
    if segments and segments[-1] in (".", "..") and not result.endswith("/"):
        result += "/"
    return result
