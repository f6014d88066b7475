"""The SQLite store (state.db): the only module that speaks SQL.

Several processes share the file (the daemon and `feedwatch refresh`), so the
connection runs in WAL mode with a 30 s busy timeout, and every write happens
inside ``BEGIN IMMEDIATE``: a second writer waits for the first instead of
failing half-way with "database is locked". A poll's writes go into one
`transaction()`, so a crash leaves the store as it was before that poll. A poll
that changed nothing (a 304, an unchanged page) only has bookkeeping to write:
`note_unchanged` holds it in memory, with other such polls', and `flush()` writes
the lot within GROUP_MAX_AGE_S as a few executemany statements in one
transaction, since a COMMIT, and then the statements, of each such poll were
most of the cost of a refresh answered by 304s.

Times are stored as fixed-width UTC ISO 8601 text, which sorts as text;
`published` also keeps the page's own offset for display.

sqlite-utils builds the schema. The per-poll writes (entries, events, fetch
log) are hand-written single statements run with executemany: sqlite-utils'
insert and upsert introspect the schema on every call (bench/ measured ~1 ms per
event row, the largest store cost of a first poll) and, on a fresh connection,
probe ON CONFLICT support with a throw-away table.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, overload

import sqlite_utils
from sqlite_utils.db import DescIndex

from feedwatch.models import Entry, Event, FetchLog, SourceStatus, Validators

log = logging.getLogger("feedwatch.store")

SCHEMA_VERSION = 3
BUSY_TIMEOUT_S = 30.0
FETCH_LOG_KEEP = 1000
"""Fetch-log rows kept per source: enough to debug weeks of polls, never unbounded.

Only polls that fetched a changed page or failed are logged; a quiet poll (page 1
unchanged, nothing written) is only its source's last_poll. Logging quiet polls too
made the log nearly all 304s, and once the logs were full each one cost an insert into
a per-source index page, a prune and their commit: 1000 sources, 70 ms per warm refresh
against 9 ms for the same polls' status rows."""
GROUP_MAX_AGE_S = 0.5
"""How long held bookkeeping (`note_unchanged`, `set_next_poll`) may wait to be written."""
GROUP_MAX_POLLS = 500

