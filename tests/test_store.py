"""store: round trips, ordering, transactions, status bookkeeping and sharing the file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from feedwatch import store as store_module
from feedwatch.models import Entry, Event, FetchLog, Validators
from feedwatch.store import PollStart, Store, StoreError

SHANGHAI = timezone(timedelta(hours=8))
T0 = datetime(2024, 5, 10, 4, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent


def make_entry(
    link: str,
    *,
    source: str = "kexue",
    published: datetime = datetime(2024, 4, 10, 21, 16, tzinfo=SHANGHAI),
    first_seen: datetime = T0,
    title: str = "从JL引理看熵不变性Attention",
    teaser: str = "熵不变性",
) -> Entry:
    return Entry(
        source=source,
        link=link,
        title=title,
        title_is_fallback=False,
        teaser_html=f"<p>{teaser}</p>",
        teaser_text=teaser,
        author="苏剑林",
        published=published,
        date_exact=True,
        first_seen=first_seen,
        last_seen=first_seen,
        updated=first_seen,
        fingerprint="f" * 64,
        content_html=None,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "state.db") as opened:
        yield opened


# --- entries --------------------------------------------------------------


def test_entries_can_be_read_for_given_links_only(store: Store) -> None:
    links = [f"https://kexue.fm/archives/{n}" for n in range(5)]
    store.add_entries([make_entry(link) for link in links])
    wanted = [links[1], links[3], "https://kexue.fm/archives/missing"]
    assert sorted(store.entries("kexue", wanted)) == [links[1], links[3]]
    assert len(store.entries("kexue")) == 5


def test_entry_round_trips_with_its_published_offset(store: Store) -> None:
    entry = replace(
        make_entry("https://kexue.fm/archives/9588"),
        title_is_fallback=True,
        date_exact=False,
        author=None,
        content_html="<p>全文</p>",
        last_seen=T0 + timedelta(hours=1),
        updated=T0 + timedelta(minutes=5, microseconds=7),
    )
    store.add_entries([entry])
    loaded = store.entries("kexue")["https://kexue.fm/archives/9588"]
    assert loaded == entry
    assert loaded.published.utcoffset() == timedelta(hours=8)
    assert loaded.published.hour == 21
    assert loaded.first_seen.utcoffset() == timedelta(0)


def test_entries_are_kept_per_source(store: Store) -> None:
    store.add_entries(
        [make_entry("https://a.test/1"), make_entry("https://a.test/1", source="other")]
    )
    assert list(store.entries("kexue")) == ["https://a.test/1"]
    assert store.count_entries("kexue") == 1
    assert store.count_entries("missing") == 0


def test_adding_an_already_stored_link_keeps_the_first_row(store: Store) -> None:
    store.add_entries([make_entry("https://a.test/1", title="first")])
    store.add_entries([make_entry("https://a.test/1", title="second")])
    assert store.entries("kexue")["https://a.test/1"].title == "first"


def test_lone_surrogates_from_a_page_are_stored_as_replacement_chars(store: Store) -> None:
    hostile = replace(
        make_entry("https://a.test/1"), title="bad \ud800 title", teaser_text="x\udfff"
    )
    store.add_entries([hostile])
    store.add_event(Event("kexue", T0, "new", "https://a.test/1", {"title": hostile.title}))
    loaded = store.entries("kexue")["https://a.test/1"]
    assert (loaded.title, loaded.teaser_text) == ("bad \ufffd title", "x\ufffd")
    assert store.events("kexue")[0].data == {"title": "bad \ufffd title"}


def test_entry_without_title_fails_loudly_instead_of_vanishing(store: Store) -> None:
    broken = replace(make_entry("https://a.test/1"), title=None)
    with pytest.raises(StoreError, match="NOT NULL"):
        store.add_entries([broken])
    assert store.count_entries("kexue") == 0


def test_naive_datetime_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="naive"):
        store.add_entries([make_entry("https://a.test/1", published=datetime(2024, 1, 1))])


def test_feed_entries_are_newest_published_then_first_seen_then_link(store: Store) -> None:
    day = datetime(2024, 1, 1, tzinfo=SHANGHAI)
    store.add_entries(
        [
            make_entry("https://a.test/old", published=day),
            make_entry("https://a.test/tie-b", published=day + timedelta(days=1)),
            make_entry("https://a.test/tie-a", published=day + timedelta(days=1)),
            make_entry(
                "https://a.test/tie-later-seen",
                published=day + timedelta(days=1),
                first_seen=T0 + timedelta(hours=1),
            ),
            # Earlier wall-clock date than the ties (Jan 1 vs Jan 2) but a later
            # instant: ordering must be by instant, not by the local text.
            make_entry("https://a.test/newest", published=datetime(2024, 1, 1, 23, tzinfo=UTC)),
        ]
    )
    links = [entry.link for entry in store.feed_entries("kexue", 4)]
    assert links == [
        "https://a.test/newest",
        "https://a.test/tie-later-seen",
        "https://a.test/tie-a",
        "https://a.test/tie-b",
    ]


def test_update_writes_new_version_and_a_revision_of_the_old(store: Store) -> None:
    old = make_entry("https://a.test/1", title="旧标题", teaser="旧摘要")
    store.add_entries([old])
    new = replace(old, title="新标题", teaser_text="新摘要", fingerprint="e" * 64, updated=T0)
    at = T0 + timedelta(days=1)
    with store.transaction():
        store.update_entries([(old, new)], at)
    assert store.entries("kexue")["https://a.test/1"] == new
    (revision,) = store.revisions("kexue", "https://a.test/1")
    assert (revision["title"], revision["teaser_text"], revision["fingerprint"]) == (
        "旧标题",
        "旧摘要",
        "f" * 64,
    )
    assert revision["at"] == at


def test_revisions_are_listed_oldest_first(store: Store) -> None:
    v1 = make_entry("https://a.test/1", title="v1")
    v2, v3 = replace(v1, title="v2"), replace(v1, title="v3")
    store.add_entries([v1])
    store.update_entries([(v2, v3)], T0 + timedelta(days=2))
    store.update_entries([(v1, v2)], T0 + timedelta(days=1))
    assert [r["title"] for r in store.revisions("kexue", "https://a.test/1")] == ["v1", "v2"]


def test_touch_moves_last_seen_of_given_links_only(store: Store) -> None:
    store.add_entries([make_entry("https://a.test/1"), make_entry("https://a.test/2")])
    later = T0 + timedelta(hours=3)
    store.touch_entries("kexue", ["https://a.test/1"], later)
    entries = store.entries("kexue")
    assert entries["https://a.test/1"].last_seen == later
    assert entries["https://a.test/2"].last_seen == T0


def test_touching_fifty_entries_is_one_statement(store: Store) -> None:
    links = [f"https://a.test/{i}" for i in range(50)]
    store.add_entries([make_entry(link) for link in links])
    statements: list[str] = []
    with store.transaction():
        store._conn.set_trace_callback(statements.append)
        store.touch_entries("kexue", links, T0 + timedelta(hours=1))
        store._conn.set_trace_callback(None)
    assert len(statements) == 1
    assert all(e.last_seen == T0 + timedelta(hours=1) for e in store.entries("kexue").values())


def test_delete_removes_entries_and_their_revisions(store: Store) -> None:
    old = make_entry("https://a.test/1")
    store.add_entries([old, make_entry("https://a.test/2")])
    store.update_entries([(old, replace(old, title="edited"))], T0)
    store.delete_entries("kexue", ["https://a.test/1"])
    assert list(store.entries("kexue")) == ["https://a.test/2"]
    assert store.revisions("kexue", "https://a.test/1") == []


def test_last_change_is_the_latest_updated(store: Store) -> None:
    assert store.last_change("kexue") is None
    store.add_entries(
        [
            replace(make_entry("https://a.test/1"), updated=T0 + timedelta(days=2)),
            replace(make_entry("https://a.test/2"), updated=T0 + timedelta(days=1)),
        ]
    )
    assert store.last_change("kexue") == T0 + timedelta(days=2)


# --- transactions -----------------------------------------------------------


def test_rolled_back_transaction_leaves_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError, match="boom"), store.transaction():
        store.add_entries([make_entry("https://a.test/1")])
        store.record_poll("kexue", T0, ok=True, error=None, new=1, updated=0)
        store.add_event(Event("kexue", T0, "new", "https://a.test/1"))
        store.save_page_state("kexue", "https://kexue.fm/", Validators(etag='"x"'))
        raise RuntimeError("boom")
    assert store.count_entries("kexue") == 0
    assert store.status("kexue") is None
    assert store.events("kexue") == []
    assert store.page_state("kexue", "https://kexue.fm/") is None


def test_committed_transaction_is_visible_to_another_connection(
    store: Store, tmp_path: Path
) -> None:
    with store.transaction():
        store.add_entries([make_entry("https://a.test/1")])
    with Store(tmp_path / "state.db") as other:
        assert other.count_entries("kexue") == 1


def test_nested_transaction_is_refused(store: Store) -> None:
    with store.transaction(), pytest.raises(StoreError, match="nesting"), store.transaction():
        pass


# --- file, schema, integrity -----------------------------------------------


def test_store_file_is_in_wal_mode(store: Store, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "state.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_reopening_keeps_data_and_schema(tmp_path: Path) -> None:
    with Store(tmp_path / "state.db") as first:
        first.add_entries([make_entry("https://a.test/1")])
    with Store(tmp_path / "state.db") as second:
        assert second.count_entries("kexue") == 1
        assert second.check() == "ok"


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    Store(tmp_path / "state.db").close()
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="99"):
        Store(tmp_path / "state.db")


def test_a_file_that_is_not_a_database_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError):
        Store(path)


def test_integrity_check_reports_ok(store: Store) -> None:
    store.add_entries([make_entry("https://a.test/1")])
    assert store.check() == "ok"


# --- pages, sources, status -------------------------------------------------


def test_validators_round_trip(store: Store) -> None:
    validators = Validators(etag='W/"abc"', last_modified="Fri, 10 May 2024 04:00:00 GMT")
    store.save_page_state("kexue", "https://kexue.fm/", validators)
    assert store.page_state("kexue", "https://kexue.fm/") == validators
    replaced = Validators(body_hash="0" * 64)
    store.save_page_state("kexue", "https://kexue.fm/", replaced)
    assert store.page_state("kexue", "https://kexue.fm/") == replaced
    assert store.page_state("kexue", "https://kexue.fm/page/2/") is None


def test_consecutive_failures_count_up_and_reset_on_success(store: Store) -> None:
    for hour in range(3):
        store.record_poll(
            "kexue", T0 + timedelta(hours=hour), ok=False, error="HTTP 500", new=0, updated=0
        )
    failing = store.status("kexue")
    assert failing is not None
    assert (failing.ok, failing.error, failing.consecutive_failures) == (False, "HTTP 500", 3)
    store.record_poll("kexue", T0 + timedelta(hours=4), ok=True, error=None, new=0, updated=0)
    recovered = store.status("kexue")
    assert recovered is not None
    assert (recovered.ok, recovered.error, recovered.consecutive_failures) == (True, None, 0)
    assert recovered.last_poll == T0 + timedelta(hours=4)


def test_last_new_moves_only_when_a_poll_found_new_entries(store: Store) -> None:
    store.record_poll("kexue", T0, ok=True, error=None, new=2, updated=0)
    store.record_poll("kexue", T0 + timedelta(hours=1), ok=True, error=None, new=0, updated=1)
    status = store.status("kexue")
    assert status is not None and status.last_new == T0


def test_next_poll_is_kept_unless_given(store: Store) -> None:
    store.record_poll(
        "kexue", T0, ok=True, error=None, new=0, updated=0, next_poll=T0 + timedelta(hours=1)
    )
    store.record_poll("kexue", T0 + timedelta(minutes=1), ok=True, error=None, new=0, updated=0)
    status = store.status("kexue")
    assert status is not None and status.next_poll == T0 + timedelta(hours=1)
    store.set_next_poll("kexue", None)
    status = store.status("kexue")
    assert status is not None and status.next_poll is None


def test_status_of_unknown_source_is_none(store: Store) -> None:
    assert store.status("nope") is None


def test_statuses_list_every_source_with_entry_count_and_title(store: Store) -> None:
    store.add_entries([make_entry("https://a.test/1"), make_entry("https://a.test/2")])
    store.add_entries([make_entry("https://b.test/1", source="blog")])
    store.record_poll("kexue", T0, ok=True, error=None, new=2, updated=0)
    store.save_source_meta("kexue", {"title": "科学空间|Scientific Spaces"})
    store.set_next_poll("idle", T0)
    statuses = {status.source: status for status in store.statuses()}
    assert sorted(statuses) == ["blog", "idle", "kexue"]
    assert (statuses["kexue"].entries, statuses["kexue"].title) == (2, "科学空间|Scientific Spaces")
    assert (statuses["blog"].entries, statuses["blog"].last_poll) == (1, None)
    assert (statuses["idle"].entries, statuses["idle"].next_poll) == (0, T0)


def test_first_page_round_trips_in_order(store: Store) -> None:
    assert store.first_page("kexue") == []
    links = ["https://kexue.fm/archives/10091", "https://kexue.fm/archives/9588"]
    store.save_first_page("kexue", links)
    assert store.first_page("kexue") == links


def test_source_meta_round_trips_and_merges_keys(store: Store) -> None:
    assert store.source_meta("kexue") == {}
    store.save_source_meta("kexue", {"title": "科学空间", "select": {"entry": "div.post"}})
    assert store.source_meta("kexue") == {"title": "科学空间", "select": {"entry": "div.post"}}
    store.save_source_meta("kexue", {"title": "新"})
    assert store.source_meta("kexue") == {"title": "新", "select": {"entry": "div.post"}}


def test_fetch_log_keeps_the_newest_rows(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "FETCH_LOG_KEEP", 3)
    for i in range(5):
        store.log_fetches(
            "kexue",
            T0 + timedelta(minutes=i),
            [FetchLog(f"https://kexue.fm/page/{i}/", 200, 10, 0.1)],
        )
    store.log_fetches("other", T0, [FetchLog("https://b.test/", None, 0, 20.0, "timeout")])
    logged = store.fetches("kexue")
    assert [log.url for _, log in logged] == [f"https://kexue.fm/page/{i}/" for i in (4, 3, 2)]
    assert logged[0][0] == T0 + timedelta(minutes=4)
    assert store.fetches("other") == [(T0, FetchLog("https://b.test/", None, 0, 20.0, "timeout"))]


# --- events -----------------------------------------------------------------


def add_events(store: Store) -> None:
    for minute, kind in enumerate(["new", "updated", "failing", "recovered"]):
        store.add_event(
            Event("kexue", T0 + timedelta(minutes=minute), kind, "https://a.test/1", {"n": minute})
        )
    store.add_event(Event("other", T0 + timedelta(hours=1), "new"))


def test_events_are_newest_first_with_their_data(store: Store) -> None:
    add_events(store)
    events = store.events("kexue")
    assert [event.kind for event in events] == ["recovered", "failing", "updated", "new"]
    assert events[0] == Event(
        "kexue", T0 + timedelta(minutes=3), "recovered", "https://a.test/1", {"n": 3}
    )


def test_events_since_is_inclusive(store: Store) -> None:
    add_events(store)
    since = (T0 + timedelta(minutes=2)).astimezone(SHANGHAI)
    assert [event.kind for event in store.events("kexue", since=since)] == ["recovered", "failing"]


def test_events_limit_keeps_the_newest(store: Store) -> None:
    add_events(store)
    assert [event.kind for event in store.events("kexue", limit=2)] == ["recovered", "failing"]


def test_events_at_the_same_time_keep_insertion_order(store: Store) -> None:
    store.add_event(Event("kexue", T0, "failing", data={"error": "HTTP 500"}))
    store.add_event(Event("kexue", T0, "recovered"))
    assert [event.kind for event in store.events("kexue")] == ["recovered", "failing"]


# --- concurrency --------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys, time
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    from feedwatch.models import Entry, Event
    from feedwatch.store import Store

    path, name, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    while not go.exists():
        time.sleep(0.005)
    store = Store(path)  # both create the fresh file's schema at once
    t0 = datetime(2024, 5, 10, tzinfo=UTC)
    for i in range(40):
        at = t0 + timedelta(seconds=i)
        link = f"https://x.test/{i}"
        entry = Entry(name, link, "t", False, "", "", None, at, False, at, at, at, "f" * 64)
        with store.transaction():
            stored = store.entries(name)
            store.add_entries([entry])
            store.touch_entries(name, list(stored), at)
            store.record_poll(name, at, ok=True, error=None, new=1, updated=0)
            store.add_event(Event(name, at, "new", entry.link))
            time.sleep(0.002)  # hold the write lock so the other writer has to wait
        store.status(name)
    store.close()
    """
)


