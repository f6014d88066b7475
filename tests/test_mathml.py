"""mathml: the fixtures' LaTeX becomes MathML that parses as XML and survives the sanitizer."""

from __future__ import annotations

import html
import json
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import nh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from selectolax.lexbor import LexborHTMLParser

from feedwatch.mathml import MATHML_ATTRIBUTES, MATHML_NS, MATHML_TAGS, latex_to_mathml

FIXTURES = Path(__file__).parent / "fixtures"
TRUTH: dict[str, Any] = json.loads((FIXTURES / "truth.json").read_text(encoding="utf-8"))
MATH_ENTRIES = [
    (page, entry)
    for page, data in TRUTH["pages"].items()
    for entry in data["entries"]
    if entry["has_math"]
]
# The formulas of a plain-text block, written independently of the module's scanner.
FORMULA = re.compile(
    r"\$\$(?P<display>.+?)\$\$|\$(?P<inline>[^$]+?)\$|(?P<env>\\begin\{(\w+)\}.*?\\end\{\4\})"
)
MATH = f"{{{MATHML_NS}}}math"


def parse_fragment(fragment: str) -> ET.Element:
    """The fragment as XML, the way it has to live inside an Atom feed."""
    return ET.fromstring(f"<root>{fragment}</root>")


def text_outside_math(element: ET.Element) -> str:
    parts = [element.text or ""]
    for child in element:
        if child.tag != MATH:
            parts.append(text_outside_math(child))
        parts.append(child.tail or "")
    return "".join(parts)


def expected_formulas(block: str) -> list[str]:
    return [
        (m.group("display") or m.group("inline") or m.group("env")).strip()
        for m in FORMULA.finditer(block)
    ]


def entry_id(item: tuple[str, dict[str, Any]]) -> str:
    return f"{item[0]}#{item[1]['position']}"


def test_fixtures_have_math_entries() -> None:
    assert len(MATH_ENTRIES) == 17


@pytest.mark.parametrize("item", MATH_ENTRIES, ids=entry_id)
def test_teaser_formulas_become_mathml_with_latex_in_alttext(item: tuple[str, Any]) -> None:
    blocks = [b for b in item[1]["teaser_blocks"] if expected_formulas(b)]
    assert blocks
    for block in blocks:
        root = parse_fragment(latex_to_mathml(f"<p>{html.escape(block)}</p>"))
        maths = list(root.iter(MATH))
        assert [m.get("alttext") for m in maths] == expected_formulas(block)
        leftover = text_outside_math(root)
        assert "$" not in leftover
        assert "\\begin{" not in leftover


@pytest.mark.parametrize("item", MATH_ENTRIES, ids=entry_id)
def test_real_teaser_html_keeps_no_latex_delimiters(item: tuple[str, Any]) -> None:
    page, entry = item
    tree = LexborHTMLParser((FIXTURES / page).read_text(encoding="utf-8"))
    post = tree.css("div.post")[entry["position"] - 1]
    body = post.css_first(".post-body")
    assert body is not None
    for script in body.css("script"):
        script.decompose()
    converted = LexborHTMLParser(latex_to_mathml(body.html or ""))
    assert converted.css("math")
    for math in converted.css("math"):
        math.decompose()
    text = converted.body.text() if converted.body else ""
    assert "$" not in text
    assert "\\begin{" not in text


def test_display_math_is_a_block_and_inline_math_is_not() -> None:
    source = (
        r"<p>$$a$$ \[b\] \begin{equation}c\end{equation} \begin{aligned}d&amp;=e\end{aligned}"
        r" $f$ \(g\)</p>"
    )
    maths = list(parse_fragment(latex_to_mathml(source)).iter(MATH))
    assert [(m.get("alttext"), m.get("display")) for m in maths] == [
        ("a", "block"),
        ("b", "block"),
        (r"\begin{equation}c\end{equation}", "block"),
        (r"\begin{aligned}d&=e\end{aligned}", "block"),
        ("f", None),
        ("g", None),
    ]


def test_html_ampersand_is_a_latex_alignment_tab() -> None:
    source = "<p>$$\\begin{aligned}a &amp;= b\\\\\nc &amp;= d\\end{aligned}$$</p>"
    root = parse_fragment(latex_to_mathml(source))
    math = root.find(f".//{MATH}")
    assert math is not None
    assert math.get("alttext") == "\\begin{aligned}a &= b\\\\\nc &= d\\end{aligned}"
    cells = ["".join(cell.itertext()) for cell in math.iter(f"{{{MATHML_NS}}}mtd")]
    assert cells == ["a", "=b", "c", "=d"]


def test_label_does_not_break_conversion_and_stays_in_alttext() -> None:
    latex = r"\begin{equation}x = 1\label{eq:core}\end{equation}"
    math = parse_fragment(latex_to_mathml(latex)).find(MATH)
    assert math is not None
    assert math.get("alttext") == latex
    assert "label" not in "".join(math.itertext())
    assert "eq:core" not in "".join(math.itertext())


