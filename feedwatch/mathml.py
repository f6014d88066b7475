"""LaTeX in teaser and full-text HTML → MathML that browsers and feed readers render natively.

The reference blog writes its formulas for MathJax, which no feed reader runs; MathML is
the one math format current browsers (and the readers built on them) display by themselves.
The conversion runs on HTML that was already sanitized, so the MathML it inserts is held to
the same standard here: it must parse as XML, may only use `MATHML_TAGS` /
`MATHML_ATTRIBUTES`, and a formula that fails any of that stays as the LaTeX text it was.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from html import escape, unescape

from latex2mathml.converter import convert

MATHML_NS = "http://www.w3.org/1998/Math/MathML"

MATHML_TAGS: frozenset[str] = frozenset(
    {
        "math",
        "semantics",
        "annotation",
        "mrow",
        "mi",
        "mn",
        "mo",
        "ms",
        "mtext",
        "mspace",
        "msub",
        "msup",
        "msubsup",
        "munder",
        "mover",
        "munderover",
        "mmultiscripts",
        "mprescripts",
        "none",
        "mfrac",
        "msqrt",
        "mroot",
        "mstyle",
        "mpadded",
        "mphantom",
        "menclose",
        "merror",
        "mtable",
        "mtr",
        "mtd",
    }
)

_PRESENTATION = {"mathvariant", "mathcolor", "mathbackground", "mathsize", "displaystyle",
                 "scriptlevel", "dir"}  # fmt: skip
_OPERATOR = {"form", "fence", "separator", "lspace", "rspace", "stretchy", "symmetric",
             "maxsize", "minsize", "largeop", "movablelimits", "accent"}  # fmt: skip
_SIZE = {"width", "height", "depth"}
_TABLE = {"columnalign", "rowalign", "columnspacing", "rowspacing", "columnlines", "rowlines",
          "frame", "framespacing", "equalrows", "equalcolumns"}  # fmt: skip

MATHML_ATTRIBUTES: dict[str, set[str]] = {
    tag: set(_PRESENTATION) for tag in MATHML_TAGS if tag not in {"annotation", "none"}
}
MATHML_ATTRIBUTES["math"] |= {"xmlns", "display", "alttext"}
MATHML_ATTRIBUTES["annotation"] = {"encoding"}
MATHML_ATTRIBUTES["mo"] |= _OPERATOR
MATHML_ATTRIBUTES["mover"] |= {"accent"}
MATHML_ATTRIBUTES["munder"] |= {"accentunder"}
MATHML_ATTRIBUTES["munderover"] |= {"accent", "accentunder"}
MATHML_ATTRIBUTES["mfrac"] |= {"linethickness"}
MATHML_ATTRIBUTES["mspace"] |= _SIZE | {"linebreak"}
MATHML_ATTRIBUTES["mpadded"] |= _SIZE | {"lspace", "voffset"}
MATHML_ATTRIBUTES["menclose"] |= {"notation"}
MATHML_ATTRIBUTES["mtable"] |= _TABLE
MATHML_ATTRIBUTES["mtr"] |= {"columnalign", "rowalign"}
MATHML_ATTRIBUTES["mtd"] |= {"columnalign", "rowalign", "columnspan", "rowspan"}

# Environments MathJax typesets when they stand alone in the text, without $$.
_DISPLAY_ENVS = frozenset(
    {
        "equation", "equation*", "align", "align*", "aligned", "alignat", "alignat*",
        "alignedat", "gather", "gather*", "gathered", "multline", "multline*", "eqnarray",
        "eqnarray*", "flalign", "flalign*", "split", "displaymath",
    }
)  # fmt: skip

# Text inside these elements is code, already-converted math or not text at all.
_SKIP_ELEMENTS = frozenset({"code", "pre", "kbd", "samp", "math", "svg"})
_RAW_TEXT_ELEMENTS = frozenset({"script", "style", "textarea", "title", "xmp", "iframe",
                                "noembed", "noframes", "noscript"})  # fmt: skip

# No "<" inside a tag: the sanitizer escapes it in attribute values, and excluding it keeps
# every failed match short, so that no input makes tokenizing quadratic.
_TOKEN = re.compile(
    r"<!--.*?(?:-->|\Z)"
    r"|<![^<>]*>"
    r"|<\?[^<>]*>"
    r"|<(/?)([A-Za-z][^\s/<>]*)(?:\"[^\"<]*\"|'[^'<]*'|[^<>\"'])*>",
    re.S,
)
_BEGIN = re.compile(r"\\begin\{([A-Za-z]+\*?)\}")
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")
_LABEL = re.compile(r"\\label\{[^{}]*\}|\\nonumber\b|\\notag\b")
_MAX_FORMULA = 20_000

# latex2mathml writes a literal "&" for these environments (not XML), so each is rewritten
# to one it lays out as a table with the same alignment.
_REWRITES = (
    (re.compile(r"\\begin\{(?:aligned|alignedat|alignat\*?)\}(?:\{\d+\})?"), r"\\begin{split}"),
    (re.compile(r"\\end\{(?:aligned|alignedat|alignat\*?)\}"), r"\\end{split}"),
    (re.compile(r"\\begin\{eqnarray\*?\}"), r"\\begin{array}{rcl}"),
    (re.compile(r"\\end\{eqnarray\*?\}"), r"\\end{array}"),
    (re.compile(r"\\(begin|end)\{flalign(\*?)\}"), r"\\\1{align\2}"),
    (re.compile(r"\\(?:begin|end)\{displaymath\}"), ""),
)


@dataclass(frozen=True)
class _Formula:
    start: int
    end: int
    latex: str
    display: bool


def latex_to_mathml(html: str) -> str:
    """Replace every convertible formula in the text of `html` with a `<math>` element.

    Markup, attributes, comments and the text of code/pre/script elements pass through
    byte for byte; only text runs that hold a formula are re-serialized.
    """
    out: list[str] = []
    pos = 0
    skip_depth: dict[str, int] = {}
    length = len(html)
    while pos < length:
        match = _TOKEN.search(html, pos)
        text_end = match.start() if match else length
        if text_end > pos:
            text = html[pos:text_end]
            out.append(text if any(skip_depth.values()) else _convert_text(text))
        if match is None:
            break
        out.append(match.group(0))
        pos = match.end()
        closing, name = match.group(1), (match.group(2) or "").lower()
        if not name:
            continue
        if not closing and name in _RAW_TEXT_ELEMENTS:
            end = _raw_text_end(html, pos, name)
            out.append(html[pos:end])
            pos = end
        elif name in _SKIP_ELEMENTS:
            if closing:
                skip_depth[name] = max(0, skip_depth.get(name, 0) - 1)
            elif not match.group(0).endswith("/>"):
                skip_depth[name] = skip_depth.get(name, 0) + 1
    return "".join(out)


def _raw_text_end(source: str, start: int, name: str) -> int:
    """Where the raw text of a <script>/<style>-like element ends: its closing tag."""
    close = re.compile(rf"</{name}[\s/>]", re.I).search(source, start)
    return close.start() if close else len(source)


def _convert_text(raw: str) -> str:
    """One run of HTML text (entities included) with its formulas turned into MathML."""
    if "$" not in raw and "\\" not in raw:
        return raw
    text = unescape(raw)
    pieces: list[str] = []
    last = 0
    changed = False
    for formula in _find_formulas(text):
        markup = _to_mathml(formula.latex, formula.display)
        if markup is None:
            continue
        pieces.append(escape(text[last : formula.start], quote=False))
        pieces.append(markup)
        last = formula.end
        changed = True
    if not changed:
        return raw
    pieces.append(escape(text[last:], quote=False))
    return "".join(pieces)


def _find_formulas(text: str) -> list[_Formula]:
    """Formulas delimited the way MathJax's tex2jax reads them, left to right."""
    found: list[_Formula] = []
    finder = _Finder(text)
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char == "\\":
            formula = _backslash_formula(finder, i)
            if formula is None:
                i += 2
                continue
            found.append(formula)
            i = formula.end
        elif char == "$":
            if text.startswith("$$", i):
                close = finder.find("$$", i + 2)
                if close == -1 or not text[i + 2 : close].strip():
                    i += 2
                    continue
                found.append(_Formula(i, close + 2, text[i + 2 : close].strip(), True))
                i = close + 2
                continue
            close = _inline_close(text, i + 1)
            if close is None:
                i += 1
                continue
            found.append(_Formula(i, close + 1, text[i + 1 : close], False))
            i = close + 1
        else:
            i += 1
    return found


