"""Page reader processes: the same results as in-process, and a dead worker costs a poll only."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from feedwatch import config as config_mod
from feedwatch.models import Selectors
from feedwatch.poll import refresh
from feedwatch.readpage import read_page
from feedwatch.workers import START_AFTER, WorkerDied, Workers
from tests.conftest import KEXUE_SELECT, write_config
from tests.site import TRUTH, Site
from tests.test_extract import SELECTORS as KEXUE

FIXTURES = Path(__file__).parent / "fixtures"
SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent


async def ready_workers(count: int = 1) -> Workers:
    """Workers whose processes are up and ready, as they are mid-way through a big refresh."""
    workers = Workers(count)
    workers.reads = START_AFTER
    assert await workers.run(abs, -1) == 1  # read in-process; this read starts the workers
    assert workers.starting is not None
    await workers.starting
    deadline = time.monotonic() + 30
    while not all(w.ready for w in workers.workers) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert len(workers.workers) == count and all(w.ready for w in workers.workers)
    return workers


def pages() -> list[tuple[str, str, Selectors | None]]:
    """Every fixture page: the reference blog's with its selectors, the corpus detected."""
    reference = [
        (page["page_url"], (FIXTURES / name).read_text("utf-8"), KEXUE)
        for name, page in TRUTH["pages"].items()
    ]
    corpus = [
        (
            json.loads(path.with_suffix(".json").read_text("utf-8"))["page_url"],
            path.read_text("utf-8"),
            None,
        )
        for path in sorted((FIXTURES / "corpus").glob("*.html"))
    ]
    return reference + corpus


def test_every_fixture_page_reads_the_same_in_a_worker_as_in_process() -> None:
    async def main() -> tuple[list[Any], int]:
        workers = await ready_workers()
        try:
            read = [
                await workers.run(
                    read_page,
                    html,
                    url,
                    selectors,
                    None,
                    redetect=True,
                    tz=SHANGHAI,
                    ignore=(),
                    now=NOW,
                )
                for url, html, selectors in pages()
            ]
        finally:
            await workers.close()
        return read, workers.in_workers

    read, in_workers = asyncio.run(main())
    expected = [
        read_page(html, url, selectors, None, redetect=True, tz=SHANGHAI, ignore=(), now=NOW)
        for url, html, selectors in pages()
    ]
    assert in_workers == len(expected) == 12
    assert read == expected
    assert all(r.extraction is not None and r.extraction.entries for r in read)


def test_an_exception_raised_in_a_worker_reaches_the_caller() -> None:
    async def main() -> None:
        workers = await ready_workers()
        try:
            with pytest.raises(ValueError, match="invalid literal"):
                await workers.run(int, "not a number")
            assert await workers.run(int, "42") == 42
        finally:
            await workers.close()

    asyncio.run(main())


class TwoArgumentError(Exception):
    """Pickles as TwoArgumentError(a), which cannot be rebuilt: a worker's odd exception."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(a)
        self.b = b


def raise_two_argument_error() -> None:
    raise TwoArgumentError("a", "b")


def test_an_exception_that_cannot_cross_back_still_fails_only_its_call() -> None:
    async def main() -> None:
        workers = await ready_workers()
        try:
            with pytest.raises(RuntimeError, match="unreadable page reader answer"):
                await asyncio.wait_for(workers.run(raise_two_argument_error), 10)
            assert await workers.run(int, "7") == 7
            assert workers.in_workers == 2 and not workers.broken
        finally:
            await workers.close()

    asyncio.run(main())


def test_ctrl_c_is_left_to_the_parent_the_worker_keeps_answering() -> None:
    async def main() -> int:
        workers = await ready_workers()
        try:
            workers.workers[0].proc.send_signal(signal.SIGINT)
            await asyncio.sleep(0.3)
            return await asyncio.wait_for(workers.run(int, "5"), 10)
        finally:
            await workers.close()

    assert asyncio.run(main()) == 5


def test_a_worker_killed_mid_call_fails_that_call_and_the_run_goes_on_in_process() -> None:
    async def main() -> tuple[int, int]:
        workers = await ready_workers()
        try:
            call = asyncio.ensure_future(workers.run(time.sleep, 30))
            await asyncio.sleep(0.2)
            workers.workers[0].proc.kill()
            with pytest.raises(WorkerDied):
                await asyncio.wait_for(call, 10)
            sent = workers.in_workers
            assert await workers.run(abs, -7) == 7
            return sent, workers.in_workers
        finally:
            await workers.close()

    sent, after = asyncio.run(main())
    assert sent == after == 1


def test_a_run_that_reads_few_pages_starts_no_process() -> None:
    async def main() -> Workers:
        workers = Workers(1)
        for i in range(START_AFTER):
            assert await workers.run(abs, -i) == i
        await workers.close()
        return workers

    workers = asyncio.run(main())
    assert workers.starting is None and workers.workers == [] and workers.in_workers == 0


def test_closing_ends_the_worker_processes() -> None:
    async def main() -> list[int | None]:
        workers = await ready_workers(2)
        procs = [w.proc for w in workers.workers]
        await workers.close()
        return [p.returncode for p in procs]

    assert asyncio.run(main()) == [0, 0]


def test_a_worker_exits_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert parent.stdout is not None
    worker_pid = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker_pid)


PARENT = """
import asyncio, time
from tests.test_workers import ready_workers