OPENER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from feedwatch.store import Store

    go = Path(sys.argv[2])
    while not go.exists():
        time.sleep(0.001)
    Store(sys.argv[1]).close()
    """
)


def test_processes_creating_the_store_together_never_fail_locked(tmp_path: Path) -> None:
    failures = []
    for round_ in range(8):
        db, go = tmp_path / f"{round_}.db", tmp_path / f"go{round_}"
        openers = [
            subprocess.Popen(
                [sys.executable, "-c", OPENER, str(db), str(go)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        time.sleep(0.25)
        go.touch()
        for opener in openers:
            _, err = opener.communicate(timeout=60)
            if opener.returncode:
                failures.append(err.strip().splitlines()[-1])
    assert failures == []


def test_two_processes_writing_at_once_never_fail_locked(tmp_path: Path) -> None:
    db, go = tmp_path / "state.db", tmp_path / "go"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), name, str(go)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("alpha", "beta")
    ]
    time.sleep(0.3)
    go.touch()
    outcomes = [writer.communicate(timeout=60) for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], outcomes
    with Store(db) as store:
        assert store.check() == "ok"
        for name in ("alpha", "beta"):
            assert store.count_entries(name) == 40
            assert len(store.events(name)) == 40
            status = store.status(name)
            assert status is not None and status.last_poll == datetime(
                2024, 5, 10, 0, 0, 39, tzinfo=UTC
            )


def test_threads_sharing_one_store_do_not_mix_transactions(store: Store) -> None:
    errors: list[BaseException] = []

    def work(name: str) -> None:
        for i in range(30):
            try:
                with store.transaction():
                    store.add_entries([make_entry(f"https://x.test/{i}", source=name)])
                    time.sleep(0.001)
                    if i % 3 == 0:
                        raise KeyError(i)
            except KeyError:
                continue
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=work, args=(name,)) for name in ("alpha", "beta")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    committed = {f"https://x.test/{i}" for i in range(30) if i % 3}
    assert set(store.entries("alpha")) == set(store.entries("beta")) == committed


# --- held bookkeeping of unchanged polls ---------------------------------------------


def committed_polls(path: Path) -> dict[str, datetime]:
    """Each source's last_poll as a second connection sees it: only what was committed."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT name, last_poll FROM sources WHERE last_poll IS NOT NULL"
        ).fetchall()
    finally:
        conn.close()
    return {name: datetime.fromisoformat(last_poll) for name, last_poll in rows}


