"""Notifications through apprise: one message per poll, never one per entry.

A poll hands over its changes and events; this module decides whether they are
worth a message (the source's `notify_on`, no backfill flood, a failing streak
announced once and its recovery once) and sends it. Sending happens off the
polling path and a failure to send is only logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import apprise

from feedwatch.config import Config, Source
from feedwatch.models import Event

log = logging.getLogger("feedwatch.notify")

MAX_LISTED = 20


@dataclass(frozen=True)
class Message:
    source: str
    urls: tuple[str, ...]
    title: str
    body: str


def compose(source: Source, events: Sequence[Event], failing_after: int) -> Message | None:
    """The one message a poll deserves, or None when nothing in it is to be announced."""
    wanted = set(source.notify_on)
    if not source.notify:
        return None
    kinds = {e.kind for e in events}
    parts: list[str] = []
    lines: list[str] = []
    if "new" in wanted and "new" in kinds:
        new = [e for e in events if e.kind == "new"]
        parts.append(f"{len(new)} new")
        lines += [f"New: {e.data.get('title')}\n{e.link}" for e in new[:MAX_LISTED]]
        lines += [f"… and {len(new) - MAX_LISTED} more"] if len(new) > MAX_LISTED else []
    if "updated" in wanted and "updated" in kinds:
        edited = [e for e in events if e.kind == "updated"]
        parts.append(f"{len(edited)} updated")
        for e in edited[:MAX_LISTED]:
            fields = ", ".join(e.data.get("fields", []))
            lines.append(f"Updated ({fields}): {e.data.get('title')}\n{e.link}")
        lines += [f"… and {len(edited) - MAX_LISTED} more"] if len(edited) > MAX_LISTED else []
    if "failing" in wanted and "failing" in kinds:
        cause = next(e.data.get("cause") for e in events if e.kind == "failing")
        parts.append("failing")
        lines.append(f"{source.name} has failed {failing_after} times in a row: {cause}")
    recovered = [
        e
        for e in events
        if e.kind == "recovered" and int(e.data.get("failures") or 0) >= failing_after
    ]
    if "recovered" in wanted and recovered:
        parts.append("recovered")
        lines.append(f"{source.name} works again (last error: {recovered[0].data.get('after')})")
    if not parts:
        return None
    return Message(
        source=source.name,
        urls=source.notify,
        title=f"feedwatch: {source.title or source.name}: {', '.join(parts)}",
        body="\n\n".join(lines),
    )


def send(message: Message) -> bool:
    """Blocking send to every URL of the message; False (and a log line) when any failed."""
    try:
        sender = apprise.Apprise()
        for url in message.urls:
            if not sender.add(url):
                log.error("%s: notify URL not understood by apprise: %s", message.source, url)
        ok = bool(sender) and sender.notify(title=message.title, body=message.body)
    except Exception as err:
        log.error("%s: notification failed: %r", message.source, err)
        return False
    if not ok:
        log.error("%s: notification could not be sent", message.source)
    return bool(ok)


class Notifier:
    """Collects the messages of a run; `refresh` flushes at the end, the daemon sends at once."""

    def __init__(self, config: Config, *, immediate: bool = False) -> None:
        self.failing_after = config.failing_after
        self.immediate = immediate
        self.pending: list[Message] = []
        self.tasks: set[asyncio.Task[bool]] = set()

    def on_poll(self, source: Source, events: list[Event]) -> None:
        message = compose(source, events, self.failing_after)
        if message is None:
            return
        if not self.immediate:
            self.pending.append(message)
            return
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(send, message))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def flush(self) -> None:
        for message in self.pending:
            send(message)
        self.pending.clear()
