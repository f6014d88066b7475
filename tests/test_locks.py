"""Per-source locks: one poll of a source at a time, within a process and across processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from feedwatch.locks import SourceLocks, lock_path, offset

HOLD_IN_CHILD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.lockf(fd, fcntl.LOCK_EX, 1, int(sys.argv[2]))
print("locked", flush=True)
time.sleep(float(sys.argv[3]))
"""


def test_the_lock_file_sits_beside_the_state_file(tmp_path: Path) -> None:
    assert lock_path(tmp_path / "state.db") == tmp_path / "state.db.lock"


def test_offsets_are_distinct_for_a_thousand_names() -> None:
    assert len({offset(f"s{i:05d}") for i in range(1000)}) == 1000


def test_another_process_computes_the_same_offset() -> None:
    """hash() is salted per process; the offset must not be."""
    code = "from feedwatch.locks import offset; print(offset('kexue'))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert int(other.stdout) == offset("kexue")


def test_a_second_poll_of_a_source_in_one_process_waits_for_the_first(tmp_path: Path) -> None:
    order: list[str] = []

    async def poll(locks: SourceLocks, name: str, tag: str, hold: float) -> None:
        async with locks.hold(name):
            order.append(f"{tag} start")
            await asyncio.sleep(hold)
            order.append(f"{tag} end")

    async def main() -> None:
        locks = SourceLocks(tmp_path / "state.db.lock")
        try:
            first = asyncio.create_task(poll(locks, "a", "first", 0.2))
            await asyncio.sleep(0.01)
            await asyncio.gather(first, poll(locks, "a", "second", 0))
        finally:
            locks.close()

    asyncio.run(main())
    assert order == ["first start", "first end", "second start", "second end"]


def test_polls_of_different_sources_run_at_once(tmp_path: Path) -> None:
    order: list[str] = []

    async def poll(locks: SourceLocks, name: str) -> None:
        async with locks.hold(name):
            order.append(f"{name} start")
            await asyncio.sleep(0.1)
            order.append(f"{name} end")

    async def main() -> None:
        locks = SourceLocks(tmp_path / "state.db.lock")
        try:
            await asyncio.gather(poll(locks, "a"), poll(locks, "b"))
        finally:
            locks.close()

    asyncio.run(main())
    assert order[:2] == ["a start", "b start"]


def holding_child(path: Path, name: str, seconds: float) -> subprocess.Popen[str]:
    """Another process that holds `name`'s lock for `seconds`, once this returns."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_IN_CHILD, str(path), str(offset(name)), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    return child


def test_a_source_locked_by_another_process_waits_until_it_exits(tmp_path: Path) -> None:
    path = tmp_path / "state.db.lock"
    child = holding_child(path, "a", 0.5)

    async def main() -> tuple[float, float]:
        locks = SourceLocks(path)
        loop = asyncio.get_running_loop()
        try:
            started = loop.time()
            async with locks.hold("b"):
                other_wait = loop.time() - started
            async with locks.hold("a"):
                wait = loop.time() - started
        finally:
            locks.close()
        return other_wait, wait

    other_wait, wait = asyncio.run(main())
    child.wait(timeout=10)
    assert other_wait < 0.2
    assert wait >= 0.3


def test_a_process_killed_while_holding_a_lock_leaves_none_behind(tmp_path: Path) -> None:
    path = tmp_path / "state.db.lock"
    child = holding_child(path, "a", 60)
    child.kill()
    child.wait(timeout=10)

    async def main() -> bool:
        locks = SourceLocks(path)
        try:
            async with asyncio.timeout(2), locks.hold("a"):
                return True
        finally:
            locks.close()

    assert asyncio.run(main())


def test_one_lock_file_serves_every_source(tmp_path: Path) -> None:
    async def main() -> None:
        locks = SourceLocks(tmp_path / "state.db.lock")
        try:
            for i in range(50):
                async with locks.hold(f"s{i}"):
                    pass
        finally:
            locks.close()

    asyncio.run(main())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db.lock"]


def test_claim_takes_the_locks_no_other_process_holds(tmp_path: Path) -> None:
    path = tmp_path / "state.db.lock"
    child = holding_child(path, "a", 0.5)
    locks = SourceLocks(path)
    try:
        assert locks.claim(["a", "b", "c"]) == {"b", "c"}
    finally:
        locks.close()
    child.wait(timeout=10)


PROBE_IN_CHILD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, int(sys.argv[2]))
except OSError:
    print("busy")
else:
    print("free")
"""


def another_process_sees(path: Path, name: str) -> str:
    """Whether another process could take `name`'s lock right now: "free" or "busy"."""
    args = [sys.executable, "-c", PROBE_IN_CHILD, str(path), str(offset(name))]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()


def test_a_claimed_lock_keeps_another_process_out_until_the_run_ends(tmp_path: Path) -> None:
    path = tmp_path / "state.db.lock"

    async def main() -> list[str]:
        locks = SourceLocks(path)
        seen = []
        try:
            locks.claim(["a"])
            seen.append(another_process_sees(path, "a"))
            async with locks.hold("a"):
                seen.append(another_process_sees(path, "a"))
            seen.append(another_process_sees(path, "a"))
        finally:
            locks.close()
        seen.append(another_process_sees(path, "a"))
        return seen

    assert asyncio.run(main()) == ["busy", "busy", "busy", "free"]


def test_an_unclaimed_lock_is_released_when_its_poll_ends(tmp_path: Path) -> None:
    path = tmp_path / "state.db.lock"

    async def main() -> list[str]:
        locks = SourceLocks(path)
        seen = []
        try:
            async with locks.hold("a"):
                seen.append(another_process_sees(path, "a"))
            seen.append(another_process_sees(path, "a"))
        finally:
            locks.close()
        return seen

    assert asyncio.run(main()) == ["busy", "free"]


def test_closing_releases_claims_never_used(tmp_path: Path) -> None:
    path = tmp_path / "state.db.lock"
    locks = SourceLocks(path)
    locks.claim(["a", "b"])
    assert another_process_sees(path, "b") == "busy"
    locks.close()
    assert another_process_sees(path, "b") == "free"


def test_claiming_every_source_takes_the_whole_file_when_no_one_holds_any(tmp_path: Path) -> None:
    path = tmp_path / "state.db.lock"
    locks = SourceLocks(path)
    try:
        assert locks.claim(["a", "b"], every_source=True) == {"a", "b"}
        assert another_process_sees(path, "a") == "busy"
        assert another_process_sees(path, "a source this run does not poll") == "busy"
    finally:
        locks.close()
    assert another_process_sees(path, "a") == "free"


def test_claiming_every_source_while_another_process_holds_one_claims_the_others(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db.lock"
    child = holding_child(path, "a", 0.5)
    locks = SourceLocks(path)
    try:
        assert locks.claim(["a", "b", "c"], every_source=True) == {"b", "c"}
        assert another_process_sees(path, "unclaimed") == "free"
    finally:
        locks.close()
    child.wait(timeout=10)
