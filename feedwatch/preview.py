"""`feedwatch preview`: fetch one index page and show what feedwatch would extract.

It runs the very same fetch, detect and extract code as a poll, so what it
prints (and the `[[sources]]` block it writes) is what a refresh will do; it
never opens the store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import tomli_w

from feedwatch import clean, dates, detect, extract
from feedwatch.config import DEFAULTS, Source
from feedwatch.fetch import Fetcher, FetchError
from feedwatch.models import Selectors

TEASER_CHARS = 60


class PreviewError(Exception):
    """The page could not be fetched; the message says why."""


@dataclass(frozen=True)
class Preview:
    url: str
    how: str
    page_title: str | None
    selectors: Selectors | None
    next_page: str | None
    entries: list[dict[str, Any]]

    def selector_items(self) -> list[tuple[str, str]]:
        if self.selectors is None:
            return []
        items = [
            (key, value)
            for key in ("entry", "title", "link", "date", "author", "teaser")
            if (value := getattr(self.selectors, key))
        ]
        if self.selectors.exclude:
            items.append(("exclude", ", ".join(self.selectors.exclude)))
        if self.next_page:
            items.append(("next_page", self.next_page))
        return items

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "how": self.how,
            "page_title": self.page_title,
            "selectors": dict(self.selector_items())
            | ({"exclude": list(self.selectors.exclude)} if self.selectors else {}),
            "count": len(self.entries),
            "entries": self.entries,
        }

    def as_toml(self) -> str:
        """A `[[sources]]` block to paste into config.toml, selectors included."""
        source: dict[str, Any] = {"name": _slug(self.url), "url": self.url}
        if self.page_title:
            source["title"] = self.page_title
        if self.next_page:
            source["next_page"] = self.next_page
        if self.selectors is not None:
            select = {
                key: value
                for key in ("entry", "title", "link", "date", "author", "teaser")
                if (value := getattr(self.selectors, key))
            }
            if self.selectors.exclude:
                select["exclude"] = list(self.selectors.exclude)
            source["select"] = select
        return tomli_w.dumps({"sources": [source]})


def _slug(url: str) -> str:
    host = urlsplit(url).hostname or "source"
    return re.sub(r"[^a-z0-9_-]+", "-", host.lower().removeprefix("www.")).strip("-") or "source"


async def preview(target: str | Source) -> Preview:
    """Fetch the page of a URL or a configured source and extract it as a poll would."""
    if isinstance(target, Source):
        url, timeout, max_bytes, agent = (
            target.url,
            target.timeout,
            target.max_bytes,
            target.user_agent,
        )
    else:
        url, timeout, max_bytes, agent = (
            target,
            DEFAULTS["timeout"],
            DEFAULTS["max_bytes"],
            DEFAULTS["user_agent"],
        )
    try:
        async with Fetcher(max_connections=2) as fetcher:
            page = await fetcher.get(
                url, validators=None, timeout=timeout, max_bytes=max_bytes, user_agent=agent
            )
    except FetchError as err:
        raise PreviewError(f"cannot fetch {url}: {err}") from err
    html = page.text or ""
    tree = extract.parse(html)
    selectors: Selectors | None = None
    next_page: str | None = None
    how = "auto-detected"
    if isinstance(target, Source) and target.select is not None:
        selectors, next_page, how = target.select, target.next_page, "configured selectors"
    else:
        found = detect.detect(html, page.final_url, tree=tree)
        if found is not None:
            selectors, next_page = found.selectors, found.next_page
    if selectors is None:
        return Preview(url, how, None, None, None, [])
    extraction = extract.extract(html, page.final_url, selectors, next_page, tree=tree)
    tz = target.tz if isinstance(target, Source) else None
    parts = [dates.parse_date(r.date_text, r.date_attr) for r in extraction.entries]
    resolved = dates.resolve_dates(parts, now=datetime.now(UTC), tz=tz or UTC)
    rows = [
        {
            "date": when.date().isoformat() if when else None,
            "title": raw.title or clean.title_from_teaser(raw.teaser_html),
            "link": raw.link,
            "teaser": raw.teaser_text[:TEASER_CHARS],
        }
        for raw, when in zip(extraction.entries, resolved, strict=True)
    ]
    return Preview(url, how, extraction.page_title, selectors, next_page, rows)