def quiet_poll(store: Store, source: str, at: datetime = T0) -> None:
    """The bookkeeping of a poll answered by a 304, noted the way poll notes it."""
    store.note_unchanged(source, at)


class Clock:
    """Stands in for the store module's `time`: a monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    moved_by_hand = Clock()
    monkeypatch.setattr(store_module, "time", moved_by_hand)
    return moved_by_hand


def test_an_unchanged_poll_is_held_until_flush_and_then_fully_written(
    store: Store, tmp_path: Path
) -> None:
    store.add_entries([make_entry("https://a.test/1"), make_entry("https://a.test/2")])
    store.save_first_page("kexue", ["https://a.test/1"])
    later = T0 + timedelta(hours=1)
    quiet_poll(store, "kexue", later)
    assert committed_polls(tmp_path / "state.db") == {}
    store.flush()
    assert committed_polls(tmp_path / "state.db") == {"kexue": later}
    status = store.status("kexue")
    assert status is not None and (status.ok, status.consecutive_failures) == (True, 0)
    assert store.fetches("kexue") == []  # a quiet poll is its last_poll, not a logged request
    seen = {link: e.last_seen for link, e in store.entries("kexue").items()}
    assert seen == {"https://a.test/1": later, "https://a.test/2": T0}


def test_reading_a_status_writes_the_held_bookkeeping_first(store: Store, tmp_path: Path) -> None:
    quiet_poll(store, "alpha")
    status = store.status("alpha")
    assert status is not None and status.last_poll == T0
    assert committed_polls(tmp_path / "state.db") == {"alpha": T0}


def test_the_status_list_writes_the_held_bookkeeping_first(store: Store, tmp_path: Path) -> None:
    quiet_poll(store, "alpha")
    quiet_poll(store, "beta")
    assert [s.source for s in store.statuses()] == ["alpha", "beta"]
    assert committed_polls(tmp_path / "state.db") == {"alpha": T0, "beta": T0}


def test_a_transaction_writes_the_held_bookkeeping_first(store: Store, tmp_path: Path) -> None:
    quiet_poll(store, "alpha")
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    with store.transaction():
        store.record_poll("beta", T0 + timedelta(hours=1), ok=True, error=None, new=1, updated=0)
    store._conn.set_trace_callback(None)
    assert statements[0] == "BEGIN IMMEDIATE"
    assert statements.count("BEGIN IMMEDIATE") == statements.count("COMMIT") == 2
    assert statements.index("COMMIT") < statements.index("BEGIN IMMEDIATE", 1)
    assert committed_polls(tmp_path / "state.db") == {
        "alpha": T0,
        "beta": T0 + timedelta(hours=1),
    }


def test_a_plain_write_writes_the_held_bookkeeping_first(store: Store, tmp_path: Path) -> None:
    quiet_poll(store, "alpha")
    store.record_poll("beta", T0, ok=False, error="HTTP 500", new=0, updated=0)
    assert committed_polls(tmp_path / "state.db") == {"alpha": T0, "beta": T0}


def test_a_later_failure_is_not_overwritten_by_the_held_success_before_it(store: Store) -> None:
    quiet_poll(store, "alpha", T0)
    later = T0 + timedelta(hours=1)
    store.record_poll("alpha", later, ok=False, error="HTTP 500", new=0, updated=0)
    status = store.status("alpha")
    assert status is not None and (status.ok, status.error) == (False, "HTTP 500")


def test_next_poll_is_held_and_shown_by_status(store: Store, tmp_path: Path) -> None:
    store.set_next_poll("alpha", T0 + timedelta(hours=2))
    assert committed_polls(tmp_path / "state.db") == {}
    status = store.status("alpha")
    assert status is not None and status.next_poll == T0 + timedelta(hours=2)


def test_a_next_poll_not_held_is_committed_at_once(store: Store, tmp_path: Path) -> None:
    store.set_next_poll("alpha", T0, hold=False)
    conn = sqlite3.connect(tmp_path / "state.db")
    try:
        rows = conn.execute("SELECT name, next_poll FROM sources").fetchall()
    finally:
        conn.close()
    assert [(name, datetime.fromisoformat(at)) for name, at in rows] == [("alpha", T0)]


def test_held_bookkeeping_writes_itself_once_it_is_max_age_old(
    store: Store, tmp_path: Path, clock: Clock
) -> None:
    quiet_poll(store, "alpha")
    clock.now += store_module.GROUP_MAX_AGE_S / 2
    quiet_poll(store, "beta")
    assert committed_polls(tmp_path / "state.db") == {}
    clock.now += store_module.GROUP_MAX_AGE_S / 2
    quiet_poll(store, "gamma")
    assert committed_polls(tmp_path / "state.db") == {"alpha": T0, "beta": T0, "gamma": T0}


def test_flush_older_than_keeps_younger_bookkeeping_held(
    store: Store, tmp_path: Path, clock: Clock
) -> None:
    quiet_poll(store, "alpha")
    clock.now += 0.25
    store.flush(older_than=0.5)
    assert committed_polls(tmp_path / "state.db") == {}
    clock.now += 0.25
    store.flush(older_than=0.5)
    assert committed_polls(tmp_path / "state.db") == {"alpha": T0}


def test_held_bookkeeping_writes_itself_after_max_polls(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "GROUP_MAX_POLLS", 3)
    quiet_poll(store, "alpha")
    quiet_poll(store, "beta")
    assert committed_polls(tmp_path / "state.db") == {}
    quiet_poll(store, "gamma")
    assert committed_polls(tmp_path / "state.db") == {"alpha": T0, "beta": T0, "gamma": T0}
    quiet_poll(store, "delta")
    assert "delta" not in committed_polls(tmp_path / "state.db")


def test_close_writes_the_held_bookkeeping(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    quiet_poll(store, "alpha")
    store.close()
    with Store(tmp_path / "state.db") as reopened:
        status = reopened.status("alpha")
        assert status is not None and status.last_poll == T0


def test_a_transaction_inside_a_transaction_is_refused(store: Store) -> None:
    with store.transaction(), pytest.raises(StoreError, match="nesting"), store.transaction():
        pass


def test_held_bookkeeping_that_cannot_be_written_is_dropped_and_the_store_stays_usable(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An interrupt, a full disk or an I/O error fails the write of the held rows: they
    are dropped with a warning (the next polls write theirs), and the store goes on."""
    quiet_poll(store, "alpha")
    store._conn.set_progress_handler(lambda: 1, 1)
    try:
        with pytest.raises(StoreError, match="interrupted"):
            store.flush()
    finally:
        store._conn.set_progress_handler(None, 1)
    assert "the bookkeeping of 1 polls was lost" in caplog.text
    with store.transaction():
        store.record_poll("gamma", T0, ok=False, error="HTTP 500", new=0, updated=0)
    assert committed_polls(tmp_path / "state.db") == {"gamma": T0}


