"""One source's poll, end to end: the only place that orders the pipeline's steps.

fetch pages → extract (or detect) → date → diff against the store → write the
feeds → commit, all of a source's writes in one transaction that is rolled back
if the feeds cannot be written, so the store never claims more than the files
on disk show (a poll that changed nothing only has bookkeeping to write, which the
store holds and writes with other such polls': `Store.note_unchanged`). Every failure of one
source is caught here, at the source boundary: it is logged with the source
name, stored, and never escapes.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from feedwatch import clean, dates, detail, detect, diff, feeds, mathml, readpage
from feedwatch.config import Config, Source
from feedwatch.fetch import Fetcher, FetchError
from feedwatch.locks import SourceLocks, lock_path
from feedwatch.models import (
    DateParts,
    Entry,
    Event,
    Extraction,
    FetchLog,
    Page,
    PollResult,
    RawEntry,
    Selectors,
    Validators,
)
from feedwatch.store import GROUP_MAX_AGE_S, PollStart, Store, StoreError
from feedwatch.workers import WorkerDied, Workers, spare_cores

log = logging.getLogger("feedwatch.poll")

DETAIL_ATTEMPTS = 3
DETAIL_CONCURRENCY = 2


class PollError(Exception):
    """A source-level failure with a cause worth showing to the user as is."""


@dataclass
class Context:
    """What every poll of one run shares: config, store, HTTP client, locks, page readers."""

    config: Config
    store: Store
    fetcher: Fetcher
    locks: SourceLocks
    workers: Workers = field(default_factory=lambda: Workers(0))
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    on_events: Callable[[Source, list[Event]], None] | None = None
    parses: int = 0
    feed_files: frozenset[str] | None = None
    """The output directory's files as a refresh found them (see _feed_files); None in
    the daemon, whose polls spread over hours, and which stats each poll's files."""


@dataclass(frozen=True)
class _Fetched:
    """One index page of this poll: its response, and what it yielded if it was parsed.

    A parsed page's entries are dated and fingerprinted once, when it is read
    (feedwatch.readpage): the walk, the entries, the diff and the page order all
    need the same values.
    """

    page: Page
    previous: Validators | None
    extraction: Extraction | None
    links: list[str]  # a parsed page's; an unchanged page's are in the meta (_known_links)
    parts: list[DateParts | None] = field(default_factory=list)
    moments: list[datetime | None] = field(default_factory=list)
    prints: list[str] = field(default_factory=list)


async def poll_source(ctx: Context, source: Source, *, full: bool = False) -> PollResult:
    """Poll one source; never raises (cancellation aside)."""
    started = time.monotonic()
    logs: list[FetchLog] = []
    now = ctx.now()
    try:
        _open_lock_file(ctx)
        async with ctx.locks.hold(source.name):
            now = ctx.now()
            start = ctx.store.poll_start(source.name, source.url)
            fetched = await _fetch_index(ctx, source, logs, now, start, full=full)
            entries = _build_entries(ctx, source, fetched, now)
            fixes: list[Entry] = []
            if source.detail or source.content == "full":
                entries, fixes = await _add_details(ctx, source, entries, logs, now)
            result = _commit(ctx, source, fetched, entries, fixes, logs, now, start, started)
    except (FetchError, PollError, TimeoutError, OSError) as err:
        cause = _cause(err, source)
        retry_after = getattr(err, "retry_after", None)
        result = _fail(ctx, source, cause, logs, now, retry_after, started)
    except Exception as err:
        log.exception("%s: unexpected error", source.name)
        result = _fail(ctx, source, f"internal error: {err!r}", logs, now, None, started)
    _log_result(result)
    return result


def _open_lock_file(ctx: Context) -> None:
    """The lock file (feedwatch.locks) is opened once per run; if it cannot be, every poll
    fails with that cause."""
    try:
        ctx.locks.descriptor()
    except OSError as err:
        raise PollError(f"cannot open lock file {ctx.locks.path}: {err.strerror or err}") from err


def _cause(err: BaseException, source: Source) -> str:
    if isinstance(err, TimeoutError):
        return f"poll took longer than {source.poll_timeout:g}s"
    if isinstance(err, OSError) and not isinstance(err, FetchError):
        return f"cannot write feeds: {err.strerror or err}"
    return str(err) or type(err).__name__


