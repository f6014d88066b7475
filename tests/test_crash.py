"""Killed runs, full disks and two runs at once: the store and the feeds stay whole.

`feedwatch refresh` runs as a real process against a site of many slow sources, so a
SIGKILL lands in the middle of fetching, committing or writing feeds. After every kill
the database passes `PRAGMA integrity_check`, each feed file is a complete feed of
either the previous or the new version, and the next run finishes the job without
announcing anything twice.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from feedwatch import feeds
from tests.conftest import run_cli, write_config
from tests.site import Site
from tests.test_faults import BYSTANDER, VICTIM, World, page, post, read_feeds, safe_items

ROOT = Path(__file__).resolve().parent.parent
SOURCES = 24
DELAY = 0.04  # per response, so that a run lasts long enough (~1.5 s) to be interrupted
FORMATS = ("rss", "atom", "json")
KILL_AFTER = (0.05, 0.2, 0.5)


# --- a site of many slow sources, one new post per version ------------------------------


def source_page(i: int, number: int, version: int) -> str:
    """Page `number` of source `i`: page 1 gains one post per version; 3 pages in all."""
    slugs = [f"new{v}" for v in range(version, 0, -1)] if number == 1 else []
    slugs += [f"{'abc'[number - 1]}{j}" for j in range(4)]
    posts = [post(f"s{i}/{slug}", f"Source {i} post {slug}") for slug in slugs]
    nav = f'<a class="next" href="/s{i}/page/{number + 1}/">next</a>' if number < 3 else ""
    return page(*posts, nav)


def links(site: Site, i: int, version: int) -> frozenset[str]:
    slugs = [f"new{v}" for v in range(1, version + 1)]
    slugs += [f"{p}{j}" for p in "abc" for j in range(4)]
    return frozenset(site.url(f"/p/s{i}/{slug}") for slug in slugs)


def serve_version(site: Site, version: int, delay: float = 0.0) -> None:
    for i in range(SOURCES):
        site.put(f"/s{i}/", source_page(i, 1, version), delay=delay)
        for number in (2, 3):
            site.put(f"/s{i}/page/{number}/", source_page(i, number, version), delay=delay)


def many_sources_config(site: Site, directory: Path) -> Path:
    blocks = [
        f"""
[[sources]]
name = "s{i}"
url = "{site.url(f"/s{i}/")}"
max_pages = 3
next_page = "a.next"

[sources.select]
entry = "div.post"
title = "h2 a"
link = "h2 a"
"""
        for i in range(SOURCES)
    ]
    # Two sources at a time: commits are spread over the whole run, not bunched at its end.
    return write_config(directory, "".join(blocks), "concurrency = 2")


def start_refresh(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "feedwatch", "refresh", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_refresh(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "feedwatch", "refresh", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- what must hold after any run, killed or not ----------------------------------------


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def query(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def announced_twice(db: Path) -> list[tuple]:
    """(source, link) pairs with more than one "new" event: a reader told twice."""
    return query(
        db,
        "select source, link, count(*) from events where kind = 'new'"
        " group by source, link having count(*) > 1",
    )


def stored_links(db: Path, i: int) -> frozenset[str]:
    return frozenset(row[0] for row in query(db, f"select link from entries where source = 's{i}'"))


def feed_links(directory: Path, i: int) -> dict[str, frozenset[str]]:
    """Each format's link set, after checking that every file is a complete, valid feed."""
    items = read_feeds(directory, f"s{i}")
    return {kind: frozenset(item.link for item in items[kind]) for kind in FORMATS}


@dataclass(frozen=True)
class Whole:
    """A store and feeds found whole, and where the last run had got to."""

    committed: int  # sources whose store holds the newest version
    ahead: int  # sources with a feed file newer than their store: killed before the commit


