"""One poll of a source at a time, across every process that shares a state file.

A daemon and a `refresh` from cron may run at once; each source's poll takes a
lock first. All sources share one lock file, `STATE.lock`, each locking one byte
at an offset hashed from its name: a source's first poll then creates no file of
its own, which matters because creating a file (a new inode) costs 0.25-1 ms on
some virtual disks, more than a whole warm poll. The locks are POSIX record locks,
so they die with their process and a SIGKILLed run never leaves a stale one.

Record locks belong to the process, not to a file descriptor: two polls in one
process never exclude each other through them (hence `held`), and closing any
descriptor of the file would drop all of them (hence one descriptor per run, kept
until `close`). Two names whose hashes collide only take turns, harmlessly.

A refresh about to poll many sources `claim`s their locks at once: what it then reads
of them in one query stays current until each poll, since no other process can poll
a source whose lock it holds. It keeps them until it ends (`close`): a poll of one of
them by another process meanwhile would repeat this one.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import functools
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

RETRY_S = 0.05
_BUSY = frozenset({errno.EACCES, errno.EAGAIN})


def lock_path(state: Path) -> Path:
    return state.with_name(state.name + ".lock")


@functools.cache
def offset(name: str) -> int:
    """A stable byte offset for a source name: the same in every process (unlike hash())."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=7).digest(), "big")


@dataclass
class SourceLocks:
    """The lock file of one state file, open for as long as its owner (a run) lasts."""

    path: Path
    fd: int | None = None
    held: set[str] = field(default_factory=set)
    claimed: set[str] = field(default_factory=set)

    def descriptor(self) -> int:
        """The lock file's descriptor, opened (and the file created) on first use.

        Raises OSError when the file cannot be opened, e.g. a directory is in its way.
        """
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return self.fd

    def claim(self, names: Iterable[str], *, every_source: bool = False) -> set[str]:
        """Take now, without waiting, the locks of those sources no poll holds; `hold`
        then has each at once, and `close` releases them all.

        A run that polls `every_source` of the config first tries to lock the whole file
        in one call, which succeeds when no other process holds any source: their polls
        then wait for this run, which is polling everything anyway.
        """
        fd = self.descriptor()
        names = [name for name in names if name not in self.held]
        if every_source and not self.held and _try_lock(fd, 0, length=0):
            self.claimed.update(names)
            return set(self.claimed)
        for name in names:
            if name not in self.claimed and _try_lock(fd, offset(name)):
                self.claimed.add(name)
        return set(self.claimed)

    def hold(self, name: str) -> _Hold:
        """Wait until no other poll of `name`, in this process or another, runs; then run."""
        return _Hold(self, name)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.claimed.clear()


class _Hold:
    """`SourceLocks.hold`'s context: a class rather than a generator, since every poll
    enters one."""

    __slots__ = ("claimed", "fd", "locks", "name", "start")

    def __init__(self, locks: SourceLocks, name: str) -> None:
        self.locks = locks
        self.name = name
        self.fd = -1
        self.start = 0
        self.claimed = False

    async def __aenter__(self) -> None:
        locks, name = self.locks, self.name
        self.fd = fd = locks.descriptor()
        self.start = start = offset(name)
        self.claimed = name in locks.claimed
        if self.claimed:
            locks.claimed.discard(name)
        else:
            while not (name not in locks.held and _try_lock(fd, start)):
                await asyncio.sleep(RETRY_S)
        locks.held.add(name)

    async def __aexit__(self, *exc: object) -> None:
        self.locks.held.discard(self.name)
        if not self.claimed:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, self.start)


def _try_lock(fd: int, start: int, *, length: int = 1) -> bool:
    """Lock `length` bytes from `start` (0: to the end of any file) unless another process
    holds one of them."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start)
    except OSError as err:
        if err.errno in _BUSY:
            return False
        raise
    return True