def _log_result(result: PollResult) -> None:
    if result.ok:
        log.info(
            "%s: %d pages (%d not modified), %d new, %d updated, %.2fs",
            result.source,
            result.pages,
            result.not_modified,
            result.new,
            result.updated,
            result.elapsed,
        )
    else:
        log.warning("%s: error: %s", result.source, result.error)


async def _get(
    ctx: Context, source: Source, url: str, logs: list[FetchLog], validators: Validators | None
) -> Page:
    try:
        page = await ctx.fetcher.get(
            url,
            validators=validators,
            timeout=source.timeout,
            max_bytes=source.max_bytes,
            user_agent=source.user_agent,
        )
    except FetchError as err:
        logs.append(FetchLog(url, err.status, 0, 0.0, str(err)))
        raise
    logs.append(FetchLog(url, page.status, page.size, page.elapsed))
    return page


async def _fetch_index(
    ctx: Context,
    source: Source,
    logs: list[FetchLog],
    now: datetime,
    start: PollStart,
    *,
    full: bool,
) -> list[_Fetched]:
    """Fetch page 1 and, unless it is unchanged, read it and follow next pages.

    Page 1's request ends within its own timeout; reading it and walking on must end
    within the poll's (poll_timeout, counted from the start): the budget is only armed
    when the poll goes on, which a poll answered by a 304 does not.
    """
    deadline = asyncio.get_running_loop().time() + source.poll_timeout
    page = await _get(ctx, source, source.url, logs, None if full else start.first_page)
    if _unchanged(page, start.first_page, start, full=full):
        return [_Fetched(page, start.first_page, None, [])]
    async with asyncio.timeout_at(deadline):
        return await _walk(ctx, source, logs, now, start, page, full=full)


def _unchanged(page: Page, previous: Validators | None, start: PollStart, *, full: bool) -> bool:
    """A 304, or the same bytes as the last parse of this page (a server without validators).

    The source's meta is only decoded for a page that was not a 304.
    """
    return page.not_modified or (
        not full
        and previous is not None
        and previous.body_hash is not None
        and previous.body_hash == page.validators.body_hash
        and page.url in start.meta().get("page_links", {})
    )


async def _walk(
    ctx: Context,
    source: Source,
    logs: list[FetchLog],
    now: datetime,
    start: PollStart,
    page: Page,
    *,
    full: bool,
) -> list[_Fetched]:
    """Read page 1, then follow next pages; a later page that fails only ends the walk."""
    fetched: list[_Fetched] = []
    previous = start.first_page
    visited = {page.url}
    while True:
        item = await _read(ctx, source, page, previous, now, first=not fetched)
        fetched.append(item)
        if not full and _all_known(item, ctx.store.entries(source.name, item.links)):
            return fetched
        url = (item.extraction.next_page if item.extraction else None) or start.meta().get(
            "page_next", {}
        ).get(page.url)
        if not url or url in visited or len(fetched) >= source.max_pages:
            return fetched
        visited.add(url)
        previous = ctx.store.page_state(source.name, url)
        try:
            page = await _get(ctx, source, url, logs, None if full else previous)
        except FetchError:
            return fetched
        if _unchanged(page, previous, start, full=full):
            fetched.append(_Fetched(page, previous, None, []))
            return fetched


def _all_known(item: _Fetched, stored: dict[str, Entry]) -> bool:
    """True when every entry of a page is stored with the same fingerprint: older pages can wait."""
    return bool(item.links) and all(
        link in stored and stored[link].fingerprint == print_
        for link, print_ in zip(item.links, item.prints, strict=True)
    )


async def _read(
    ctx: Context,
    source: Source,
    page: Page,
    previous: Validators | None,
    now: datetime,
    *,
    first: bool,
) -> _Fetched:
    """Extract (or detect) the page's entries, dated and fingerprinted, maybe in a worker."""
    ctx.parses += 1
    selectors, next_sel = _selectors(ctx, source)
    try:
        read = await ctx.workers.run(
            readpage.read_page,
            page.text or "",
            page.final_url,
            selectors,
            next_sel,
            redetect=first and source.select is None,
            tz=source.tz,
            ignore=source.ignore_patterns,
            now=now,
        )
    except WorkerDied as err:
        raise PollError(f"{err} while reading {page.url}") from err
    extraction = read.extraction
    if extraction is None:
        raise PollError(f"no entries found on {page.url} (auto-detection found nothing)")
    if first and not extraction.entries and source.select is not None:
        raise PollError(f"selectors matched no entries on {page.url}")
    if read.detection is not None:
        _remember_detection(ctx, source, read.detection, previous=selectors)
    return _Fetched(
        page,
        previous,
        extraction,
        [r.link for r in extraction.entries],
        list(read.parts),
        list(read.moments),
        list(read.prints),
    )


