"""Requests/s of feedwatch's Fetcher per transport, against a local server in its own process.

    python bench/transport.py [--requests 2000] [--concurrency 20] [--rounds 5] [--gzip]

Prints one `name: value` line per figure (medians over the rounds). `fetcher_*` is the real
Fetcher.get (caps, charset decoding, hashing included); `bare_*` is a bare client doing
only GET + read: `bare_httpx` is httpx's own transport, `bare_httpx_aiohttp` httpx over
httpx-aiohttp's stock transport, `bare_aiohttp` aiohttp alone (the ceiling: what httpx's
request/response layer costs shows as the gap to `bare_httpx_aiohttp`).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import httpx
from aiohttp import web
from httpx_aiohttp import HttpxAiohttpClient

from feedwatch.fetch import Fetcher

PAGE_SIZE = 100 * 1024
ENTRY = (
    '<div class="post"><h2 class="post-title"><a href="/archives/{i}">第{i}篇：变分自编码器</a>'
    '</h2><div class="post-body"><p>苏剑林的科学空间讨论扩散模型与注意力机制的数学原理，'
    "从最简单的例子讲起。</p></div></div>\n"
)


def page() -> bytes:
    parts = ['<!doctype html><html><head><meta charset="utf-8"><title>bench</title></head><body>']
    i = 0
    while sum(len(p.encode()) for p in parts) < PAGE_SIZE:
        parts.append(ENTRY.format(i=i))
        i += 1
    parts.append("</body></html>")
    return "".join(parts).encode()[:PAGE_SIZE]


def serve(port_out: mp.connection.Connection, compress: bool) -> None:
    body = page()
    headers = {"Content-Type": "text/html; charset=utf-8"}
    if compress:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"

    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=body, headers=headers)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port_out.send(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


async def run_pool(n: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> float:
    """Requests/s for n calls of `one`, `concurrency` of them in flight at any time."""
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            await one(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


async def fetcher_rate(base: str, transport: str, n: int, concurrency: int) -> float:
    async with Fetcher(
        transport=transport, per_host=concurrency, max_connections=concurrency
    ) as fetcher:

        async def one(i: int) -> None:
            page = await fetcher.get(
                f"{base}/p/{i}", validators=None, timeout=20, max_bytes=5_000_000, user_agent="b"
            )
            assert page.text

        return await run_pool(n, concurrency, one)


async def bare_httpx_rate(base: str, n: int, concurrency: int) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as client:

        async def one(i: int) -> None:
            response = await client.get(f"{base}/p/{i}")
            assert response.content

        return await run_pool(n, concurrency, one)


async def bare_httpx_aiohttp_rate(base: str, n: int, concurrency: int) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with HttpxAiohttpClient(limits=limits) as client:

        async def one(i: int) -> None:
            response = await client.get(f"{base}/p/{i}")
            assert response.content

        return await run_pool(n, concurrency, one)


async def bare_aiohttp_rate(base: str, n: int, concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            async with session.get(f"{base}/p/{i}") as response:
                assert await response.read()

        return await run_pool(n, concurrency, one)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gzip", action="store_true", help="serve the page gzip-compressed")
    args = parser.parse_args()

    receive, send = mp.Pipe(duplex=False)
    server = mp.Process(target=serve, args=(send, args.gzip), daemon=True)
    server.start()
    base = f"http://127.0.0.1:{receive.recv()}"
    n, c = args.requests, args.concurrency
    cases: dict[str, Callable[[], Awaitable[float]]] = {
        "fetcher_httpx": lambda: fetcher_rate(base, "httpx", n, c),
        "fetcher_aiohttp": lambda: fetcher_rate(base, "aiohttp", n, c),
        "bare_httpx": lambda: bare_httpx_rate(base, n, c),
        "bare_httpx_aiohttp": lambda: bare_httpx_aiohttp_rate(base, n, c),
        "bare_aiohttp": lambda: bare_aiohttp_rate(base, n, c),
    }
    rates: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for _ in range(args.rounds):
            # Interleaved, so machine noise hits every case alike.
            for name, case in cases.items():
                rates[name].append(asyncio.run(case()))
    finally:
        server.terminate()
    print(f"page_bytes: {PAGE_SIZE}{' (gzip)' if args.gzip else ''}")
    print(f"concurrency: {c}")
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, value in medians.items():
        print(f"{name}_req_per_s: {value:.0f}")
    print(f"aiohttp_vs_httpx: {medians['fetcher_aiohttp'] / medians['fetcher_httpx']:.1f}")


if __name__ == "__main__":
    main()
