"""Change watching end to end: history, noise control and notifications.

The reference blog's home page 1 is served by a local site and edited between
polls; apprise delivers to a local JSON webhook that keeps every message, so
each scenario asserts exactly which history events and which messages a poll
produced. Polls run with an explicit clock, so events have known times.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import feedparser
import pytest

from feedwatch import config as config_mod
from feedwatch import extract
from feedwatch.models import PollResult
from feedwatch.notify import Notifier
from feedwatch.poll import refresh
from feedwatch.store import Store
from tests.conftest import KEXUE_SELECT, run_cli, write_config
from tests.site import TRUTH, Site

T0 = datetime.fromisoformat(TRUTH["pages"]["home-1.html"]["fetched_at"])
PAGE1 = TRUTH["pages"]["home-1.html"]["entries"]
SITE_TITLE = "科学空间|Scientific Spaces"
PAGINATION = '\t\t<div class="pagination" role="navigation">'


def at(hours: int) -> datetime:
    return T0 + timedelta(hours=hours)


class Receiver:
    """A webhook on 127.0.0.1 that keeps the JSON body of every POST apprise sends it."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.paths.append(self.path)
                receiver.messages.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def titles(self) -> list[str]:
        return [m["title"] for m in self.messages]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def blog(site: Site) -> Site:
    site.put("/", site.fixture("home-1.html"))
    return site


def source(site: Site, notify: str, extra: str = "") -> str:
    return f"""
[[sources]]
name = "kexue"
url = "{site.url("/")}"
title = "{SITE_TITLE}"
notify = ["{notify}"]
{extra}
{KEXUE_SELECT}
"""


def watch(tmp_path: Path, site: Site, receiver: Receiver, extra: str = "", **kw: str) -> Path:
    return write_config(tmp_path, source(site, receiver.url, extra), kw.get("settings", ""))


def poll(config_path: Path, when: datetime) -> PollResult:
    """One refresh at `when`, with the notifications it deserves sent, as `refresh` does."""
    config = config_mod.load(config_path)
    notifier = Notifier(config)
    [result] = asyncio.run(
        refresh(config, config.sources, now=lambda: when, on_events=notifier.on_poll)
    )
    notifier.flush()
    return result


def history(config_path: Path, since: datetime | None = None) -> list[tuple[str, Any, dict]]:
    """The source's events (newest first) as (kind, link, data)."""
    store = Store(config_mod.load(config_path).state)
    try:
        return [(e.kind, e.link, e.data) for e in store.events("kexue", since=since)]
    finally:
        store.close()


def home(site: Site) -> str:
    return site.routes["/"].body.decode()


def publish(site: Site, post_id: int, day: int, month: str, title: str, teaser: str) -> None:
    """Add a post at the bottom of page 1, which is its newest end on this oldest-first blog."""
    post = (
        f'\t\t<div class="post" id="post-{post_id}">\n'
        f'\t\t\t<div class="post-date"><span class="day">{day}</span>'
        f' <span class="month">{month}</span></div>\n'
        f'\t\t\t<h2 class="post-title"><a href="/archives/{post_id}">{title}</a></h2>\n'
        f'\t\t\t<div class="post-body"><p>{teaser}</p></div>\n'
        "\t\t</div>\n"
    )
    page = home(site)
    assert page.count(PAGINATION) == 1
    site.put("/", page.replace(PAGINATION, post + PAGINATION))


def unpublish(site: Site, post_id: int) -> None:
    page, count = re.subn(
        rf'\t\t<div class="post" id="post-{post_id}">\n.*?\n\t\t</div>\n', "", home(site), 1, re.S
    )
    assert count == 1
    site.put("/", page)


def edit(site: Site, old: str, new: str) -> None:
    page = home(site)
    assert page.count(old) == 1, old
    site.put("/", page.replace(old, new))


def atom(config_path: Path) -> Any:
    return feedparser.parse((config_path.parent / "feeds" / "kexue.atom").read_bytes())


def link(site: Site, post_id: int) -> str:
    return site.url(f"/archives/{post_id}")


# publish


def test_first_poll_is_a_backfill_in_history_and_sends_no_message(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    config = watch(tmp_path, blog, receiver)
    result = run_cli("refresh", "--config", str(config))
    assert result.stdout.splitlines() == ["kexue: 8 new, 0 updated, 0 seen"]
    events = history(config)
    assert sorted(link for _, link, _ in events) == sorted(blog.local(e["link"]) for e in PAGE1)
    assert {(kind, data["backfill"]) for kind, _, data in events} == {("new", True)}
    assert {data["title"] for _, _, data in events} == {e["title"] for e in PAGE1}
    assert receiver.messages == []


def test_refresh_command_sends_one_message_for_a_published_post(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    config = watch(tmp_path, blog, receiver)
    run_cli("refresh", "--config", str(config))
    publish(blog, 10099, 9, "May", "新文章:一个测试", "这是新文章的开头。")
    result = run_cli("refresh", "--config", str(config))
    assert result.stdout.splitlines() == ["kexue: 1 new, 0 updated, 8 seen"]
    assert receiver.paths == ["/hook"]
    assert receiver.messages[0]["title"] == f"feedwatch: {SITE_TITLE}: 1 new"
    assert receiver.messages[0]["message"] == f"New: 新文章:一个测试\n{link(blog, 10099)}"


def test_a_published_post_is_one_new_event_and_one_message(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    config = watch(tmp_path, blog, receiver)
    poll(config, at(0))
    publish(blog, 10099, 9, "May", "新文章:一个测试", "这是新文章的开头。")
    assert poll(config, at(1)).summary() == "kexue: 1 new, 0 updated, 8 seen"
    assert history(config, since=at(1)) == [
        ("new", link(blog, 10099), {"title": "新文章:一个测试", "backfill": False})
    ]
    assert [(m["title"], m["message"]) for m in receiver.messages] == [
        (f"feedwatch: {SITE_TITLE}: 1 new", f"New: 新文章:一个测试\n{link(blog, 10099)}")
    ]


def test_several_new_posts_are_summarised_in_one_message(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    config = watch(tmp_path, blog, receiver)
    poll(config, at(0))
    publish(blog, 10098, 8, "May", "第一篇", "甲。")
    publish(blog, 10099, 9, "May", "第二篇", "乙。")
    poll(config, at(1))
    assert [kind for kind, _, _ in history(config, since=at(1))] == ["new", "new"]
    assert receiver.titles() == [f"feedwatch: {SITE_TITLE}: 2 new"]
    assert receiver.messages[0]["message"] == (
        f"New: 第一篇\n{link(blog, 10098)}\n\nNew: 第二篇\n{link(blog, 10099)}"
    )


def test_the_next_poll_without_changes_sends_nothing(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    config = watch(tmp_path, blog, receiver)
    poll(config, at(0))
    publish(blog, 10099, 9, "May", "新文章", "开头。")
    poll(config, at(1))
    poll(config, at(2))
    assert history(config, since=at(2)) == []
    assert len(receiver.messages) == 1


def test_notify_on_leaves_out_unwanted_kinds(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    config = watch(tmp_path, blog, receiver, 'notify_on = ["updated"]')
    poll(config, at(0))
    publish(blog, 10099, 9, "May", "新文章", "开头。")
    edit(blog, "从JL引理看熵不变性Attention<", "从JL引理看熵不变性注意力<")
    poll(config, at(1))
    assert sorted(kind for kind, _, _ in history(config, since=at(1))) == ["new", "updated"]
    assert receiver.titles() == [f"feedwatch: {SITE_TITLE}: 1 updated"]


# edit


