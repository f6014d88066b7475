"""feedwatch's benchmark: refresh cost against the bare fetch+parse floor, memory, serving.

    python bench/run.py [--sources N] [--pages P] [--quick] [--rounds R]

Starts bench/fakesite.py (N blogs of P ~100 KB index pages on 127.0.2.x, own process),
writes a config for them, and measures, each a median over the rounds:

  cold, warm, one_changed   `feedwatch refresh` of all N sources: first poll (all new);
                            nothing changed (all 304); 1% of sources with one new post
  floor_*                   the same fetches with feedwatch's own parse + extract and
                            nothing else (bench/worker.py floor), same transport and
                            concurrency; floor_bare_* picks the fields with bare selectolax
  *_vs_floor                per-round ratio, then the median
  *_cpu_vs_floor            the same for CPU seconds (user + system) of the two processes:
                            steadier than wall time when another tenant loads the machine
  refresh_peak_rss_mb       ru_maxrss of the refresh process (cold)
  refresh_rss_*_stored_*    the same for a refresh re-rendering 100 feeds, with ~10 and with
                            1000 more stored entries per source (must not grow; medians of 3)
  daemon_idle_rss_mb        `feedwatch run` with N sources, after every source's first poll
  serve_*                   req/s for GET NAME.atom (200) and with If-None-Match (304), on
                            the daemon and on nginx serving the same files (wrk -t1 -c32)

plus the stage split of a cold refresh, micro-benchmarks (bench/micro.py: parse vs
extract, detection vs extraction, feed rendering), the cost of `detail = true`, and cold
time for N = 100, 1000, 5000 (100 and N with --quick). Prints `name: value` lines and
writes them as JSON to bench/results/. Everything runs on 127.0.0.0/8 only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
sys.path.insert(0, str(HERE))

import fakesite  # noqa: E402
import serving  # noqa: E402

CONCURRENCY = 32  # the config's default, used by the floor too
SERVE_CONNECTIONS = 32


class Site:
    """The fake site's process and its control endpoints."""

    def __init__(self, sources: int, pages: int, hosts: int) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, str(HERE / "fakesite.py"), f"--sources={sources}", f"--pages={pages}",
             f"--hosts={hosts}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        info = json.loads(self.proc.stdout.readline())
        self.bases: list[str] = info["bases"]
        self.control: str = info["control"]
        self.pages = pages

    def url(self, source: int) -> str:
        return f"{self.bases[source % len(self.bases)]}/s{source}/"

    def ctl(self, action: str, payload: dict[str, Any] | None = None) -> dict[str, int]:
        data = json.dumps(payload or {}).encode()
        request = urllib.request.Request(self.control + action, data=data, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(
    directory: Path, site: Site, sources: range, *, detail: bool = False, port: int = 0
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    lines = [
        "[feedwatch]",
        f'listen = "127.0.0.1:{port}"',
        'base_url = "http://127.0.0.1:8080/"',
        'interval = "1d"',
        "",
    ]
    select = [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in fakesite.SELECT.items()]
    for i in sources:
        lines += [
            "[[sources]]",
            f'name = "s{i:05d}"',
            f'url = "{site.url(i)}"',
            f"max_pages = {site.pages}",
        ]
        if site.pages > 1:
            lines.append(f'next_page = "{fakesite.NEXT_PAGE}"')
        if detail:
            lines.append("detail = true")
        lines += ["[sources.select]", *select, ""]
    path = directory / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    (directory / "jobs.json").write_text(
        json.dumps(
            {
                "urls": [site.url(i) for i in sources],
                "concurrency": CONCURRENCY,
                "max_pages": site.pages,
                "next_page": fakesite.NEXT_PAGE if site.pages > 1 else None,
                "select": fakesite.SELECT,
            }
        )
    )
    return path


def worker(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [PYTHON, str(HERE / "worker.py"), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def refresh(directory: Path, *, stages: bool = False) -> dict[str, Any]:
    """One `feedwatch refresh`; `stages` times its stages (bench/worker.py --stages)."""
    out = worker("refresh", str(directory / "config.toml"), *(["--stages"] if stages else []))
    if out["failed"]:
        raise RuntimeError(f"{out['failed']} sources failed: {out['errors']}")
    return out


def floor(
    directory: Path,
    transport: str = "aiohttp",
    state: str = "floor.json",
    extract: str = "feedwatch",
) -> dict[str, Any]:
    return worker(
        "floor",
        str(directory / "jobs.json"),
        f"--transport={transport}",
        f"--extract={extract}",
        f"--state={directory / state}",
    )


def bare_floor(directory: Path, transport: str) -> dict[str, Any]:
    """A cold bare floor run, with a state file of its own that does not outlive it."""
    state = f"{transport}-bare.json"
    try:
        return floor(directory, transport, state, "bare")
    finally:
        (directory / state).unlink(missing_ok=True)


def feed_stamps(directory: Path) -> dict[str, int]:
    feeds = directory / "feeds"
    return {p.name: p.stat().st_mtime_ns for p in feeds.iterdir()} if feeds.exists() else {}


def changed_files(before: dict[str, int], after: dict[str, int]) -> int:
    return sum(1 for name, stamp in after.items() if before.get(name) != stamp)


def med(values: list[float]) -> float:
    return statistics.median(values)


class Figures:
    """Figures in the order measured; each printed as `name: value` as soon as known."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def add(self, name: str, value: Any) -> None:
        if isinstance(value, float):
            value = round(value, 4 if abs(value) < 10 else 1)
        self.values[name] = value
        print(f"{name}: {value}", flush=True)


def refresh_rounds(
    fig: Figures, site: Site, work: Path, n: int, rounds: int, *, httpx_every_round: bool
) -> tuple[float, float, Path]:
    """The rounds of cold/warm/one_changed against the floors; returns the median cold
    time and the peak RSS of the cold runs, for the scaling figures, and the last round's
    directory.

    Each round starts in a directory of its own, and none is deleted before the end of
    the bench: deleting a round's 3,000 files made the next round's file creations up to
    2x slower for some 20 s on an ext4 mounted with `discard` (feeds stage 1.6-2.0 s in
    fresh directories, 3.0-5.5 s right after a deletion), a cost no real refresh pays."""
    runs: dict[str, list[dict[str, Any]]] = {}
    ratios: dict[str, list[float]] = {"cold": [], "warm": [], "one_changed": [], "bare": []}
    cpu_ratios: dict[str, list[float]] = {"cold": [], "warm": [], "one_changed": []}
    rewritten: list[int] = []
    step = min(100, n)  # every 100th source: 1% of them, at least one
    for r in range(rounds):
        main = work / f"round-{r + 1}"
        write_config(main, site, range(n))
        f_cold = floor(main)
        cold = refresh(main, stages=True)
        stamps = feed_stamps(main)
        warm = refresh(main)
        rewritten.append(changed_files(stamps, feed_stamps(main)))
        f_warm = floor(main)
        runs.setdefault("warm_split", []).append(refresh(main, stages=True))
        bumped = list(range(r % step, n, step))
        site.ctl("bump", {"sources": bumped})
        one = refresh(main)
        f_one = floor(main)
        if one["new"] != len(bumped) * site.pages or f_one["parses"] < len(bumped):
            raise RuntimeError(f"one_changed: {one['new']} new for {len(bumped)} bumped sources")
        for name, value in (
            ("cold", cold), ("warm", warm), ("one_changed", one),
            ("floor_cold", f_cold), ("floor_warm", f_warm), ("floor_one_changed", f_one),
        ):  # fmt: skip
            runs.setdefault(name, []).append(value)
        ratios["cold"].append(cold["elapsed"] / f_cold["elapsed"])
        ratios["warm"].append(warm["elapsed"] / f_warm["elapsed"])
        ratios["one_changed"].append(one["elapsed"] / f_one["elapsed"])
        for name, ours, theirs in (
            ("cold", cold, f_cold), ("warm", warm, f_warm), ("one_changed", one, f_one)
        ):  # fmt: skip
            cpu_ratios[name].append(ours["cpu"] / theirs["cpu"])
        f_bare = bare_floor(main, "aiohttp")
        runs.setdefault("floor_bare_cold", []).append(f_bare)
        ratios["bare"].append(cold["elapsed"] / f_bare["elapsed"])
        if httpx_every_round or r == 0:
            runs.setdefault("floor_bare_httpx_cold", []).append(bare_floor(main, "httpx"))
        print(
            f"# round {r + 1}/{rounds}: cold {cold['elapsed']:.2f}s (floor"
            f" {f_cold['elapsed']:.2f}s), warm {warm['elapsed']:.2f}s"
            f" ({f_warm['elapsed']:.2f}s), one_changed {one['elapsed']:.2f}s"
            f" ({f_one['elapsed']:.2f}s)",
            flush=True,
        )
    for name in (
        "cold", "warm", "one_changed", "floor_cold", "floor_warm", "floor_one_changed",
        "floor_bare_cold",
    ):  # fmt: skip
        fig.add(f"{name}_s", med([x["elapsed"] for x in runs[name]]))
    for name in ("cold", "warm", "one_changed"):
        fig.add(f"{name}_vs_floor", med(ratios[name]))
    fig.add("cold_vs_bare_floor", med(ratios["bare"]))
    for name in ("cold", "warm", "one_changed"):
        fig.add(f"{name}_cpu_s", med([x["cpu"] for x in runs[name]]))
        fig.add(f"floor_{name}_cpu_s", med([x["cpu"] for x in runs[f"floor_{name}"]]))
        fig.add(f"{name}_cpu_vs_floor", med(cpu_ratios[name]))
    fig.add("cold_per_source_ms", med([x["elapsed"] for x in runs["cold"]]) / n * 1000)
    fig.add("floor_cold_per_source_ms", med([x["elapsed"] for x in runs["floor_cold"]]) / n * 1000)
    warm_runs = runs["warm"]
    fig.add("warm_not_modified_pages", min(x["not_modified"] for x in warm_runs))
    fig.add("warm_pages_parsed", max(x["parses"] for x in warm_runs))
    fig.add("warm_feeds_rendered", max(x["feed_renders"] for x in warm_runs))
    fig.add("warm_feed_files_rewritten", max(rewritten))
    fig.add("one_changed_pages_parsed", med([x["parses"] for x in runs["one_changed"]]))
    fig.add(
        "one_changed_feed_files_written",
        med([x["feed_files_written"] for x in runs["one_changed"]]),
    )
    fig.add("cold_pages_read_in_workers", med([x["parses_in_workers"] for x in runs["cold"]]))
    fig.add("cold_worker_cpu_s", med([x["worker_cpu"] for x in runs["cold"]]))
    fig.add("refresh_peak_rss_mb", max(x["maxrss_kb"] for x in runs["cold"]) / 1024)
    fig.add("refresh_worker_peak_rss_mb", max(x["worker_maxrss_kb"] for x in runs["cold"]) / 1024)
    fig.add("refresh_warm_peak_rss_mb", max(x["maxrss_kb"] for x in warm_runs) / 1024)
    fig.add("floor_peak_rss_mb", max(x["maxrss_kb"] for x in runs["floor_cold"]) / 1024)
    httpx_s = med([x["elapsed"] for x in runs["floor_bare_httpx_cold"]])
    fig.add("floor_bare_httpx_default_transport_s", httpx_s)
    fig.add(
        "floor_transport_speedup", httpx_s / med([x["elapsed"] for x in runs["floor_bare_cold"]])
    )
    for stage in ("fetch", "read", "dates_diff", "store", "feeds"):
        share = med([x["stages"][stage] / x["elapsed"] for x in runs["cold"]])
        per_source = med([x["stages"][stage] for x in runs["cold"]]) / n * 1000
        fig.add(f"cold_stage_{stage}_share", share)
        fig.add(f"cold_stage_{stage}_ms_per_source", per_source)
    for stage in ("fetch", "store", "feeds"):
        fig.add(
            f"warm_stage_{stage}_ms_per_source",
            med([x["stages"][stage] for x in runs["warm_split"]]) / n * 1000,
        )

    site.ctl("validators?on=0")
    stamps = feed_stamps(main)
    plain = refresh(main)
    site.ctl("validators?on=1")
    fig.add("unchanged_no_etag_s", plain["elapsed"])
    fig.add("unchanged_no_etag_pages_parsed", plain["parses"])
    fig.add("unchanged_no_etag_feed_files_rewritten", changed_files(stamps, feed_stamps(main)))
    return (
        med([x["elapsed"] for x in runs["cold"]]),
        max(x["maxrss_kb"] for x in runs["cold"]) / 1024,
        main,
    )


def scaling(
    fig: Figures, site: Site, work: Path, sizes: list[int], known: dict[int, tuple[float, float]]
) -> None:
    """Cold time per source for each N; `known` holds (seconds, peak RSS MB) already measured."""
    per_source: dict[int, float] = {}
    for n in sizes:
        if n in known:
            elapsed, rss = known[n]
        else:
            directory = work / f"scale-{n}"
            write_config(directory, site, range(n))
            run = refresh(directory)
            elapsed, rss = run["elapsed"], run["maxrss_kb"] / 1024
        per_source[n] = elapsed / n * 1000
        fig.add(f"cold_N{n}_s", elapsed)
        fig.add(f"cold_N{n}_per_source_ms", per_source[n])
        fig.add(f"cold_N{n}_peak_rss_mb", rss)
    small, large = min(sizes), max(sizes)
    fig.add(f"cold_per_source_N{large}_vs_N{small}", per_source[large] / per_source[small])


def stored_entries_memory(
    fig: Figures, site: Site, work: Path, count: int, extra: int = 1000
) -> None:
    """Peak RSS of a refresh that re-renders every feed, on a store holding the page's
    ~10 entries per source and on one holding `extra` more per source (medians of 3).

    A poll reads only the stored entries of the links it saw and the feed's newest
    `max_entries`, so the second refresh must not need more memory than the first.
    """
    sys.path.insert(0, str(ROOT))
    from feedwatch.models import Entry
    from feedwatch.store import Store

    sources = range(count)
    old = datetime(2001, 1, 1, tzinfo=UTC)
    teaser = "<p>" + "An older post that scrolled off the index long ago. " * 20 + "</p>"
    rss: dict[int, float] = {}
    for seeded in (0, extra):
        directory = work / f"entries-{seeded}"
        write_config(directory, site, sources)
        refresh(directory)
        with Store(directory / "state.db") as store:
            for i in sources if seeded else ():
                at = [old + timedelta(hours=k) for k in range(seeded)]
                store.add_entries(
                    [
                        Entry(f"s{i:05d}", f"{site.url(i)}old/{k}", f"Old post {k}", False,
                              teaser, teaser[3:-4], None, when, True, when, when, when,
                              f"{k:064x}")
                        for k, when in enumerate(at)
                    ]
                )  # fmt: skip
        peaks = []
        for _ in range(3):  # a single peak moved by ~3 MB from run to run
            site.ctl("bump", {"sources": list(sources)})
            run = refresh(directory)
            if run["new"] != count:
                raise RuntimeError(f"stored_entries_memory: {run['new']} new for {count} bumped")
            peaks.append(run["maxrss_kb"] / 1024)
        rss[seeded] = med(peaks)
        shutil.rmtree(directory, ignore_errors=True)
    fig.add("stored_entries_sources", count)
    fig.add("refresh_rss_mb_10_stored_per_source", rss[0])
    fig.add(f"refresh_rss_mb_{extra}_more_stored_per_source", rss[extra])
    fig.add("refresh_rss_growth_with_stored_entries", rss[extra] / rss[0])


def detail_cost(fig: Figures, site: Site, work: Path, count: int) -> None:
    """Issue 8: a first poll with `detail = true` against the same poll without it."""
    sources = range(count)
    plain_dir = work / "detail-off"
    write_config(plain_dir, site, sources)
    detail_dir = work / "detail-on"
    write_config(detail_dir, site, sources, detail=True)
    plain = refresh(plain_dir)
    site.ctl("reset")
    first = refresh(detail_dir)
    first_articles = site.ctl("stats")["article"]
    site.ctl("reset")
    refresh(detail_dir)
    second_articles = site.ctl("stats")["article"]
    site.ctl("bump", {"sources": list(sources)})
    site.ctl("reset")
    bumped = refresh(detail_dir)
    bumped_articles = site.ctl("stats")["article"]
    fig.add("detail_sources", count)
    fig.add("detail_first_poll_s", first["elapsed"])
    fig.add("detail_off_first_poll_s", plain["elapsed"])
    fig.add("detail_per_entry_ms", (first["elapsed"] - plain["elapsed"]) / first["new"] * 1000)
    fig.add("detail_article_fetches_first_poll", first_articles)
    fig.add("detail_article_fetches_second_poll", second_articles)
    fig.add("detail_article_fetches_after_one_new_post_each", bumped_articles)
    fig.add("detail_new_after_bump", bumped["new"])
    for directory in (plain_dir, detail_dir):
        shutil.rmtree(directory, ignore_errors=True)


def micro(fig: Figures, repeat: int) -> None:
    done = subprocess.run(
        [PYTHON, str(HERE / "micro.py"), f"--repeat={repeat}"],
        capture_output=True,
        text=True,
        check=True,
    )
    for name, value in json.loads(done.stdout).items():
        fig.add(f"micro_{name}", value)


def rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def all_polled(health_url: str, since: datetime) -> bool:
    with urllib.request.urlopen(health_url, timeout=30) as response:
        sources = json.loads(response.read())["sources"]
    return all(
        s["last_poll"] and datetime.fromisoformat(s["last_poll"]) >= since.replace(microsecond=0)
        for s in sources.values()
    )


def daemon_and_serving(
    fig: Figures, main: Path, n: int, seconds: float, during_wait: Callable[[], None]
) -> None:
    port = free_port()
    config = main / "config.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(re.sub(r"(?m)^listen = .*$", f'listen = "127.0.0.1:{port}"', text, count=1))
    base = f"http://127.0.0.1:{port}"
    started = datetime.now(UTC)
    log = (main / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [PYTHON, "-m", "feedwatch", "--config", str(config), "--log-level", "warning", "run"],
        stdout=log,
        stderr=log,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    nginx = None
    try:
        if not serving.wait_http(base + "/healthz", 30):
            raise RuntimeError(f"the daemon did not start: {(main / 'daemon.log').read_text()}")
        during_wait()
        deadline = time.monotonic() + 120
        while not all_polled(base + "/healthz", started) and time.monotonic() < deadline:
            time.sleep(2)
        fig.add("daemon_all_sources_polled", all_polled(base + "/healthz", started))
        time.sleep(3)
        fig.add("daemon_idle_rss_mb", rss_mb(daemon.pid, "VmRSS"))
        fig.add("daemon_peak_rss_mb", rss_mb(daemon.pid, "VmHWM"))

        nginx_port = free_port()
        nginx = serving.start_nginx(main / "feeds", main / "nginx", nginx_port)
        paths = [f"/s{i:05d}.atom" for i in range(min(n, 100))]
        targets = {"daemon": base}
        if nginx is not None:
            targets["nginx"] = f"http://127.0.0.1:{nginx_port}"
        else:
            print("# nginx not found: serving floor skipped", flush=True)
        rates: dict[str, float] = {}
        for name, url in targets.items():
            etags = [serving.etag_of(url + p) for p in paths]
            for kind, tags in (("200", None), ("304", etags)):
                result = serving.load(url, paths, tags, seconds, SERVE_CONNECTIONS)
                if result.bad:
                    raise RuntimeError(f"{name} {kind}: {result.bad} unexpected responses")
                rates[f"{kind}_{name}"] = result.rps
                fig.add(f"serve_{kind}_rps_{name}", result.rps)
            fig.add("serve_load_tool", result.tool)
        if nginx is not None:
            fig.add("serve_200_vs_nginx", rates["200_daemon"] / rates["200_nginx"])
            fig.add("serve_304_vs_nginx", rates["304_daemon"] / rates["304_nginx"])
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            daemon.kill()
        if nginx is not None:
            nginx.terminate()
            nginx.wait(timeout=10)
        log.close()
        config.write_text(text, encoding="utf-8")


def machine() -> dict[str, Any]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument("--pages", type=int, default=1)
    parser.add_argument(
        "--quick", action="store_true", help="2 rounds; N=100 and N only; shorter loads"
    )
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--hosts", type=int, default=64, help="loopback addresses to spread on")
    args = parser.parse_args()
    n = args.sources
    rounds = args.rounds or (2 if args.quick else 5)
    sizes = sorted({min(100, n), n} if args.quick else {100, 1000, 5000, n})
    started = time.monotonic()
    fig = Figures()
    info = machine()
    for key, value in info.items():
        print(f"# {key}: {value}")
    fig.add("sources", n)
    fig.add("pages_per_source", args.pages)
    fig.add("rounds", rounds)
    fig.add("page_bytes", fakesite.PAGE_BYTES)
    work = Path(tempfile.mkdtemp(prefix="feedwatch-bench-"))
    site = Site(max(sizes), args.pages, args.hosts)
    try:
        cold_s, cold_rss, main_dir = refresh_rounds(
            fig, site, work, n, rounds, httpx_every_round=not args.quick
        )
        scaling(fig, site, work, sizes, {n: (cold_s, cold_rss)})
        stored_entries_memory(fig, site, work, min(100, n))
        daemon_and_serving(
            fig,
            main_dir,
            n,
            3.0 if args.quick else 10.0,
            during_wait=lambda: (
                micro(fig, 50 if args.quick else 200),
                detail_cost(fig, site, work, min(20, n)),
            ),
        )
    finally:
        site.stop()
        shutil.rmtree(work, ignore_errors=True)
    fig.add("bench_seconds", time.monotonic() - started)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = results / f"{stamp}-N{n}-P{args.pages}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps({"machine": info, "figures": fig.values}, indent=2) + "\n")
    print(f"# written: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
