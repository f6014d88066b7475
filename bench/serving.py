"""Feed serving load: wrk (or a Python client) against the daemon and against nginx.

nginx serving the same output_dir with one worker is the serving floor: what a static
file server does for the same requests on the same machine in the same run.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
user root root;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
    types {{
        application/atom+xml atom;
        application/rss+xml rss;
        application/feed+json json;
        text/x-opml opml;
    }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        etag on;
    }}
}}
"""

WRK_SCRIPT = """\
local paths = {{{paths}}}
local etags = {{{etags}}}
local i = 0
request = function()
  i = i % #paths + 1
  local headers = {{}}
  if #etags > 0 then headers["If-None-Match"] = etags[i] end
  return wrk.format("GET", paths[i], headers)
end
"""


@dataclass(frozen=True)
class Load:
    rps: float
    tool: str
    bad: int  # responses that were not the expected status


def start_nginx(root: Path, prefix: Path, port: int) -> subprocess.Popen[bytes] | None:
    binary = shutil.which("nginx")
    if binary is None:
        return None
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, root=root))
    proc = subprocess.Popen(
        [binary, "-p", str(prefix), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if not wait_http(f"http://127.0.0.1:{port}/index.opml", 10):
        proc.terminate()
        return None
    return proc


def wait_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    return False


def etag_of(url: str) -> str:
    """The ETag a server gives `url`, after checking it answers If-None-Match with a 304."""
    with urllib.request.urlopen(url, timeout=5) as response:
        etag = response.headers["ETag"]
    request = urllib.request.Request(url, headers={"If-None-Match": etag})
    try:
        urllib.request.urlopen(request, timeout=5)
    except urllib.error.HTTPError as err:
        if err.code == 304:
            return etag
        raise
    raise RuntimeError(f"{url}: If-None-Match {etag} did not give a 304")


def load(
    base: str, paths: list[str], etags: list[str] | None, seconds: float, connections: int
) -> Load:
    """Requests/s over `paths` in turn, conditional when `etags` are given."""
    if shutil.which("wrk"):
        return _wrk(base, paths, etags, seconds, connections)
    return asyncio.run(_python_load(base, paths, etags, seconds, connections))


def _lua_list(items: list[str]) -> str:
    return ", ".join('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items)


def _wrk(
    base: str, paths: list[str], etags: list[str] | None, seconds: float, connections: int
) -> Load:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT.format(paths=_lua_list(paths), etags=_lua_list(etags or [])))
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", script.name, base],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 30,
        ).stdout
    finally:
        Path(script.name).unlink()
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    return Load(rps=rps, tool="wrk -t1", bad=int(bad.group(1)) if bad else 0)


async def _python_load(
    base: str, paths: list[str], etags: list[str] | None, seconds: float, connections: int
) -> Load:
    """Fallback load client: aiohttp, `connections` keep-alive connections, same request mix."""
    import aiohttp

    expected = 304 if etags else 200
    count = bad = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:

        async def worker(offset: int) -> None:
            nonlocal count, bad
            i = offset
            while time.monotonic() < deadline:
                i = (i + 1) % len(paths)
                headers = {"If-None-Match": etags[i]} if etags else {}
                async with session.get(base + paths[i], headers=headers) as response:
                    await response.read()
                    count += 1
                    bad += response.status != expected

        started = time.monotonic()
        await asyncio.gather(*(worker(k) for k in range(connections)))
        elapsed = time.monotonic() - started
    return Load(rps=count / elapsed, tool="python aiohttp client", bad=bad)
