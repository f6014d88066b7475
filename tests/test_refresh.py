"""`feedwatch refresh` end to end, against the reference blog's pages on a local site."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import feedparser
import pytest

from feedwatch import config as config_mod
from feedwatch import poll as poll_module
from feedwatch import store as store_module
from feedwatch.config import Source
from feedwatch.fetch import Fetcher
from feedwatch.locks import SourceLocks, lock_path
from feedwatch.models import Event, PollResult
from feedwatch.poll import refresh
from feedwatch.store import Store
from tests.conftest import kexue_sources, run_cli, write_config
from tests.site import TRUTH, Site

HOME = ["home-1.html", "home-2.html", "home-3.html"]
FETCHED_AT = datetime.fromisoformat(TRUTH["pages"]["home-1.html"]["fetched_at"])


def truth_entries(*pages: str) -> list[dict[str, Any]]:
    return [e for p in pages for e in TRUTH["pages"][p]["entries"]]


def poll_at(config_path: Path, when: datetime, *names: str) -> list:
    config = config_mod.load(config_path)
    sources = [s for s in config.sources if not names or s.name in names]
    return asyncio.run(refresh(config, sources, now=lambda: when))


def stored(config_path: Path, source: str) -> dict:
    store = Store(config_mod.load(config_path).state)
    try:
        return store.entries(source)
    finally:
        store.close()


@pytest.fixture
def kexue(site: Site, tmp_path: Path) -> Path:
    site.serve_fixture_site()
    return write_config(tmp_path, kexue_sources(site))


def test_refresh_prints_one_summary_line_per_source(kexue: Path) -> None:
    result = run_cli("refresh", "--config", str(kexue))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "kexue: 24 new, 0 updated, 0 seen",
        "math: 8 new, 0 updated, 0 seen",
    ]


def test_config_option_is_accepted_before_the_command(kexue: Path) -> None:
    result = run_cli("--config", str(kexue), "refresh", "math")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["math: 8 new, 0 updated, 0 seen"]


def test_every_entry_is_found_once_with_its_truth_link(kexue: Path, site: Site) -> None:
    poll_at(kexue, FETCHED_AT)
    assert sorted(stored(kexue, "kexue")) == sorted(
        site.local(e["link"]) for e in truth_entries(*HOME)
    )
    math = truth_entries("category-1.html")
    assert sorted(stored(kexue, "math")) == sorted(site.local(e["link"]) for e in math)


def test_titles_equal_truth_and_missing_titles_come_from_the_teaser(
    kexue: Path, site: Site
) -> None:
    poll_at(kexue, FETCHED_AT)
    entries = stored(kexue, "kexue") | stored(kexue, "math")
    for truth in truth_entries(*HOME, "category-1.html"):
        entry = entries[site.local(truth["link"])]
        if truth["title"]:
            assert entry.title == truth["title"]
            assert not entry.title_is_fallback
        else:
            first = truth["teaser_first_sentence"]
            assert entry.title_is_fallback
            assert entry.title.rstrip("…") and first.startswith(entry.title.rstrip("…"))


def test_home_page_one_dates_get_their_exact_years(kexue: Path, site: Site) -> None:
    poll_at(kexue, FETCHED_AT)
    entries = stored(kexue, "kexue")
    for truth in truth_entries("home-1.html"):
        published = entries[site.local(truth["link"])].published
        assert published.date().isoformat() == truth["date_full"]
        assert published.utcoffset() == timedelta(hours=8)


def test_inferred_dates_are_exact_where_the_first_seen_rule_can_know(
    kexue: Path, site: Site
) -> None:
    poll_at(kexue, FETCHED_AT)
    entries = stored(kexue, "kexue")
    for truth in truth_entries(*HOME):
        published = entries[site.local(truth["link"])].published
        assert published <= FETCHED_AT + timedelta(days=1)
        if truth["naive_date_correct"]:
            assert published.date().isoformat() == truth["date_full"]


def test_category_entries_carry_full_dates_and_authors(kexue: Path, site: Site) -> None:
    poll_at(kexue, datetime.fromisoformat(TRUTH["pages"]["category-1.html"]["fetched_at"]))
    entries = stored(kexue, "math")
    for truth in truth_entries("category-1.html"):
        entry = entries[site.local(truth["link"])]
        assert entry.author == truth["author"]
        if truth["datetime_attr"]:
            assert entry.published == datetime.fromisoformat(truth["datetime_attr"])
            assert entry.date_exact


def test_teasers_keep_their_first_sentence_without_read_more_links(kexue: Path, site: Site) -> None:
    poll_at(kexue, FETCHED_AT)
    entries = stored(kexue, "kexue") | stored(kexue, "math")
    for truth in truth_entries(*HOME, "category-1.html"):
        entry = entries[site.local(truth["link"])]
        assert "点击阅读全文" not in entry.teaser_html
        assert "<script" not in entry.teaser_html
        if truth["teaser_first_sentence"]:
            assert truth["teaser_first_sentence"] in entry.teaser_text


def test_teaser_images_have_absolute_urls(kexue: Path, site: Site) -> None:
    poll_at(kexue, FETCHED_AT)
    entries = stored(kexue, "kexue")
    for truth in truth_entries(*HOME):
        for image in truth["images"]:
            assert f'src="{site.local(image)}"' in entries[site.local(truth["link"])].teaser_html


def test_written_feeds_parse_cleanly_and_list_every_entry(kexue: Path, site: Site) -> None:
    poll_at(kexue, FETCHED_AT)
    feeds = kexue.parent / "feeds"
    links = {site.local(e["link"]) for e in truth_entries(*HOME)}
    for ext in ("rss", "atom"):
        parsed = feedparser.parse((feeds / f"kexue.{ext}").read_bytes())
        assert parsed.bozo == 0, (ext, parsed.get("bozo_exception"))
        assert {e.link for e in parsed.entries} == links
    items = json.loads((feeds / "kexue.json").read_text(encoding="utf-8"))["items"]
    assert {item["url"] for item in items} == links
    opml = (feeds / "index.opml").read_text(encoding="utf-8")
    assert "kexue.atom" in opml and "math.atom" in opml


def test_feed_lists_newest_entries_first(kexue: Path) -> None:
    poll_at(kexue, FETCHED_AT)
    parsed = feedparser.parse((kexue.parent / "feeds" / "kexue.atom").read_bytes())
    published = [e.published_parsed for e in parsed.entries]
    assert published == sorted(published, reverse=True)


def test_second_refresh_is_conditional_and_rewrites_nothing(kexue: Path, site: Site) -> None:
    assert run_cli("refresh", "--config", str(kexue)).exit_code == 0
    feeds = kexue.parent / "feeds"
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in feeds.iterdir()}
    second = run_cli("refresh", "--config", str(kexue))
    assert second.exit_code == 0
    assert second.stdout.splitlines()[0].startswith("kexue: 0 new, 0 updated")
    home = site.requests_to("/")
    assert home[-1].headers.get("if-none-match") and home[-1].status == 304
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in feeds.iterdir()}
    assert after == before


def logged_statuses(config_path: Path, source: str) -> list[int | None]:
    store = Store(config_mod.load(config_path).state)
    try:
        return [log.status for _, log in reversed(store.fetches(source))]
    finally:
        store.close()


def test_the_fetch_log_keeps_polls_that_fetched_or_failed_and_not_quiet_ones(
    kexue: Path, site: Site
) -> None:
    run_cli("refresh", "--config", str(kexue), "math")
    run_cli("refresh", "--config", str(kexue), "math")  # a 304: only its last_poll moves
    site.put("/category/Mathematics/", "oops", status=500)
    run_cli("refresh", "--config", str(kexue), "math")
    assert logged_statuses(kexue, "math") == [200, 500]
    assert len(site.requests_to("/category/Mathematics/")) == 3


def test_last_modified_is_sent_back_verbatim(kexue: Path, site: Site) -> None:
    site.routes["/category/Mathematics/"].last_modified = "Sun, 07 Oct 2018 13:16:00 GMT"
    run_cli("refresh", "--config", str(kexue), "math")
    run_cli("refresh", "--config", str(kexue), "math")
    sent = site.requests_to("/category/Mathematics/")[-1].headers
    assert sent.get("if-modified-since") == "Sun, 07 Oct 2018 13:16:00 GMT"


def test_a_new_post_on_the_page_is_exactly_one_new_entry(kexue: Path, site: Site) -> None:
    run_cli("refresh", "--config", str(kexue))
    page = site.routes["/"].body.decode()
    post = (
        '<div class="post" id="post-99999"><div class="post-date"><span class="day">9</span> '
        '<span class="month">May</span></div><h2 class="post-title"><a href="/archives/99999">'
        '一个新的帖子</a></h2><div class="post-body"><p>新内容。</p></div></div>'
    )
    marker = '<div class="pagination" role="navigation">'
    site.put("/", page.replace(marker, post + marker, 1))
    result = run_cli("refresh", "--config", str(kexue), "kexue")
    assert result.stdout.splitlines() == ["kexue: 1 new, 0 updated, 16 seen"]
    atom = feedparser.parse((kexue.parent / "feeds" / "kexue.atom").read_bytes())
    assert site.url("/archives/99999") in {e.link for e in atom.entries}


def test_an_edited_teaser_is_one_update_with_a_revision(kexue: Path, site: Site) -> None:
    run_cli("refresh", "--config", str(kexue))
    page = site.routes["/"].body.decode()
    first = TRUTH["pages"]["home-1.html"]["entries"][1]["teaser_first_sentence"]
    site.put("/", page.replace("尺度定律(Scaling Law),指的是", "尺度定律(Scaling Law),说的是", 1))
    assert first.startswith("尺度定律(Scaling Law),指的是")
    result = run_cli("refresh", "--config", str(kexue), "kexue")
    assert result.stdout.splitlines() == ["kexue: 0 new, 1 updated, 15 seen"]
    store = Store(config_mod.load(kexue).state)
    try:
        revisions = store.revisions("kexue", site.url("/archives/9607"))
    finally:
        store.close()
    assert len(revisions) == 1


def test_a_changed_view_counter_is_not_an_update(kexue: Path, site: Site) -> None:
    run_cli("refresh", "--config", str(kexue), "math")
    page = site.routes["/category/Mathematics/"].body.decode()
    assert "154085位读者" in page
    site.put("/category/Mathematics/", page.replace("154085位读者", "154999位读者"))
    result = run_cli("refresh", "--config", str(kexue), "math")
    assert result.stdout.splitlines() == ["math: 0 new, 0 updated, 8 seen"]


def test_a_gbk_page_is_decoded(site: Site, tmp_path: Path) -> None:
    html = site.fixture("category-1.html").replace('charset="UTF-8"', 'charset="gbk"')
    assert 'charset="gbk"' in html
    site.put("/gbk/", html.encode("gb18030"), content_type="text/html")
    config = write_config(tmp_path, kexue_sources(site).replace("/category/Mathematics/", "/gbk/"))
    assert run_cli("refresh", "--config", str(config), "math").exit_code == 0
    titles = {e.title for e in stored(config, "math").values()}
    assert "深度学习中的Lipschitz约束:泛化与生成模型" in titles


def test_a_failing_source_keeps_its_feed_while_others_refresh(kexue: Path, site: Site) -> None:
    run_cli("refresh", "--config", str(kexue))
    feed = kexue.parent / "feeds" / "math.atom"
    before = feed.read_bytes()
    site.put("/category/Mathematics/", "oops", status=500)
    site.put("/", site.routes["/"].body.decode().replace("从JL引理看熵不变性Attention", "新标题"))
    result = run_cli("refresh", "--config", str(kexue))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "kexue: 0 new, 1 updated, 15 seen",
        "math: error: HTTP 500",
    ]
    assert feed.read_bytes() == before
    assert len(stored(kexue, "math")) == 8


def test_selectors_matching_nothing_fail_the_source_and_keep_the_feed(
    kexue: Path, site: Site
) -> None:
    run_cli("refresh", "--config", str(kexue), "math")
    site.put("/category/Mathematics/", "<html><body><p>redesigned</p></body></html>")
    result = run_cli("refresh", "--config", str(kexue), "math")
    assert result.exit_code == 1
    assert result.stdout.startswith("math: error: selectors matched no entries")
    assert len(stored(kexue, "math")) == 8


def test_pagination_never_fetches_the_same_url_twice(site: Site, tmp_path: Path) -> None:
    site.serve_fixture_site()
    loop = site.fixture("home-3.html").replace('href="/page/4/"', f'href="{site.url("/")}"')
    site.put("/page/3/", loop)
    config = write_config(tmp_path, kexue_sources(site, home_pages=10))
    assert run_cli("refresh", "--config", str(config), "kexue").exit_code == 0
    assert len(site.requests_to("/")) == 1


def test_later_polls_stop_at_the_first_unchanged_page(kexue: Path, site: Site) -> None:
    run_cli("refresh", "--config", str(kexue), "kexue")
    assert len(site.requests_to("/page/3/")) == 1
    page = site.routes["/"].body.decode()
    site.put("/", page.replace("从JL引理看熵不变性Attention", "新标题"))
    run_cli("refresh", "--config", str(kexue), "kexue")
    assert len(site.requests_to("/page/2/")) == 2
    assert len(site.requests_to("/page/3/")) == 1
    run_cli("refresh", "--full", "--config", str(kexue), "kexue")
    assert len(site.requests_to("/page/3/")) == 2


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('select = { entry = "div.post", title = "h2[" }', "sources[math].select.title"),
        ('colour = "blue"', "sources[math].colour: unknown key"),
        ('interval = "soon"', "sources[math].interval"),
    ],
)
def test_bad_config_exits_2_naming_the_key_and_writes_nothing(
    site: Site, tmp_path: Path, body: str, named: str
) -> None:
    config = write_config(
        tmp_path, f'[[sources]]\nname = "math"\nurl = "{site.url("/")}"\n{body}\n'
    )
    result = run_cli("refresh", "--config", str(config))
    assert result.exit_code == 2
    assert named in result.stderr
    assert site.requests == []
    assert not (tmp_path / "state.db").exists() and not (tmp_path / "feeds").exists()


def test_duplicate_source_names_exit_2(site: Site, tmp_path: Path) -> None:
    source = f'[[sources]]\nname = "math"\nurl = "{site.url("/")}"\n'
    result = run_cli("refresh", "--config", str(write_config(tmp_path, source + source)))
    assert result.exit_code == 2
    assert "duplicate source name 'math'" in result.stderr


def test_store_holds_no_duplicate_entries_after_repeated_refreshes(kexue: Path) -> None:
    for _ in range(3):
        run_cli("refresh", "--full", "--config", str(kexue))
    db = sqlite3.connect(config_mod.load(kexue).state)
    rows = db.execute("select count(*), count(distinct source || link) from entries").fetchone()
    assert rows == (32, 32)


def test_a_source_added_later_on_an_already_polled_url_gets_its_entries(
    site: Site, tmp_path: Path
) -> None:
    site.serve_fixture_site()
    first = f'[[sources]]\nname = "a"\nurl = "{site.url("/")}"\n'
    config = write_config(tmp_path, first)
    assert run_cli("refresh", "--config", str(config)).stdout.splitlines()[0].startswith("a: 8 new")
    config.write_text(
        config.read_text(encoding="utf-8") + first.replace('"a"', '"b"'), encoding="utf-8"
    )
    result = run_cli("refresh", "--config", str(config))
    assert result.stdout.splitlines() == [
        "a: 0 new, 0 updated, 8 seen",
        "b: 8 new, 0 updated, 0 seen",
    ]


def test_an_unusable_lock_directory_fails_the_sources_without_a_traceback(kexue: Path) -> None:
    (kexue.parent / "state.db.lock").mkdir()
    result = run_cli("refresh", "--config", str(kexue))
    assert result.exit_code == 1
    assert result.stdout.startswith("kexue: error: cannot open lock file")
    assert "Traceback" not in result.stdout + result.stderr


# --- held bookkeeping of unchanged polls ------------------------------------------

LATER = FETCHED_AT + timedelta(hours=1)


def refresh_into(
    store: Store,
    config_path: Path,
    when: datetime,
    *names: str,
    on_events: Callable[[Source, list[Event]], None] | None = None,
) -> list:
    """One refresh writing through the caller's open store, which it must not close."""
    config = config_mod.load(config_path)
    sources = [s for s in config.sources if not names or s.name in names]
    return asyncio.run(refresh(config, sources, store=store, on_events=on_events, now=lambda: when))


