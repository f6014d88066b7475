"""Shared test plumbing: the local site, config files, and running the CLI in-process."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from feedwatch.cli import main
from tests.site import Site

KEXUE_SELECT = """
[sources.select]
entry = "div.post"
title = "h2.post-title a"
link = "h2.post-title a, a.more-link"
date = ".post-date"
author = ".post-meta .author"
teaser = ".post-body"
exclude = ["p.more", "a.more-link", "script"]
"""


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site().start()
    yield s
    s.stop()


def kexue_sources(site: Site, *, home_pages: int = 3, extra: str = "") -> str:
    """The reference blog as two sources: the home pages and one category page."""
    return f"""
[[sources]]
name = "kexue"
url = "{site.url("/")}"
title = "科学空间|Scientific Spaces"
max_pages = {home_pages}
next_page = "div.pagination a.next"
{extra}
{KEXUE_SELECT}

[[sources]]
name = "math"
url = "{site.url("/category/Mathematics/")}"
{KEXUE_SELECT}
"""


def write_config(directory: Path, sources: str, settings: str = "") -> Path:
    path = directory / "config.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [feedwatch]
            state = "state.db"
            output_dir = "feeds"
            base_url = "http://127.0.0.1:8080/"
            timezone = "Asia/Shanghai"
            timeout = "5s"
            {settings}
            """
        )
        + sources,
        encoding="utf-8",
    )
    return path


def run_cli(*args: str) -> Result:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return Result(result.exit_code, result.stdout, result.stderr)
