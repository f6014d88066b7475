"""The benchmark's web site: N blogs shaped like the reference blog, served from 127.0.0.1.

    python bench/fakesite.py --sources N --pages P [--hosts K]

Runs in its own process so that its CPU time never counts against the client being
measured. It prints one JSON line (the base URL of each host and the control URL) and
serves until stdin closes.

Pages are built from the reference blog's own markup (tests/fixtures/home-*.html: its
head, posts, pagination, sidebar and scripts), padded with more sidebar widgets and an
inline script to PAGE_BYTES, as real index pages are. Every source lives on one of K
loopback addresses (127.0.2.x), because feedwatch limits requests per host, as it should
for real sites, and a thousand sites are a thousand hosts.

Each page has a strong ETag and answers If-None-Match with 304. Control endpoints
(host 0): POST /_ctl/bump {"sources": [i, ...]} publishes one new post on each listed
source (every page of it shifts by one, as on a real blog); GET /_ctl/stats and POST
/_ctl/reset count requests by kind; POST /_ctl/validators?on=0 stops sending ETags
(every GET is then a 200 with the same bytes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from aiohttp import web

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
ORIGIN = "https://kexue.fm"
PAGE_BYTES = 100 * 1024
ENTRIES_PER_PAGE = 10
HOST_PREFIX = "127.0.2."
FIRST_DAY = date(2021, 1, 1)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# Selectors of the reference blog, as in config.toml.
SELECT = {
    "entry": "div.post",
    "title": "h2.post-title a",
    "link": "h2.post-title a, a.more-link",
    "date": ".post-date",
    "author": ".post-meta .author",
    "teaser": ".post-body",
    "exclude": ["p.more", "a.more-link", "script"],
}
NEXT_PAGE = "div.pagination a.next"

_POST = re.compile(r'(\t\t<div class="post" id="post-(\d+)">.*?\n\t\t</div>\n)', re.S)
_DATE = re.compile(r'<div class="post-date">.*?</div>')


@dataclass(frozen=True)
class Templates:
    """The reference blog's markup, cut into parts with placeholders for what varies."""

    head: str
    posts: tuple[str, ...]
    tail: str
    article: str


def load_templates() -> Templates:
    home = (FIXTURES / "home-1.html").read_text(encoding="utf-8")
    posts: list[str] = []
    for name in ("home-1.html", "home-2.html", "home-3.html"):
        for block, post_id in _POST.findall((FIXTURES / name).read_text(encoding="utf-8")):
            block = _DATE.sub("\x00DATE\x00", block)
            block = block.replace(f"{ORIGIN}/archives/{post_id}", "\x00LINK\x00")
            block = block.replace(f"post-{post_id}", "post-\x00ID\x00")
            posts.append(block.replace(ORIGIN, "\x00BASE\x00"))
    first = home.index('\t\t<div class="post"')
    main_end = home.index("\t</main>")
    aside_end = home.index("\t</aside>")
    tail = (
        "\x00PAGINATION\x00"
        + home[main_end:aside_end]
        + "\x00SIDEBAR\x00"
        + home[aside_end:].replace("</body>", "\x00SCRIPT\x00</body>")
    )
    article = (FIXTURES / "article-9588.html").read_text(encoding="utf-8")
    article = article.replace(f"{ORIGIN}/archives/9588", "\x00LINK\x00")
    article = article.replace("2023-04-10", "\x00DAY\x00").replace(ORIGIN, "\x00BASE\x00")
    return Templates(
        head=home[:first].replace(ORIGIN, "\x00BASE\x00"),
        posts=tuple(posts),
        tail=tail.replace(ORIGIN, "\x00BASE\x00"),
        article=article,
    )


def _sidebar_item(k: int) -> str:
    return (
        f'\t\t\t<li><a href="\x00BASE\x00/archives/{7000 + k}" title="热门文章 {k}">'
        f"从零开始理解第{k}个模型:注意力、扩散与变分推断的笔记</a> <span>({k * 37 % 900}"
        ")</span></li>\n"
    )