def committed_polls(config_path: Path) -> dict[str, datetime]:
    """Each source's last_poll as another connection sees it: only what was committed."""
    conn = sqlite3.connect(config_mod.load(config_path).state)
    try:
        rows = conn.execute("SELECT name, last_poll FROM sources").fetchall()
    finally:
        conn.close()
    return {name: datetime.fromisoformat(last_poll) for name, last_poll in rows}


@pytest.fixture
def no_timed_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the age of held bookkeeping nor the flush timer writes it during a refresh."""
    monkeypatch.setattr(store_module, "GROUP_MAX_AGE_S", 3600.0)
    monkeypatch.setattr(poll_module, "GROUP_MAX_AGE_S", 3600.0)


@pytest.mark.usefixtures("no_timed_commits")
def test_a_refresh_answered_by_304s_commits_every_sources_bookkeeping_once(
    kexue: Path, site: Site
) -> None:
    poll_at(kexue, FETCHED_AT)
    statements: list[str] = []
    with Store(config_mod.load(kexue).state) as store:
        store._conn.set_trace_callback(statements.append)
        results = refresh_into(store, kexue, LATER)
        store._conn.set_trace_callback(None)
    assert [(r.source, r.ok, r.new, r.updated, r.not_modified) for r in results] == [
        ("kexue", True, 0, 0, 1),
        ("math", True, 0, 0, 1),
    ]
    assert site.requests_to("/")[-1].status == 304
    assert site.requests_to("/category/Mathematics/")[-1].status == 304
    assert sum(s.startswith("INSERT INTO sources") for s in statements) == 2
    assert statements.count("BEGIN IMMEDIATE") == 1
    writes = statements[statements.index("BEGIN IMMEDIATE") :]
    assert writes.count("COMMIT") == 1


@pytest.mark.usefixtures("no_timed_commits")
def test_bookkeeping_of_304_polls_is_committed_when_refresh_returns(
    kexue: Path, site: Site
) -> None:
    poll_at(kexue, FETCHED_AT)
    with Store(config_mod.load(kexue).state) as store:
        refresh_into(store, kexue, LATER)
        assert site.requests_to("/")[-1].status == 304
        assert committed_polls(kexue) == {"kexue": LATER, "math": LATER}


def test_a_304_poll_ending_a_failing_streak_is_committed_before_its_recovery_is_announced(
    kexue: Path, site: Site
) -> None:
    state = config_mod.load(kexue).state
    poll_at(kexue, FETCHED_AT, "math")
    page = site.routes["/category/Mathematics/"]
    site.put("/category/Mathematics/", "oops", status=500)
    assert not poll_at(kexue, LATER, "math")[0].ok
    site.routes["/category/Mathematics/"] = page
    announced: list[tuple[str, list[str], list[tuple[str, str]], tuple[int, int]]] = []

    def announce(source: Source, events: list[Event]) -> None:
        conn = sqlite3.connect(state)
        try:
            recoveries = conn.execute(
                "SELECT kind, data FROM events WHERE source = ? AND kind = 'recovered'",
                (source.name,),
            ).fetchall()
            status = conn.execute(
                "SELECT ok, consecutive_failures FROM sources WHERE name = ?", (source.name,)
            ).fetchone()
        finally:
            conn.close()
        announced.append((source.name, [e.kind for e in events], recoveries, status))

    with Store(state) as store:
        refresh_into(store, kexue, LATER + timedelta(hours=1), "math", on_events=announce)
    assert site.requests_to("/category/Mathematics/")[-1].status == 304
    [(name, kinds, recoveries, status)] = announced
    assert (name, kinds, status) == ("math", ["recovered"], (1, 0))
    assert [(kind, json.loads(data)) for kind, data in recoveries] == [
        ("recovered", {"after": "HTTP 500", "failures": 1})
    ]


POLL_IN_ANOTHER_PROCESS = """
import fcntl, os, sqlite3, sys, time
from feedwatch.locks import offset
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.lockf(fd, fcntl.LOCK_EX, 1, offset("math"))
print("polling", flush=True)
time.sleep(0.4)
conn = sqlite3.connect(sys.argv[2], isolation_level=None)
conn.execute("UPDATE sources SET ok = 0, error = 'HTTP 502', consecutive_failures = 1"
             " WHERE name = 'math'")