def _selectors(ctx: Context, source: Source) -> tuple[Selectors | None, str | None]:
    if source.select is not None:
        return source.select, source.next_page
    meta = ctx.store.source_meta(source.name).get("detected")
    if not meta:
        return None, source.next_page
    return Selectors(**{**meta["selectors"], "exclude": tuple(meta["selectors"]["exclude"])}), (
        source.next_page or meta.get("next_page")
    )


def _remember_detection(
    ctx: Context, source: Source, found: detect.Detection, *, previous: Selectors | None
) -> None:
    """Detected selectors are kept with the source; a change of them is history worth showing."""
    chosen = {
        "selectors": {**found.selectors.__dict__, "exclude": list(found.selectors.exclude)},
        "next_page": found.next_page,
    }
    ctx.store.save_source_meta(source.name, {"detected": chosen})
    if previous is not None:
        ctx.store.add_event(
            Event(
                source.name,
                ctx.now(),
                "selectors_redetected",
                data={
                    "old": previous.__dict__ | {"exclude": list(previous.exclude)},
                    "new": chosen,
                },
            )
        )


def _build_entries(
    ctx: Context, source: Source, fetched: Sequence[_Fetched], now: datetime
) -> list[Entry]:
    """Turn raw entries into dated, titled, fingerprinted entries, keeping stored dates."""
    links = [link for item in fetched if item.extraction is not None for link in item.links]
    if not links:
        return []
    stored = ctx.store.entries(source.name, links)
    out: list[Entry] = []
    for item in fetched:
        if item.extraction is None:
            continue
        for raw, part, when, print_ in zip(
            item.extraction.entries, item.parts, item.moments, item.prints, strict=True
        ):
            out.append(_entry(source, raw, part, when, print_, stored.get(raw.link), now))
    return out


def _entry(
    source: Source,
    raw: RawEntry,
    part: DateParts | None,
    when: datetime | None,
    fingerprint: str,
    old: Entry | None,
    now: datetime,
) -> Entry:
    title = raw.title or clean.title_from_teaser(raw.teaser_html) or raw.link
    exact = part is not None and part.year is not None
    published = when or now
    if old is not None and (old.date_exact or not exact):
        published, exact = old.published, old.date_exact
    return Entry(
        source=source.name,
        link=raw.link,
        title=title,
        title_is_fallback=not raw.title,
        teaser_html=raw.teaser_html,
        teaser_text=raw.teaser_text,
        author=raw.author,
        published=published,
        date_exact=exact,
        first_seen=old.first_seen if old else now,
        last_seen=now,
        updated=old.updated if old else now,
        fingerprint=fingerprint,
        content_html=old.content_html if old else None,
    )


