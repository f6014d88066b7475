"""The small frozen types that cross module boundaries.

Every stage of the pipeline (config → fetch → extract → store/diff → feeds →
serve) talks to the next one only through these, so a module can be read and
tested without the internals of its neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any


@dataclass(frozen=True)
class Selectors:
    """CSS selectors of one source; all but `entry` are relative to one entry."""

    entry: str
    title: str | None = None
    link: str | None = None
    date: str | None = None
    author: str | None = None
    teaser: str | None = None
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class Validators:
    """What a server said about a URL last time, sent back verbatim on the next GET."""

    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None


@dataclass(frozen=True)
class Page:
    """One fetched URL. `text` is None when the server answered 304."""

    url: str
    final_url: str
    status: int
    text: str | None
    validators: Validators
    size: int
    elapsed: float
    encoding: str | None = None
    content_type: str | None = None

    @property
    def not_modified(self) -> bool:
        return self.status == 304


@dataclass(frozen=True)
class RawEntry:
    """One entry as the index page shows it, already cleaned but not yet dated."""

    link: str
    title: str | None
    date_text: str | None
    date_attr: str | None
    author: str | None
    teaser_html: str
    teaser_text: str
    position: int


@dataclass(frozen=True)
class Extraction:
    """What one index page yields."""

    entries: tuple[RawEntry, ...]
    next_page: str | None
    page_title: str | None


@dataclass(frozen=True)
class DateParts:
    """A date as written on a page; `year` is None for "12 Jan"-style dates."""

    month: int
    day: int
    year: int | None = None
    hour: int = 0
    minute: int = 0
    second: int = 0
    tz: tzinfo | None = None
    has_time: bool = False


@dataclass(frozen=True)
class Entry:
    """An entry as stored and as written into the feeds."""

    source: str
    link: str
    title: str
    title_is_fallback: bool
    teaser_html: str
    teaser_text: str
    author: str | None
    published: datetime
    date_exact: bool
    first_seen: datetime
    last_seen: datetime
    updated: datetime
    fingerprint: str
    content_html: str | None = None


@dataclass(frozen=True)
class FetchLog:
    """One request of a poll, as kept in the fetch log."""

    url: str
    status: int | None
    size: int
    elapsed: float
    error: str | None = None


@dataclass(frozen=True)
class Event:
    """One line of a source's history."""

    source: str
    at: datetime
    kind: str
    link: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceStatus:
    """The last poll of one source, as `status` and `/healthz` show it."""

    source: str
    last_poll: datetime | None
    ok: bool | None
    error: str | None
    consecutive_failures: int
    entries: int
    last_new: datetime | None
    next_poll: datetime | None = None
    title: str | None = None


@dataclass(frozen=True)
class PollResult:
    """The outcome of one source's poll, for the summary line and the scheduler."""

    source: str
    ok: bool
    new: int = 0
    updated: int = 0
    seen: int = 0
    pages: int = 0
    not_modified: int = 0
    error: str | None = None
    retry_after: float | None = None
    elapsed: float = 0.0

    def summary(self) -> str:
        if not self.ok:
            return f"{self.source}: error: {self.error}"
        return f"{self.source}: {self.new} new, {self.updated} updated, {self.seen} seen"