def _script_item(k: int) -> str:
    return (
        f'{{"id":{k},"slug":"post-{k}","views":{k * 131 % 99991},'
        f'"tags":["math","ml","note-{k % 17}"],"thumb":"/usr/uploads/{k % 12:02d}/{k}.png"}},'
    )


def _pad(deficit: int) -> tuple[str, str]:
    """Sidebar widgets and an inline data script that together fill `deficit` bytes."""
    sidebar: list[str] = ['\t\t<section class="widget widget-popular">\n\t\t\t<ul>\n']
    script: list[str] = ["<script>window.__SITE_DATA__ = ["]
    size = 0
    k = 0
    while size < deficit:
        item = _sidebar_item(k) if k % 2 == 0 else _script_item(k)
        (sidebar if k % 2 == 0 else script).append(item)
        size += len(item.encode())
        k += 1
    sidebar.append("\t\t\t</ul>\n\t\t</section>\n")
    script.append("{}];\nwindow.__SITE_DATA__.pop();\n</script>\n")
    return "".join(sidebar), "".join(script)


@dataclass
class Blog:
    """All sources of the site; `head[i]` counts the posts source i has published."""

    templates: Templates
    bases: list[str]
    pages: int
    head: list[int] = field(default_factory=list)
    _pad: dict[int, tuple[str, str]] = field(default_factory=dict)

    def base(self, source: int) -> str:
        return self.bases[source % len(self.bases)]

    def url(self, source: int, page: int = 1) -> str:
        path = f"/s{source}/" if page == 1 else f"/s{source}/page/{page}/"
        return self.base(source) + path

    def link(self, source: int, uid: int) -> str:
        return f"{self.base(source)}/s{source}/archives/{uid}"

    def etag(self, source: int, page: int) -> str:
        return f'"{source}-{self.head[source]}-{page}"'

    def post(self, source: int, uid: int) -> str:
        day = FIRST_DAY + timedelta(days=uid)
        block = self.templates.posts[(uid + source) % len(self.templates.posts)]
        return (
            block.replace("\x00LINK\x00", self.link(source, uid))
            .replace("\x00ID\x00", str(uid))
            .replace(
                "\x00DATE\x00",
                f'<div class="post-date"><span class="day">{day.day}</span>'
                f' <span class="month">{MONTHS[day.month - 1]}</span></div>',
            )
        )

    def page(self, source: int, page: int) -> bytes:
        """Index page `page` (1 = newest) of `source`, about PAGE_BYTES long."""
        newest = self.head[source] - 1 - (page - 1) * ENTRIES_PER_PAGE
        uids = range(newest, max(newest - ENTRIES_PER_PAGE, -1), -1)
        pagination = '\t\t<div class="pagination" role="navigation">\n'
        pagination += f'\t\t\t<span class="page-number current">{page}</span>\n'
        if page < self.pages:
            href = f"/s{source}/page/{page + 1}/"
            pagination += f'\t\t\t<a class="next" href="{href}">下一页 &raquo;</a>\n'
        pagination += "\t\t</div>\n"
        body = self.templates.head + "".join(self.post(source, u) for u in uids)
        body += self.templates.tail.replace("\x00PAGINATION\x00", pagination)
        base = self.base(source)
        body = body.replace("\x00BASE\x00", base)
        bucket = len(body.encode()) // 512
        if bucket not in self._pad:
            self._pad[bucket] = _pad(PAGE_BYTES - bucket * 512 - 4608)
        sidebar, script = self._pad[bucket]
        sidebar = sidebar.replace("\x00BASE\x00", base)
        return body.replace("\x00SIDEBAR\x00", sidebar).replace("\x00SCRIPT\x00", script).encode()

    def article(self, source: int, uid: int) -> bytes:
        day = (FIRST_DAY + timedelta(days=uid)).isoformat()
        return (
            self.templates.article.replace("\x00LINK\x00", self.link(source, uid))
            .replace("\x00DAY\x00", day)
            .replace("\x00BASE\x00", self.base(source))
            .encode()
        )


