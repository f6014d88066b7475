"""Dates as index pages write them, and the years that year-less dates are missing.

Index pages often print only "12 Jan". The year has to come from when the entry is
first seen and from the order of the page: each date alone gets the most recent
occurrence that is not in the future, and a chronological page then moves the older
end back a year wherever the sequence wraps. A page that is not chronological keeps
the per-date rule, because walking it would push old posts many years too far back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, timezone, tzinfo

from feedwatch.models import DateParts

SLACK = timedelta(days=1)
"""How far after `now` a date may be: the site's clock or zone may be ahead of ours."""

TOLERANCE = timedelta(days=60)
"""How far an entry may be newer than its newer neighbour before that counts as a year
wrap rather than an entry listed a little out of place (13 Nov before 16 Oct)."""

_MAX_TEXT = 2000
"""Date text longer than this is noise from a too-broad selector; only its start is read."""

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_MONTH = (
    r"(?<![a-z])(?P<mon>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?"
    r"|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?(?![a-z])"
)
_TIME = (
    r"(?:[t\s,]+(?:at\s+)?(?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:\.\d+)?)?"
    r"(?:\s*(?P<ampm>[ap])\.?m\.?(?![a-z]))?"
    r"(?:\s*(?P<tz>z|gmt|utc|ut|[ecmp][sd]t|[+-]\d{2}:?\d{2})(?![a-z\d]))?)?"
)
_YEAR = r"(?:,?[\s-]+(?P<y>\d{4})(?!\d))?"
_PATTERNS = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        # 2018-10-07, 2018/10/07, 2018.10.07, ISO 8601 / RFC 3339 with or without time and zone
        r"(?<!\d)(?P<y>\d{4})(?P<sep>[-/.])(?P<m>\d{1,2})(?P=sep)(?P<d>\d{1,2})(?!\d)" + _TIME,
        # 2024年5月13日, 5月13日
        r"(?<!\d)(?:(?P<y>\d{4})\s*年\s*)?(?P<m>\d{1,2})\s*月\s*(?P<d>\d{1,2})\s*[日号]" + _TIME,
        # 12 Jan, 12 January 2023, Mon, 12 Jan 2023 10:00:00 GMT
        r"(?<!\d)(?P<d>\d{1,2})(?:st|nd|rd|th)?[\s-]+(?:of\s+)?" + _MONTH + _YEAR + _TIME,
        # Jan 12, Jan 12, 2023, January 12th 2023
        _MONTH + r"\s*(?P<d>\d{1,2})(?:st|nd|rd|th)?(?!\d)" + _YEAR + _TIME,
    )
)
_ZONES = {
    "z": 0, "ut": 0, "utc": 0, "gmt": 0,
    "est": -5, "edt": -4, "cst": -6, "cdt": -5, "mst": -7, "mdt": -6, "pst": -8, "pdt": -7,
}  # fmt: skip
_RELATIVE = re.compile(r"(?P<n>\d+)\s*(?P<unit>[wdhm])", re.IGNORECASE)
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes"}


def parse_date(text: str | None, attr: str | None = None) -> DateParts | None:
    """The date in `attr` (a `datetime` attribute) or else in `text`, wherever it sits.

    Of several dates in one text the first wins: bylines put the publication date
    before anything else that looks like one. Impossible dates count as no date.
    """
    for value in (attr, text):
        if value:
            parts = _parse(value[:_MAX_TEXT])
            if parts is not None:
                return parts
    return None


