"""In-process micro-benchmarks on one benchmark page: parse, extract, detect, render feeds.

    python bench/micro.py [--repeat 200]

Prints one JSON object of milliseconds (medians). Run by bench/run.py in its own process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fakesite

from feedwatch import clean, detect, diff, extract, feeds
from feedwatch.models import Entry, Selectors

BASE = "http://127.0.2.1:8080"


def median_ms(func: Callable[[], Any], repeat: int) -> float:
    func()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def entries_for(blog: fakesite.Blog, count: int) -> list[Entry]:
    """`count` feed entries as the store would hold them, from the benchmark's own pages."""
    selectors = Selectors(**{**fakesite.SELECT, "exclude": tuple(fakesite.SELECT["exclude"])})
    now = datetime(2024, 5, 1, tzinfo=UTC)
    out: list[Entry] = []
    page = 1
    while len(out) < count:
        url = blog.url(0, page)
        raws = extract.extract(blog.page(0, page).decode(), url, selectors).entries
        for i, raw in enumerate(raws):
            when = now - timedelta(days=len(out) + i)
            out.append(
                Entry(
                    source="s00000",
                    link=raw.link,
                    title=raw.title or raw.link,
                    title_is_fallback=False,
                    teaser_html=raw.teaser_html,
                    teaser_text=raw.teaser_text,
                    author=raw.author,
                    published=when,
                    date_exact=False,
                    first_seen=when,
                    last_seen=now,
                    updated=when,
                    fingerprint=diff.fingerprint(raw.title, raw.teaser_text),
                )
            )
        page += 1
    return out[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    repeat = args.repeat
    blog = fakesite.make_blog(1, 5, [BASE])
    html = blog.page(0, 1).decode()
    url = blog.url(0)
    selectors = Selectors(**{**fakesite.SELECT, "exclude": tuple(fakesite.SELECT["exclude"])})
    extraction = extract.extract(html, url, selectors)
    teasers = [e.teaser_html for e in extraction.entries]
    out: dict[str, Any] = {"page_bytes": len(html.encode()), "entries": len(teasers)}

    out["parse_ms"] = median_ms(lambda: extract.parse(html), repeat)
    out["parse_extract_ms"] = median_ms(lambda: extract.extract(html, url, selectors), repeat)
    out["extract_per_entry_ms"] = (out["parse_extract_ms"] - out["parse_ms"]) / len(teasers)
    raw_teasers = [n.inner_html or "" for n in extract.parse(html).css(selectors.teaser or "")]
    out["sanitize_per_entry_ms"] = median_ms(
        lambda: [clean.clean_html(t, url) for t in raw_teasers], repeat
    ) / len(teasers)
    out["teaser_text_per_entry_ms"] = median_ms(
        lambda: [clean.html_to_text(t) for t in teasers], repeat
    ) / len(teasers)
    out["fingerprint_per_entry_ms"] = median_ms(
        lambda: [diff.fingerprint(e.title, e.teaser_text) for e in extraction.entries], repeat
    ) / len(teasers)

    found = detect.detect(html, url)
    out["detect_found_entries"] = (
        len(extract.extract(html, url, found.selectors).entries) if found else 0
    )
    out["detect_ms"] = median_ms(lambda: detect.detect(html, url), max(repeat // 4, 10))
    out["detect_vs_extract"] = out["detect_ms"] / out["parse_extract_ms"]

    entries = entries_for(blog, 50)
    meta = feeds.FeedMeta(
        name="s00000",
        title="科学空间|Scientific Spaces",
        site_url=url,
        base_url="http://127.0.0.1:8080/",
        updated=entries[0].updated,
        description="bench",
    )
    out["render_rss_50_ms"] = median_ms(lambda: feeds.render_rss(meta, entries), repeat // 4)
    out["render_atom_50_ms"] = median_ms(lambda: feeds.render_atom(meta, entries), repeat // 4)
    out["render_json_50_ms"] = median_ms(lambda: feeds.render_json(meta, entries), repeat // 4)
    ten = entries[:10]
    out["render_all_10_ms"] = median_ms(
        lambda: (
            feeds.render_rss(meta, ten),
            feeds.render_atom(meta, ten),
            feeds.render_json(meta, ten),
        ),
        repeat // 4,
    )
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10**9))

        def write_new() -> None:
            feeds.write_feeds(Path(tmp), meta, entries[next(counter) % 2 :][:10])

        out["write_feeds_10_changed_ms"] = median_ms(write_new, repeat // 4)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