_ENTRY_COLUMNS = (
    "source",
    "link",
    "title",
    "title_is_fallback",
    "teaser_html",
    "teaser_text",
    "author",
    "published",
    "published_local",
    "date_exact",
    "first_seen",
    "updated",
    "fingerprint",
    "content_html",
)
# What polls rewrite lives in narrow rows, apart from what they only read. last_seen is
# in entry_seen: a poll that parses a page rewrites a few bytes per entry there, not
# whole entry rows with their teasers. A poll that finds page 1 unchanged writes nothing
# per entry: it sets its source's first_page_seen, which counts for the links of
# first_page, and which save_first_page folds into entry_seen before page 1 changes.
# Likewise a source's status row (sources) is apart from its page-1 links and meta
# (source_meta, ~1 KB): a refresh answered by 304s rewrites 25 pages of the one, not
# 300 of both.
_SEEN = "coalesce(s.last_seen, e.first_seen)"
_ENTRY_SELECT = (
    "SELECT "
    + ", ".join(f"e.{column}" for column in _ENTRY_COLUMNS)
    + f", CASE WHEN src.first_page_seen > {_SEEN} AND EXISTS (SELECT 1 FROM"
    " source_meta AS sm, json_each(sm.first_page) WHERE sm.name = e.source"
    f" AND value = e.link) THEN src.first_page_seen ELSE {_SEEN} END"
    " FROM entries AS e"
    " LEFT JOIN entry_seen AS s ON s.source = e.source AND s.link = e.link"
    " LEFT JOIN sources AS src ON src.name = e.source"
)
_SEEN_UPSERT = (
    "INSERT INTO entry_seen (source, link, last_seen) VALUES (:source, :link, :last_seen)"
    " ON CONFLICT (source, link) DO UPDATE SET last_seen = excluded.last_seen"
)
_ENTRY_VALUES = (
    f"INSERT INTO entries ({', '.join(_ENTRY_COLUMNS)})"
    f" VALUES ({', '.join(':' + column for column in _ENTRY_COLUMNS)})"
    " ON CONFLICT (source, link)"
)
_ENTRY_INSERT = _ENTRY_VALUES + " DO NOTHING"
_ENTRY_UPSERT = (
    _ENTRY_VALUES
    + " DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in _ENTRY_COLUMNS[2:])
)
_REVISION_INSERT = (
    "INSERT INTO revisions (source, link, at, title, title_is_fallback, teaser_text,"
    " teaser_html, fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_FETCH_LOG_INSERT = (
    "INSERT INTO fetch_log (source, at, url, status, size, elapsed, error)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_STATUS_COLUMNS = (
    "s.last_poll, s.ok, s.error, s.consecutive_failures, s.last_new, s.next_poll,"
    " (SELECT meta FROM source_meta WHERE name = s.name)"
)
_POLL_UPSERT = (
    "INSERT INTO sources (name, last_poll, ok, error, consecutive_failures,"
    " last_new, last_updated, next_poll) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT(name) DO UPDATE SET last_poll = excluded.last_poll,"
    " ok = excluded.ok, error = excluded.error,"
    " consecutive_failures = CASE WHEN excluded.ok THEN 0"
    " ELSE sources.consecutive_failures + 1 END,"
    " last_new = coalesce(excluded.last_new, sources.last_new),"
    " last_updated = coalesce(excluded.last_updated, sources.last_updated),"
    " next_poll = coalesce(excluded.next_poll, sources.next_poll)"
)
_UNCHANGED_POLL_UPSERT = (
    "INSERT INTO sources (name, last_poll, ok, consecutive_failures, first_page_seen)"
    " VALUES (?, ?, 1, 0, ?) ON CONFLICT(name) DO UPDATE SET last_poll = excluded.last_poll,"
    " ok = 1, error = NULL, consecutive_failures = 0,"
    " first_page_seen = excluded.first_page_seen"
)
_NEXT_POLL_UPSERT = (
    "INSERT INTO sources (name, next_poll) VALUES (?, ?)"
    " ON CONFLICT(name) DO UPDATE SET next_poll = excluded.next_poll"
)
_TOUCH = (
    "UPDATE entry_seen SET last_seen = ? WHERE source = ?"
    " AND link IN (SELECT value FROM json_each(?))"
)
_META_KEY = "json_extract(m.meta, '$.{}')"
_POLL_STARTS = (
    "SELECT q.i, p.etag, p.last_modified, p.body_hash, p.url IS NOT NULL,"
    " s.ok, s.error, s.consecutive_failures,"
    " coalesce(json_array_length(m.first_page), 0),"
    f" {_META_KEY.format('render_key')}, {_META_KEY.format('page_title')}, m.meta"
    " FROM (SELECT key AS i, json_extract(value, '$[0]') AS name,"
    " json_extract(value, '$[1]') AS url FROM json_each(?)) AS q"
    " LEFT JOIN sources AS s ON s.name = q.name"
    " LEFT JOIN source_meta AS m ON m.name = q.name"
    " LEFT JOIN pages AS p ON p.source = q.name AND p.url = q.url"
)
_FETCH_LOG_PRUNE = (
    "DELETE FROM fetch_log WHERE source = ? AND id <= (SELECT id FROM fetch_log"
    " WHERE source = ? ORDER BY id DESC LIMIT 1 OFFSET ?)"
)


class StoreError(Exception):
    """The store cannot be opened, read or written (locked too long, disk full, corrupt…)."""


class PollStart(NamedTuple):
    """What a poll reads before its first request: the validators of its first page, the
    error and count of a failing streak (or None), how many links page 1 had, and its
    source's meta.

    The meta's two keys that a poll answered by a 304 needs come from SQLite's JSON
    functions; the whole blob is only decoded, by `meta()`, for a poll that goes further.
    """

    first_page: Validators | None
    failure: tuple[str | None, int] | None
    first_page_links: int = 0
    render_key: str | None = None
    page_title: str | None = None
    meta_json: str | None = None

    def meta(self) -> dict[str, Any]:
        return json.loads(self.meta_json) if self.meta_json else {}


@dataclass
class _Held:
    """Bookkeeping rows waiting for `flush()`, in the order they were noted."""

    since: float
    polls: list[tuple[str, str, str]] = field(default_factory=list)
    next_polls: dict[str, str | None] = field(default_factory=dict)


@overload
def _safe(text: str) -> str: ...
@overload
def _safe(text: None) -> None: ...
def _safe(text: str | None) -> str | None:
    """Text SQLite can store.

    A lone surrogate (a numeric entity like ``&#xD800;`` on a hostile page)
    cannot be encoded as UTF-8 and would fail the whole poll; it becomes
    U+FFFD, and a split surrogate pair becomes its character.
    """
    if text is None or text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _json(value: Any) -> str:
    return _safe(json.dumps(value, ensure_ascii=False, default=str))


def _aware(moment: datetime) -> datetime:
    if moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: the store only takes aware datetimes")
    return moment