async def _add_details(
    ctx: Context, source: Source, entries: list[Entry], logs: list[FetchLog], now: datetime
) -> tuple[list[Entry], list[Entry]]:
    """Fetch new entries' own pages once, for their exact date (and author, full text).

    Article pages get their own time budget (the poll's), apart from the index pages:
    what is not done by then counts as a failed attempt, so a slow site cannot stop
    the index from being stored. Returns the poll's entries with new ones enriched,
    and corrections for stored entries whose earlier detail fetch failed: those are
    retried on later polls, a bounded number of times (the attempt count lives in the
    source's meta), whether or not their index page changed.
    """
    attempts: dict[str, int] = dict(ctx.store.source_meta(source.name).get("detail_attempts", {}))
    stored = ctx.store.entries(source.name, [*(e.link for e in entries), *attempts])
    full = source.content == "full"

    def wanted(entry: Entry) -> bool:
        missing = not entry.date_exact or (full and entry.content_html is None)
        return missing and attempts.get(entry.link, 0) < DETAIL_ATTEMPTS

    new = [e for e in entries if e.link not in stored and wanted(e)]
    retry = [e for e in stored.values() if e.link in attempts and wanted(e)]
    if not new and not retry:
        return entries, []
    gate = asyncio.Semaphore(DETAIL_CONCURRENCY)

    async def enrich(entry: Entry) -> Entry:
        async with gate:
            try:
                page = await _get(ctx, source, entry.link, logs, None)
            except FetchError:
                attempts[entry.link] = attempts.get(entry.link, 0) + 1
                return entry
        attempts.pop(entry.link, None)
        article = detail.parse_article(
            page.text or "",
            page.final_url,
            tz=source.tz,
            want_content=full,
            content_selector=source.content_selector,
        )
        exact = (
            article.published is not None
            and article.published <= now + dates.SLACK
            and not entry.date_exact
        )
        return replace(
            entry,
            published=article.published if exact else entry.published,
            date_exact=entry.date_exact or exact,
            author=entry.author or article.author,
            content_html=article.content_html or entry.content_html,
        )

    wanted_entries = [*new, *retry]
    tasks = [asyncio.ensure_future(enrich(e)) for e in wanted_entries]
    await asyncio.wait(tasks, timeout=source.poll_timeout)
    done = []
    for task, entry in zip(tasks, wanted_entries, strict=True):
        if task.done() and not task.cancelled() and task.exception() is None:
            done.append(task.result())
            continue
        task.cancel()
        attempts[entry.link] = attempts.get(entry.link, 0) + 1
        done.append(entry)
    await asyncio.gather(*tasks, return_exceptions=True)
    enriched = {e.link: e for e in done[: len(new)]}
    fixes = [e for e, old in zip(done[len(new) :], retry, strict=True) if e != old]
    ctx.store.save_source_meta(source.name, {"detail_attempts": attempts})
    return [enriched.get(e.link, e) for e in entries], fixes


def _commit(
    ctx: Context,
    source: Source,
    fetched: Sequence[_Fetched],
    entries: Sequence[Entry],
    fixes: Sequence[Entry],
    logs: Sequence[FetchLog],
    now: datetime,
    start: PollStart,
    started: float,
) -> PollResult:
    """Write everything one poll learnt in one transaction, feeds included.

    `start` is what the poll read under its source lock: its meta is still current
    when nothing was parsed, since only a parse rewrites what feeds use.
    """
    store = ctx.store
    name = source.name
    first_page = fetched[0]
    page1_links = first_page.links
    # An unchanged page 1 ends the walk, so nothing was parsed and nothing can differ:
    # such a poll (the common one) reads no entries and, unless it ends a failing streak,
    # changes a validator or finds a feed to render again, only has bookkeeping to write.
    parsed = first_page.extraction is not None
    failure = start.failure
    if (
        not parsed
        and failure is None
        and not fixes
        and first_page.page.validators == first_page.previous
        and _feeds_current(ctx, source, start.render_key, start.page_title)
    ):
        store.note_unchanged(name, now)
        return PollResult(
            source=name,
            ok=True,
            seen=start.first_page_links,
            pages=1,
            not_modified=int(first_page.page.not_modified),
            elapsed=time.monotonic() - started,
        )
    with store.transaction():
        if parsed:
            backfill = store.count_entries(name) == 0
            previous_first = store.first_page(name)
            stored = store.entries(name, [*(e.link for e in entries), *previous_first])
            changes = diff.diff(
                entries,
                stored,
                now=now,
                first_page_links=page1_links,
                previous_first_page=previous_first,
                newest_first=_page_order(first_page),
            )
        else:
            backfill = False
            changes = diff.Changes((), (), (), ())
        store.add_entries(changes.new)
        store.update_entries(changes.updated, now)
        store.save_details(fixes)
        unchanged_links = [e.link for e in changes.seen]
        for item in fetched:
            if item.extraction is None:
                unchanged_links.extend(_known_links(start, item))
        store.touch_entries(name, unchanged_links, now)
        if source.drop_removed and changes.removed:
            store.delete_entries(name, [e.link for e in changes.removed])
        for item in fetched:
            if item.page.validators != item.previous:
                store.save_page_state(name, item.page.url, item.page.validators)
        if parsed:
            store.save_first_page(name, page1_links)
            meta = store.source_meta(name)
            meta_updates = _page_meta(meta, fetched)
            meta |= meta_updates
        else:
            meta, meta_updates = start.meta(), {}
        events = _events(source, changes, now, backfill=backfill)
        if failure is not None:
            events.append(
                Event(name, now, "recovered", data={"after": failure[0], "failures": failure[1]})
            )
        store.add_events(events)
        store.log_fetches(name, now, logs)
        store.record_poll(
            name, now, ok=True, error=None, new=len(changes.new), updated=len(changes.updated)
        )
        key = _write_feeds(
            ctx,
            source,
            changed=bool(changes.new or changes.updated or changes.removed or fixes),
            meta=meta,
        )
        if key is not None:
            meta_updates["render_key"] = key
        if meta_updates:
            store.save_source_meta(name, meta_updates)
    if ctx.on_events is not None:
        ctx.on_events(source, [e for e in events if not (e.kind == "new" and backfill)])
    seen = len(changes.seen) + sum(
        len(_known_links(start, i)) for i in fetched if i.extraction is None
    )
    return PollResult(
        source=name,
        ok=True,
        new=len(changes.new),
        updated=len(changes.updated),
        seen=seen,
        pages=len(fetched),
        not_modified=sum(1 for i in fetched if i.page.not_modified),
        elapsed=time.monotonic() - started,
    )


