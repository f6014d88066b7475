"""One measured run, in a fresh process: feedwatch's refresh, or the bare floor.

    python bench/worker.py refresh CONFIG [--stages]
    python bench/worker.py floor JOBS_JSON [--transport aiohttp|httpx] [--extract feedwatch|bare]
        --state STATE_JSON

Prints one JSON object. Only the work is timed, not the interpreter start or the imports,
for both kinds of run alike; the peak RSS (ru_maxrss) is the whole process's, and that
of the largest page reader process is given apart. CPU time counts both.

`refresh` is `feedwatch refresh` minus the argument parsing and the summary lines
(the same `poll.refresh` call with the same notifier hook). `--stages` adds timers around
the pipeline's synchronous stages. They keep exclusive time (a stage called inside
another pauses its caller's clock), so the stages add up; whatever is left of the
wall time is fetching and the event loop. `read` (parse, extract, dates, fingerprints)
is only what this process read itself: pages read by a worker process (feedwatch.workers)
cost this process nothing but waiting. The timers cost ~0.4 us per call and a warm
poll makes ~6 calls that they wrap: under 1 % of a warm refresh, but the runs compared
with the floor for warm and one_changed go without them all the same.

`floor` is the fetch + parse + extract work alone: one shared httpx client with the same
transport and concurrency, conditional GETs with the ETags it keeps in a JSON file (read
and written inside the timing, as a refresh reads and writes its store), then
`--extract feedwatch` (default) runs feedwatch's own parse and extract (clean teasers,
canonical links), so what feedwatch adds on top is its store, dates, diff and feeds;
`--extract bare` only picks each entry's fields with selectolax and the same selectors
(no sanitizing): the least any tool could do. No store, no dates, no feeds either way.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class Stages:
    """Exclusive wall time per stage of nested synchronous calls."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._stack: list[list[Any]] = []

    def wrap(self, stage: str, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            now = time.perf_counter()
            if self._stack:
                outer = self._stack[-1]
                self.totals[outer[0]] = self.totals.get(outer[0], 0.0) + now - outer[1]
            self._stack.append([stage, now])
            self.calls[stage] = self.calls.get(stage, 0) + 1
            try:
                return func(*args, **kwargs)
            finally:
                end = time.perf_counter()
                name, start = self._stack.pop()
                self.totals[name] = self.totals.get(name, 0.0) + end - start
                if self._stack:
                    self._stack[-1][1] = end

        return timed


def _cpu(who: int = resource.RUSAGE_SELF) -> float:
    """CPU seconds (user + system) of this process, or of its ended children (the page
    reader processes): steadier than wall time on a shared machine, where another
    tenant's load stretches every wall-clock figure."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _time_stages(stages: Stages) -> None:
    """Wrap the pipeline's synchronous stages in `stages`' timers."""
    from feedwatch import detect, extract, feeds, poll, readpage
    from feedwatch.store import Store

    # Pages read in this process; a worker process runs the unwrapped functions.
    for module, name in (
        (extract, "parse"), (extract, "extract"), (detect, "detect"), (readpage, "_dated")
    ):  # fmt: skip
        setattr(module, name, stages.wrap("read", getattr(module, name)))
    poll._build_entries = stages.wrap("dates_diff", poll._build_entries)
    poll._commit = stages.wrap("store", poll._commit)
    poll._write_feeds = stages.wrap("feeds", poll._write_feeds)
    poll.write_opml = stages.wrap("feeds", poll.write_opml)
    feeds.write_feeds = stages.wrap("render", feeds.write_feeds)
    for name in dir(Store):
        if not name.startswith("_") and callable(getattr(Store, name)):
            setattr(Store, name, stages.wrap("store", getattr(Store, name)))
    Store.__init__ = stages.wrap("store", Store.__init__)  # type: ignore[method-assign]


def run_refresh(config_path: str, *, timed_stages: bool) -> dict[str, Any]:
    from feedwatch import config as config_mod
    from feedwatch import feeds, poll, workers
    from feedwatch.notify import Notifier

    stages = Stages()
    if timed_stages:
        _time_stages(stages)
    counts = {"feed_files_written": 0, "feed_renders": 0}
    write_if_changed = feeds.write_if_changed
    write_feeds = feeds.write_feeds
    made: list[workers.Workers] = []

    def counted_write(path: Path, data: bytes) -> bool:
        written = write_if_changed(path, data)
        counts["feed_files_written"] += written
        return written

    def counted_render(*args: Any, **kwargs: Any) -> Any:
        counts["feed_renders"] += 1
        return write_feeds(*args, **kwargs)

    def kept_workers(count: int) -> workers.Workers:
        made.append(workers.Workers(count))
        return made[-1]

    feeds.write_if_changed = counted_write
    feeds.write_feeds = counted_render
    poll.Workers = kept_workers  # type: ignore[assignment,misc]

    config = config_mod.load(config_path)
    notifier = Notifier(config)
    gc.freeze()  # as `feedwatch refresh` does (cli.refresh)
    cpu = _cpu()
    children_cpu = _cpu(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    results = uvloop.run(poll.refresh(config, list(config.sources), on_events=notifier.on_poll))
    notifier.flush()
    elapsed = time.perf_counter() - started
    cpu = _cpu() - cpu
    children_cpu = _cpu(resource.RUSAGE_CHILDREN) - children_cpu
    totals = stages.totals
    stage_times = {
        "fetch": elapsed - sum(totals.values()),
        **{k: totals.get(k, 0.0) for k in ("read", "dates_diff", "store")},
        "feeds": totals.get("feeds", 0.0) + totals.get("render", 0.0),
    }
    failed = [r for r in results if not r.ok]
    return {
        "elapsed": elapsed,
        "cpu": cpu + children_cpu,
        "worker_cpu": children_cpu,
        "sources": len(results),
        "failed": len(failed),
        "errors": sorted({r.error or "" for r in failed})[:5],
        "new": sum(r.new for r in results),
        "updated": sum(r.updated for r in results),
        "pages": sum(r.pages for r in results),
        "not_modified": sum(r.not_modified for r in results),
        "stages": stage_times if timed_stages else None,
        "parses": sum(w.reads for w in made),
        "parses_in_workers": sum(w.in_workers for w in made),
        **counts,
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "worker_maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    }


def _links(tree: Any, selectors: dict[str, Any], url: str) -> list[str]:
    """The minimal extraction: each entry's title, link, date text and teaser."""
    from urllib.parse import urljoin

    links = []
    for node in tree.css(selectors["entry"]):
        title = node.css_first(selectors["title"])
        date = node.css_first(selectors["date"])
        teaser = node.css_first(selectors["teaser"])
        href = title.attributes.get("href") if title is not None else None
        if href is None:
            continue
        _ = (
            title.text(deep=True),
            date.text(deep=True) if date is not None else None,
            teaser.html if teaser is not None else None,
            teaser.text(deep=True) if teaser is not None else None,
        )
        links.append(urljoin(url, href))
    return links


async def floor(
    jobs: dict[str, Any], transport: str, state_path: Path, *, full_extract: bool
) -> dict[str, Any]:
    import httpx
    from httpx_aiohttp import AiohttpTransport
    from selectolax.lexbor import LexborHTMLParser

    from feedwatch import extract
    from feedwatch.models import Selectors

    select = jobs["select"]
    selectors = Selectors(**{**select, "exclude": tuple(select.get("exclude", ()))})

    concurrency = jobs["concurrency"]
    etags: dict[str, str]
    known: dict[str, list[str]]
    counts = {"parses": 0, "not_modified": 0, "pages": 0}
    gate = asyncio.Semaphore(concurrency)

    async def source(client: httpx.AsyncClient, url: str) -> None:
        async with gate:
            for _ in range(jobs["max_pages"]):
                headers = {"If-None-Match": etags[url]} if url in etags else {}
                response = await client.get(url, headers=headers)
                counts["pages"] += 1
                if response.status_code == 304:
                    counts["not_modified"] += 1
                    return
                response.raise_for_status()
                if "etag" in response.headers:
                    etags[url] = response.headers["etag"]
                text = response.text
                counts["parses"] += 1
                if full_extract:
                    tree = extract.parse(text)
                    found = extract.extract(text, url, selectors, jobs["next_page"], tree=tree)
                    links = [entry.link for entry in found.entries]
                else:
                    tree = LexborHTMLParser(text)
                    links = _links(tree, select, url)
                seen = set(known.get(url, ()))
                known[url] = links
                if links and all(link in seen for link in links):
                    return
                nxt = tree.css_first(jobs["next_page"]) if jobs["next_page"] else None
                if nxt is None or not nxt.attributes.get("href"):
                    return
                url = str(response.url.join(nxt.attributes["href"]))

    # Timed as in a refresh: reading and saving what the run knows (here its ETags and
    # links, in a JSON file), and creating the client (its TLS context: ~20 ms). What the
    # script loaded is kept out of the garbage collector's way, as it is there.
    gc.freeze()
    cpu = _cpu()
    started = time.perf_counter()
    state = json.loads(state_path.read_bytes()) if state_path.exists() else {}
    etags, known = state.setdefault("etags", {}), state.setdefault("links", {})
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    kind = AiohttpTransport(limits=limits) if transport == "aiohttp" else None
    async with httpx.AsyncClient(transport=kind, limits=limits) as client:
        await asyncio.gather(*(source(client, url) for url in jobs["urls"]))
    state_path.write_text(json.dumps(state))
    elapsed = time.perf_counter() - started
    cpu = _cpu() - cpu
    return {
        "elapsed": elapsed,
        "cpu": cpu,
        **counts,
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("refresh", "floor"))
    parser.add_argument("path")
    parser.add_argument(
        "--stages", action="store_true", help="refresh: time the stages (~0.4 us per call)"
    )
    parser.add_argument("--transport", default="aiohttp", choices=("aiohttp", "httpx"))
    parser.add_argument("--state", help="floor: JSON file of ETags and links, read and updated")
    parser.add_argument(
        "--extract",
        default="feedwatch",
        choices=("feedwatch", "bare"),
        help="floor: feedwatch's own extract (clean teasers), or bare field picking",
    )
    args = parser.parse_args()
    if args.mode == "refresh":
        out = run_refresh(args.path, timed_stages=args.stages)
    else:
        jobs = json.loads(Path(args.path).read_text())
        out = uvloop.run(
            floor(jobs, args.transport, Path(args.state), full_extract=args.extract == "feedwatch")
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
