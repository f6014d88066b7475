"""One index page's HTML → its entries, dated and fingerprinted, and what detection chose.

This is the CPU-heavy part of a poll (parse, extract or detect, dates, fingerprints:
~4 ms for a 100 KB page) and it is pure: no store, no clock, no network, its inputs
and result plain picklable values. That is what lets `feedwatch.workers` run it in
another process while the poll's own process fetches, stores and writes feeds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

from feedwatch import dates, detect, diff, extract
from feedwatch.models import DateParts, Extraction, Selectors


@dataclass(frozen=True)
class PageRead:
    """What one page yields. `extraction` is None when detection found no entry list;
    `detection` is set when detection chose the selectors used."""

    extraction: Extraction | None
    detection: detect.Detection | None = None
    parts: tuple[DateParts | None, ...] = ()
    moments: tuple[datetime | None, ...] = ()
    prints: tuple[str, ...] = ()


def read_page(
    html: str,
    base: str,
    selectors: Selectors | None,
    next_page: str | None,
    *,
    redetect: bool,
    tz: tzinfo,
    ignore: Sequence[re.Pattern[str]],
    now: datetime,
) -> PageRead:
    """Extract with `selectors`, or detect when there are none; with `redetect`, also
    detect when the selectors find nothing (they were detected once, and the site may
    have been redesigned since). Entries' dates are resolved against `now` in `tz`."""
    tree = extract.parse(html)
    if selectors is not None:
        extraction = extract.extract(html, base, selectors, next_page, tree=tree)
        if extraction.entries or not redetect:
            return _dated(extraction, None, tz, ignore, now)
    found = detect.detect(html, base, tree=tree)
    if found is None:
        return PageRead(None)
    extraction = extract.extract(html, base, found.selectors, found.next_page, tree=tree)
    return _dated(extraction, found, tz, ignore, now)


def _dated(
    extraction: Extraction,
    found: detect.Detection | None,
    tz: tzinfo,
    ignore: Sequence[re.Pattern[str]],
    now: datetime,
) -> PageRead:
    raws = extraction.entries
    parts = tuple(dates.parse_date(r.date_text, r.date_attr) for r in raws)
    return PageRead(
        extraction,
        found,
        parts,
        tuple(dates.resolve_dates(parts, now=now, tz=tz)),
        tuple(diff.fingerprint(r.title, r.teaser_text, ignore) for r in raws),
    )