def resolve_dates(
    parts: Sequence[DateParts | None], *, now: datetime, tz: tzinfo
) -> list[datetime | None]:
    """Aware datetimes for one index page's dates, given in page order.

    Dates without a zone are in `tz`, dates without a time at midnight. A full date
    later than `now` plus a day of slack is not believed and becomes None, like a
    missing one, so the caller falls back to the first-seen time.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=tz)
    limit = now + SLACK
    naive = [_naive(p, limit, tz) for p in parts]
    yearless = sum(1 for p in parts if p is not None and p.year is None)
    if yearless < 2:
        return naive
    n = len(parts)
    newest_first = _walk(parts, range(n), limit, tz)
    oldest_first = _walk(parts, range(n - 1, -1, -1), limit, tz)
    best = min(newest_first, oldest_first, key=lambda reading: reading.travel)
    if best.wraps > 1 + yearless // 12:
        return naive
    return best.dates


def parse_since(text: str, *, now: datetime, tz: tzinfo) -> datetime:
    """The start of a `history --since` window: a date, an ISO datetime, or "7d" ago."""
    value = text.strip()
    if now.tzinfo is None:
        now = now.replace(tzinfo=tz)
    try:
        if match := _RELATIVE.fullmatch(value):
            unit = _UNITS[match["unit"].lower()]
            return now - timedelta(**{unit: int(match["n"])})
        moment = datetime.fromisoformat(value)
    except (ValueError, OverflowError) as exc:
        raise ValueError(
            f"not a date, a datetime or a duration like 7d, 12h, 30m: {text!r}"
        ) from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)


@dataclass(frozen=True)
class _Reading:
    """One way of reading a page's order: the dates it gives and what it costs.

    `travel` is how far the walk moves in time, backwards and forwards, in days: the
    right reading of a chronological page is the shortest. `wraps` counts the New
    Years the walk crosses going back.
    """

    dates: list[datetime | None]
    travel: float
    wraps: int


def _walk(
    parts: Sequence[DateParts | None], newest_to_oldest: Iterable[int], limit: datetime, tz: tzinfo
) -> _Reading:
    """Date the page as if `newest_to_oldest` listed it from its newest entry to its oldest."""
    dates: list[datetime | None] = [None] * len(parts)
    oldest: datetime | None = None
    travel = 0.0
    wraps = 0
    for i in newest_to_oldest:
        p = parts[i]
        if p is None:
            continue
        if p.year is not None:
            dates[i] = _naive(p, limit, tz)
            oldest = dates[i] or oldest
            continue
        cap = limit if oldest is None else min(oldest + TOLERANCE, limit)
        dates[i] = moment = _latest(p, cap, tz)
        if moment is None:
            continue
        if oldest is not None:
            travel += abs((oldest - moment).total_seconds()) / 86400
        if oldest is None or moment < oldest:
            if oldest is not None:
                wraps += oldest.year - moment.year
            oldest = moment
    return _Reading(dates, travel, wraps)


def _naive(p: DateParts | None, limit: datetime, tz: tzinfo) -> datetime | None:
    """One date on its own: as written if it has a year, else its most recent occurrence."""
    if p is None:
        return None
    if p.year is None:
        return _latest(p, limit, tz)
    moment = _at(p, p.year, tz)
    return moment if moment is not None and moment <= limit else None


def _latest(p: DateParts, not_after: datetime, tz: tzinfo) -> datetime | None:
    """The latest occurrence of p's day and month not after `not_after`.

    Nine years back always reach a 29 February (leap years are at most eight apart).
    """
    for year in range(not_after.year, not_after.year - 9, -1):
        moment = _at(p, year, tz)
        if moment is not None and moment <= not_after:
            return moment
    return None


def _at(p: DateParts, year: int, tz: tzinfo) -> datetime | None:
    try:
        return datetime(year, p.month, p.day, p.hour, p.minute, p.second, tzinfo=p.tz or tz)
    except (ValueError, OverflowError):
        return None


def _parse(text: str) -> DateParts | None:
    matches = sorted(
        (m for pattern in _PATTERNS for m in pattern.finditer(text)),
        key=lambda m: (m.start(), -len(m.group())),
    )
    for match in matches:
        parts = _parts(match.groupdict())
        if parts is not None:
            return parts
    return None


def _parts(groups: dict[str, str | None]) -> DateParts | None:
    """DateParts from one match, or None when the match names an impossible date or time."""
    month_name = groups.get("mon")
    month = _MONTHS[month_name[:3].lower()] if month_name else int(groups["m"] or 0)
    day = int(groups["d"] or 0)
    year = int(groups["y"]) if groups["y"] else None
    try:
        datetime(year or 2000, month, day)  # 2000 is a leap year: "29 Feb" alone is possible
        hour, minute, second = _clock(groups)
        zone = _zone(groups["tz"])
    except ValueError:
        return None
    return DateParts(
        month=month,
        day=day,
        year=year,
        hour=hour,
        minute=minute,
        second=second,
        tz=zone,
        has_time=groups["h"] is not None,
    )


def _clock(groups: dict[str, str | None]) -> tuple[int, int, int]:
    if groups["h"] is None:
        return 0, 0, 0
    hour, minute, second = int(groups["h"]), int(groups["mi"] or 0), int(groups["s"] or 0)
    if ampm := groups["ampm"]:
        if not 1 <= hour <= 12:
            raise ValueError("12-hour clock out of range")
        hour = hour % 12 + (12 if ampm.lower() == "p" else 0)
    time(hour, minute, second)
    return hour, minute, second


def _zone(text: str | None) -> tzinfo | None:
    if text is None:
        return None
    if (hours := _ZONES.get(text.lower())) is not None:
        return UTC if hours == 0 else timezone(timedelta(hours=hours))
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:])
    if minutes >= 60:
        raise ValueError("zone offset minutes out of range")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))