def _known_links(start: PollStart, item: _Fetched) -> list[str]:
    """The links of an unchanged page, as its last parse found them."""
    return list(start.meta().get("page_links", {}).get(item.page.url, []))


def _page_order(first: _Fetched) -> bool | None:
    """Whether page 1 lists newest first, read from its dates; None when they do not tell.

    Removal detection needs to know which end of page 1 new posts push entries
    off: most blogs list newest first, the reference blog oldest first. A few
    entries out of place (a pinned post, "13 Nov" before "16 Oct") do not flip
    the verdict; a page with fewer than two steps between dates is no evidence.
    """
    if first.extraction is None:
        return None
    moments = [m for m in first.moments if m is not None]
    down = sum(1 for a, b in itertools.pairwise(moments) if a > b)
    up = sum(1 for a, b in itertools.pairwise(moments) if a < b)
    if up + down < 2:
        return None
    if down > 2 * up:
        return True
    if up > 2 * down:
        return False
    return None


def _events(source: Source, changes: diff.Changes, now: datetime, *, backfill: bool) -> list[Event]:
    name = source.name
    events = [
        Event(name, now, "new", e.link, {"title": e.title, "backfill": backfill})
        for e in changes.new
    ]
    for old, new in changes.updated:
        fields = diff.changed_fields(old, new)
        events.append(
            Event(
                name,
                now,
                "updated",
                new.link,
                {
                    "title": new.title,
                    "fields": list(fields),
                    "title_diff": diff.word_diff(old.title, new.title)
                    if "title" in fields
                    else None,
                    "teaser_diff": diff.word_diff(old.teaser_text, new.teaser_text)
                    if "teaser" in fields
                    else None,
                },
            )
        )
    events.extend(
        Event(name, now, "removed", e.link, {"title": e.title, "dropped": source.drop_removed})
        for e in changes.removed
    )
    return events


def _page_meta(meta: dict[str, Any], fetched: Sequence[_Fetched]) -> dict[str, Any]:
    """Each parsed page's links and next page, remembered so that an unchanged page needs
    no parse, and page 1's title: the keys of `meta` this poll changes."""
    page_links = dict(meta.get("page_links", {}))
    page_next = dict(meta.get("page_next", {}))
    title = meta.get("page_title")
    for i, item in enumerate(fetched):
        if item.extraction is None:
            continue
        page_links[item.page.url] = item.links
        page_next[item.page.url] = item.extraction.next_page
        if i == 0 and item.extraction.page_title:
            title = item.extraction.page_title
    return {"page_links": page_links, "page_next": page_next, "page_title": title}


def feed_meta(config: Config, source: Source, store: Store) -> feeds.FeedMeta:
    updated = store.last_change(source.name) or _EPOCH
    return _feed_meta(config, source, store.source_meta(source.name).get("page_title"), updated)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _feed_meta(
    config: Config, source: Source, page_title: str | None, updated: datetime
) -> feeds.FeedMeta:
    title = source.title or page_title or source.name
    return feeds.FeedMeta(
        name=source.name,
        title=title,
        site_url=source.url,
        base_url=config.base_url,
        updated=updated,
        description=f"{title} (via feedwatch)",
        announce_updates=source.announce_updates,
    )