async def main():
    workers = await ready_workers()
    print(workers.workers[0].proc.pid, flush=True)
    time.sleep(60)

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, reaped by init in time, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_refresh_reading_through_a_worker_writes_the_same_feeds(
    site: Site, tmp_path: Path
) -> None:
    site.serve_fixture_site()
    sources = "".join(
        f'[[sources]]\nname = "k{i}"\nurl = "{site.url("/")}"\nmax_pages = 3\n'
        f'next_page = "div.pagination a.next"\n{KEXUE_SELECT}\n'
        for i in range(4)
    )

    async def feeds(directory: Path, workers: Workers) -> dict[str, bytes]:
        directory.mkdir()
        config = config_mod.load(write_config(directory, sources))
        results = await refresh(config, list(config.sources), now=lambda: NOW, workers=workers)
        assert all(r.ok for r in results)
        return {p.name: p.read_bytes() for p in sorted((directory / "feeds").iterdir())}

    async def main() -> tuple[dict[str, bytes], dict[str, bytes], int]:
        workers = await ready_workers()
        try:
            through_worker = await feeds(tmp_path / "worker", workers)
        finally:
            await workers.close()
        return through_worker, await feeds(tmp_path / "in-process", Workers(0)), workers.in_workers

    through_worker, in_process, in_workers = asyncio.run(main())
    assert in_workers == 4 * 3
    assert len(through_worker) == 4 * 3 + 1
    assert through_worker == in_process


def test_a_worker_still_starting_when_the_run_ends_is_killed_not_awaited() -> None:
    async def main() -> int | None:
        workers = Workers(1)
        workers.reads = START_AFTER
        await workers.run(abs, -1)  # asks for the worker
        assert workers.starting is not None
        await workers.starting  # spawned, still importing
        proc = workers.workers[0].proc
        await workers.close()
        return proc.returncode

    assert asyncio.run(main()) == -signal.SIGKILL


def test_a_poll_whose_page_reader_died_fails_with_that_cause_and_the_next_run_recovers(
    site: Site, tmp_path: Path
) -> None:
    site.serve_fixture_site()
    config = config_mod.load(
        write_config(tmp_path, f'[[sources]]\nname = "k"\nurl = "{site.url("/")}"\n{KEXUE_SELECT}')
    )
    dying = Workers(0)

    async def died(*args: Any, **kwargs: Any) -> Any:
        raise WorkerDied("the page reader process died")

    dying.run = died  # type: ignore[method-assign]
    (failed,) = asyncio.run(refresh(config, list(config.sources), now=lambda: NOW, workers=dying))
    assert failed.error == f"the page reader process died while reading {site.url('/')}"
    assert not (tmp_path / "feeds" / "k.atom").exists()
    (ok,) = asyncio.run(refresh(config, list(config.sources), now=lambda: NOW))
    assert (ok.ok, ok.new) == (True, 8)
