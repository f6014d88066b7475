"""Read config.toml and validate it completely before anything is fetched.

pydantic does the type checking; this module adds what a schema cannot say
(durations, slugs, CSS selectors that compile, unique names) and turns every
failure into one line that names the source and the key, because a user
editing TOML wants to know where, not a stack trace.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from selectolax.lexbor import LexborHTMLParser

from feedwatch.models import Selectors

NOTIFY_EVENTS = ("new", "updated", "failing", "recovered")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_EMPTY_DOC = LexborHTMLParser("<html></html>")


class ConfigError(Exception):
    """A config problem, worded for the person editing config.toml."""


def parse_duration(value: Any) -> float:
    """Accept `90s`, `30m`, `1h`, `1d`, `1h30m` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '90s', '30m', '1h' or '1d'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        parts = _DURATION.findall(text)
        if not parts or _DURATION.sub("", text).strip():
            raise ValueError(f"{value!r} is not a duration like '90s', '30m', '1h' or '1d'")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        raise ValueError("expected a duration like '90s', '30m', '1h' or '1d'")
    if seconds <= 0:
        raise ValueError(f"{value!r} must be longer than zero")
    return seconds


def check_selector(value: str) -> str:
    """Compile the selector against an empty document: lexbor rejects what it cannot parse."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty CSS selector")
    try:
        _EMPTY_DOC.css(value)
    except Exception as err:
        raise ValueError(f"invalid CSS selector {value!r}") from err
    return value


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"unknown time zone {value!r}") from err
    return value


def _check_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as err:
        raise ValueError(f"invalid regex {value!r}: {err}") from err
    return value


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
Selector = Annotated[str, BeforeValidator(check_selector)]
TimeZone = Annotated[str, BeforeValidator(_check_timezone)]
Regex = Annotated[str, BeforeValidator(_check_regex)]
HttpUrl = Annotated[str, BeforeValidator(_check_http_url)]
NotifyEvent = Literal["new", "updated", "failing", "recovered"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class SelectModel(_Strict):
    entry: Selector
    title: Selector | None = None
    link: Selector | None = None
    date: Selector | None = None
    author: Selector | None = None
    teaser: Selector | None = None
    exclude: tuple[Selector, ...] = ()


class _Overridable(_Strict):
    """Keys that [feedwatch] sets for everyone and a source may override."""

    interval: Duration | None = None
    timeout: Duration | None = None
    max_bytes: int | None = Field(default=None, gt=0)
    max_entries: int | None = Field(default=None, gt=0)
    user_agent: str | None = Field(default=None, min_length=1)
    timezone: TimeZone | None = None
    notify: tuple[str, ...] | None = None
    notify_on: tuple[NotifyEvent, ...] | None = None
    math: Literal["keep", "mathml"] | None = None


class SourceModel(_Overridable):
    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    url: HttpUrl
    title: str | None = None
    max_pages: int = Field(default=1, ge=1, le=100)
    next_page: Selector | None = None
    detail: bool = False
    content: Literal["teaser", "full"] = "teaser"
    content_selector: Selector | None = None
    ignore: tuple[Regex, ...] = ()
    drop_removed: bool = False
    announce_updates: bool = False
    select: SelectModel | None = None


class GlobalModel(_Overridable):
    state: str = "state.db"
    output_dir: str = "feeds"
    listen: str = "127.0.0.1:8080"
    base_url: HttpUrl | None = None
    failing_after: int = Field(default=3, ge=1)
    concurrency: int = Field(default=32, ge=1, le=1000)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{value!r} is not HOST:PORT")
        return value


class FileModel(_Strict):
    feedwatch: GlobalModel = GlobalModel()
    sources: tuple[SourceModel, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> FileModel:
        seen: set[str] = set()
        for source in self.sources:
            if source.name in seen:
                raise ValueError(f"duplicate source name {source.name!r}")
            seen.add(source.name)
        return self


DEFAULTS: dict[str, Any] = {
    "interval": 1800.0,
    "timeout": 20.0,
    "max_bytes": 5_000_000,
    "max_entries": 50,
    "user_agent": "feedwatch/1.0",
    "timezone": "UTC",
    "notify": (),
    "notify_on": NOTIFY_EVENTS,
    "math": "keep",
}


@dataclass(frozen=True)
class Source:
    """One source with every inherited setting resolved, so no caller looks at [feedwatch]."""

    name: str
    url: str
    title: str | None
    interval: float
    max_pages: int
    next_page: str | None
    timezone: str
    detail: bool
    content: str
    content_selector: str | None
    ignore: tuple[str, ...]
    drop_removed: bool
    announce_updates: bool
    notify: tuple[str, ...]
    notify_on: tuple[str, ...]
    math: str
    timeout: float
    max_bytes: int
    user_agent: str
    max_entries: int
    select: Selectors | None

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def ignore_patterns(self) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(p) for p in self.ignore)

    @property
    def poll_timeout(self) -> float:
        """A whole poll may take one request timeout per page plus one spare."""
        return self.timeout * (self.max_pages + 1)


@dataclass(frozen=True)
class Config:
    path: Path
    state: Path
    output_dir: Path
    listen_host: str
    listen_port: int
    base_url: str
    failing_after: int
    concurrency: int
    sources: tuple[Source, ...]

    def source(self, name: str) -> Source | None:
        return next((s for s in self.sources if s.name == name), None)


def default_path() -> Path:
    return Path(os.environ.get("FEEDWATCH_CONFIG") or "config.toml")


def load(path: Path | str | None = None) -> Config:
    """Read and validate the config; every problem becomes a ConfigError naming its key."""
    path = Path(path) if path is not None else default_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file: {err.strerror or err}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config file is not UTF-8") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None
    return from_dict(data, path)


def from_dict(data: dict[str, Any], path: Path) -> Config:
    try:
        model = FileModel.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{path}: {_describe(err, data)}") from None
    return _resolve(model, path)


def _describe(err: ValidationError, data: dict[str, Any]) -> str:
    """Turn pydantic's first error into 'sources[kexue].select.title: invalid CSS selector …'."""
    first = err.errors()[0]
    loc = list(first["loc"])
    key = ""
    sources = data.get("sources") if isinstance(data, dict) else None
    for i, part in enumerate(loc):
        if isinstance(part, int) and i > 0 and loc[i - 1] == "sources":
            name = None
            if isinstance(sources, list) and part < len(sources):
                entry = sources[part]
                name = entry.get("name") if isinstance(entry, dict) else None
            key += f"[{name}]" if isinstance(name, str) else f"[{part}]"
        elif isinstance(part, int):
            key += f"[{part}]"
        elif part in ("function-after", "function-before") or "[" in str(part):
            continue
        else:
            key += ("." if key else "") + str(part)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required key is missing"
    if key in ("", "sources") and "duplicate source name" in message:
        return message
    return f"{key}: {message}" if key else message