conn.close()
"""


def test_a_source_polled_by_another_process_at_the_start_is_read_after_that_poll(
    kexue: Path, site: Site
) -> None:
    """A refresh reads what it knows of the sources it could lock at its start in one
    query; one whose poll another process was running is read once that poll ends, and
    sees what it stored (here, a failure that this poll's 304 ends)."""
    state = config_mod.load(kexue).state
    poll_at(kexue, FETCHED_AT)
    other = subprocess.Popen(
        [sys.executable, "-c", POLL_IN_ANOTHER_PROCESS, f"{state}.lock", str(state)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert other.stdout is not None and other.stdout.readline().strip() == "polling"
    events: dict[str, list[str]] = {}
    with Store(state) as store:
        refresh_into(
            store,
            kexue,
            LATER,
            on_events=lambda source, found: events.setdefault(source.name, []).extend(
                e.kind for e in found
            ),
        )
    other.wait(timeout=10)
    assert site.requests_to("/category/Mathematics/")[-1].status == 304
    assert events.get("math") == ["recovered"]
    assert "kexue" not in events


def test_the_flush_timer_writes_held_bookkeeping_that_no_later_poll_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between polls (a daemon's quiet minute) only the timer writes what is held."""
    monkeypatch.setattr(poll_module, "GROUP_MAX_AGE_S", 0.05)
    path = tmp_path / "state.db"

    def committed() -> list[str]:
        conn = sqlite3.connect(path)
        try:
            return [row[0] for row in conn.execute("SELECT name FROM sources")]
        finally:
            conn.close()

    async def quiet_poll_then_wait() -> tuple[list[str], list[str]]:
        with Store(path) as store:
            store.note_unchanged("kexue", LATER)
            before = committed()
            timer = asyncio.create_task(poll_module.flush_periodically(store))
            await asyncio.sleep(0.3)
            timer.cancel()
            return before, committed()

    assert asyncio.run(quiet_poll_then_wait()) == ([], ["kexue"])


# --- the poll's time budget --------------------------------------------------------


def test_a_poll_whose_page_read_outlasts_its_budget_fails_with_that_cause(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Page 1's request has its own timeout; reading the page shares the poll's budget
    (timeout x (max_pages + 1), here 0.5 s x 2), armed once page 1 is not a 304."""
    site.serve_fixture_site()
    path = write_config(tmp_path, kexue_sources(site, home_pages=1), 'timeout = "0.5s"')
    path.write_text(path.read_text().replace('timeout = "5s"\n', ""), encoding="utf-8")

    async def stalled_read(*args: object, **kwargs: object) -> object:
        await asyncio.sleep(30)
        raise AssertionError("the poll's budget did not end the read")

    monkeypatch.setattr(poll_module, "_read", stalled_read)
    config = config_mod.load(path)
    started = time.monotonic()
    results = asyncio.run(refresh(config, [config.source("kexue")]))
    assert [(r.ok, r.error) for r in results] == [(False, "poll took longer than 1s")]
    assert time.monotonic() - started < 5


# --- the OPML index ------------------------------------------------------------------


def opml_renders(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the OPML renderings from now on."""
    calls: list[int] = []
    render = poll_module.feeds.render_opml

    def counted(*args: Any, **kwargs: Any) -> bytes:
        calls.append(1)
        return render(*args, **kwargs)

    monkeypatch.setattr(poll_module.feeds, "render_opml", counted)
    return calls


def test_a_refresh_that_changes_nothing_does_not_render_the_opml_again(
    kexue: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    poll_at(kexue, FETCHED_AT)
    renders = opml_renders(monkeypatch)
    poll_at(kexue, LATER)
    assert renders == []
    opml = (kexue.parent / "feeds" / "index.opml").read_text(encoding="utf-8")
    assert "/kexue.atom" in opml and "/math.atom" in opml


def test_a_source_removed_from_the_config_leaves_the_opml_at_the_next_refresh(
    kexue: Path, site: Site
) -> None:
    poll_at(kexue, FETCHED_AT)
    text = kexue.read_text(encoding="utf-8")
    kexue.write_text(text[: text.index('[[sources]]\nname = "math"')], encoding="utf-8")
    poll_at(kexue, LATER)
    opml = (kexue.parent / "feeds" / "index.opml").read_text(encoding="utf-8")
    assert "/kexue.atom" in opml and "/math.atom" not in opml


@pytest.mark.parametrize("damage", ["deleted", "edited"])
def test_an_opml_changed_behind_our_back_is_written_again(kexue: Path, damage: str) -> None:
    poll_at(kexue, FETCHED_AT)
    path = kexue.parent / "feeds" / "index.opml"
    written = path.read_bytes()
    if damage == "deleted":
        path.unlink()
    else:
        path.write_bytes(written.replace(b"/math.atom", b"/gone.atom"))
    poll_at(kexue, LATER)
    assert path.read_bytes() == written


def test_a_source_whose_stored_meta_cannot_be_decoded_fails_alone(kexue: Path) -> None:
    poll_at(kexue, FETCHED_AT)
    conn = sqlite3.connect(config_mod.load(kexue).state)
    conn.execute("UPDATE source_meta SET meta = '{broken' WHERE name = 'math'")
    conn.commit()
    conn.close()
    results = {r.source: r for r in poll_at(kexue, LATER)}
    assert results["kexue"].ok
    assert not results["math"].ok and "malformed JSON" in (results["math"].error or "")


# --- feed files changed behind our back ---------------------------------------------


@pytest.fixture
def boot_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stands in for Linux's boot_id: write another id to simulate a reboot."""
    path = tmp_path / "boot_id"
    path.write_text("boot-1\n")
    monkeypatch.setattr(poll_module, "_BOOT_ID", path)
    return path


def feed_bytes(config_path: Path, name: str) -> dict[str, bytes]:
    out = config_path.parent / "feeds"
    return {ext: (out / f"{name}.{ext}").read_bytes() for ext in ("rss", "atom", "json")}


@pytest.mark.usefixtures("boot_id")
def test_a_feed_file_deleted_behind_our_back_is_written_again(kexue: Path, site: Site) -> None:
    poll_at(kexue, FETCHED_AT)
    written = feed_bytes(kexue, "math")
    (kexue.parent / "feeds" / "math.json").unlink()
    poll_at(kexue, LATER)
    assert site.requests_to("/category/Mathematics/")[-1].status == 304
    assert feed_bytes(kexue, "math") == written


def test_an_empty_feed_file_found_after_a_reboot_is_written_again(
    kexue: Path, site: Site, boot_id: Path
) -> None:
    poll_at(kexue, FETCHED_AT)
    written = feed_bytes(kexue, "math")
    (kexue.parent / "feeds" / "math.rss").write_bytes(b"")
    boot_id.write_text("boot-2\n")
    poll_at(kexue, LATER)
    assert site.requests_to("/category/Mathematics/")[-1].status == 304
    assert feed_bytes(kexue, "math") == written


def test_feed_sizes_are_checked_once_per_boot(
    kexue: Path, boot_id: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[bool] = []
    present = poll_module.feeds.present_files

    def recorded(output_dir: Path, *, check_sizes: bool) -> tuple[frozenset[str], bool]:
        checks.append(check_sizes)
        return present(output_dir, check_sizes=check_sizes)

    monkeypatch.setattr(poll_module.feeds, "present_files", recorded)
    poll_at(kexue, FETCHED_AT)
    poll_at(kexue, LATER)
    boot_id.write_text("boot-2\n")
    poll_at(kexue, LATER + timedelta(hours=1))
    assert checks == [True, False, True]


def test_a_daemon_poll_renders_a_feed_emptied_behind_its_back(kexue: Path, site: Site) -> None:
    """The daemon's polls spread over hours: each looks at its own feed files."""
    poll_at(kexue, FETCHED_AT)
    written = feed_bytes(kexue, "math")
    (kexue.parent / "feeds" / "math.atom").write_bytes(b"")
    config = config_mod.load(kexue)

    async def daemon_poll() -> PollResult:
        with Store(config.state) as store:
            locks = SourceLocks(lock_path(config.state))
            try:
                async with Fetcher() as fetcher:
                    ctx = poll_module.Context(config, store, fetcher, locks, now=lambda: LATER)
                    source = config.source("math")
                    assert source is not None
                    return await poll_module.poll_source(ctx, source)
            finally:
                locks.close()

    assert asyncio.run(daemon_poll()).ok
    assert site.requests_to("/category/Mathematics/")[-1].status == 304
    assert feed_bytes(kexue, "math") == written
