"""diff: fingerprints that ignore noise, the new/updated/seen/removed verdicts, word_diff."""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from feedwatch.diff import diff, fingerprint, word_diff
from feedwatch.models import Entry

TRUTH = json.loads((Path(__file__).parent / "fixtures" / "truth.json").read_text("utf-8"))
CATEGORY = TRUTH["pages"]["category-1.html"]["entries"]
SHANGHAI = timezone(timedelta(hours=8))
BEFORE = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
NOW = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)


def make_entry(
    link: str,
    title: str = "A post",
    teaser: str = "Some teaser text.",
    *,
    fallback: bool = False,
    published: datetime = datetime(2024, 4, 10, tzinfo=SHANGHAI),
    date_exact: bool = False,
    seen_at: datetime = BEFORE,
    author: str | None = None,
    content_html: str | None = None,
) -> Entry:
    """An entry whose fingerprint is made the way poll makes it."""
    return Entry(
        source="kexue",
        link=link,
        title=title,
        title_is_fallback=fallback,
        teaser_html=f"<p>{teaser}</p>",
        teaser_text=teaser,
        author=author,
        published=published,
        date_exact=date_exact,
        first_seen=seen_at,
        last_seen=seen_at,
        updated=seen_at,
        fingerprint=fingerprint(None if fallback else title, teaser),
        content_html=content_html,
    )


def stored_of(*entries: Entry) -> dict[str, Entry]:
    return {entry.link: entry for entry in entries}


def byline(readers: int) -> str:
    first = CATEGORY[0]
    meta = f"By {first['author']} | {first['date']} | {readers}位读者 | 引用"
    return f"{meta} {first['teaser_first_sentence']}"


# --- fingerprint -----------------------------------------------------------


def test_fingerprint_ignores_reader_counter_in_kexue_byline() -> None:
    title = CATEGORY[0]["title"]
    assert fingerprint(title, byline(CATEGORY[0]["readers"])) == fingerprint(title, byline(154090))


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("阅读(123)", "阅读(4567)"),
        ("评论(3)", "评论(4)"),
        ("12条评论", "13条评论"),
        ("1,234 views", "1,301 views"),
        ("12 comments", "1 comment"),
        ("Views: 1,234", "Views: 2,000"),
        ("1.2万次阅读", "1.3万次阅读"),
    ],
)
def test_fingerprint_ignores_view_and_comment_counters(before: str, after: str) -> None:
    assert fingerprint("T", f"正文开始。{before} 正文结束。") == fingerprint(
        "T", f"正文开始。{after} 正文结束。"
    )


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("3 days ago", "4 days ago"),
        ("an hour ago", "5 hours ago"),
        ("2小时前", "5小时前"),
        ("刚刚", "3分钟前"),
        ("三天前", "半个月前"),
    ],
)
def test_fingerprint_ignores_relative_times(before: str, after: str) -> None:
    assert fingerprint(f"Post ({before})", "teaser") == fingerprint(f"Post ({after})", "teaser")


def test_fingerprint_ignores_matches_of_source_ignore_regexes() -> None:
    ignore = [re.compile(r"本站已运行\d+天")]
    before, after = "正文。本站已运行3650天", "正文。本站已运行3651天"
    assert fingerprint("T", before) != fingerprint("T", after)
    assert fingerprint("T", before, ignore) == fingerprint("T", after, ignore)


def test_fingerprint_ignores_whitespace_and_fullwidth_forms() -> None:
    assert fingerprint("CoSENT(二)", "a  b\n c") == fingerprint("CoSENT(二)", " a b c ")


def test_fingerprint_sees_one_character_edit_of_chinese_teaser() -> None:
    teaser = CATEGORY[0]["teaser_first_sentence"]
    edited = teaser.replace("去年", "前年")
    assert edited != teaser
    assert fingerprint("T", teaser) != fingerprint("T", edited)


def test_fingerprint_sees_title_edit() -> None:
    title = CATEGORY[0]["title"]
    assert fingerprint(title, "x") != fingerprint(title + "(修订)", "x")


def test_fingerprint_sees_edit_next_to_a_counter() -> None:
    assert fingerprint("T", "12 comments on part one") != fingerprint(
        "T", "12 comments on part two"
    )