def test_a_refused_plain_write_leaves_nothing(store: Store) -> None:
    unseen = replace(make_entry("https://a.test/1"), last_seen=datetime(2024, 5, 10))
    with pytest.raises(ValueError, match="naive"):
        store.add_entries([unseen])
    assert store.count_entries("kexue") == 0


# --- a poll's first reads -----------------------------------------------------------


def test_poll_start_of_a_source_never_polled_is_empty(store: Store) -> None:
    start = store.poll_start("kexue", "https://a.test/")
    assert start == PollStart(first_page=None, failure=None)
    assert start.meta() == {}


def test_poll_start_reads_validators_a_failing_streak_page_1_and_the_meta(store: Store) -> None:
    store.save_source_meta("kexue", {"page_title": "科学空间", "render_key": "k1", "x": [1]})
    store.save_page_state("kexue", "https://a.test/", Validators('"v1"', None, "ab12"))
    store.save_page_state("kexue", "https://a.test/page/2", Validators('"v2"', None, "cd34"))
    store.save_first_page("kexue", ["https://a.test/1", "https://a.test/2"])
    for _ in range(2):
        store.record_poll("kexue", T0, ok=False, error="HTTP 503", new=0, updated=0)
    start = store.poll_start("kexue", "https://a.test/")
    assert (start.first_page, start.failure, start.first_page_links) == (
        Validators('"v1"', None, "ab12"),
        ("HTTP 503", 2),
        2,
    )
    assert (start.render_key, start.page_title) == ("k1", "科学空间")
    assert start.meta() == {"page_title": "科学空间", "render_key": "k1", "x": [1]}