def _utc(moment: datetime) -> str:
    return _aware(moment).astimezone(UTC).isoformat(timespec="microseconds")


def _utc_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else _utc(moment)


def _local(moment: datetime) -> str:
    return _aware(moment).isoformat(timespec="microseconds")


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _entry_row(entry: Entry) -> dict[str, Any]:
    return {
        "source": entry.source,
        "link": _safe(entry.link),
        "title": _safe(entry.title),
        "title_is_fallback": int(entry.title_is_fallback),
        "teaser_html": _safe(entry.teaser_html),
        "teaser_text": _safe(entry.teaser_text),
        "author": _safe(entry.author),
        "published": _utc(entry.published),
        "published_local": _local(entry.published),
        "date_exact": int(entry.date_exact),
        "first_seen": _utc(entry.first_seen),
        "updated": _utc(entry.updated),
        "fingerprint": entry.fingerprint,
        "content_html": _safe(entry.content_html),
    }


def _seen_row(entry: Entry) -> dict[str, Any]:
    return {"source": entry.source, "link": _safe(entry.link), "last_seen": _utc(entry.last_seen)}


def _entry(row: Sequence[Any]) -> Entry:
    values = dict(zip((*_ENTRY_COLUMNS, "last_seen"), row, strict=True))
    return Entry(
        source=values["source"],
        link=values["link"],
        title=values["title"],
        title_is_fallback=bool(values["title_is_fallback"]),
        teaser_html=values["teaser_html"],
        teaser_text=values["teaser_text"],
        author=values["author"],
        published=datetime.fromisoformat(values["published_local"]),
        date_exact=bool(values["date_exact"]),
        first_seen=datetime.fromisoformat(values["first_seen"]),
        last_seen=datetime.fromisoformat(values["last_seen"]),
        updated=datetime.fromisoformat(values["updated"]),
        fingerprint=values["fingerprint"],
        content_html=values["content_html"],
    )


def _status(name: str, row: Sequence[Any] | None, entries: int) -> SourceStatus:
    if row is None:
        return SourceStatus(
            source=name,
            last_poll=None,
            ok=None,
            error=None,
            consecutive_failures=0,
            entries=entries,
            last_new=None,
        )
    last_poll, ok, error, failures, last_new, next_poll, meta = row
    title = json.loads(meta).get("title") if meta else None
    return SourceStatus(
        source=name,
        last_poll=_time(last_poll),
        ok=None if ok is None else bool(ok),
        error=error,
        consecutive_failures=failures or 0,
        entries=entries,
        last_new=_time(last_new),
        next_poll=_time(next_poll),
        title=title if isinstance(title, str) else None,
    )