def test_fingerprint_of_a_counter_laden_teaser_is_pinned() -> None:
    """Stored fingerprints outlive upgrades: any change to the normalisation (a faster
    pattern, say) would report every stored entry as updated on the next poll."""
    teaser = (
        "Reads: 42 and 1,234 views, 12 comments; 154085位读者 | 阅读(123) | 3.4k likes "
        "三天前 5 分钟以前 2 hours ago, just now, yesterday at 3:45 pm, 刚刚, 今天 12:30. "
        "求解 $x^2+1=0$ 前 2023 年"
    )
    assert fingerprint("矩阵 Views 前", teaser) == (
        "4fa54d0e92b41cedcde3578887d3bdb527c41845e8112fe1efac9fe7fe8727b0"
    )
    assert fingerprint("矩阵 Views 前", teaser) == fingerprint(
        "矩阵 Views 前", "and , ; | | , , , , . 求解 $x^2+1=0$ 前 2023 年"
    )


@pytest.mark.parametrize("hostile", ["1" * 100_000, " 1" * 50_000, "一" * 100_000, "a " * 50_000])
def test_fingerprint_of_hostile_100kb_text_stays_fast(hostile: str) -> None:
    started = time.perf_counter()
    assert fingerprint(hostile, hostile) != fingerprint(hostile, hostile + "!")
    assert time.perf_counter() - started < 2.0


# --- diff: new / seen / updated ------------------------------------------


def test_unknown_link_is_new_with_times_set_to_now() -> None:
    changes = diff([make_entry("https://kexue.fm/archives/1")], {}, now=NOW)
    (entry,) = changes.new
    assert (entry.first_seen, entry.last_seen, entry.updated) == (NOW, NOW, NOW)
    assert changes.updated == changes.seen == changes.removed == ()


def test_unchanged_entry_is_seen_as_stored_with_last_seen_now() -> None:
    old = make_entry("https://kexue.fm/archives/1")
    current = replace(old, first_seen=NOW, last_seen=NOW, updated=NOW, author="苏剑林")
    changes = diff([current], stored_of(old), now=NOW)
    assert changes.seen == (replace(old, last_seen=NOW),)
    assert changes.new == changes.updated == ()


def test_counter_only_change_is_seen_not_updated() -> None:
    title = CATEGORY[0]["title"]
    old = make_entry("https://kexue.fm/archives/6051", title, byline(154085))
    current = make_entry("https://kexue.fm/archives/6051", title, byline(154999), seen_at=NOW)
    changes = diff([current], stored_of(old), now=NOW)
    assert [entry.link for entry in changes.seen] == [old.link]
    assert changes.updated == ()


def test_teaser_edit_is_updated_keeping_link_first_seen_and_date() -> None:
    old = make_entry("https://kexue.fm/archives/1", teaser="旧的摘要。")
    current = make_entry(
        "https://kexue.fm/archives/1",
        teaser="新的摘要。",
        published=datetime(2025, 4, 10, tzinfo=SHANGHAI),
        seen_at=NOW,
    )
    ((stored, merged),) = diff([current], stored_of(old), now=NOW).updated
    assert stored == old
    assert merged.teaser_text == "新的摘要。"
    assert merged.fingerprint == current.fingerprint
    assert (merged.first_seen, merged.published) == (BEFORE, old.published)
    assert (merged.last_seen, merged.updated) == (NOW, NOW)


def test_update_takes_exact_date_over_stored_inferred_one() -> None:
    old = make_entry("https://kexue.fm/archives/1", teaser="old")
    exact = datetime(2022, 4, 10, 21, 16, tzinfo=SHANGHAI)
    current = make_entry(
        "https://kexue.fm/archives/1", teaser="new", published=exact, date_exact=True
    )
    ((_, merged),) = diff([current], stored_of(old), now=NOW).updated
    assert (merged.published, merged.date_exact) == (exact, True)
    assert merged.published.utcoffset() == timedelta(hours=8)


def test_update_keeps_stored_exact_date_over_new_inferred_one() -> None:
    exact = datetime(2022, 4, 10, 21, 16, tzinfo=SHANGHAI)
    old = make_entry("https://kexue.fm/archives/1", teaser="old", published=exact, date_exact=True)
    current = make_entry("https://kexue.fm/archives/1", teaser="new")
    ((_, merged),) = diff([current], stored_of(old), now=NOW).updated
    assert (merged.published, merged.date_exact) == (exact, True)