def test_poll_start_after_a_success_has_no_failure(store: Store) -> None:
    store.record_poll("kexue", T0, ok=False, error="HTTP 503", new=0, updated=0)
    store.record_poll("kexue", T0, ok=True, error=None, new=0, updated=0)
    assert store.poll_start("kexue", "https://a.test/").failure is None


def test_expected_polls_are_answered_from_one_query(store: Store) -> None:
    store.save_page_state("alpha", "https://alpha.test/", Validators('"a"', None, "aa"))
    store.save_page_state("beta", "https://beta.test/", Validators('"b"', None, "bb"))
    store.expect_polls([("alpha", "https://alpha.test/"), ("beta", "https://beta.test/")])
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    alpha = store.poll_start("alpha", "https://alpha.test/")
    beta = store.poll_start("beta", "https://beta.test/")
    store._conn.set_trace_callback(None)
    assert statements == []
    assert (alpha.first_page, beta.first_page) == (
        Validators('"a"', None, "aa"),
        Validators('"b"', None, "bb"),
    )


def test_expecting_no_polls_forgets_what_was_read_for_earlier_ones(store: Store) -> None:
    store.expect_polls([("alpha", "https://alpha.test/")])
    store.record_poll("alpha", T0, ok=False, error="HTTP 500", new=0, updated=0)
    store.expect_polls([])
    assert store.poll_start("alpha", "https://alpha.test/").failure == ("HTTP 500", 1)