class _Finder:
    """`str.find` that knows where each closing delimiter last occurs in the text.

    Without it, every unclosed "\\(" or "\\begin{equation}" would search to the end of
    the text again, which is quadratic on text full of them.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._last: dict[str, int] = {}

    def find(self, token: str, start: int) -> int:
        last = self._last.get(token)
        if last is None:
            last = self._last[token] = self.text.rfind(token)
        return -1 if last < start else self.text.find(token, start)


def _backslash_formula(finder: _Finder, i: int) -> _Formula | None:
    r"""A formula that starts at a backslash: \( \), \[ \] or a display environment."""
    text = finder.text
    pairs = {"\\(": ("\\)", False), "\\[": ("\\]", True)}
    opener = text[i : i + 2]
    if opener in pairs:
        closer, display = pairs[opener]
        close = finder.find(closer, i + 2)
        if close == -1 or not text[i + 2 : close].strip():
            return None
        return _Formula(i, close + 2, text[i + 2 : close].strip(), display)
    begin = _BEGIN.match(text, i)
    if begin is None or begin.group(1) not in _DISPLAY_ENVS:
        return None
    # The first \end of the same name closes it: these environments do not nest themselves,
    # and counting nesting would make text full of unclosed openers quadratic.
    closer = f"\\end{{{begin.group(1)}}}"
    close = finder.find(closer, begin.end())
    if close == -1:
        return None
    return _Formula(i, close + len(closer), text[i : close + len(closer)], True)


def _inline_close(text: str, start: int) -> int | None:
    """The closing `$` of inline math opened just before `start`, or None if it is no math.

    Pandoc's rule keeps prices apart: "$5 and $10" is no formula, because the text after
    the opening `$` must not start with a space, the closing `$` must not follow a space
    nor precede a digit, and inline math never spans a paragraph break.
    """
    n = len(text)
    if start >= n or text[start].isspace() or text[start] == "$":
        return None
    j = start
    while j < n and text[j] != "$":
        j += 2 if text[j] == "\\" else 1
    if j >= n:
        return None
    if text[j - 1].isspace() or (j + 1 < n and text[j + 1].isdigit()):
        return None
    if _BLANK_LINE.search(text, start, j):
        return None
    return j


def _prepare(latex: str) -> str:
    """LaTeX as latex2mathml can take it: no cross-reference labels, supported environments."""
    prepared = _LABEL.sub("", latex)
    for pattern, replacement in _REWRITES:
        prepared = pattern.sub(replacement, prepared)
    return prepared


def _to_mathml(latex: str, display: bool) -> str | None:
    """One formula as a `<math>` element, or None when it cannot be converted safely."""
    if len(latex) > _MAX_FORMULA:
        return None
    try:
        converted = convert(_prepare(latex), display="block" if display else "inline")
        root = ET.fromstring(converted)
    except Exception:  # latex2mathml raises many unrelated types on bad input
        return None
    if not _restrict(root):
        return None
    attributes = {"xmlns": MATHML_NS}
    if display:
        attributes["display"] = "block"
    attributes["alttext"] = latex
    root.attrib.clear()
    root.attrib.update(attributes)
    return ET.tostring(root, encoding="unicode", short_empty_elements=False)


def _restrict(element: ET.Element) -> bool:
    """Drop the namespace and every attribute not allowed; False if an element is not allowed.

    latex2mathml copies `\\href`, `\\style` and `\\class` arguments into attributes and the
    argument of `\\text` into the markup unescaped, so its output is untrusted too.
    """
    tag = element.tag.removeprefix(f"{{{MATHML_NS}}}")
    if tag not in MATHML_TAGS:
        return False
    element.tag = tag
    allowed = MATHML_ATTRIBUTES.get(tag, set())
    for name in [name for name in element.attrib if name not in allowed]:
        del element.attrib[name]
    return all(_restrict(child) for child in element)