def test_update_keeps_stored_content_when_new_has_none() -> None:
    old = make_entry("https://kexue.fm/archives/1", teaser="old", content_html="<p>full</p>")
    current = make_entry("https://kexue.fm/archives/1", teaser="new")
    ((_, merged),) = diff([current], stored_of(old), now=NOW).updated
    assert merged.content_html == "<p>full</p>"


def test_real_title_replacing_stored_fallback_is_updated() -> None:
    teaser = CATEGORY[0]["teaser_first_sentence"]
    old = make_entry("https://kexue.fm/archives/6051", teaser[:20] + "…", teaser, fallback=True)
    current = make_entry("https://kexue.fm/archives/6051", CATEGORY[0]["title"], teaser)
    ((_, merged),) = diff([current], stored_of(old), now=NOW).updated
    assert (merged.title, merged.title_is_fallback) == (CATEGORY[0]["title"], False)


def test_title_missing_this_time_is_not_an_edit() -> None:
    old = make_entry("https://kexue.fm/archives/1", "Real title", "Teaser. More.")
    current = make_entry("https://kexue.fm/archives/1", "Teaser.", "Teaser. More.", fallback=True)
    changes = diff([current], stored_of(old), now=NOW)
    assert changes.seen == (replace(old, last_seen=NOW),)
    assert changes.updated == ()


def test_teaser_edit_while_title_missing_keeps_stored_real_title() -> None:
    old = make_entry("https://kexue.fm/archives/1", "Real title", "Old teaser.")
    current = make_entry("https://kexue.fm/archives/1", "New teaser.", "New teaser.", fallback=True)
    ((_, merged),) = diff([current], stored_of(old), now=NOW).updated
    assert (merged.title, merged.title_is_fallback) == ("Real title", False)
    assert merged.teaser_text == "New teaser."
    assert merged.fingerprint == fingerprint("Real title", "New teaser.")


def test_same_link_twice_is_merged_keeping_first() -> None:
    first = make_entry("https://kexue.fm/archives/1", "Title", "from page 1")
    second = make_entry("https://kexue.fm/archives/1", "Title", "from page 2")
    other = make_entry("https://kexue.fm/archives/2")
    changes = diff([first, other, second], {}, now=NOW)
    assert [(e.link, e.teaser_text) for e in changes.new] == [
        ("https://kexue.fm/archives/1", "from page 1"),
        ("https://kexue.fm/archives/2", "Some teaser text."),
    ]


def test_same_link_twice_prefers_the_real_title() -> None:
    untitled = make_entry("https://kexue.fm/archives/8847", "CoSENT…", "teaser", fallback=True)
    titled = make_entry("https://kexue.fm/archives/8847", "CoSENT(二):特征式匹配", "teaser")
    (entry,) = diff([untitled, titled], {}, now=NOW).new
    assert (entry.title, entry.title_is_fallback) == ("CoSENT(二):特征式匹配", False)


# --- diff: removed from index ---------------------------------------------

PREVIOUS = [
    "https://x.test/e",
    "https://x.test/d",
    "https://x.test/c",
    "https://x.test/b",
    "https://x.test/a",
]


def removed_links(current_page: list[str], newest_first: bool | None = True) -> list[str]:
    stored = stored_of(*(make_entry(link) for link in PREVIOUS))
    current = [make_entry(link) for link in current_page]
    changes = diff(
        current,
        stored,
        now=NOW,
        first_page_links=current_page,
        previous_first_page=PREVIOUS,
        newest_first=newest_first,
    )
    return [entry.link for entry in changes.removed]


def test_entry_gone_from_page_one_while_older_neighbour_stays_is_removed() -> None:
    assert removed_links(
        ["https://x.test/e", "https://x.test/c", "https://x.test/b", "https://x.test/a"]
    ) == ["https://x.test/d"]


def test_newest_entry_gone_while_older_ones_stay_is_removed() -> None:
    assert removed_links(
        ["https://x.test/d", "https://x.test/c", "https://x.test/b", "https://x.test/a"]
    ) == ["https://x.test/e"]