def make_blog(sources: int, pages: int, bases: list[str]) -> Blog:
    blog = Blog(load_templates(), bases, pages)
    blog.head = [ENTRIES_PER_PAGE * pages] * sources
    return blog


_INDEX = re.compile(r"/s(\d+)/(?:page/(\d+)/)?")
_ARTICLE = re.compile(r"/s(\d+)/archives/(\d+)")
_HTML = {"Content-Type": "text/html; charset=utf-8"}


class Server:
    """The HTTP side: cached page bytes, ETags, and the counters the benchmark reads."""

    def __init__(self, blog: Blog) -> None:
        self.blog = blog
        self.cache: dict[tuple[int, int], tuple[int, bytes]] = {}
        self.validators = True
        self.stats = {"index_200": 0, "index_304": 0, "article": 0, "other": 0}

    def index(self, source: int, page: int) -> bytes:
        head = self.blog.head[source]
        cached = self.cache.get((source, page))
        if cached is None or cached[0] != head:
            cached = (head, self.blog.page(source, page))
            self.cache[(source, page)] = cached
        return cached[1]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_ctl/"):
            return await self.control(request)
        blog = self.blog
        match = _INDEX.fullmatch(path)
        if match:
            source = int(match.group(1))
            page = int(match.group(2) or 1)
            if source < len(blog.head) and 1 <= page <= blog.pages:
                if not self.validators:
                    self.stats["index_200"] += 1
                    return web.Response(body=self.index(source, page), headers=_HTML)
                etag = blog.etag(source, page)
                if request.headers.get("If-None-Match") == etag:
                    self.stats["index_304"] += 1
                    return web.Response(status=304, headers={"ETag": etag})
                self.stats["index_200"] += 1
                return web.Response(body=self.index(source, page), headers={**_HTML, "ETag": etag})
        match = _ARTICLE.fullmatch(path)
        if match and int(match.group(1)) < len(blog.head):
            self.stats["article"] += 1
            body = blog.article(int(match.group(1)), int(match.group(2)))
            return web.Response(body=body, headers=_HTML)
        self.stats["other"] += 1
        return web.Response(status=404, text="not found")

    async def control(self, request: web.Request) -> web.StreamResponse:
        action = request.path.removeprefix("/_ctl/")
        if action == "bump":
            for source in (await request.json())["sources"]:
                self.blog.head[source] += 1
        elif action == "reset":
            self.stats = dict.fromkeys(self.stats, 0)
        elif action == "validators":
            self.validators = request.query.get("on", "1") == "1"
        elif action != "stats":
            return web.Response(status=404)
        return web.json_response(self.stats)


async def serve(sources: int, pages: int, hosts: int) -> None:
    app = web.Application()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    blog = make_blog(sources, pages, [])
    server = Server(blog)
    app.router.add_route("*", "/{tail:.*}", server.handle)
    await runner.setup()
    for h in range(hosts):
        site = web.TCPSite(runner, f"{HOST_PREFIX}{h + 1}", 0, backlog=2048)
        await site.start()
        host, port = runner.addresses[-1][:2]
        blog.bases.append(f"http://{host}:{port}")
    for source in range(sources):  # built up front, so no run pays for building them
        for page in range(1, pages + 1):
            server.index(source, page)
    print(json.dumps({"bases": blog.bases, "control": blog.bases[0] + "/_ctl/"}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, required=True)
    parser.add_argument("--pages", type=int, default=1)
    parser.add_argument("--hosts", type=int, default=64)
    args = parser.parse_args()
    asyncio.run(serve(args.sources, args.pages, args.hosts))


if __name__ == "__main__":
    main()
