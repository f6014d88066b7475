"""Reading pages in worker processes, so that a big refresh uses more than one core.

Reading a 100 KB index page (feedwatch.readpage) costs about as much CPU as all the
rest of its poll: fetching, the store and the feeds. CPython runs one thread at a
time and selectolax holds the GIL while it parses, so threads cannot overlap the two
halves; a worker process can. On 2 cores, one worker reads pages while the run's own
process fetches, stores and writes feeds.

A worker is `python -m feedwatch.workers`, fed pickled calls on its stdin and
answering on its stdout in order, read and written by the event loop itself. (With
concurrent.futures' process pool, a helper thread moves every call and result and
must win the GIL from the busy event loop first: in a 1000-source refresh only 7-30 %
of the pages ever reached its worker.)

Workers start once a run has read `START_AFTER` pages (a refresh that reads four
pages or fewer starts no process), in the background: until one is ready, pages are
read in-process, and a run that ends first kills it. Once one is, every page goes to
the least busy worker, even when several wait there: the queue is bounded by the
run's concurrency, and the run's own process is the busier half anyway (in a cold
refresh of 1000 sources it stores and writes feeds for longer than a worker reads).
A worker that dies (a crash on a hostile page, the OOM killer) fails the polls whose
pages it held, and the rest of the run reads in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pickle
import signal
import struct
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

log = logging.getLogger("feedwatch.workers")

START_AFTER = 4
MAX_WORKERS = 3
STOP_WAIT_S = 5.0
PIPE_BYTES = 1 << 20
_FRAME = struct.Struct("!Q")
_READY = b"ready"

T = TypeVar("T")


class WorkerDied(Exception):
    """The worker process reading this page died; the poll fails, the run goes on."""


def spare_cores() -> int:
    """Cores this process may use, but the one its own event loop needs."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(0, min(cores - 1, MAX_WORKERS))


@dataclass
class _Worker:
    proc: asyncio.subprocess.Process
    requests: asyncio.StreamWriter
    answers: asyncio.StreamReader
    waiting: deque[asyncio.Future[Any]] = field(default_factory=deque)
    ready: bool = False
    reader: asyncio.Task[None] | None = None


@dataclass
class Workers:
    """The run's worker processes, or none: `count` 0 reads every page in-process."""

    count: int
    reads: int = 0
    in_workers: int = 0
    broken: bool = False
    workers: list[_Worker] = field(default_factory=list)
    starting: asyncio.Task[None] | None = None

    async def run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`func(*args, **kwargs)` in a ready worker, or else here and now.

        `func` must be importable by name (it is pickled by reference) and pure."""
        self.reads += 1
        worker = self._available()
        if worker is None:
            return func(*args, **kwargs)
        self.in_workers += 1
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        worker.waiting.append(done)
        data = pickle.dumps((func, args, kwargs), pickle.HIGHEST_PROTOCOL)
        worker.requests.write(_FRAME.pack(len(data)) + data)
        return await done

    def _available(self) -> _Worker | None:
        if self.count <= 0 or self.broken:
            return None
        if self.starting is None:
            if self.reads > START_AFTER:
                self.starting = asyncio.get_running_loop().create_task(self._start())
            return None
        ready = [w for w in self.workers if w.ready]
        return min(ready, key=lambda w: len(w.waiting)) if ready else None

    async def _start(self) -> None:
        # The worker must import this very feedwatch, installed or not (bench/, a checkout).
        paths = [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        for _ in range(self.count):
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "feedwatch.workers",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    env=env,
                )
            except OSError as err:
                log.warning("cannot start a page reader process, reading in-process: %s", err)
                return
            if proc.stdin is None or proc.stdout is None:  # both asked for as pipes above
                raise RuntimeError("page reader process started without pipes")
            worker = _Worker(proc, proc.stdin, proc.stdout)
            worker.reader = asyncio.get_running_loop().create_task(self._answers(worker))
            self.workers.append(worker)

    async def _answers(self, worker: _Worker) -> None:
        """Hand each answer to the call waiting longest on this worker. A worker that
        ends is never sent more; if calls were waiting on it, the pool is broken."""
        try:
            while True:
                (size,) = _FRAME.unpack(await worker.answers.readexactly(_FRAME.size))
                data = await worker.answers.readexactly(size)
                if not worker.ready:
                    worker.ready = data == _READY
                    continue
                done = worker.waiting.popleft()
                try:
                    ok, value = pickle.loads(data)
                except Exception as err:  # e.g. an exception whose class cannot be rebuilt
                    ok, value = False, RuntimeError(f"unreadable page reader answer: {err!r}")
                if done.done():
                    continue
                if ok:
                    done.set_result(value)
                else:
                    done.set_exception(value)
        except (asyncio.IncompleteReadError, ConnectionError):
            worker.ready = False
            if worker.waiting:
                self._break(worker)

    def _break(self, worker: _Worker) -> None:
        if not self.broken:
            log.error("a page reader process died; reading the rest of the run in-process")
        self.broken = True
        while worker.waiting:
            done = worker.waiting.popleft()
            if not done.done():
                done.set_exception(WorkerDied("the page reader process died"))

    async def close(self) -> None:
        """Let the workers exit (EOF on their stdin). One still importing is killed: a small
        run that asked for a worker near its end does not wait for it; one that hangs is
        killed after STOP_WAIT_S."""
        if self.starting is not None:
            await self.starting
        for worker in self.workers:
            worker.requests.close()
            if not worker.ready:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
        for worker in self.workers:
            try:
                await asyncio.wait_for(worker.proc.wait(), STOP_WAIT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
                await worker.proc.wait()
            if worker.reader is not None:
                worker.reader.cancel()
        self.workers.clear()


def _widen(pipe: BinaryIO) -> None:
    """A pipe holds 64 KB, less than one page: at that size the busy event loop, which
    pumps the rest only between polls, starves the worker. Linux allows 1 MB."""
    if hasattr(fcntl, "F_SETPIPE_SZ"):
        with contextlib.suppress(OSError):
            fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """The worker's loop: one call at a time, answered in order, until EOF."""
    import feedwatch.readpage  # noqa: F401  (what the calls need, imported before "ready")

    _widen(requests)
    _widen(answers)
    _send(answers, _READY)
    while header := requests.read(_FRAME.size):
        (size,) = _FRAME.unpack(header)
        func, args, kwargs = pickle.loads(requests.read(size))
        try:
            reply = (True, func(*args, **kwargs))
        except Exception as err:
            reply = (False, err)
        try:
            data = pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)
        except Exception as err:
            data = pickle.dumps((False, RuntimeError(f"unpicklable result: {err!r}")))
        _send(answers, data)


def _send(answers: BinaryIO, data: bytes) -> None:
    answers.write(_FRAME.pack(len(data)) + data)
    answers.flush()


if __name__ == "__main__":
    # Ctrl-C reaches the whole process group: the parent decides, and its exit is our EOF.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Answers go to a copy of stdout; anything else printing to stdout lands on stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    serve(sys.stdin.buffer, out)