def test_entries_pushed_off_the_end_of_page_one_are_not_removed() -> None:
    assert (
        removed_links(
            ["https://x.test/new2", "https://x.test/new1", "https://x.test/e", "https://x.test/d"]
        )
        == []
    )


def test_entry_pushed_to_page_two_is_not_removed() -> None:
    stored = stored_of(*(make_entry(link) for link in PREVIOUS))
    page_one = ["https://x.test/e", "https://x.test/c", "https://x.test/b", "https://x.test/a"]
    current = [make_entry(link) for link in [*page_one, "https://x.test/d"]]
    changes = diff(
        current, stored, now=NOW, first_page_links=page_one, previous_first_page=PREVIOUS
    )
    assert changes.removed == ()


def test_oldest_first_page_pushing_off_its_start_is_not_removed() -> None:
    oldest_first = list(reversed(PREVIOUS))
    stored = stored_of(*(make_entry(link) for link in oldest_first))
    page_one = ["https://x.test/c", "https://x.test/d", "https://x.test/e", "https://x.test/new"]
    changes = diff(
        [make_entry(link) for link in page_one],
        stored,
        now=NOW,
        first_page_links=page_one,
        previous_first_page=oldest_first,
        newest_first=False,
    )
    assert changes.removed == ()


def test_unknown_order_needs_survivors_on_both_sides() -> None:
    assert (
        removed_links(
            ["https://x.test/d", "https://x.test/c", "https://x.test/b", "https://x.test/a"], None
        )
        == []
    )
    assert removed_links(
        ["https://x.test/e", "https://x.test/c", "https://x.test/b", "https://x.test/a"], None
    ) == ["https://x.test/d"]


def test_nothing_is_removed_without_a_previous_page_one() -> None:
    changes = diff(
        [make_entry("https://x.test/a")],
        stored_of(make_entry("https://x.test/b")),
        now=NOW,
        first_page_links=["https://x.test/a"],
    )
    assert changes.removed == ()


# --- word_diff ------------------------------------------------------------


def test_word_diff_marks_replaced_english_word() -> None:
    assert (
        word_diff("The quick brown fox", "The slow brown fox") == "The [-quick-]{+slow+} brown fox"
    )


def test_word_diff_keeps_latin_words_whole() -> None:
    assert word_diff("a cat sat", "a car sat") == "a [-cat-]{+car+} sat"


def test_word_diff_joins_changes_separated_only_by_space() -> None:
    assert word_diff("the quick brown fox", "the slow red fox") == (
        "the [-quick brown-]{+slow red+} fox"
    )


def test_word_diff_diffs_chinese_by_character() -> None:
    assert word_diff("今天天气很好,适合散步。", "今天天气不错,适合散步。") == (
        "今天天气[-很好-]{+不错+},适合散步。"
    )


def test_word_diff_mixed_title() -> None:
    assert word_diff("Transformer升级之路:7", "Transformer升级之路:8") == (
        "Transformer升级之路:[-7-]{+8+}"
    )


def test_word_diff_shows_insertion_and_deletion() -> None:
    assert word_diff("一二三", "一二三四") == "一二三{+四+}"
    assert word_diff("one two three", "one three") == "one [-two-] three"


def test_word_diff_trims_far_context() -> None:
    teaser = CATEGORY[0]["teaser_first_sentence"]
    edited = teaser.replace("梯度惩罚", "谱归一化")
    result = word_diff(teaser, edited)
    assert "[-梯度惩罚-]{+谱归一化+}" in result
    assert result.startswith("…") and result.endswith("…")
    assert len(result) < len(teaser)


def test_word_diff_stays_short_for_a_rewrite() -> None:
    old = " ".join(f"word{i}" for i in range(300))
    new = " ".join(f"term{i}" for i in range(300))
    result = word_diff(old, new)
    assert result.startswith("[-word0 word1")
    assert len(result) <= 205


def test_word_diff_of_hostile_100kb_text_stays_fast() -> None:
    old = "阅读" * 50_000
    started = time.perf_counter()
    result = word_diff(old, old[::-1])
    assert time.perf_counter() - started < 2.0
    assert result and len(result) <= 205


def test_word_diff_of_identical_text_is_empty() -> None:
    assert word_diff("同样的文字  text", "同样的文字 text") == ""
