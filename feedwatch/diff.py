"""Extracted entries against stored ones: what is new, edited, unchanged or gone.

Pure functions only, so the rules that decide what a user is told about can be
tested without a database or a web site.

A fingerprint is two 32-hex-digit SHA-256 prefixes, one of the title and one of
the teaser text, joined into 64 hex digits. Keeping the halves apart lets the
diff tell a title edit from a teaser edit and lets it ignore a title that
merely failed to extract this time, without needing the source's ignore rules.
Callers make `Entry.fingerprint` as ``fingerprint(None if title_is_fallback else
title, teaser_text, ignore)``: a fallback title is derived from the teaser and
must not count twice.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from feedwatch.models import Entry

_HALF = 32
_MAX_NORMALISED = 20_000

# Lookbehinds and possessive quantifiers keep every pattern linear: a hostile
# page can send 100 KB of digits, and a backtracking scan would be quadratic.
_NUM = r"(?<![\d,.])\d++(?:[,.]\d++)*+"
_CN_COUNTER_WORD = (
    r"(?:读者|阅读|浏览|围观|查看|观看|播放|评论|回复|留言|点赞|赞|收藏|转发|分享|喜欢)"
)
_EN_COUNTER_WORD = (
    r"(?:views?|reads?|readers?|comments?|replies|reply|responses?|likes?|hits|shares?"
    r"|points?|votes?|upvotes?|claps?|reactions?)"
)
_CN_DIGITS = "一二两三四五六七八九十百几数半"
_CN_QUANTITY = rf"(?<![\d{_CN_DIGITS}])(?:\d++|[{_CN_DIGITS}]++)"

# Text that changes on its own, without anyone editing the post. Applied after
# NFKC, so full-width digits and punctuation already read as ASCII.
# Each pattern comes with a hint: a shorter pattern that every match of the pattern
# contains (its tail, from the last digit or the unit on), or None. Patterns that
# open with a lookbehind or \b are tried at every position of the text, while a
# hint that opens with a digit or a word is found by a fast scan, and most teasers
# hold no counter at all: a pattern whose hint is absent cannot match and is skipped,
# which leaves the result exactly as if it had run (about 3x faster on the bench's
# teasers, whose LaTeX is full of digits and whose Chinese of 前 and 阅读).
_CN_COUNTER_TAIL = r"\s*[万千亿kw]?\+?\s*[位个名人次条篇]?\s*" + _CN_COUNTER_WORD
_EN_COUNTER_TAIL = r"\s*[km]?\+?\s*" + _EN_COUNTER_WORD
_CN_AGO_TAIL = r"(?:秒|分钟|分|小时|钟头|天|日|周|星期|礼拜|月|年)钟?\s*以?前"
_VOLATILE = tuple(
    (re.compile(pattern, re.IGNORECASE), re.compile(hint, re.IGNORECASE) if hint else None)
    for pattern, hint in (
        # 154085位读者, 1.2万次阅读, 12条评论, 3人点赞
        (_NUM + _CN_COUNTER_TAIL + r"(?:量|数|次数)?", r"\d" + _CN_COUNTER_TAIL),
        # 阅读(123), 评论: 3, 浏览量 1,234 次
        (
            _CN_COUNTER_WORD
            + r"(?:量|数|次数)?\s*:?\s*[(\[【]?\s*"
            + _NUM
            # 【 survives NFKC, hence its closing twin here
            + r"\s*[万千亿kw]?\+?\s*[)\]】]?(?:\s*[次人条])?",
            _CN_COUNTER_WORD,
        ),
        # 1,234 views, 12 comments, 3.4k likes
        (r"\b" + _NUM + _EN_COUNTER_TAIL + r"\b", r"\d" + _EN_COUNTER_TAIL),
        # Views: 1,234  Comments (5)
        (
            r"\b" + _EN_COUNTER_WORD + r"\s*[:(\[]\s*" + _NUM + r"\s*[km]?\+?\s*[)\]]?",
            r"[:(\[]\s*\d",
        ),
        # 3 days ago, an hour ago, 5m ago
        (
            r"\b(?:\d++|an?|one|a few|few|several)\s*(?:seconds?|secs?|minutes?|mins?|hours?"
            r"|hrs?|days?|weeks?|wks?|months?|mos?|years?|yrs?|[smhdwy])\s+ago\b",
            "ago",
        ),
        (r"\bjust now\b", "now"),
        (r"\b(?:yesterday|today)\s+at\s+\d{1,2}:\d{2}(?:\s*[ap]\.?m\.?)?", r"\d:\d"),
        # 2小时前, 三天前, 半个月前, 5 分钟以前
        (_CN_QUANTITY + r"\s*个?\s*" + _CN_AGO_TAIL, _CN_AGO_TAIL),
        (r"刚刚|刚才", None),
        (r"(?:今天|昨天|前天)\s*\d{1,2}:\d{2}", None),
    )
)
_SPACE = re.compile(r"\s+")
_SPACES = re.compile(r"  +")


def _normalise(text: str, ignore: Sequence[re.Pattern[str]]) -> str:
    """The text as it would read with every volatile part gone.

    The source's own ignore rules run both before NFKC (they were written
    against the page as served) and after it (so an ASCII rule still matches
    full-width text). Only the first _MAX_NORMALISED characters are cleaned,
    which bounds the cost of a hostile 100 KB teaser; past that, text is
    compared as it is.
    """
    text = _SPACE.sub(" ", text)
    if len(text) > _MAX_NORMALISED:
        return _normalise(text[:_MAX_NORMALISED], ignore) + text[_MAX_NORMALISED:]
    for pattern in ignore:
        text = pattern.sub(" ", text)
    text = unicodedata.normalize("NFKC", text)
    for pattern in ignore:
        text = pattern.sub(" ", text)
    for pattern, hint in _VOLATILE:
        if hint is None or hint.search(text):
            text = pattern.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HALF]


def fingerprint(title: str | None, teaser_text: str, ignore: Sequence[re.Pattern[str]] = ()) -> str:
    """64 hex digits that change when the title or teaser is really edited.

    View and comment counters, relative times ("3 days ago", "2小时前") and every
    match of `ignore` are removed first, so they never count as an edit.
    """
    return _digest(_normalise(title or "", ignore)) + _digest(_normalise(teaser_text, ignore))


@dataclass(frozen=True)
class Changes:
    """One poll's verdict on each entry, each group in page order.

    `updated` pairs are (as stored, as it should now be stored); `seen` and
    `removed` hold the stored versions (`seen` with last_seen moved to now).
    """

    new: tuple[Entry, ...]
    updated: tuple[tuple[Entry, Entry], ...]
    seen: tuple[Entry, ...]
    removed: tuple[Entry, ...]


def _merge_duplicates(current: Sequence[Entry]) -> list[Entry]:
    """One entry per link, at the position it was first seen.

    The same post can show up on two pages of one poll (a new post pushed it
    down between fetches, or it is pinned). The first occurrence wins unless
    only a later one has a real title: then that one is taken whole, so its
    fingerprint still matches its own title and teaser.
    """
    merged: dict[str, Entry] = {}
    for entry in current:
        kept = merged.get(entry.link)
        if kept is None or (kept.title_is_fallback and not entry.title_is_fallback):
            merged[entry.link] = entry
    return list(merged.values())


def _revise(old: Entry, cur: Entry, now: datetime) -> Entry | None:
    """The entry to store when `cur` differs from `old` in a way worth telling; else None."""
    old_title, old_teaser = old.fingerprint[:_HALF], old.fingerprint[_HALF:]
    cur_title, cur_teaser = cur.fingerprint[:_HALF], cur.fingerprint[_HALF:]
    title_lost = cur.title_is_fallback and not old.title_is_fallback
    title_found = old.title_is_fallback and not cur.title_is_fallback
    title_changed = title_found or (not title_lost and cur_title != old_title)
    if not title_changed and cur_teaser == old_teaser:
        return None
    # A real title that failed to extract this time is kept: a glitch is not an edit.
    title, is_fallback, title_half = (
        (old.title, False, old_title)
        if title_lost
        else (cur.title, cur.title_is_fallback, cur_title)
    )
    better_date = cur.date_exact and not old.date_exact
    return replace(
        cur,
        link=old.link,
        title=title,
        title_is_fallback=is_fallback,
        fingerprint=title_half + cur_teaser,
        published=cur.published if better_date else old.published,
        date_exact=cur.date_exact if better_date else old.date_exact,
        author=cur.author if cur.author is not None else old.author,
        content_html=cur.content_html if cur.content_html is not None else old.content_html,
        first_seen=old.first_seen,
        last_seen=now,
        updated=now,
    )


def _removed(
    first_page_links: Sequence[str],
    previous_first_page: Sequence[str],
    present: set[str],
    stored: Mapping[str, Entry],
    newest_first: bool | None,
) -> tuple[Entry, ...]:
    """Stored entries that vanished from page 1 while an older neighbour stayed.

    Newer posts push entries off the old end of page 1; such an entry has no
    older neighbour left there, so it is not taken for removed. Which end is
    old depends on the page's order, and many blogs (the reference one among
    them) list oldest first within a page. With the order unknown (None), a
    link counts as removed only with survivors on both sides, which no push
    off either end can produce.
    """
    now_on_page = set(first_page_links)
    kept = [link in now_on_page for link in previous_first_page]
    survivor_after = [False] * len(kept)
    for index in range(len(kept) - 2, -1, -1):
        survivor_after[index] = kept[index + 1] or survivor_after[index + 1]
    survivor_before = [False] * len(kept)
    for index in range(1, len(kept)):
        survivor_before[index] = kept[index - 1] or survivor_before[index - 1]
    gone: list[Entry] = []
    for index, link in enumerate(previous_first_page):
        if kept[index] or link in present or link not in stored:
            continue
        if newest_first is None:
            older_survived = survivor_before[index] and survivor_after[index]
        elif newest_first:
            older_survived = survivor_after[index]
        else:
            older_survived = survivor_before[index]
        if older_survived:
            gone.append(stored[link])
    return tuple(gone)


def diff(
    current: Sequence[Entry],
    stored: Mapping[str, Entry],
    *,
    now: datetime,
    first_page_links: Sequence[str] = (),
    previous_first_page: Sequence[str] = (),
    newest_first: bool | None = True,
) -> Changes:
    """Classify this poll's entries against the stored ones, keyed by link.

    New entries are returned with first_seen, last_seen and updated set to
    `now`; see `_revise` for what an edited entry keeps from its stored self.
    `newest_first` is page 1's order (see `_removed`); pass what the dates
    step detected, or None when it could not tell.
    """
    new: list[Entry] = []
    updated: list[tuple[Entry, Entry]] = []
    seen: list[Entry] = []
    merged = _merge_duplicates(current)
    for entry in merged:
        old = stored.get(entry.link)
        if old is None:
            new.append(replace(entry, first_seen=now, last_seen=now, updated=now))
            continue
        revised = _revise(old, entry, now)
        if revised is None:
            seen.append(replace(old, last_seen=now))
        else:
            updated.append((old, revised))
    removed = _removed(
        first_page_links,
        previous_first_page,
        {entry.link for entry in merged},
        stored,
        newest_first,
    )
    return Changes(tuple(new), tuple(updated), tuple(seen), removed)


def changed_fields(old: Entry, new: Entry) -> tuple[str, ...]:
    """Which of "title" and "teaser" an update really changed, by fingerprint half.

    The raw text also differs where only ignored or volatile parts moved (a view
    counter beside a real edit of the other field); naming such a field would be
    the very noise the fingerprint exists to hide.
    """
    halves = {
        "title": (old.fingerprint[:_HALF], new.fingerprint[:_HALF]),
        "teaser": (old.fingerprint[_HALF:], new.fingerprint[_HALF:]),
    }
    return tuple(field for field, (was, now) in halves.items() if was != now)


_CJK = (
    "\u2e80-\u2fff\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f"
)
_TOKEN = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])\w)+|\s+|.", re.DOTALL)
_MAX_DIFF = 200
_MAX_PIECE = 70
_MAX_TOKENS = 500


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _head(tokens: Sequence[str], context: int) -> str:
    """About `context` characters from the start, cut at a token boundary."""
    size = 0
    for index, token in enumerate(tokens):
        if size >= context:
            return "".join(tokens[:index]).rstrip() + "…"
        size += len(token)
    return "".join(tokens)


def _tail(tokens: Sequence[str], context: int) -> str:
    """About `context` characters from the end, cut at a token boundary."""
    size = 0
    for index in range(len(tokens) - 1, -1, -1):
        if size >= context:
            return "…" + "".join(tokens[index + 1 :]).lstrip()
        size += len(tokens[index])
    return "".join(tokens)


def _opcodes(a: Sequence[str], b: Sequence[str]) -> list[tuple[str, int, int, int, int]]:
    """difflib opcodes, bounded in time for hostile input.

    SequenceMatcher is quadratic, and a page can carry a 100 KB title. The
    common head and tail are matched in linear time; of the differing middle
    only the first _MAX_TOKENS tokens are diffed and the rest is one
    replacement, which the 200-character summary would not show anyway.
    """
    limit = min(len(a), len(b))
    prefix = 0
    while prefix < limit and a[prefix] == b[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and a[-1 - suffix] == b[-1 - suffix]:
        suffix += 1
    a_end, b_end = len(a) - suffix, len(b) - suffix
    a_cut, b_cut = min(a_end, prefix + _MAX_TOKENS), min(b_end, prefix + _MAX_TOKENS)
    # Whitespace as junk: it may extend a match but not seed one, which keeps
    # the matcher from pairing up every space of two rewritten sentences.
    matcher = difflib.SequenceMatcher(str.isspace, a[prefix:a_cut], b[prefix:b_cut], autojunk=False)
    raw = [
        ("equal", 0, prefix, 0, prefix),
        *(
            (tag, i1 + prefix, i2 + prefix, j1 + prefix, j2 + prefix)
            for tag, i1, i2, j1, j2 in matcher.get_opcodes()
        ),
        ("replace", a_cut, a_end, b_cut, b_end),
        ("equal", a_end, len(a), b_end, len(b)),
    ]
    ops: list[tuple[str, int, int, int, int]] = []
    for tag, i1, i2, j1, j2 in raw:
        if i1 == i2 and j1 == j2:
            continue
        if ops and tag == "equal" and ops[-1][0] == "equal":
            ops[-1] = ("equal", ops[-1][1], i2, ops[-1][3], j2)
        else:
            ops.append((tag, i1, i2, j1, j2))
    return ops


def word_diff(old: str, new: str, context: int = 20) -> str:
    """A one-line summary of an edit, like ``…context [-old-]{+new+} context…``.

    Tokens are Latin words/numbers and single CJK characters, so Chinese text
    (which has no spaces) diffs by character rather than as one huge word.
    Returns "" when nothing changed; the result stays within about 200 chars.
    """
    a = _TOKEN.findall(_SPACE.sub(" ", old).strip())
    b = _TOKEN.findall(_SPACE.sub(" ", new).strip())
    ops = _opcodes(a, b)
    if all(op[0] == "equal" for op in ops):
        return ""
    # Join changes separated only by whitespace: "[-quick brown-]{+slow red+}"
    # reads better than two replacements around a lone space.
    groups: list[list[tuple[str, int, int, int, int]]] = []
    for op in ops:
        tag, i1, i2 = op[0], op[1], op[2]
        gap = tag == "equal" and not "".join(a[i1:i2]).strip()
        if groups and groups[-1][0][0] != "equal" and (tag != "equal" or gap):
            groups[-1].append(op)
        else:
            groups.append([op])
    pieces: list[str] = []
    last = len(groups) - 1
    for index, group in enumerate(groups):
        tag, i1, i2 = group[0][0], group[0][1], group[-1][2]
        if tag == "equal":
            tokens = a[i1:i2]
            if index == 0:
                pieces.append(_tail(tokens, context))
            elif index == last:
                pieces.append(_head(tokens, context))
            elif len("".join(tokens)) <= 2 * context:
                pieces.append("".join(tokens))
            else:
                pieces.append(_head(tokens, context) + " " + _tail(tokens, context)[1:])
            continue
        j1, j2 = group[0][3], group[-1][4]
        removed = "".join(a[i1:i2])
        added = "".join(b[j1:j2])
        # Whitespace the change swallowed still separates it from its neighbours.
        marked = " " if removed[:1].isspace() or added[:1].isspace() else ""
        if removed.strip():
            marked += f"[-{_clip(removed.strip(), _MAX_PIECE)}-]"
        if added.strip():
            marked += f"{{+{_clip(added.strip(), _MAX_PIECE)}+}}"
        if removed[-1:].isspace() or added[-1:].isspace():
            marked += " "
        pieces.append(marked)
    out = ""
    for piece in pieces:
        if len(out) + len(piece) > _MAX_DIFF:
            return _SPACES.sub(" ", out).rstrip() + " …"
        out += piece
    return _SPACES.sub(" ", out)