def test_an_expected_poll_is_answered_once_then_read_again(store: Store) -> None:
    store.expect_polls([("alpha", "https://alpha.test/")])
    assert store.poll_start("alpha", "https://alpha.test/").failure is None
    store.record_poll("alpha", T0, ok=False, error="HTTP 500", new=0, updated=0)
    assert store.poll_start("alpha", "https://alpha.test/").failure == ("HTTP 500", 1)


# --- last seen on page 1 -----------------------------------------------------------


def page_1_seen_again(store: Store) -> tuple[list[str], datetime]:
    """Three entries, the first two on page 1, which a later poll finds unchanged."""
    links = [f"https://a.test/{i}" for i in range(3)]
    store.add_entries([make_entry(link) for link in links])
    store.save_first_page("kexue", links[:2])
    later = T0 + timedelta(hours=5)
    quiet_poll(store, "kexue", later)
    store.flush()
    return links, later


def test_an_unchanged_page_1_moves_last_seen_of_its_links_only(store: Store) -> None:
    links, later = page_1_seen_again(store)
    entries = store.entries("kexue")
    assert [entries[link].last_seen for link in links] == [later, later, T0]
    assert [e.last_seen for e in store.feed_entries("kexue", 10)] == [later, later, T0]


def test_a_new_page_1_keeps_when_the_old_one_was_last_seen(store: Store) -> None:
    links, later = page_1_seen_again(store)
    store.save_first_page("kexue", links[1:])
    entries = store.entries("kexue")
    assert [entries[link].last_seen for link in links] == [later, later, T0]


