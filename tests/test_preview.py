"""`feedwatch preview` and zero-config sources, end to end on the local site."""

from __future__ import annotations

import json
from pathlib import Path

import feedparser

from tests.conftest import run_cli, write_config
from tests.site import TRUTH, Site

HOME1 = TRUTH["pages"]["home-1.html"]["entries"]


def auto_source(site: Site, name: str = "auto", path: str = "/") -> str:
    return f'[[sources]]\nname = "{name}"\nurl = "{site.url(path)}"\n'


def atom_entries(config: Path, name: str) -> list[tuple[str, str, str]]:
    parsed = feedparser.parse((config.parent / "feeds" / f"{name}.atom").read_bytes())
    assert parsed.bozo == 0
    return [(e.link, e.title, e.get("summary", "")) for e in parsed.entries]


def test_preview_of_a_url_shows_detected_selectors_and_entries(site: Site) -> None:
    site.serve_fixture_site()
    result = run_cli("preview", site.url("/"))
    assert result.exit_code == 0
    assert "div.post" in result.stdout and "auto-detected" in result.stdout
    assert "8 entries on this page" in result.stdout


def test_preview_json_lists_every_entry_with_its_link_and_title(site: Site) -> None:
    site.serve_fixture_site()
    found = json.loads(run_cli("preview", site.url("/"), "--json").stdout)
    assert found["count"] == 8
    assert [e["link"] for e in found["entries"]] == [site.local(e["link"]) for e in HOME1]
    assert [e["title"] for e in found["entries"]] == [e["title"] for e in HOME1]
    assert found["selectors"]["entry"] == "div.post"


def test_preview_of_a_configured_source_uses_its_selectors(site: Site, tmp_path: Path) -> None:
    site.serve_fixture_site()
    config = write_config(
        tmp_path,
        auto_source(site, "blog") + '[sources.select]\nentry = "div.post"\ntitle = "h2 a"\n',
    )
    found = json.loads(run_cli("preview", "blog", "--json", "--config", str(config)).stdout)
    assert found["how"] == "configured selectors"
    assert found["selectors"]["title"] == "h2 a"
    assert not (tmp_path / "state.db").exists()


def test_preview_exits_1_when_nothing_entry_like_is_found(site: Site) -> None:
    site.put("/empty/", "<html><body><h1>Hello</h1><p>Nothing to see.</p></body></html>")
    result = run_cli("preview", site.url("/empty/"))
    assert result.exit_code == 1
    assert "nothing entry-like" in result.stdout + result.stderr


def test_preview_of_an_unreachable_page_exits_1_with_the_cause(site: Site) -> None:
    result = run_cli("preview", site.url("/missing/"))
    assert result.exit_code == 1
    assert "HTTP 404" in result.stderr


def test_preview_toml_pasted_into_a_config_gives_the_auto_detected_feed(
    site: Site, tmp_path: Path
) -> None:
    site.serve_fixture_site()
    block = run_cli("preview", site.url("/"), "--toml").stdout
    assert block.startswith("[[sources]]")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    auto = write_config(tmp_path / "a", auto_source(site, "blog") + "max_pages = 1\n")
    pasted = write_config(tmp_path / "b", block.replace('name = "127-0-0-1"', 'name = "blog"'))
    assert run_cli("refresh", "--config", str(auto)).exit_code == 0
    assert run_cli("refresh", "--config", str(pasted)).exit_code == 0
    assert atom_entries(auto, "blog") == atom_entries(pasted, "blog")
    assert len(atom_entries(auto, "blog")) == 8


def test_a_source_without_selectors_is_auto_detected(site: Site, tmp_path: Path) -> None:
    site.serve_fixture_site()
    config = write_config(tmp_path, auto_source(site, "math", "/category/Mathematics/"))
    result = run_cli("refresh", "--config", str(config))
    assert result.stdout.splitlines() == ["math: 8 new, 0 updated, 0 seen"]
    links = {link for link, _, _ in atom_entries(config, "math")}
    assert links == {site.local(e["link"]) for e in TRUTH["pages"]["category-1.html"]["entries"]}


def test_a_redesigned_site_is_detected_again_and_recorded(site: Site, tmp_path: Path) -> None:
    site.serve_fixture_site()
    config = write_config(tmp_path, auto_source(site) + "max_pages = 1\n")
    run_cli("refresh", "--config", str(config))
    redesigned = (
        site.fixture("home-1.html")
        .replace('class="post"', 'class="entry"')
        .replace('class="post-title"', 'class="entry-title"')
        .replace('class="post-body"', 'class="entry-content"')
    )
    site.put("/", redesigned)
    result = run_cli("refresh", "--config", str(config))
    assert result.stdout.splitlines() == ["auto: 0 new, 0 updated, 8 seen"]
    events = json.loads(run_cli("history", "auto", "--json", "--config", str(config)).stdout)
    redetected = [e for e in events if e["kind"] == "selectors_redetected"]
    assert len(redetected) == 1
    assert redetected[0]["new"]["selectors"]["entry"] == "div.entry"
