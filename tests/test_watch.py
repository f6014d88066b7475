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
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
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
from tests.site import TRUTH, Receiver, Site

T0 = datetime.fromisoformat(TRUTH["pages"]["home-1.html"]["fetched_at"])
PAGE1 = TRUTH["pages"]["home-1.html"]["entries"]
SITE_TITLE = "科学空间|Scientific Spaces"
PAGINATION = '\t\t<div class="pagination" role="navigation">'


def at(hours: int) -> datetime:
    return T0 + timedelta(hours=hours)


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
        rf'\t\t<div class="post" id="post-{post_id}">\n.*?\n\t\t</div>\n',
        "",
        home(site),
        count=1,
        flags=re.S,
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


def test_an_edited_title_and_teaser_is_one_updated_event_and_one_message(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    config = watch(tmp_path, blog, receiver)
    poll(config, at(0))
    edit(blog, "从JL引理看熵不变性Attention<", "从JL引理看熵不变性注意力机制<")
    edit(blog, "Softmax,简单来说就是", "Softmax,简而言之就是")
    assert poll(config, at(1)).summary() == "kexue: 0 new, 1 updated, 7 seen"
    assert history(config, since=at(1)) == [
        (
            "updated",
            link(blog, 9588),
            {
                "title": "从JL引理看熵不变性注意力机制",
                "fields": ["title", "teaser"],
                "title_diff": "从JL引理看熵不变性[-Attention-]{+注意力机制+}",
                "teaser_diff": (
                    "…》中笔者提出了熵不变性Softmax,简[-单来说-]{+而言之+}就是往Softmax之前的Attention…"
                ),
            },
        )
    ]
    assert [(m["title"], m["message"]) for m in receiver.messages] == [
        (
            f"feedwatch: {SITE_TITLE}: 1 updated",
            f"Updated (title, teaser): 从JL引理看熵不变性注意力机制\n{link(blog, 9588)}",
        )
    ]


def test_a_chinese_teaser_edit_diffs_by_character(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    config = watch(tmp_path, blog, receiver)
    poll(config, at(0))
    edit(blog, "尺度定律(Scaling Law),指的是", "尺度定律(Scaling Law),说的是")
    poll(config, at(1))
    [(kind, _, data)] = history(config, since=at(1))
    assert (kind, data["fields"]) == ("updated", ["teaser"])
    assert data["teaser_diff"] == (
        "尺度定律(Scaling Law),[-指-]{+说+}的是模型能力与模型尺度之间的渐近关系。具…"
    )


def test_a_counter_only_change_is_no_event_and_no_message(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    title = "基于量子化假设推导模型的尺度定律(Scaling Law)"
    edit(blog, f"{title}<", f"{title} (1,234 views)<")
    edit(
        blog,
        "本文一同来欣赏一下。</p>",
        "本文一同来欣赏一下。</p><p>12345位读者 | 3条评论 | 2 days ago</p>",
    )
    config = watch(tmp_path, blog, receiver)
    poll(config, at(0))
    edit(blog, "(1,234 views)", "(1,301 views)")
    edit(blog, "12345位读者 | 3条评论 | 2 days ago", "12399位读者 | 5条评论 | 3 days ago")
    assert poll(config, at(1)).summary() == "kexue: 0 new, 0 updated, 8 seen"
    assert blog.requests_to("/")[-1].status == 200
    assert history(config, since=at(1)) == []
    assert receiver.messages == []


@pytest.mark.parametrize(("ignore", "updated"), [("ignore = ['赞助商:[^。]*。']", 0), ("", 1)])
def test_text_matching_an_ignore_rule_never_counts_as_an_edit(
    tmp_path: Path, blog: Site, receiver: Receiver, ignore: str, updated: int
) -> None:
    edit(blog, "本文一同来欣赏一下。</p>", "本文一同来欣赏一下。</p><p>赞助商:甲云主机八折。</p>")
    config = watch(tmp_path, blog, receiver, ignore)
    poll(config, at(0))
    edit(blog, "赞助商:甲云主机八折。", "赞助商:乙云主机首月免费。")
    assert poll(config, at(1)).updated == updated
    assert len(history(config, since=at(1))) == updated
    assert len(receiver.messages) == updated


# removal from page 1


def test_the_newest_post_vanishing_from_page_one_is_recorded_as_removed(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    config = watch(tmp_path, blog, receiver)
    poll(config, at(0))
    unpublish(blog, 10088)
    assert poll(config, at(1)).summary() == "kexue: 0 new, 0 updated, 7 seen"
    assert history(config, since=at(1)) == [
        (
            "removed",
            link(blog, 10088),
            {"title": "Cool Papers更新:简单搭建了一个站内检索系统", "dropped": False},
        )
    ]
    assert receiver.messages == []
    assert link(blog, 10088) in {e.link for e in atom(config).entries}


def test_a_post_in_the_middle_vanishing_is_recorded_as_removed_once(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    config = watch(tmp_path, blog, receiver)
    poll(config, at(0))
    unpublish(blog, 9811)
    poll(config, at(1))
    poll(config, at(2))
    assert [(kind, link) for kind, link, _ in history(config, since=at(1))] == [
        ("removed", link(blog, 9811))
    ]


def test_a_post_pushed_off_the_old_end_of_page_one_is_not_removed(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    config = watch(tmp_path, blog, receiver)
    poll(config, at(0))
    unpublish(blog, 9588)
    publish(blog, 10099, 9, "May", "新文章", "开头。")
    poll(config, at(1))
    assert [(kind, link) for kind, link, _ in history(config, since=at(1))] == [
        ("new", link(blog, 10099))
    ]
    assert receiver.titles() == [f"feedwatch: {SITE_TITLE}: 1 new"]


def test_drop_removed_takes_the_vanished_post_out_of_the_feed(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    config = watch(tmp_path, blog, receiver, "drop_removed = true")
    poll(config, at(0))
    unpublish(blog, 10088)
    poll(config, at(1))
    [(kind, _, data)] = history(config, since=at(1))
    assert (kind, data["dropped"]) == ("removed", True)
    links = {e.link for e in atom(config).entries}
    assert link(blog, 10088) not in links and len(links) == 7


# failures


def test_a_failing_streak_is_announced_once_and_its_recovery_once(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    config = watch(tmp_path, blog, receiver)
    poll(config, at(0))
    page = home(blog)
    blog.put("/", "oops", status=500)
    sent: list[int] = []
    for hour in (1, 2, 3, 4):
        assert poll(config, at(hour)).summary() == "kexue: error: HTTP 500"
        sent.append(len(receiver.messages))
    blog.put("/", page)
    poll(config, at(5))
    poll(config, at(6))
    assert sent == [0, 0, 1, 1]
    assert [(m["title"], m["message"]) for m in receiver.messages] == [
        (f"feedwatch: {SITE_TITLE}: failing", "kexue has failed 3 times in a row: HTTP 500"),
        (f"feedwatch: {SITE_TITLE}: recovered", "kexue works again (last error: HTTP 500)"),
    ]
    assert [(kind, data) for kind, _, data in history(config, since=at(1))] == [
        ("recovered", {"after": "HTTP 500", "failures": 4}),
        ("error", {"cause": "HTTP 500", "failures": 4}),
        ("failing", {"cause": "HTTP 500", "failures": 3}),
        ("error", {"cause": "HTTP 500", "failures": 3}),
        ("error", {"cause": "HTTP 500", "failures": 2}),
        ("error", {"cause": "HTTP 500", "failures": 1}),
    ]


def test_a_short_failing_streak_recovers_without_a_message(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    config = watch(tmp_path, blog, receiver)
    poll(config, at(0))
    page = home(blog)
    blog.put("/", "oops", status=503)
    poll(config, at(1))
    poll(config, at(2))
    blog.put("/", page)
    poll(config, at(3))
    assert history(config, since=at(3)) == [
        ("recovered", None, {"after": "HTTP 503", "failures": 2})
    ]
    assert receiver.messages == []


def test_a_failing_first_poll_then_a_backfill_announces_only_the_recovery(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    config = watch(tmp_path, blog, receiver, settings="failing_after = 1")
    page = home(blog)
    blog.put("/", "gone", status=404)
    poll(config, at(0))
    blog.put("/", page)
    assert poll(config, at(1)).new == 8
    assert receiver.titles() == [
        f"feedwatch: {SITE_TITLE}: failing",
        f"feedwatch: {SITE_TITLE}: recovered",
    ]


def test_selectors_matching_nothing_are_recorded_as_drift(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    config = watch(tmp_path, blog, receiver)
    poll(config, at(0))
    blog.put("/", "<html><body><article><h1>Redesigned</h1></article></body></html>")
    poll(config, at(1))
    cause = f"selectors matched no entries on {blog.url('/')}"
    assert history(config, since=at(1)) == [("drift", None, {"cause": cause, "failures": 1})]
    assert len(stored_entries(config)) == 8


def test_a_notification_that_cannot_be_sent_never_blocks_polling(
    tmp_path: Path, blog: Site, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = write_config(tmp_path, source(blog, f"json://127.0.0.1:{port}/closed"))
    poll(config, at(0))
    publish(blog, 10099, 9, "May", "新文章", "开头。")
    assert poll(config, at(1)).summary() == "kexue: 1 new, 0 updated, 8 seen"
    assert link(blog, 10099) in {e.link for e in atom(config).entries}
    assert "kexue: notification could not be sent" in caplog.text


def stored_entries(config_path: Path) -> dict[str, Any]:
    store = Store(config_mod.load(config_path).state)
    try:
        return store.entries("kexue")
    finally:
        store.close()


# the unchanged-page path


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every index-page parse and extraction of the polls that follow."""
    calls: list[str] = []

    def counting(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(extract, "parse", counting("parse", extract.parse))
    monkeypatch.setattr(extract, "extract", counting("extract", extract.extract))
    return calls


def test_an_unchanged_page_served_again_in_full_is_not_parsed(
    tmp_path: Path, site: Site, receiver: Receiver, parses: list[str]
) -> None:
    site.put("/", site.fixture("home-1.html"), validators=False)
    config = watch(tmp_path, site, receiver)
    poll(config, at(0))
    assert parses == ["parse", "extract"]
    parses.clear()
    assert poll(config, at(1)).summary() == "kexue: 0 new, 0 updated, 8 seen"
    assert [r.status for r in site.requests_to("/")] == [200, 200]
    assert "if-none-match" not in site.requests_to("/")[-1].headers
    assert parses == []


def test_a_page_answered_304_is_not_downloaded_nor_parsed(
    tmp_path: Path, blog: Site, receiver: Receiver, parses: list[str]
) -> None:
    config = watch(tmp_path, blog, receiver)
    poll(config, at(0))
    parses.clear()
    result = poll(config, at(1))
    assert (result.not_modified, result.seen) == (1, 8)
    assert [r.status for r in blog.requests_to("/")] == [200, 304]
    assert parses == []


def test_a_changed_page_is_parsed_again(
    tmp_path: Path, site: Site, receiver: Receiver, parses: list[str]
) -> None:
    site.put("/", site.fixture("home-1.html"), validators=False)
    config = watch(tmp_path, site, receiver)
    poll(config, at(0))
    parses.clear()
    edit(site, "本文一同来欣赏一下。", "本文一同来欣赏一下吧。")
    assert poll(config, at(1)).updated == 1
    assert parses == ["parse", "extract"]


# updated entries in the feeds


def test_an_edited_entry_keeps_its_id_and_gets_a_new_atom_updated(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    config = watch(tmp_path, blog, receiver)
    poll(config, at(0))
    before = {e.link: e for e in atom(config).entries}
    edit(blog, "从JL引理看熵不变性Attention<", "从JL引理看熵不变性注意力<")
    poll(config, at(5))
    after = {e.link: e for e in atom(config).entries}
    edited = link(blog, 9588)
    assert after[edited].id == before[edited].id
    assert after[edited].title == "从JL引理看熵不变性注意力"
    assert before[edited].updated_parsed[:6] == T0.astimezone(UTC).timetuple()[:6]
    assert after[edited].updated_parsed[:6] == at(5).astimezone(UTC).timetuple()[:6]
    untouched = link(blog, 9607)
    assert after[untouched].updated == before[untouched].updated


def test_announce_updates_marks_only_edited_entries_in_every_feed(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    config = watch(tmp_path, blog, receiver, "announce_updates = true")
    poll(config, at(0))
    edit(blog, "尺度定律(Scaling Law),指的是", "尺度定律(Scaling Law),说的是")
    poll(config, at(1))
    feeds = config.parent / "feeds"
    marked = "基于量子化假设推导模型的尺度定律(Scaling Law) (updated)"
    for ext in ("rss", "atom"):
        parsed = feedparser.parse((feeds / f"kexue.{ext}").read_bytes())
        titles = {e.link: e.title for e in parsed.entries}
        assert titles[link(blog, 9607)] == marked
        assert sum(t.endswith("(updated)") for t in titles.values()) == 1
    items = json.loads((feeds / "kexue.json").read_text(encoding="utf-8"))["items"]
    assert [i["title"] for i in items if i["title"].endswith("(updated)")] == [marked]


def test_without_announce_updates_edited_titles_carry_no_marker(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    config = watch(tmp_path, blog, receiver)
    poll(config, at(0))
    edit(blog, "尺度定律(Scaling Law),指的是", "尺度定律(Scaling Law),说的是")
    poll(config, at(1))
    assert not any(e.title.endswith("(updated)") for e in atom(config).entries)


def test_a_counter_change_beside_a_real_edit_names_only_the_edited_field(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    title = "基于量子化假设推导模型的尺度定律(Scaling Law)"
    edit(blog, f"{title}<", f"{title} (1,234 views)<")
    config = watch(tmp_path, blog, receiver)
    poll(config, at(0))
    edit(blog, "(1,234 views)", "(1,301 views)")
    edit(blog, "尺度定律(Scaling Law),指的是", "尺度定律(Scaling Law),说的是")
    poll(config, at(1))
    [(kind, _, data)] = history(config, since=at(1))
    assert (kind, data["fields"], data["title_diff"]) == ("updated", ["teaser"], None)
    assert receiver.messages[0]["message"].startswith("Updated (teaser): ")


def test_on_a_newest_first_page_the_oldest_post_pushed_off_is_not_removed(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    block = re.compile(r'\t\t<div class="post" id="post-\d+">\n.*?\n\t\t</div>\n', re.S)
    page = home(blog)
    posts = block.findall(page)
    start, end = page.index(posts[0]), page.index(posts[-1]) + len(posts[-1])
    blog.put("/", page[:start] + "".join(reversed(posts)) + page[end:])
    config = watch(tmp_path, blog, receiver)
    poll(config, at(0))
    unpublish(blog, 9588)
    unpublish(blog, 10088)
    poll(config, at(1))
    assert [(kind, link) for kind, link, _ in history(config, since=at(1))] == [
        ("removed", link(blog, 10088))
    ]


# the history command


def scenario(tmp_path: Path, blog: Site, receiver: Receiver) -> Path:
    """Backfill, a new post, an edit, a removal, a failure and a recovery, an hour apart."""
    config = watch(tmp_path, blog, receiver, settings="failing_after = 1")
    poll(config, at(0))
    publish(blog, 10099, 9, "May", "新文章:一个测试", "这是新文章的开头。")
    poll(config, at(1))
    edit(blog, "从JL引理看熵不变性Attention<", "从JL引理看熵不变性注意力机制<")
    poll(config, at(2))
    unpublish(blog, 9811)
    poll(config, at(3))
    page = home(blog)
    blog.put("/", "oops", status=500)
    poll(config, at(4))
    blog.put("/", page)
    poll(config, at(5))
    return config


def utc(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds")


def test_history_json_lists_every_kind_newest_first(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    config = scenario(tmp_path, blog, receiver)
    result = run_cli("history", "kexue", "--config", str(config), "--json", "--limit", "7")
    assert result.exit_code == 0, result.stderr
    events = json.loads(result.stdout)
    assert events[:6] == [
        {"at": utc(at(5)), "kind": "recovered", "link": None, "after": "HTTP 500", "failures": 1},
        {"at": utc(at(4)), "kind": "failing", "link": None, "cause": "HTTP 500", "failures": 1},
        {"at": utc(at(4)), "kind": "error", "link": None, "cause": "HTTP 500", "failures": 1},
        {
            "at": utc(at(3)),
            "kind": "removed",
            "link": link(blog, 9811),
            "title": "随机分词再探:从Viterbi Sampling到完美采样算法",
            "dropped": False,
        },
        {
            "at": utc(at(2)),
            "kind": "updated",
            "link": link(blog, 9588),
            "title": "从JL引理看熵不变性注意力机制",
            "fields": ["title"],
            "title_diff": "从JL引理看熵不变性[-Attention-]{+注意力机制+}",
            "teaser_diff": None,
        },
        {
            "at": utc(at(1)),
            "kind": "new",
            "link": link(blog, 10099),
            "title": "新文章:一个测试",
            "backfill": False,
        },
    ]
    assert (events[6]["at"], events[6]["kind"], events[6]["backfill"]) == (utc(at(0)), "new", True)
    assert len(receiver.messages) == 4


def test_history_text_shows_one_line_per_event_with_the_diff_below(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    config = scenario(tmp_path, blog, receiver)
    result = run_cli("history", "kexue", "--config", str(config), "--since", at(1).isoformat())
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "2024-05-10 09:00:00Z  recovered (after: HTTP 500)",
        "2024-05-10 08:00:00Z  failing: HTTP 500 (failure #1)",
        "2024-05-10 08:00:00Z  error: HTTP 500 (failure #1)",
        "2024-05-10 07:00:00Z  removed from index: 随机分词再探:从Viterbi Sampling到完美采样算法"
        f" <{link(blog, 9811)}>",
        f"2024-05-10 06:00:00Z  updated (title): 从JL引理看熵不变性注意力机制 <{link(blog, 9588)}>",
        "      title: 从JL引理看熵不变性[-Attention-]{+注意力机制+}",
        f"2024-05-10 05:00:00Z  new: 新文章:一个测试 <{link(blog, 10099)}>",
    ]


def test_history_since_and_limit_narrow_the_window(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    config = scenario(tmp_path, blog, receiver)
    args = ("history", "kexue", "--config", str(config), "--json")
    since = json.loads(run_cli(*args, "--since", at(3).isoformat()).stdout)
    assert [e["kind"] for e in since] == ["recovered", "failing", "error", "removed"]
    limited = json.loads(run_cli(*args, "--limit", "2").stdout)
    assert [e["kind"] for e in limited] == ["recovered", "failing"]
    assert len(json.loads(run_cli(*args).stdout)) == 8 + 6


def test_history_text_shows_backfill_and_selector_drift(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    config = watch(tmp_path, blog, receiver)
    poll(config, at(0))
    blog.put("/", "<html><body><p>redesigned</p></body></html>")
    poll(config, at(1))
    lines = run_cli("history", "kexue", "--config", str(config)).stdout.splitlines()
    assert lines[0] == (
        f"2024-05-10 05:00:00Z  selector drift: selectors matched no entries on {blog.url('/')}"
        " (failure #1)"
    )
    assert lines[1:] and all(
        line.startswith("2024-05-10 04:00:00Z  new (backfill): ") for line in lines[1:]
    )
    assert len(lines) == 9


def test_history_of_an_unknown_source_exits_2(
    tmp_path: Path, blog: Site, receiver: Receiver
) -> None:
    result = run_cli("history", "nope", "--config", str(watch(tmp_path, blog, receiver)))
    assert result.exit_code == 2
    assert "unknown source 'nope'" in result.stderr