@dataclass
class Crashes:
    """The many-source site, its config, and the version of the pages being served."""

    site: Site
    config: Path
    version: int = 0

    @property
    def db(self) -> Path:
        return self.config.parent / "state.db"

    @property
    def feeds(self) -> Path:
        return self.config.parent / "feeds"

    def bump(self) -> None:
        """Serve the next version, slowly, for a run that is to be killed."""
        self.version += 1
        serve_version(self.site, self.version, DELAY)

    def hurry(self) -> None:
        """Serve the current version at full speed, for the run that recovers."""
        serve_version(self.site, self.version)

    def assert_whole(self, versions: tuple[int, ...]) -> Whole:
        """Check the store and every feed file against the page versions they may show."""
        assert integrity(self.db) == "ok"
        assert announced_twice(self.db) == []
        committed = ahead = 0
        for i in range(SOURCES):
            version_of = {links(self.site, i, v): v for v in versions}
            shown = set()
            for kind, found in feed_links(self.feeds, i).items():
                assert found in version_of, (i, kind, sorted(found))
                shown.add(version_of[found])
            stored = stored_links(self.db, i)
            assert stored in version_of, i
            committed += version_of[stored] == max(versions)
            ahead += version_of[stored] < max(shown)
        return Whole(committed, ahead)


@pytest.fixture(scope="module")
def crash_site() -> Iterator[Site]:
    site = Site().start()
    yield site
    site.stop()


@pytest.fixture
def crashes(crash_site: Site, tmp_path: Path) -> Crashes:
    serve_version(crash_site, 0)
    world = Crashes(crash_site, many_sources_config(crash_site, tmp_path))
    first = run_refresh(world.config)
    assert first.returncode == 0, first.stderr
    world.assert_whole((0,))
    return world


def after_first_request(seconds: float) -> Callable[[Crashes, int], None]:
    def wait(world: Crashes, requests_before: int) -> None:
        deadline = time.monotonic() + 30
        while len(world.site.requests) == requests_before and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(seconds)

    return wait


def at_first_feed_write(world: Crashes, requests_before: int) -> None:
    """Kill the moment the first source's RSS file is replaced: inside its commit, between
    writing its feeds and committing its transaction."""
    first = [world.feeds / "s0.rss", world.feeds / "s1.rss"]  # two sources poll at a time
    before = [path.stat().st_mtime_ns for path in first]
    deadline = time.monotonic() + 30
    while [path.stat().st_mtime_ns for path in first] == before and time.monotonic() < deadline:
        time.sleep(0.0002)


FEED_WRITE_RETRIES = 4
KILL_POINTS: dict[str, Callable[[Crashes, int], None]] = {
    **{f"{int(s * 1000)}ms": after_first_request(s) for s in KILL_AFTER},
    "first-feed-write": at_first_feed_write,
}


def kill_during_run(world: Crashes, wait: Callable[[Crashes, int], None]) -> None:
    requests_before = len(world.site.requests)
    proc = start_refresh(world.config)
    try:
        wait(world, requests_before)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


# --- tests ----------------------------------------------------------------------------


def kill_and_rerun(crashes: Crashes, name: str, wait: Callable[[Crashes, int], None]) -> Whole:
    """Kill a refresh of a new version at one point; the rerun must mend everything."""
    crashes.bump()
    kill_during_run(crashes, wait)
    killed = crashes.assert_whole((crashes.version - 1, crashes.version))
    crashes.hurry()
    again = run_refresh(crashes.config)
    assert again.returncode == 0, (name, again.stderr)
    assert "Traceback" not in again.stderr
    assert crashes.assert_whole((crashes.version,)) == Whole(committed=SOURCES, ahead=0)
    # What the killed run committed is not announced again; the rest is, once.
    news = [int(line.split(": ")[1].split()[0]) for line in again.stdout.splitlines()]
    assert sum(news) == SOURCES - killed.committed, (name, again.stdout)
    return killed


def test_sigkill_at_any_point_leaves_a_whole_store_and_whole_feeds(crashes: Crashes) -> None:
    partial = [(name, kill_and_rerun(crashes, name, wait)) for name, wait in KILL_POINTS.items()]
    # The feed-write window is a few milliseconds: on a loaded machine the kill can land
    # after the commit, so that point gets a few more tries before the check below.
    for _ in range(FEED_WRITE_RETRIES):
        if any(w.ahead for _, w in partial):
            break
        partial.append(
            ("first-feed-write", kill_and_rerun(crashes, "first-feed-write", at_first_feed_write))
        )
    # Not vacuous: some kill landed after some sources were committed but before all were,
    # and some between a source's feed write and its commit.
    assert any(0 < w.committed < SOURCES for _, w in partial), partial
    assert any(w.ahead for _, w in partial), partial