def _resolve(model: FileModel, path: Path) -> Config:
    base = path.resolve().parent
    glob = model.feedwatch
    host, _, port = glob.listen.rpartition(":")
    base_url = glob.base_url or f"http://{host}:{port}/"
    if not base_url.endswith("/"):
        base_url += "/"

    def pick(source: SourceModel, key: str) -> Any:
        for value in (getattr(source, key), getattr(glob, key)):
            if value is not None:
                return value
        return DEFAULTS[key]

    sources = tuple(
        Source(
            name=s.name,
            url=s.url,
            title=s.title,
            interval=pick(s, "interval"),
            max_pages=s.max_pages,
            next_page=s.next_page,
            timezone=pick(s, "timezone"),
            detail=s.detail,
            content=s.content,
            content_selector=s.content_selector,
            ignore=s.ignore,
            drop_removed=s.drop_removed,
            announce_updates=s.announce_updates,
            notify=tuple(pick(s, "notify")),
            notify_on=tuple(pick(s, "notify_on")),
            math=pick(s, "math"),
            timeout=pick(s, "timeout"),
            max_bytes=pick(s, "max_bytes"),
            user_agent=pick(s, "user_agent"),
            max_entries=pick(s, "max_entries"),
            select=Selectors(**s.select.model_dump()) if s.select else None,
        )
        for s in model.sources
    )
    return Config(
        path=path.resolve(),
        state=(base / glob.state).resolve(),
        output_dir=(base / glob.output_dir).resolve(),
        listen_host=host.strip("[]"),
        listen_port=int(port),
        base_url=base_url,
        failing_after=glob.failing_after,
        concurrency=glob.concurrency,
        sources=sources,
    )