def test_tag_becomes_the_equation_number() -> None:
    math = parse_fragment(latex_to_mathml(r"$$R = g \tag{50}$$")).find(MATH)
    assert math is not None
    assert "(50)" in "".join(math.itertext())


def test_broken_formula_stays_as_its_latex_text() -> None:
    source = r"<p>a $\frac{$ b</p>"
    assert latex_to_mathml(source) == source


def test_broken_formula_does_not_stop_the_next_one() -> None:
    root = parse_fragment(latex_to_mathml(r"<p>$\frac{$ and $x$</p>"))
    assert [m.get("alttext") for m in root.iter(MATH)] == ["x"]
    assert text_outside_math(root) == r"$\frac{$ and "


def test_prices_are_not_math() -> None:
    source = "<p>costs $5 and $10, or $ 3 $ today</p>"
    assert latex_to_mathml(source) == source


def test_inline_math_never_spans_a_paragraph_break() -> None:
    source = "<p>$a\n\nb$</p>"
    assert latex_to_mathml(source) == source


def test_escaped_dollar_is_not_a_delimiter() -> None:
    root = parse_fragment(latex_to_mathml(r"<p>\$x and $y$</p>"))
    assert [m.get("alttext") for m in root.iter(MATH)] == ["y"]


def test_code_pre_and_attributes_are_untouched() -> None:
    source = (
        '<p title="$x$">see <code>$y$</code></p>'
        "<pre>$$z$$ \\begin{equation}w\\end{equation}</pre>"
        "<script>var s = '$v$';</script>"
    )
    assert latex_to_mathml(source) == source


def test_markup_around_formulas_passes_through_unchanged() -> None:
    source = '<p class="x">a &lt;b&gt; <br><img src="/i.png" alt="$t$"> $n$ &amp; m</p>'
    converted = latex_to_mathml(source)
    before, math, after = re.split(r"(<math.*</math>)", converted)
    assert before == '<p class="x">a &lt;b&gt; <br><img src="/i.png" alt="$t$"> '
    assert after == " &amp; m</p>"
    assert 'alttext="n"' in math


def test_text_without_formulas_is_returned_byte_for_byte() -> None:
    source = "<p>a&nbsp;b &eacute; \\n 100$</p><!-- $x$ -->"
    assert latex_to_mathml(source) == source


def test_link_and_style_commands_leave_no_attributes() -> None:
    converted = latex_to_mathml(r"$\href{javascript:alert(1)}{x} \style{color:red}{y}$")
    math = parse_fragment(converted).find(MATH)
    assert math is not None
    assert "".join(math.itertext()) == "xy"
    for element in math.iter():
        tag = element.tag.removeprefix(f"{{{MATHML_NS}}}")
        assert set(element.attrib) <= MATHML_ATTRIBUTES[tag]
        assert "href" not in element.attrib
        assert "style" not in element.attrib


def test_markup_inside_a_formula_stays_escaped_text() -> None:
    source = r"<p>$\text{&lt;script&gt;alert(1)&lt;/script&gt;}$</p>"
    assert latex_to_mathml(source) == source


def test_sanitizer_with_the_exported_allow_lists_keeps_the_math() -> None:
    converted = latex_to_mathml(
        "<p>$x^2$ $$\\begin{aligned}a &amp;= \\frac{1}{2}\\\\ b &amp;= \\sqrt{c}\\end{aligned}$$"
        " $\\left(\\sum\\limits_{i=1}^n \\mathbb{R}\\right)\\not= \\hat{y}$</p>"
    )
    attributes = {tag: set(names) for tag, names in nh3.ALLOWED_ATTRIBUTES.items()}
    for tag, names in MATHML_ATTRIBUTES.items():
        attributes.setdefault(tag, set()).update(names)
    cleaned = nh3.clean(converted, tags=nh3.ALLOWED_TAGS | MATHML_TAGS, attributes=attributes)
    assert cleaned == converted
    assert cleaned.count("<math") == 3


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from([*"$\\ab{}^_ &<>\n(", "\\begin{equation}", "\\end{equation}", "$$"])
    ).map("".join)
)
def test_any_text_gives_xml_wellformed_output(text: str) -> None:
    source = f"<p>{html.escape(text, quote=False)}</p>"
    converted = latex_to_mathml(source)
    parse_fragment(converted)
    if "<math" not in converted:
        assert converted == source


@pytest.mark.parametrize(
    "text",
    ['<a title="x' * 20000, "<!x" * 20000, "\\(" * 20000, "\\begin{equation}" * 20000],
    ids=["unclosed-attribute", "unclosed-declaration", "unclosed-paren", "unclosed-env"],
)
def test_unclosed_delimiters_in_bulk_stay_fast(text: str) -> None:
    started = time.perf_counter()
    assert latex_to_mathml(text) == text
    assert time.perf_counter() - started < 3