def test_two_refreshes_at_once_both_succeed_and_announce_each_entry_once(
    site: Site, tmp_path: Path
) -> None:
    serve_version(site, 1)
    config = many_sources_config(site, tmp_path)
    procs = [start_refresh(config) for _ in range(2)]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (_, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr
        assert "locked" not in stderr and "Traceback" not in stderr
    news: dict[str, int] = {}
    for stdout, _ in outputs:
        for line in stdout.splitlines():
            name, rest = line.split(": ")
            news[name] = news.get(name, 0) + int(rest.split()[0])
    assert news == {f"s{i}": 13 for i in range(SOURCES)}
    db = tmp_path / "state.db"
    assert integrity(db) == "ok"
    assert announced_twice(db) == []
    assert query(db, "select count(*), count(distinct source || link) from entries") == [
        (13 * SOURCES, 13 * SOURCES)
    ]
    # Both processes polled every source: the second one waited, it did not skip.
    assert all(len(site.requests_to(f"/s{i}/")) == 2 for i in range(SOURCES))
    for i in range(SOURCES):
        assert set(feed_links(tmp_path / "feeds", i).values()) == {links(site, i, 1)}


# --- unwritable feeds: the store does not move past what is on disk --------------------


@pytest.fixture
def world(site: Site, tmp_path: Path) -> World:
    return World(site, tmp_path)


def fail_writes(monkeypatch: pytest.MonkeyPatch, name: str, error: OSError) -> None:
    """Make writing feed file `name` fail with `error`; every other file is written."""
    original = feeds.write_if_changed

    def write(path: Path, data: bytes) -> bool:
        if path.name == name:
            raise error
        return original(path, data)

    monkeypatch.setattr(feeds, "write_if_changed", write)


def grow_victim(world: World) -> None:
    world.site.put("/victim/", page(post("v4", "Fourth post"), *VICTIM))
    world.site.put("/bystander/", page(*BYSTANDER, post("b3", "Bystander news")))


def assert_recovers(world: World) -> None:
    result = world.refresh("victim")["victim"]
    assert (result.ok, result.new) == (True, 1)
    assert world.status("victim").ok is True
    items = safe_items(world.feeds, "victim")
    for kind in FORMATS:
        assert world.entry_link("v4") in {i.link for i in items[kind]}, kind


def test_full_disk_fails_the_source_with_a_clear_error_and_stores_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = world.snapshot("victim")
    grow_victim(world)
    fail_writes(monkeypatch, "victim.atom", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    result = run_cli("refresh", "--config", str(world.config.path))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "victim: error: cannot write feeds: No space left on device",
        "bystander: 1 new, 0 updated, 2 seen",
    ]
    assert "Traceback" not in result.stderr
    after = world.snapshot("victim")
    # The RSS file may already be new; the store is not: no entry, no validators.
    assert after.entries == before.entries and after.page_state == before.page_state
    assert after.feeds["atom"] == before.feeds["atom"]
    assert world.status("victim").error == "cannot write feeds: No space left on device"
    monkeypatch.undo()
    assert_recovers(world)


def test_read_only_output_dir_fails_the_source_and_recovers(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = world.snapshot("victim")
    grow_victim(world)
    fail_writes(monkeypatch, "victim.rss", OSError(errno.EROFS, os.strerror(errno.EROFS)))
    result = world.refresh()
    assert result["victim"].error == "cannot write feeds: Read-only file system"
    assert (result["bystander"].ok, result["bystander"].new) == (True, 1)
    assert world.snapshot("victim") == before
    monkeypatch.undo()
    assert_recovers(world)


def test_a_directory_in_place_of_the_feed_file_fails_the_source_and_recovers(
    world: World,
) -> None:
    before = world.snapshot("victim")
    grow_victim(world)
    atom = world.feeds / "victim.atom"
    atom.unlink()
    (atom / "obstacle").mkdir(parents=True)
    result = world.refresh()
    assert result["victim"].error == "cannot write feeds: Is a directory"
    assert (result["bystander"].ok, result["bystander"].new) == (True, 1)
    with world.store() as store:
        assert store.entries("victim") == before.entries
    assert not [p.name for p in world.feeds.iterdir() if p.name.endswith(".tmp")]
    (atom / "obstacle").rmdir()
    atom.rmdir()
    assert_recovers(world)
    assert json.loads((world.feeds / "victim.json").read_bytes())["items"]