TO_VERSION_2 = """
    ALTER TABLE sources ADD COLUMN first_page TEXT;
    ALTER TABLE sources ADD COLUMN meta TEXT;
    INSERT OR IGNORE INTO sources (name) SELECT name FROM source_meta;
    UPDATE sources SET
        first_page = (SELECT first_page FROM source_meta WHERE name = sources.name),
        meta = (SELECT meta FROM source_meta WHERE name = sources.name);
    DROP TABLE source_meta;
    ALTER TABLE sources DROP COLUMN first_page_seen;
    UPDATE schema_version SET version = 2;
"""
"""A store as version 2 kept it: page-1 links and meta in the sources rows."""


def test_a_version_2_store_moves_page_1_and_meta_out_of_its_status_rows(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with Store(path) as current:
        current.add_entries([make_entry("https://a.test/1")])
        current.save_first_page("kexue", ["https://a.test/1"])
        current.save_source_meta("kexue", {"page_title": "科学空间"})
        current.record_poll("kexue", T0, ok=False, error="HTTP 503", new=0, updated=0)
    conn = sqlite3.connect(path)
    conn.executescript(TO_VERSION_2)
    conn.close()
    later = T0 + timedelta(hours=5)
    with Store(path) as migrated:
        assert migrated.first_page("kexue") == ["https://a.test/1"]
        assert migrated.source_meta("kexue") == {"page_title": "科学空间"}
        assert migrated.poll_start("kexue", "https://a.test/").failure == ("HTTP 503", 1)
        quiet_poll(migrated, "kexue", later)
        migrated.flush()
        assert migrated.entries("kexue")["https://a.test/1"].last_seen == later
        assert migrated.check() == "ok"
    conn = sqlite3.connect(path)
    try:
        versions = conn.execute("SELECT version FROM schema_version").fetchall()
        columns = [row[1] for row in conn.execute("PRAGMA table_info(sources)")]
    finally:
        conn.close()
    assert versions == [(3,)]
    assert "meta" not in columns and "first_page" not in columns


# --- last_seen in entry_seen ------------------------------------------------------


def test_touching_entries_rewrites_no_entry_row(store: Store) -> None:
    links = [f"https://a.test/{i}" for i in range(3)]
    store.add_entries([make_entry(link) for link in links])
    store._conn.execute("CREATE TEMP TABLE entry_updates (link TEXT)")
    store._conn.execute(
        "CREATE TEMP TRIGGER count_entry_updates AFTER UPDATE ON main.entries"
        " BEGIN INSERT INTO entry_updates VALUES (new.link); END"
    )
    later = T0 + timedelta(hours=2)
    store.touch_entries("kexue", links[:2], later)
    assert store._conn.execute("SELECT link FROM entry_updates").fetchall() == []
    entries = store.entries("kexue")
    assert [entries[link].last_seen for link in links] == [later, later, T0]
    store.save_details([entries[links[0]]])  # the trigger does count a rewritten entry row
    assert store._conn.execute("SELECT link FROM entry_updates").fetchall() == [(links[0],)]


def test_a_version_1_store_is_migrated_keeping_every_last_seen(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    seen = {f"https://a.test/{i}": T0 + timedelta(days=i, minutes=7) for i in range(1, 4)}
    with Store(path) as current:
        current.add_entries([replace(make_entry(link), last_seen=at) for link, at in seen.items()])
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        ALTER TABLE entries ADD COLUMN last_seen TEXT;
        UPDATE entries SET last_seen = (SELECT s.last_seen FROM entry_seen AS s
            WHERE s.source = entries.source AND s.link = entries.link);
        DROP TABLE entry_seen;
        """
        + TO_VERSION_2
        + "UPDATE schema_version SET version = 1;"
    )
    conn.close()
    with Store(path) as migrated:
        assert {link: e.last_seen for link, e in migrated.entries("kexue").items()} == seen
        assert migrated.check() == "ok"
    conn = sqlite3.connect(path)
    try:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(entries)")]
        seen_rows = conn.execute("SELECT link, last_seen FROM entry_seen ORDER BY link").fetchall()
        versions = conn.execute("SELECT version FROM schema_version").fetchall()
    finally:
        conn.close()
    assert "last_seen" not in columns and "first_seen" in columns
    assert [(link, datetime.fromisoformat(at)) for link, at in seen_rows] == sorted(seen.items())
    assert versions == [(3,)]
