"""config.toml: defaults, overrides, paths, and one clear line (exit 2) for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from feedwatch import config as config_mod
from feedwatch.config import ConfigError, parse_duration
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent


def load_text(tmp_path: Path, text: str) -> config_mod.Config:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return config_mod.load(path)


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text)
    return str(caught.value)


SOURCE = '[[sources]]\nname = "blog"\nurl = "https://example.org/"\n'


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("1h", 3600), ("1d", 86400), ("1h30m", 5400), (45, 45)],
)
def test_durations_accept_units(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "10", "-5m", "0s", "5x", ""])
def test_durations_reject_other_text(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_the_example_config_at_the_repo_root_is_valid() -> None:
    config = config_mod.load(ROOT / "config.toml")
    assert [s.name for s in config.sources] == ["kexue", "kexue-math"]
    assert config.sources[0].select is not None


def test_sources_inherit_global_settings_and_may_override_them(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        '[feedwatch]\ninterval = "2h"\ntimezone = "Asia/Shanghai"\nmax_entries = 20\n'
        + SOURCE
        + 'interval = "10m"\n',
    )
    source = config.sources[0]
    assert (source.interval, source.timezone, source.max_entries) == (600, "Asia/Shanghai", 20)
    assert source.timeout == 20 and source.max_bytes == 5_000_000


def test_paths_resolve_relative_to_the_config_file(tmp_path: Path) -> None:
    config = load_text(tmp_path, '[feedwatch]\nstate = "data/x.db"\n' + SOURCE)
    assert config.state == tmp_path / "data" / "x.db"
    assert config.output_dir == tmp_path / "feeds"


def test_the_whole_poll_is_bounded_by_timeout_per_page_plus_one(tmp_path: Path) -> None:
    config = load_text(tmp_path, SOURCE + 'timeout = "5s"\nmax_pages = 3\n')
    assert config.sources[0].poll_timeout == 20


def test_base_url_defaults_to_the_listen_address(tmp_path: Path) -> None:
    config = load_text(tmp_path, '[feedwatch]\nlisten = "127.0.0.1:9999"\n' + SOURCE)
    assert config.base_url == "http://127.0.0.1:9999/"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (SOURCE + "colour = 1\n", "sources[blog].colour: unknown key"),
        ("[feedwatch]\ncolour = 1\n", "feedwatch.colour: unknown key"),
        (
            SOURCE + 'max_pages = "many"\n',
            "sources[blog].max_pages: Input should be a valid integer",
        ),
        (SOURCE + 'interval = "soon"\n', "sources[blog].interval: 'soon' is not a duration"),
        (SOURCE + '[sources.select]\nentry = "div["\n', "sources[blog].select.entry: invalid CSS"),
        (SOURCE + 'next_page = "a:::b"\n', "sources[blog].next_page: invalid CSS selector"),
        (
            '[[sources]]\nname = "b"\nurl = "ftp://x.org/"\n',
            "sources[b].url: 'ftp://x.org/' is not",
        ),
        ('[[sources]]\nname = "Big Blog"\nurl = "https://x.org.test/"\n', "sources[Big Blog].name"),
        ('[[sources]]\nname = "b"\n', "sources[b].url: required key is missing"),
        (SOURCE + 'timezone = "Mars/Olympus"\n', "sources[blog].timezone: unknown time zone"),
        (SOURCE + "ignore = ['((']\n", "sources[blog].ignore[0]: invalid regex"),
        (SOURCE + 'notify_on = ["sometimes"]\n', "sources[blog].notify_on[0]"),
        (SOURCE + SOURCE, "duplicate source name 'blog'"),
    ],
)
def test_invalid_config_names_the_source_and_key(tmp_path: Path, text: str, message: str) -> None:
    assert message in error_of(tmp_path, text)


def test_invalid_toml_reports_its_line(tmp_path: Path) -> None:
    assert "line 4" in error_of(tmp_path, SOURCE + "title = \n")


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        config_mod.load(tmp_path / "nope.toml")


def test_unreadable_config_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(SOURCE)

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ConfigError, match="cannot read config file: Permission denied"):
        config_mod.load(path)


def test_a_directory_as_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        config_mod.load(tmp_path)


def test_config_errors_exit_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(SOURCE + "title = \n", encoding="utf-8")
    for command in (["refresh"], ["status"], ["history", "blog"], ["run"]):
        result = run_cli(*command, "--config", str(path))
        assert result.exit_code == 2
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr + result.stdout


def test_config_path_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text(SOURCE, encoding="utf-8")
    monkeypatch.setenv("FEEDWATCH_CONFIG", str(path))
    assert config_mod.load().path == path
