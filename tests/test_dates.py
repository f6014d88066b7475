"""Date parsing and year inference, on hand-made cases and on the fixture pages."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedwatch.dates import parse_date, parse_since, resolve_dates
from feedwatch.models import DateParts

FIXTURES = Path(__file__).parent / "fixtures"
TRUTH = json.loads((FIXTURES / "truth.json").read_text(encoding="utf-8"))
SHANGHAI = ZoneInfo("Asia/Shanghai")
PLUS8 = timezone(timedelta(hours=8))


def resolve_fixture(name: str) -> tuple[list[dict], list[datetime | None], datetime]:
    """A fixture page's entries, their resolved dates and the page's fetch time."""
    page = TRUTH["pages"][name]
    now = datetime.fromisoformat(page["fetched_at"])
    parts = [parse_date(e["date"], e["datetime_attr"]) for e in page["entries"]]
    return page["entries"], resolve_dates(parts, now=now, tz=SHANGHAI), now


def resolve_texts(texts: list[str], now: datetime) -> list[date | None]:
    """Resolve a page of date texts seen at `now` (Shanghai) and keep only the dates."""
    resolved = resolve_dates([parse_date(t) for t in texts], now=now, tz=SHANGHAI)
    return [d.date() if d else None for d in resolved]


def seen(day: str) -> datetime:
    """Noon in Shanghai on an ISO day: when a page was fetched."""
    return datetime.fromisoformat(day + "T12:00:00").replace(tzinfo=SHANGHAI)


def descending_pairs(moments: list[datetime | None]) -> set[tuple[int, int]]:
    """1-based positions (i, i+1) where the later entry is older than the earlier one."""
    return {
        (i + 1, i + 2)
        for i, (a, b) in enumerate(pairwise(moments))
        if a is not None and b is not None and b < a
    }


NAIVE_CORRECT = [
    (name, e["position"])
    for name, page in TRUTH["pages"].items()
    for e in page["entries"]
    if e["naive_date_correct"]
]


# --- formats -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12 Jan", DateParts(1, 12)),
        ("5 Jun", DateParts(6, 5)),
        ("12 January", DateParts(1, 12)),
        ("Jan 12", DateParts(1, 12)),
        ("Jan 12, 2023", DateParts(1, 12, 2023)),
        ("12 Jan 2023", DateParts(1, 12, 2023)),
        ("January 12, 2023", DateParts(1, 12, 2023)),
        ("Sept. 3rd 2021", DateParts(9, 3, 2021)),
        ("2018-10-07", DateParts(10, 7, 2018)),
        ("2018/10/07", DateParts(10, 7, 2018)),
        ("2018.10.07", DateParts(10, 7, 2018)),
        ("2018-10-07 21:16", DateParts(10, 7, 2018, 21, 16, has_time=True)),
        ("2024年5月13日", DateParts(5, 13, 2024)),
        ("2024年5月13日 12:30", DateParts(5, 13, 2024, 12, 30, has_time=True)),
        ("5月13日", DateParts(5, 13)),
        ("Jan 12, 2023 at 3:05 pm", DateParts(1, 12, 2023, 15, 5, has_time=True)),
    ],
)
def test_parses_format(text: str, expected: DateParts) -> None:
    assert parse_date(text) == expected


def test_parses_rfc3339_with_offset() -> None:
    assert parse_date("2018-10-07T21:16:00+08:00") == DateParts(
        10, 7, 2018, 21, 16, 0, tz=PLUS8, has_time=True
    )


def test_parses_iso_z_as_utc() -> None:
    assert parse_date("2024-05-13T14:06:09.123Z") == DateParts(
        5, 13, 2024, 14, 6, 9, tz=UTC, has_time=True
    )


def test_parses_rfc822() -> None:
    assert parse_date("Mon, 12 Jan 2023 10:00:00 GMT") == DateParts(
        1, 12, 2023, 10, 0, 0, tz=UTC, has_time=True
    )


def test_parses_rfc822_numeric_and_named_zones() -> None:
    assert parse_date("Thu, 12 Jan 2023 10:00:00 -0500").tz == timezone(timedelta(hours=-5))
    assert parse_date("Thu, 12 Jan 2023 10:00:00 PST").tz == timezone(timedelta(hours=-8))


def test_finds_date_in_category_byline() -> None:
    assert parse_date("By 苏剑林 | 2018-10-07 | 154085位读者 | 引用") == DateParts(10, 7, 2018)


def test_finds_date_after_words() -> None:
    assert parse_date("Posted on 12 Jan") == DateParts(1, 12)


def test_first_date_in_text_wins() -> None:
    assert parse_date("Jan 12, 2023 (updated 5 Feb 2024)") == DateParts(1, 12, 2023)


def test_datetime_attribute_wins_over_text() -> None:
    parts = parse_date("2018-10-07", "2018-10-07T21:16:00+08:00")
    assert parts == DateParts(10, 7, 2018, 21, 16, 0, tz=PLUS8, has_time=True)


def test_unparseable_attribute_falls_back_to_text() -> None:
    assert parse_date("12 Jan", "soon") == DateParts(1, 12)


@pytest.mark.parametrize(
    "text",
    [
        "31 Feb",
        "30 Feb 2024",
        "2023-02-29",
        "2023-13-01",
        "2024-00-10",
        "2024年2月30日",
        "0 Jan",
        "32 Jan",
        "2024-05-01 25:00",
        "2024-05-01T10:00:00+25:00",
        "Jan 5, 2023 13:30 pm",
    ],
)
def test_impossible_date_is_none(text: str) -> None:
    assert parse_date(text) is None


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "   ",
        "hello",
        "154085位读者",
        "Jan",
        "January",
        "引用",
        "/usr/uploads/2023/11/37.png",
    ],
)
def test_text_without_a_date_is_none(text: str | None) -> None:
    assert parse_date(text) is None


@given(st.text(max_size=200), st.one_of(st.none(), st.text(max_size=60)))
def test_parse_date_never_raises(text: str, attr: str | None) -> None:
    parts = parse_date(text, attr)
    assert parts is None or isinstance(parts, DateParts)


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31)), st.text(max_size=20))
def test_written_dates_parse_back_inside_noise(day: date, noise: str) -> None:
    noise = "".join(c for c in noise if not c.isdigit() and not c.isalpha())
    assert parse_date(f"{noise} {day:%Y-%m-%d} {noise}") == DateParts(day.month, day.day, day.year)
    assert parse_date(f"{day.day} {day:%b}") == DateParts(day.month, day.day)
    assert parse_date(f"{day.year}年{day.month}月{day.day}日") == DateParts(
        day.month, day.day, day.year
    )


# --- year inference: single dates ---------------------------------------------------------


def test_date_still_to_come_this_year_is_last_year() -> None:
    assert resolve_texts(["28 Dec"], seen("2025-01-03")) == [date(2024, 12, 28)]


def test_date_earlier_this_year_is_this_year() -> None:
    assert resolve_texts(["2 Jan"], seen("2025-01-03")) == [date(2025, 1, 2)]


def test_tomorrow_is_allowed_by_one_day_of_slack() -> None:
    assert resolve_texts(["2 Jan"], seen("2025-01-01")) == [date(2025, 1, 2)]


def test_day_after_tomorrow_is_last_year() -> None:
    assert resolve_texts(["3 Jan"], seen("2025-01-01")) == [date(2024, 1, 3)]


def test_feb_29_goes_to_the_latest_leap_year_not_in_the_future() -> None:
    assert resolve_texts(["29 Feb"], seen("2025-06-01")) == [date(2024, 2, 29)]
    assert resolve_texts(["29 Feb"], seen("2024-02-27")) == [date(2020, 2, 29)]


def test_feb_29_in_a_page_keeps_its_neighbours_in_the_leap_year() -> None:
    # Putting 10 Mar and 20 Apr in 2025 would leave a year-long gap after 29 Feb 2024.
    assert resolve_texts(["29 Feb", "10 Mar", "20 Apr"], seen("2025-05-01")) == [
        date(2024, 2, 29),
        date(2024, 3, 10),
        date(2024, 4, 20),
    ]


# --- year inference: pages ----------------------------------------------------------------


def test_descending_page_across_new_year() -> None:
    assert resolve_texts(["3 Jan", "28 Dec", "15 Dec"], seen("2025-01-10")) == [
        date(2025, 1, 3),
        date(2024, 12, 28),
        date(2024, 12, 15),
    ]


def test_ascending_page_across_new_year() -> None:
    assert resolve_texts(["15 Dec", "28 Dec", "3 Jan"], seen("2025-01-10")) == [
        date(2024, 12, 15),
        date(2024, 12, 28),
        date(2025, 1, 3),
    ]


def test_ascending_page_with_short_gaps_keeps_its_new_year() -> None:
    # Read newest-first, this page would need no New Year but a jump from Nov back to Jan.
    assert resolve_texts(["1 Nov", "20 Dec", "15 Jan"], seen("2025-05-10")) == [
        date(2024, 11, 1),
        date(2024, 12, 20),
        date(2025, 1, 15),
    ]


def test_descending_page_steps_back_a_year_where_it_wraps() -> None:
    texts = ["1 Apr", "1 Jan", "1 Oct", "1 Jul", "1 Mar"]
    assert resolve_texts(texts, seen("2024-05-10")) == [
        date(2024, 4, 1),
        date(2024, 1, 1),
        date(2023, 10, 1),
        date(2023, 7, 1),
        date(2023, 3, 1),
    ]


def test_ascending_page_puts_a_date_after_today_in_the_year_before() -> None:
    texts = ["10 Apr", "18 May", "13 Nov", "9 Jan", "7 May"]
    assert resolve_texts(texts, seen("2024-05-10"))[0] == date(2023, 4, 10)


def test_small_inversion_does_not_cost_a_year() -> None:
    texts = ["18 May", "13 Nov", "16 Oct", "25 Dec", "7 May"]
    assert resolve_texts(texts, seen("2024-05-10")) == [
        date(2023, 5, 18),
        date(2023, 11, 13),
        date(2023, 10, 16),
        date(2023, 12, 25),
        date(2024, 5, 7),
    ]


def test_full_date_anchors_the_year_less_dates_after_it() -> None:
    texts = ["5 Mar", "2023-01-15", "20 Dec", "1 Nov"]
    assert resolve_texts(texts, seen("2024-05-10")) == [
        date(2024, 3, 5),
        date(2023, 1, 15),
        date(2022, 12, 20),
        date(2022, 11, 1),
    ]


def test_non_chronological_page_dates_each_entry_on_its_own() -> None:
    texts = ["12 Jan", "13 May", "16 Aug", "28 Feb", "26 Dec", "19 Oct"]
    assert resolve_texts(texts, seen("2024-05-20")) == [
        date(2024, 1, 12),
        date(2024, 5, 13),
        date(2023, 8, 16),
        date(2024, 2, 28),
        date(2023, 12, 26),
        date(2023, 10, 19),
    ]


def test_missing_dates_stay_none_in_place() -> None:
    assert resolve_texts(["garbage", "3 Jan", "", "28 Dec"], seen("2025-01-10")) == [
        None,
        date(2025, 1, 3),
        None,
        date(2024, 12, 28),
    ]


def test_full_date_in_the_future_is_not_believed() -> None:
    assert resolve_texts(["2030-01-01", "2024-05-11"], seen("2024-05-10")) == [
        None,
        date(2024, 5, 11),
    ]


def test_text_without_zone_gets_the_source_zone_and_midnight() -> None:
    (moment,) = resolve_dates([parse_date("12 Jan")], now=seen("2024-05-10"), tz=SHANGHAI)
    assert moment == datetime(2024, 1, 12, tzinfo=SHANGHAI)
    assert moment.utcoffset() == timedelta(hours=8)


def test_text_time_without_zone_is_in_the_source_zone() -> None:
    tz = ZoneInfo("Europe/Berlin")
    (moment,) = resolve_dates([parse_date("2018-10-07 21:16")], now=seen("2024-05-10"), tz=tz)
    assert moment == datetime(2018, 10, 7, 21, 16, tzinfo=tz)
    assert moment.utcoffset() == timedelta(hours=2)


def test_attribute_with_zone_keeps_its_zone() -> None:
    parts = parse_date("2018-10-07", "2018-10-07T21:16:00-05:00")
    (moment,) = resolve_dates([parts], now=seen("2024-05-10"), tz=SHANGHAI)
    assert moment.utcoffset() == timedelta(hours=-5)
    assert moment == datetime(2018, 10, 8, 2, 16, tzinfo=UTC)


@given(
    st.lists(
        st.one_of(st.none(), st.dates().map(lambda d: DateParts(d.month, d.day))), max_size=30
    ),
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1)),
)
def test_no_resolved_date_is_in_the_future(parts: list[DateParts | None], now: datetime) -> None:
    aware = now.replace(tzinfo=SHANGHAI)
    resolved = resolve_dates(parts, now=aware, tz=SHANGHAI)
    assert len(resolved) == len(parts)
    for p, moment in zip(parts, resolved, strict=True):
        assert (moment is None) == (p is None)
        assert moment is None or moment <= aware + timedelta(days=1)
        assert moment is None or (moment.month, moment.day) == (p.month, p.day)


# --- year inference on the fixture pages ----------------------------------------------------


def test_home_1_dates_are_all_exact() -> None:
    entries, resolved, _ = resolve_fixture("home-1.html")
    expected = [datetime.fromisoformat(e["date_full"]).replace(tzinfo=SHANGHAI) for e in entries]
    assert resolved == expected
    assert resolved[0] == datetime(2023, 4, 10, tzinfo=SHANGHAI)  # the naive rule says 2024


def test_exactly_the_truth_marked_entries_are_datable_by_the_naive_rule() -> None:
    assert sorted(NAIVE_CORRECT) == [("home-1.html", p) for p in range(2, 9)] + [
        ("mixed-1.html", 3)
    ]


@pytest.mark.parametrize(("name", "position"), NAIVE_CORRECT)
def test_entry_the_naive_rule_can_date_gets_its_exact_date(name: str, position: int) -> None:
    entries, resolved, _ = resolve_fixture(name)
    assert resolved[position - 1].date() == date.fromisoformat(entries[position - 1]["date_full"])


@pytest.mark.parametrize("name", sorted(TRUTH["pages"]))
def test_fixture_dates_are_never_in_the_future(name: str) -> None:
    entries, resolved, now = resolve_fixture(name)
    for entry, moment in zip(entries, resolved, strict=True):
        assert (moment is None) == (entry["date"] is None)
        assert moment is None or moment <= now + timedelta(days=1)


@pytest.mark.parametrize(
    ("name", "inversions", "years_off"),
    [("home-1.html", {(3, 4)}, 0), ("home-2.html", {(2, 3)}, 1), ("home-3.html", set(), 2)],
)
def test_home_pages_keep_their_ascending_order(
    name: str, inversions: set[tuple[int, int]], years_off: int
) -> None:
    entries, resolved, _ = resolve_fixture(name)
    assert descending_pairs(resolved) == inversions
    # The page is right up to a whole number of years: every gap between entries is kept.
    assert {m.year - int(e["date_full"][:4]) for e, m in zip(entries, resolved, strict=True)} == {
        years_off
    }


def test_mixed_page_falls_back_to_the_naive_rule() -> None:
    entries, resolved, _ = resolve_fixture("mixed-1.html")
    assert [m.date().isoformat() for m in resolved] == [e["naive_date"] for e in entries]


def test_category_dates_come_from_the_datetime_attribute() -> None:
    entries, resolved, _ = resolve_fixture("category-1.html")
    expected = [
        datetime.fromisoformat(e["datetime_attr"]) if e["datetime_attr"] else None for e in entries
    ]
    assert resolved == expected
    assert all(m is None or m.utcoffset() == timedelta(hours=8) for m in resolved)
    assert resolved[6] is None  # #7 has no byline
    assert resolved[0] == datetime(2018, 10, 7, 21, 16, tzinfo=PLUS8)


# --- parse_since ----------------------------------------------------------------------------


def test_since_date_is_midnight_in_the_source_zone() -> None:
    assert parse_since("2024-05-01", now=seen("2024-05-10"), tz=SHANGHAI) == datetime(
        2024, 5, 1, tzinfo=SHANGHAI
    )


def test_since_datetime_with_zone_keeps_it() -> None:
    since = parse_since("2024-05-01T08:30:00+00:00", now=seen("2024-05-10"), tz=SHANGHAI)
    assert since == datetime(2024, 5, 1, 8, 30, tzinfo=UTC)


def test_since_datetime_without_zone_is_in_the_source_zone() -> None:
    since = parse_since("2024-05-01T08:30", now=seen("2024-05-10"), tz=SHANGHAI)
    assert since == datetime(2024, 5, 1, 8, 30, tzinfo=SHANGHAI)


@pytest.mark.parametrize(
    ("text", "ago"),
    [("7d", timedelta(days=7)), ("12h", timedelta(hours=12)), ("30m", timedelta(minutes=30))],
)
def test_since_relative_counts_back_from_now(text: str, ago: timedelta) -> None:
    now = datetime(2024, 5, 10, 4, 0, tzinfo=UTC)
    assert parse_since(text, now=now, tz=SHANGHAI) == now - ago


@pytest.mark.parametrize("text", ["", "yesterday", "7x", "-3d", "2024-13-01", "99999999999d"])
def test_since_rejects_bad_input_with_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_since(text, now=seen("2024-05-10"), tz=SHANGHAI)