def _render_key(config: Config, source: Source, title: str) -> str:
    """What, besides the entries, changes the feed bytes: re-render when it moves."""
    return "|".join(
        map(
            str,
            (
                title,
                source.url,
                config.base_url,
                source.max_entries,
                source.math,
                source.announce_updates,
            ),
        )
    )


def _feeds_current(
    ctx: Context, source: Source, render_key: str | None, page_title: str | None
) -> bool:
    """Whether the feed files on disk are what the store would render now, entries aside."""
    if render_key != _render_key(ctx.config, source, source.title or page_title or source.name):
        return False
    if ctx.feed_files is not None:
        return all(f"{source.name}.{ext}" in ctx.feed_files for ext in feeds.EXTENSIONS)
    stem = f"{ctx.config.output_dir}{os.sep}{source.name}."
    return all(_intact(stem + ext) for ext in feeds.EXTENSIONS)


def _write_feeds(
    ctx: Context, source: Source, *, changed: bool, meta: dict[str, Any]
) -> str | None:
    """Render the feeds if entries changed or `meta` (the source's, as this poll leaves it)
    says the files are not what the store would render; return the render key to store,
    None when nothing was rendered. The caller stores it with the poll's other meta."""
    title = meta.get("page_title")
    if not changed and _feeds_current(ctx, source, meta.get("render_key"), title):
        return None
    store = ctx.store
    entries = store.feed_entries(source.name, source.max_entries)
    if source.math == "mathml":
        entries = [
            replace(
                e,
                teaser_html=mathml.latex_to_mathml(e.teaser_html),
                content_html=mathml.latex_to_mathml(e.content_html) if e.content_html else None,
            )
            for e in entries
        ]
    feed = _feed_meta(ctx.config, source, title, store.last_change(source.name) or _EPOCH)
    feeds.write_feeds(ctx.config.output_dir, feed, entries)
    return _render_key(ctx.config, source, source.title or title or source.name)


def _intact(path: str) -> bool:
    """A feed deleted or emptied behind our back (or by a power cut) is rendered again."""
    try:
        return os.stat(path).st_size > 0
    except OSError:
        return False


def _fail(
    ctx: Context,
    source: Source,
    cause: str,
    logs: Sequence[FetchLog],
    now: datetime,
    retry_after: float | None,
    started: float,
) -> PollResult:
    """Record a failure without touching entries or feeds; a broken store only logs."""
    store = ctx.store
    events: list[Event] = []
    try:
        with store.transaction():
            store.log_fetches(source.name, now, logs)
            previous = store.status(source.name)
            failures = (previous.consecutive_failures if previous else 0) + 1
            store.record_poll(source.name, now, ok=False, error=cause, new=0, updated=0)
            kind = (
                "drift"
                if cause.startswith(("selectors matched no", "no entries found"))
                else "error"
            )
            events.append(
                Event(source.name, now, kind, data={"cause": cause, "failures": failures})
            )
            if failures == ctx.config.failing_after:
                events.append(
                    Event(source.name, now, "failing", data={"cause": cause, "failures": failures})
                )
            store.add_events(events)
    except Exception:
        log.exception("%s: could not record the failure", source.name)
    if ctx.on_events is not None:
        ctx.on_events(source, events)
    return PollResult(
        source=source.name,
        ok=False,
        error=cause,
        retry_after=retry_after,
        elapsed=time.monotonic() - started,
    )


async def refresh(
    config: Config,
    sources: Sequence[Source],
    *,
    full: bool = False,
    store: Store | None = None,
    on_events: Callable[[Source, list[Event]], None] | None = None,
    now: Callable[[], datetime] | None = None,
    workers: Workers | None = None,
) -> list[PollResult]:
    """Poll the given sources once, concurrently, and rewrite the OPML index.

    `store` and `workers`, when given, are the caller's to close.
    """
    own_store = store is None
    store = store or Store(config.state)
    locks = SourceLocks(lock_path(config.state))
    own_workers = workers is None
    workers = workers or Workers(spare_cores())
    try:
        async with Fetcher(max_connections=config.concurrency) as fetcher:
            ctx = Context(
                config=config,
                store=store,
                fetcher=fetcher,
                locks=locks,
                workers=workers,
                on_events=on_events,
            )
            if now is not None:
                ctx.now = now
            ctx.feed_files = _feed_files(config, store)
            gate = asyncio.Semaphore(config.concurrency)
            _claim(ctx, sources)

            async def bounded(source: Source) -> PollResult:
                async with gate:
                    return await poll_source(ctx, source, full=full)

            flusher = asyncio.create_task(flush_periodically(store))
            try:
                results = await asyncio.gather(*(bounded(s) for s in sources))
            finally:
                flusher.cancel()
                store.flush()
        write_opml(config, store)
        return list(results)
    finally:
        store.expect_polls([])  # what was read under this run's locks must not outlive them
        if own_workers:
            await workers.close()
        locks.close()
        if own_store:
            store.close()


