"""`feedwatch run` as a real subprocess: it polls a local site and serves feeds to readers.

One daemon is started for the module (starting it takes a second or two); each
test checks one behaviour of it, on its own source where the test changes the site.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import feedparser
import httpx
import pytest

from tests.conftest import KEXUE_SELECT, run_cli
from tests.site import TRUTH, Receiver, Site

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float = 20.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except (httpx.HTTPError, OSError, ValueError, KeyError):
            value = None
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


def daemon_config(tmp: Path, site: Site, port: int, hook: str) -> Path:
    sources = "".join(
        f'\n[[sources]]\nname = "{name}"\nurl = "{site.url(path)}"\n{extra}\n{KEXUE_SELECT}'
        for name, path, extra in (
            ("kexue", "/", ""),
            ("math", "/category/Mathematics/", ""),
            ("flaky", "/flaky/", ""),
            ("growing", "/growing/", f'notify = ["{hook}"]'),
        )
    )
    path = tmp / "config.toml"
    path.write_text(
        f'[feedwatch]\nlisten = "127.0.0.1:{port}"\nbase_url = "http://127.0.0.1:{port}/"\n'
        f'interval = "1s"\ntimezone = "Asia/Shanghai"\ntimeout = "3s"\n{sources}',
        encoding="utf-8",
    )
    return path


class Daemon:
    def __init__(self, site: Site, tmp: Path) -> None:
        self.site = site
        self.port = free_port()
        self.receiver = Receiver()
        self.config = daemon_config(tmp, site, self.port, self.receiver.url)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = (tmp / "daemon.log").open("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "feedwatch", "run", "--config", str(self.config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def get(self, path: str, **headers: str) -> httpx.Response:
        return httpx.get(self.base + path, headers=headers, timeout=5)

    def health(self) -> dict[str, Any]:
        return self.get("/healthz").json()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    site = Site().start()
    site.serve_fixture_site()
    site.put("/flaky/", site.fixture("home-2.html"))
    site.put("/growing/", site.fixture("home-3.html"))
    d = Daemon(site, tmp_path_factory.mktemp("daemon"))
    try:
        wait_for(
            lambda: all(
                d.get(f"/{n}.{x}").status_code == 200
                for n in ("kexue", "math")
                for x in ("atom", "rss")
            )
        )
        yield d
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
        d.receiver.stop()
        site.stop()


def test_served_feeds_carry_the_site_entries(daemon: Daemon) -> None:
    want = {daemon.site.local(e["link"]) for e in TRUTH["pages"]["home-1.html"]["entries"]}
    for ext in ("atom", "rss"):
        parsed = feedparser.parse(daemon.get(f"/kexue.{ext}").content)
        assert parsed.bozo == 0
        assert {e.link for e in parsed.entries} == want
    assert {item["url"] for item in daemon.get("/kexue.json").json()["items"]} == want


def test_the_reader_library_sees_every_entry_title(daemon: Daemon, tmp_path: Path) -> None:
    from reader import make_reader

    reader = make_reader(str(tmp_path / "reader.sqlite"))
    try:
        for ext in ("atom", "rss"):
            reader.add_feed(f"{daemon.base}/math.{ext}")
        reader.update_feeds()
        for ext in ("atom", "rss"):
            titles = {e.title for e in reader.get_entries(feed=f"{daemon.base}/math.{ext}")}
            want = {e["title"] for e in TRUTH["pages"]["category-1.html"]["entries"] if e["title"]}
            assert want <= titles and len(titles) == 8
    finally:
        reader.close()


def test_feeds_are_served_with_their_content_types(daemon: Daemon) -> None:
    types = {
        "/kexue.rss": "application/rss+xml; charset=utf-8",
        "/kexue.atom": "application/atom+xml; charset=utf-8",
        "/kexue.json": "application/feed+json",
        "/index.opml": "text/x-opml",
        "/": "text/html; charset=utf-8",
        "/healthz": "application/json",
    }
    for path, content_type in types.items():
        response = daemon.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(content_type), path


def test_a_conditional_get_with_the_etag_is_not_modified(daemon: Daemon) -> None:
    first = daemon.get("/math.atom")
    again = daemon.get("/math.atom", **{"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert first.headers["last-modified"]


def test_head_answers_headers_without_a_body(daemon: Daemon) -> None:
    plain = {"Accept-Encoding": "identity"}
    response = httpx.head(daemon.base + "/math.rss", headers=plain, timeout=5)
    assert response.status_code == 200 and response.content == b""
    body = daemon.get("/math.rss", **plain).content
    assert int(response.headers["content-length"]) == len(body) > 0


@pytest.mark.parametrize(
    "path",
    ["/../config.toml", "/%2e%2e/config.toml", "/..%2fconfig.toml", "//etc/passwd", "/state.db"],
)
def test_paths_outside_the_feeds_are_not_found(daemon: Daemon, path: str) -> None:
    with httpx.Client() as client:
        request = client.build_request("GET", daemon.base + "/")
        request.url = request.url.copy_with(raw_path=path.encode())
        assert client.send(request).status_code == 404


def test_index_page_offers_feed_autodiscovery(daemon: Daemon) -> None:
    page = daemon.get("/").text
    assert 'rel="alternate"' in page and 'type="application/atom+xml"' in page
    assert "/kexue.atom" in page


def test_a_new_post_appears_in_the_served_feed(daemon: Daemon) -> None:
    page = daemon.site.routes["/growing/"].body.decode()
    post = (
        '<div class="post"><div class="post-date"><span class="day">1</span> '
        '<span class="month">Jan</span></div><h2 class="post-title"><a href="/archives/77777">'
        'Fresh post</a></h2><div class="post-body"><p>Hello.</p></div></div>'
    )
    daemon.site.put(
        "/growing/", page.replace('<div class="pagination"', post + '<div class="pagination"', 1)
    )
    assert daemon.receiver.messages == []
    assert wait_for(
        lambda: (
            "Fresh post"
            in {e.title for e in feedparser.parse(daemon.get("/growing.atom").content).entries}
        )
    )
    wait_for(lambda: daemon.receiver.messages)
    assert len(daemon.receiver.messages) == 1
    assert "Fresh post" in daemon.receiver.messages[0]["message"]


def test_a_failing_source_backs_off_while_others_keep_updating(daemon: Daemon) -> None:
    daemon.site.put("/flaky/", "down", status=503)
    health = wait_for(
        lambda: (h := daemon.health())["sources"]["flaky"]["consecutive_failures"] >= 2 and h
    )
    flaky = health["sources"]["flaky"]
    assert flaky["ok"] is False and "503" in flaky["error"]
    polls = len(daemon.site.requests_to("/category/Mathematics/"))
    wait_for(lambda: len(daemon.site.requests_to("/category/Mathematics/")) > polls + 2)
    failures = [r for r in daemon.site.requests_to("/flaky/") if r.status == -1 or r.status == 503]
    assert len(failures) <= 5
    rows = json.loads(run_cli("status", "--json", "--config", str(daemon.config)).stdout)
    row = next(r for r in rows if r["source"] == "flaky")
    assert row["result"].startswith("error: HTTP 503") and row["consecutive_failures"] >= 2
    next_poll = datetime.fromisoformat(row["next_poll"])
    last_poll = datetime.fromisoformat(row["last_poll"])
    assert (next_poll - last_poll).total_seconds() >= 1.5


def test_a_concurrent_refresh_succeeds_without_duplicates(daemon: Daemon) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "feedwatch",
            "refresh",
            "kexue",
            "math",
            "--config",
            str(daemon.config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "locked" not in result.stderr
    db = sqlite3.connect(daemon.config.parent / "state.db", timeout=30)
    total, distinct = db.execute(
        "select count(*), count(distinct source || link) from entries"
    ).fetchone()
    assert total == distinct


def test_healthz_reports_each_source(daemon: Daemon) -> None:
    health = daemon.health()
    assert health["ok"] is True
    assert set(health["sources"]) == {"kexue", "math", "flaky", "growing"}
    assert health["sources"]["kexue"]["next_poll"]


def test_status_prints_a_table_of_sources(daemon: Daemon) -> None:
    result = run_cli("status", "--config", str(daemon.config))
    assert result.exit_code == 0
    for word in ("source", "last poll", "result", "entries", "kexue", "math"):
        assert word in result.stdout


def test_opml_lists_every_feed(daemon: Daemon) -> None:
    opml = daemon.get("/index.opml").text
    for name in ("kexue", "math", "growing"):
        assert f"/{name}.atom" in opml


def test_an_invalid_config_on_reload_keeps_the_running_one(daemon: Daemon) -> None:
    good = daemon.config.read_text(encoding="utf-8")
    daemon.config.write_text(good + "\n[[sources]]\nname = 'Bad Name'\n", encoding="utf-8")
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "config reload failed" in daemon.output())
    daemon.config.write_text(good, encoding="utf-8")
    assert daemon.proc.poll() is None
    assert daemon.get("/healthz").status_code == 200


def test_sighup_reloads_the_config_and_schedules_added_sources(daemon: Daemon) -> None:
    daemon.site.put("/added/", daemon.site.fixture("mixed-1.html"))
    text = daemon.config.read_text(encoding="utf-8")
    added = f'\n[[sources]]\nname = "added"\nurl = "{daemon.site.url("/added/")}"\n{KEXUE_SELECT}'
    daemon.config.write_text(text + added, encoding="utf-8")
    daemon.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: daemon.get("/added.atom").status_code == 200)
    assert "added" in daemon.health()["sources"]


def test_an_edited_config_file_is_reloaded_without_a_signal(daemon: Daemon) -> None:
    daemon.site.put("/touched/", daemon.site.fixture("home-2.html"))
    text = daemon.config.read_text(encoding="utf-8")
    added = (
        f'\n[[sources]]\nname = "touched"\nurl = "{daemon.site.url("/touched/")}"\n{KEXUE_SELECT}'
    )
    daemon.config.write_text(text + added, encoding="utf-8")
    assert wait_for(lambda: daemon.get("/touched.atom").status_code == 200)
    assert "config reloaded" in daemon.output()


def test_sigterm_stops_the_daemon_cleanly(daemon: Daemon) -> None:
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=10) == 0
    assert "Traceback" not in daemon.output(), daemon.output()[-4000:]
    db = sqlite3.connect(daemon.config.parent / "state.db")
    assert db.execute("pragma integrity_check").fetchone() == ("ok",)
    assert json.loads((daemon.config.parent / "feeds" / "kexue.json").read_text())["items"]