class Store:
    """One connection to state.db, safe to share between threads of one process.

    Calls are serialised by a lock held for a whole `transaction()`, so a
    thread never writes into another thread's open transaction. Do not await
    inside a transaction: coroutines share a thread, and the lock cannot tell
    them apart.
    """

    def __init__(self, path: Path | str) -> None:
        self._lock = threading.RLock()
        self._held: _Held | None = None
        self._starts: dict[tuple[str, str], PollStart] = {}
        target = str(path)
        try:
            if target != ":memory:":
                Path(target).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                target,
                timeout=BUSY_TIMEOUT_S,  # sets SQLite's busy_timeout
                isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open {target}: {exc}") from exc
        try:
            self._configure()
            self._db = sqlite_utils.Database(self._conn, execute_plugins=False)
            with self.transaction(), self._errors():
                self._create_schema()
        except BaseException:
            self._conn.close()
            raise

    def _configure(self) -> None:
        with self._errors():
            self._conn.execute("PRAGMA foreign_keys = ON")
            mode = self._conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode not in ("wal", "memory"):
                self._switch_to_wal()
            # NORMAL is crash-safe in WAL mode (only a power cut can lose the last commits).
            self._conn.execute("PRAGMA synchronous = NORMAL")

    def _switch_to_wal(self) -> None:
        """Switch a new database to WAL, waiting out other processes doing the same.

        The switch needs an exclusive lock and SQLite answers "locked" at once instead
        of calling its busy handler, so two processes that create the store together
        (a daemon and a refresh started at the same moment) retry here.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _create_schema(self) -> None:
        db = self._db
        db["schema_version"].create({"version": int}, if_not_exists=True)
        row = self._conn.execute("SELECT max(version) FROM schema_version").fetchone()
        version = row[0] or 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"state.db has schema version {version}, newer than this feedwatch"
                f" ({SCHEMA_VERSION}): upgrade feedwatch"
            )
        if version == SCHEMA_VERSION:
            return
        if version == 1:
            self._migrate_seen()
        db["entries"].create(
            {
                "source": str,
                "link": str,
                "title": str,
                "title_is_fallback": int,
                "teaser_html": str,
                "teaser_text": str,
                "author": str,
                "published": str,
                "published_local": str,
                "date_exact": int,
                "first_seen": str,
                "updated": str,
                "fingerprint": str,
                "content_html": str,
            },
            pk=("source", "link"),
            not_null={"source", "link", "title", "published", "first_seen", "fingerprint"},
            if_not_exists=True,
        )
        db["entries"].create_index(
            ["source", DescIndex("published"), DescIndex("first_seen"), "link"],
            index_name="entries_feed_order",
            if_not_exists=True,
        )
        db["entries"].create_index(
            ["source", "updated"], index_name="entries_updated", if_not_exists=True
        )
        self._create_seen()
        db["revisions"].create(
            {
                "id": int,
                "source": str,
                "link": str,
                "at": str,
                "title": str,
                "title_is_fallback": int,
                "teaser_text": str,
                "teaser_html": str,
                "fingerprint": str,
            },
            pk="id",
            foreign_keys=[(("source", "link"), "entries", ("source", "link"))],
            if_not_exists=True,
        )
        db["revisions"].create_index(
            ["source", "link", "at"], index_name="revisions_entry", if_not_exists=True
        )
        db["fetch_log"].create(
            {
                "id": int,
                "source": str,
                "at": str,
                "url": str,
                "status": int,
                "size": int,
                "elapsed": float,
                "error": str,
            },
            pk="id",
            if_not_exists=True,
        )
        db["fetch_log"].create_index(
            ["source", "id"], index_name="fetch_log_source", if_not_exists=True
        )
        db["pages"].create(
            {"source": str, "url": str, "etag": str, "last_modified": str, "body_hash": str},
            pk=("source", "url"),
            if_not_exists=True,
        )
        db["sources"].create(
            {
                "name": str,
                "last_poll": str,
                "ok": int,
                "error": str,
                "consecutive_failures": int,
                "last_new": str,
                "last_updated": str,
                "next_poll": str,
                "first_page_seen": str,
            },
            pk="name",
            defaults={"consecutive_failures": 0},
            not_null={"consecutive_failures"},
            if_not_exists=True,
        )
        db["source_meta"].create(
            {"name": str, "first_page": str, "meta": str}, pk="name", if_not_exists=True
        )
        if "meta" in db["sources"].columns_dict:  # version 2 and older
            self._migrate_source_meta()
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS marks (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        db["events"].create(
            {"id": int, "source": str, "at": str, "kind": str, "link": str, "data": str},
            pk="id",
            not_null={"source", "at", "kind"},
            if_not_exists=True,
        )
        db["events"].create_index(
            ["source", DescIndex("at"), DescIndex("id")],
            index_name="events_newest",
            if_not_exists=True,
        )
        self._conn.execute("DELETE FROM schema_version")
        self._conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))

    def _create_seen(self) -> None:
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS entry_seen (source TEXT NOT NULL, link TEXT NOT NULL,"
            " last_seen TEXT NOT NULL, PRIMARY KEY (source, link)) WITHOUT ROWID"
        )

    def _migrate_source_meta(self) -> None:
        """Version 2 kept page-1 links and meta in the sources rows: move them to
        source_meta, and add first_page_seen."""
        conn = self._conn
        conn.execute(
            "INSERT OR IGNORE INTO source_meta (name, first_page, meta)"
            " SELECT name, first_page, meta FROM sources"
            " WHERE first_page IS NOT NULL OR meta IS NOT NULL"
        )
        conn.execute("ALTER TABLE sources DROP COLUMN first_page")
        conn.execute("ALTER TABLE sources DROP COLUMN meta")
        conn.execute("ALTER TABLE sources ADD COLUMN first_page_seen TEXT")

    def _migrate_seen(self) -> None:
        """Version 1 kept last_seen in the entries rows: move it to entry_seen."""
        self._create_seen()
        self._conn.execute(
            "INSERT OR IGNORE INTO entry_seen (source, link, last_seen)"
            " SELECT source, link, coalesce(last_seen, first_seen) FROM entries"
        )
        self._conn.execute("ALTER TABLE entries DROP COLUMN last_seen")

    def close(self) -> None:
        """Write the held bookkeeping, then close; the connection closes either way."""
        with self._lock:
            try:
                self.flush()
            finally:
                self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, UnicodeEncodeError) as exc:
            raise StoreError(str(exc)) from exc

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE … COMMIT; ROLLBACK on any exception, which is re-raised.

        IMMEDIATE takes the write lock up front, so waiting for another writer
        goes through the busy timeout; a deferred transaction that upgrades
        from read to write could fail at once instead. Held bookkeeping is
        written first, so writes reach the file in the order they were made.
        """
        with self._lock:
            if self._conn.in_transaction:
                raise StoreError("transaction already open (nesting is not supported)")
            self.flush()
            with self._errors():
                self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise StoreError(f"commit failed: {exc}") from exc

    def note_unchanged(self, source: str, at: datetime) -> None:
        """Hold the bookkeeping of a poll that found page 1 unchanged and changed nothing:
        its time, which is also when page 1's entries were last seen (its requests are not
        logged: FETCH_LOG_KEEP).

        The next `flush()` writes it: once the held rows are GROUP_MAX_AGE_S old or
        GROUP_MAX_POLLS long, before any other write, before a status is read, and on
        the owner's timer. A crash loses at most these rows, which the next poll writes
        again; no entry, event or feed depends on them.
        """
        when = _utc(at)
        with self._lock:
            held = self._holding()
            held.polls.append((source, when, when))
            self._flush_if_due()

    def set_next_poll(self, source: str, at: datetime | None, *, hold: bool = True) -> None:
        """Held like `note_unchanged`, since the daemon sets it after every poll; a status
        read in this process writes it first, one read in another may find the previous
        value for up to GROUP_MAX_AGE_S. `hold=False` writes it at once (a backoff after a
        failure, which the failure's own row would otherwise outdate)."""
        if not hold:
            with self._write():
                self._conn.execute(_NEXT_POLL_UPSERT, (source, _utc_or_none(at)))
            return
        with self._lock:
            self._holding().next_polls[source] = _utc_or_none(at)
            self._flush_if_due()

    def _holding(self) -> _Held:
        if self._held is None:
            self._held = _Held(since=time.monotonic())
        return self._held

    def _flush_if_due(self) -> None:
        held = self._held
        if held is not None and len(held.polls) + len(held.next_polls) >= GROUP_MAX_POLLS:
            self.flush()
        else:
            self.flush(older_than=GROUP_MAX_AGE_S)

    def flush(self, *, older_than: float = 0.0) -> None:
        """Write the held bookkeeping, if it is at least `older_than` seconds old.

        Rows that cannot be written (a full disk, a lock held too long) are dropped with
        a warning and a StoreError: keeping them would only grow the pile.
        """
        with self._lock:
            held = self._held
            if held is None or time.monotonic() - held.since < older_than:
                return
            self._held = None
            try:
                if self._conn.in_transaction:
                    with self._errors():
                        self._write_held(held)
                else:
                    with self.transaction(), self._errors():
                        self._write_held(held)
            except StoreError as exc:
                log.warning(
                    "the bookkeeping of %d polls was lost: %s",
                    len(held.polls) + len(held.next_polls),
                    exc,
                )
                raise

    def _write_held(self, held: _Held) -> None:
        conn = self._conn
        conn.executemany(_UNCHANGED_POLL_UPSERT, held.polls)
        conn.executemany(_NEXT_POLL_UPSERT, held.next_polls.items())

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """Join the caller's transaction, or make the write its own."""
        with self._lock:
            if self._conn.in_transaction:
                with self._errors():
                    yield
            else:
                with self.transaction(), self._errors():
                    yield

    @contextlib.contextmanager
    def _read(self) -> Iterator[None]:
        with self._lock, self._errors():
            yield

    def check(self) -> str:
        """`PRAGMA integrity_check`: "ok", or the problems found, one per line."""
        with self._read():
            rows = self._conn.execute("PRAGMA integrity_check").fetchall()
        return "\n".join(str(row[0]) for row in rows)

    def page_state(self, source: str, url: str) -> Validators | None:
        """What the server said about `url` when `source` last polled it.

        Kept per source: a source added later on an already polled URL must not
        inherit validators that would earn it a 304 for a page it never parsed.
        """
        with self._read():
            row = self._conn.execute(
                "SELECT etag, last_modified, body_hash FROM pages WHERE source = ? AND url = ?",
                (source, _safe(url)),
            ).fetchone()
        return None if row is None else Validators(*row)

    def save_page_state(self, source: str, url: str, validators: Validators) -> None:
        with self._write():
            self._conn.execute(
                "INSERT INTO pages (source, url, etag, last_modified, body_hash)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (source, url) DO UPDATE SET etag = excluded.etag,"
                " last_modified = excluded.last_modified, body_hash = excluded.body_hash"
                # An unchanged row is not rewritten: a warm poll of a 304 dirties no page.
                " WHERE etag IS NOT excluded.etag OR last_modified IS NOT excluded.last_modified"
                " OR body_hash IS NOT excluded.body_hash",
                (
                    source,
                    _safe(url),
                    _safe(validators.etag),
                    _safe(validators.last_modified),
                    validators.body_hash,
                ),
            )

    def entries(self, source: str, links: Sequence[str] | None = None) -> dict[str, Entry]:
        """The source's stored entries, or only those with the given links.

        A poll asks only for the links it saw, so its memory follows the pages it
        read, not the thousands of entries a source may have gathered over the years.
        """
        with self._read():
            if links is None:
                rows = self._conn.execute(
                    _ENTRY_SELECT + " WHERE e.source = ?", (source,)
                ).fetchall()
            else:
                rows = self._conn.execute(
                    _ENTRY_SELECT
                    + " WHERE e.source = ? AND e.link IN (SELECT value FROM json_each(?))",
                    (source, _json([_safe(link) for link in links])),
                ).fetchall()
        return {row[1]: _entry(row) for row in rows}

    def count_entries(self, source: str) -> int:
        with self._read():
            row = self._conn.execute(
                "SELECT count(*) FROM entries WHERE source = ?", (source,)
            ).fetchone()
        return int(row[0])

    def add_entries(self, entries: Sequence[Entry]) -> None:
        """Insert new entries; one already stored (by another process) keeps its row."""
        if not entries:
            return
        rows = [_entry_row(entry) for entry in entries]
        with self._write():
            # Not INSERT OR IGNORE, which would also drop rows that break NOT NULL.
            self._conn.executemany(_ENTRY_INSERT, rows)
            self._conn.executemany(_SEEN_UPSERT, [_seen_row(entry) for entry in entries])

    def update_entries(self, changes: Sequence[tuple[Entry, Entry]], at: datetime) -> None:
        """Store each new version and keep the old title/teaser as a revision at `at`."""
        if not changes:
            return
        entry_rows = [_entry_row(new) for _, new in changes]
        revision_rows = [
            (
                old.source,
                _safe(old.link),
                _utc(at),
                _safe(old.title),
                int(old.title_is_fallback),
                _safe(old.teaser_text),
                _safe(old.teaser_html),
                old.fingerprint,
            )
            for old, _ in changes
        ]
        with self._write():
            self._conn.executemany(_ENTRY_UPSERT, entry_rows)
            self._conn.executemany(_SEEN_UPSERT, [_seen_row(new) for _, new in changes])
            self._conn.executemany(_REVISION_INSERT, revision_rows)

    def save_details(self, entries: Sequence[Entry]) -> None:
        """Store what an entry's own page told (date, author, full text): a correction of
        what the index could not know, not an edit, so no revision is kept."""
        rows = [
            (
                _utc(e.published),
                _local(e.published),
                int(e.date_exact),
                _safe(e.author),
                _safe(e.content_html),
                e.source,
                _safe(e.link),
            )
            for e in entries
        ]
        if not rows:
            return
        with self._write():
            self._conn.executemany(
                "UPDATE entries SET published = ?, published_local = ?, date_exact = ?,"
                " author = ?, content_html = ? WHERE source = ? AND link = ?",
                rows,
            )

    def touch_entries(self, source: str, links: Sequence[str], at: datetime) -> None:
        if not links:
            return
        with self._write():
            self._conn.execute(_TOUCH, (_utc(at), source, _json(list(links))))

    def delete_entries(self, source: str, links: Sequence[str]) -> None:
        """Forget entries and their revisions (history events stay)."""
        if not links:
            return
        params = (source, _json(list(links)))
        with self._write():
            for table in ("revisions", "entry_seen", "entries"):
                self._conn.execute(
                    f"DELETE FROM {table} WHERE source = ?"
                    " AND link IN (SELECT value FROM json_each(?))",
                    params,
                )

    def revisions(self, source: str, link: str) -> list[dict[str, Any]]:
        """Earlier versions of one entry, oldest first; `at` is when each was replaced."""
        with self._read():
            rows = self._conn.execute(
                "SELECT at, title, title_is_fallback, teaser_text, teaser_html, fingerprint"
                " FROM revisions WHERE source = ? AND link = ? ORDER BY at, id",
                (source, _safe(link)),
            ).fetchall()
        return [
            {
                "at": datetime.fromisoformat(at),
                "title": title,
                "title_is_fallback": bool(fallback),
                "teaser_text": teaser_text,
                "teaser_html": teaser_html,
                "fingerprint": fp,
            }
            for at, title, fallback, teaser_text, teaser_html, fp in rows
        ]

    def feed_entries(self, source: str, limit: int) -> list[Entry]:
        """The newest `limit` entries: published desc, then first_seen desc, then link."""
        with self._read():
            rows = self._conn.execute(
                _ENTRY_SELECT + " WHERE e.source = ?"
                " ORDER BY e.published DESC, e.first_seen DESC, e.link LIMIT ?",
                (source, max(limit, 0)),
            ).fetchall()
        return [_entry(row) for row in rows]

    def last_change(self, source: str) -> datetime | None:
        with self._read():
            row = self._conn.execute(
                "SELECT max(updated) FROM entries WHERE source = ?", (source,)
            ).fetchone()
        return _time(row[0])

    def log_fetches(self, source: str, at: datetime, logs: Sequence[FetchLog]) -> None:
        """Append one poll's requests, dropping the source's oldest beyond FETCH_LOG_KEEP."""
        if not logs:
            return
        when = _utc(at)
        rows = [
            (source, when, _safe(log.url), log.status, log.size, log.elapsed, _safe(log.error))
            for log in logs
        ]
        with self._write():
            self._conn.executemany(_FETCH_LOG_INSERT, rows)
            self._conn.execute(_FETCH_LOG_PRUNE, (source, source, FETCH_LOG_KEEP))

    def fetches(self, source: str, limit: int = 50) -> list[tuple[datetime, FetchLog]]:
        """The source's most recent logged requests, newest first, with the time of their poll."""
        with self._read():
            rows = self._conn.execute(
                "SELECT at, url, status, size, elapsed, error FROM fetch_log"
                " WHERE source = ? ORDER BY id DESC LIMIT ?",
                (source, max(limit, 0)),
            ).fetchall()
        return [(datetime.fromisoformat(row[0]), FetchLog(*row[1:])) for row in rows]

    def record_poll(
        self,
        source: str,
        at: datetime,
        *,
        ok: bool,
        error: str | None,
        new: int,
        updated: int,
        next_poll: datetime | None = None,
    ) -> None:
        """Remember a poll's outcome; `next_poll=None` leaves the scheduled time as it was."""
        with self._write():
            self._conn.execute(
                _POLL_UPSERT,
                (
                    source,
                    _utc(at),
                    int(ok),
                    _safe(error),
                    0 if ok else 1,
                    _utc(at) if new > 0 else None,
                    _utc(at) if updated > 0 else None,
                    _utc_or_none(next_poll),
                ),
            )

    def status(self, source: str) -> SourceStatus | None:
        """None for a source the store has never heard of; title comes from source_meta."""
        with self._read():
            self.flush()
            row = self._conn.execute(
                f"SELECT {_STATUS_COLUMNS} FROM sources AS s WHERE s.name = ?", (source,)
            ).fetchone()
            count = self._conn.execute(
                "SELECT count(*) FROM entries WHERE source = ?", (source,)
            ).fetchone()[0]
        if row is None and count == 0:
            return None
        return _status(source, row, count)

    def poll_start(self, source: str, url: str) -> PollStart:
        """A poll's first reads (see PollStart): from `expect_polls`, else one query.

        Held bookkeeping is not written first: only polls of the same source, which
        hold its lock, change what this returns, and the bookkeeping held for one
        never does (a poll that ends a failing streak or changes a validator commits
        at once).
        """
        with self._lock:
            start = self._starts.pop((source, url), None)
            if start is not None:
                return start
        with self._read():
            return self._poll_starts([(source, url)])[(source, url)]

    def expect_polls(self, polls: Sequence[tuple[str, str]]) -> None:
        """Read the first reads of these (source, first URL) polls in one query; each
        is answered once, to its source's next `poll_start`.

        A refresh polls every source once, and a thousand single-row queries cost more
        than their polls' requests. The caller must hold these sources' locks until
        their polls (feedwatch.locks), so that no other process changes what was read;
        this process changes a source's rows only in that source's own poll.
        """
        with self._read():
            self._starts = self._poll_starts(polls) if polls else {}

    def _poll_starts(self, polls: Sequence[tuple[str, str]]) -> dict[tuple[str, str], PollStart]:
        rows = self._conn.execute(
            _POLL_STARTS, (_json([[name, _safe(url)] for name, url in polls]),)
        ).fetchall()
        return {
            polls[i]: PollStart(
                first_page=Validators(etag, last_modified, body_hash) if known else None,
                failure=(error, failures or 0) if ok == 0 else None,
                first_page_links=page1_links,
                render_key=render_key,
                page_title=page_title,
                meta_json=meta,
            )
            for (
                i, etag, last_modified, body_hash, known,
                ok, error, failures, page1_links, render_key, page_title, meta,
            ) in rows
        }  # fmt: skip

    def statuses(self) -> list[SourceStatus]:
        """Every source with a status row or stored entries, by name."""
        with self._read():
            self.flush()
            rows = self._conn.execute(
                "WITH names(name) AS (SELECT name FROM sources"
                " UNION SELECT DISTINCT source FROM entries)"
                f" SELECT names.name, s.name IS NOT NULL, {_STATUS_COLUMNS},"
                " (SELECT count(*) FROM entries WHERE entries.source = names.name)"
                " FROM names LEFT JOIN sources AS s ON s.name = names.name"
                " ORDER BY names.name"
            ).fetchall()
        return [_status(row[0], row[2:-1] if row[1] else None, row[-1]) for row in rows]

    def add_event(self, event: Event) -> None:
        self.add_events([event])

    def add_events(self, events: Sequence[Event]) -> None:
        """Append events in order; one statement for a whole poll's worth."""
        if not events:
            return
        rows = [(e.source, _utc(e.at), _safe(e.kind), _safe(e.link), _json(e.data)) for e in events]
        with self._write():
            self._conn.executemany(
                "INSERT INTO events (source, at, kind, link, data) VALUES (?, ?, ?, ?, ?)", rows
            )

    def events(
        self, source: str, *, limit: int | None = None, since: datetime | None = None
    ) -> list[Event]:
        """History newest first; `since` is inclusive."""
        sql = "SELECT at, kind, link, data FROM events WHERE source = ?"
        params: list[Any] = [source]
        if since is not None:
            sql += " AND at >= ?"
            params.append(_utc(since))
        sql += " ORDER BY at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(limit, 0))
        with self._read():
            rows = self._conn.execute(sql, params).fetchall()
        return [
            Event(
                source=source,
                at=datetime.fromisoformat(at),
                kind=kind,
                link=link,
                data=json.loads(data) if data else {},
            )
            for at, kind, link, data in rows
        ]

    def first_page(self, source: str) -> list[str]:
        with self._read():
            row = self._conn.execute(
                "SELECT first_page FROM source_meta WHERE name = ?", (source,)
            ).fetchone()
        return json.loads(row[0]) if row and row[0] else []

    def save_first_page(self, source: str, links: Sequence[str]) -> None:
        """Replace the links of page 1; the time its old links were last seen on it
        (first_page_seen) moves into their entry_seen rows first."""
        with self._write():
            self._conn.execute(
                "UPDATE entry_seen SET last_seen = src.first_page_seen"
                " FROM sources AS src, source_meta AS sm"
                " WHERE src.name = ? AND sm.name = src.name AND entry_seen.source = src.name"
                " AND src.first_page_seen > entry_seen.last_seen"
                " AND entry_seen.link IN (SELECT value FROM json_each(sm.first_page))",
                (source,),
            )
            self._conn.execute(
                "INSERT INTO source_meta (name, first_page) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET first_page = excluded.first_page",
                (source, _json(list(links))),
            )
            self._conn.execute(
                "UPDATE sources SET first_page_seen = NULL WHERE name = ?", (source,)
            )

    def source_meta(self, source: str) -> dict[str, Any]:
        with self._read():
            row = self._conn.execute(
                "SELECT meta FROM source_meta WHERE name = ?", (source,)
            ).fetchone()
        return json.loads(row[0]) if row and row[0] else {}

    def mark(self, key: str) -> str | None:
        """A value the store keeps for whoever set it, such as what a file was made from."""
        with self._read():
            row = self._conn.execute("SELECT value FROM marks WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_mark(self, key: str, value: str) -> None:
        with self._write():
            self._conn.execute(
                "INSERT INTO marks (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def page_titles(self) -> dict[str, str]:
        """Every source's page title by name, in one query (sources without one are left out)."""
        with self._read():
            rows = self._conn.execute(
                "SELECT m.name, CASE WHEN json_valid(m.meta) THEN"
                f" {_META_KEY.format('page_title')} END FROM source_meta AS m"
            ).fetchall()
        return {name: title for name, title in rows if isinstance(title, str)}

    def save_source_meta(self, source: str, meta: Mapping[str, Any]) -> None:
        """Merge the given keys into the source's meta blob (other keys are kept)."""
        with self._write():
            row = self._conn.execute(
                "SELECT meta FROM source_meta WHERE name = ?", (source,)
            ).fetchone()
            merged = _json((json.loads(row[0]) if row and row[0] else {}) | dict(meta))
            if row is not None and row[0] == merged:
                return
            self._conn.execute(
                "INSERT INTO source_meta (name, meta) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET meta = excluded.meta",
                (source, merged),
            )