BOOT_MARK = "feed sizes checked since boot"
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _feed_files(config: Config, store: Store) -> frozenset[str]:
    """The output directory's files, for this refresh's polls (feeds.present_files).

    Feed sizes are checked once per boot (Linux's boot_id), since only a power cut
    leaves a feed empty, and then on every refresh until none is found empty.
    """
    try:
        boot: str | None = _BOOT_ID.read_text().strip()
        checked = store.mark(BOOT_MARK) == boot
    except (OSError, StoreError):
        boot, checked = None, False
    files, empty = feeds.present_files(config.output_dir, check_sizes=not checked)
    if empty:
        log.warning("empty feed files in %s are rendered again", config.output_dir)
    elif boot is not None and not checked:
        try:
            store.set_mark(BOOT_MARK, boot)
        except StoreError as err:
            log.error("cannot mark the feed files as checked: %s", err)
    return files


def _claim(ctx: Context, sources: Sequence[Source]) -> None:
    """Lock the sources to poll and read their first reads in one query (feedwatch.locks).

    A lock file that cannot be opened claims nothing: each poll then fails with the cause.
    A store that cannot answer the query (a row it cannot decode) is read poll by poll,
    so that only the source at fault fails.
    """
    try:
        names = {s.name for s in sources}
        every = names >= {s.name for s in ctx.config.sources}
        claimed = ctx.locks.claim(names, every_source=every)
    except OSError:
        return
    try:
        ctx.store.expect_polls([(s.name, s.url) for s in sources if s.name in claimed])
    except StoreError as err:
        log.warning("reading the sources' state in one query failed, reading each: %s", err)


async def flush_periodically(store: Store) -> None:
    """Write held bookkeeping on a timer: between polls (a daemon's quiet minute) nothing
    else would, and other processes read the status rows it updates."""
    while True:
        await asyncio.sleep(GROUP_MAX_AGE_S)
        try:
            store.flush()
        except StoreError as err:
            log.error("cannot commit the last polls' bookkeeping: %s", err)


def write_opml(config: Config, store: Store) -> None:
    """The OPML index lists every configured source whose feed exists.

    OPML has no dates, so no source's last change is looked up; every page title
    comes from one query and every feed file from one directory listing: this runs
    after every refresh, for all sources. It is only rendered when what it lists, or
    the file on disk, differs from what the store marked at the last rendering.
    """
    titles = store.page_titles()
    try:
        present = set(os.listdir(config.output_dir))
    except OSError:
        present = set()
    listed = [(s, titles.get(s.name)) for s in config.sources if f"{s.name}.atom" in present]
    inputs = "\n".join(
        [
            f"{feeds.OPML_FORMAT}\t{config.base_url}",
            *(f"{s.name}\t{s.title or title or s.name}\t{s.url}" for s, title in listed),
        ]
    )
    made_from = hashlib.blake2b(inputs.encode(), digest_size=16).hexdigest()
    path = config.output_dir / "index.opml"
    try:
        on_disk = _file_mark(path, made_from)
        if on_disk is not None and store.mark(OPML_MARK) == on_disk:
            return
        metas = [_feed_meta(config, s, title, _EPOCH) for s, title in listed]
        config.output_dir.mkdir(parents=True, exist_ok=True)
        feeds.write_if_changed(path, feeds.render_opml(metas, config.base_url))
        written = _file_mark(path, made_from)
        if written is not None:
            store.set_mark(OPML_MARK, written)
    except OSError as err:
        log.error("cannot write index.opml: %s", err.strerror or err)
    except StoreError as err:
        log.error("cannot mark index.opml as written (it is rendered again next time): %s", err)


OPML_MARK = "index.opml"


def _file_mark(path: Path, made_from: str) -> str | None:
    """What the file was made from, with its size and mtime: a file changed or removed
    behind our back no longer matches."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return f"{made_from} {stat.st_size} {stat.st_mtime_ns}"
