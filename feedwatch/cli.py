"""The `feedwatch` command: argument parsing, exit codes, tables; all work is done elsewhere.

Exit codes follow SPEC.md: 0 ok, 1 a source failed (or preview found nothing),
2 bad config or usage. `--config` is accepted before or after the command name.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import uvloop
from rich.console import Console
from rich.table import Table

from feedwatch import config as config_mod
from feedwatch import dates, logs, preview
from feedwatch.config import Config, ConfigError
from feedwatch.models import Event

CONTEXT = {"help_option_names": ["-h", "--help"]}


def _config_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """Every command takes --config too, so it may follow the command name."""

    def remember(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        if value is not None:
            ctx.ensure_object(dict)["config"] = value

    return click.option(
        "--config",
        "-c",
        metavar="PATH",
        expose_value=False,
        callback=remember,
        help="config file (default: $FEEDWATCH_CONFIG, else ./config.toml)",
    )(func)


def _load(ctx: click.Context) -> Config:
    """Load and validate the config; a config problem ends the command with exit code 2."""
    path = ctx.find_root().ensure_object(dict).get("config")
    try:
        return config_mod.load(path)
    except ConfigError as err:
        click.echo(f"feedwatch: {err}", err=True)
        ctx.exit(2)
        raise AssertionError("unreachable") from err


@click.group(context_settings=CONTEXT)
@_config_option
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default=None,
    help="log verbosity on stderr (default: warning; info for `run`)",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    help="json writes one JSON object per log line, for log shippers",
)
@click.version_option(package_name="feedwatch")
@click.pass_context
def main(ctx: click.Context, log_level: str | None, log_format: str) -> None:
    """Feeds for web sites that publish index pages but no (good) feed."""
    ctx.ensure_object(dict).update(log_level=log_level, log_format=log_format)


def _setup_logging(ctx: click.Context, default: str) -> None:
    obj = ctx.find_root().ensure_object(dict)
    logs.setup(obj.get("log_level") or default, obj.get("log_format") or "text")


@main.command()
@_config_option
@click.argument("names", nargs=-1)
@click.option("--full", is_flag=True, help="ignore validators and follow every next page")
@click.pass_context
def refresh(ctx: click.Context, names: tuple[str, ...], full: bool) -> None:
    """Poll the named sources (default: all) once, now, and write their feeds."""
    _setup_logging(ctx, "warning")
    config = _load(ctx)
    sources = _pick(ctx, config, names)
    from feedwatch.notify import Notifier
    from feedwatch.poll import refresh as run_refresh

    notifier = Notifier(config)
    # Nothing loaded so far (modules, config) is ever garbage in this short-lived process;
    # without this, the collector's full passes over it took 5-10% of a warm refresh.
    gc.freeze()
    results = uvloop.run(run_refresh(config, sources, full=full, on_events=notifier.on_poll))
    notifier.flush()
    for result in results:
        click.echo(result.summary())
    ctx.exit(0 if all(r.ok for r in results) else 1)


def _pick(ctx: click.Context, config: Config, names: Sequence[str]) -> list[config_mod.Source]:
    if not names:
        return list(config.sources)
    unknown = [n for n in names if config.source(n) is None]
    if unknown:
        click.echo(f"feedwatch: unknown source(s): {', '.join(unknown)}", err=True)
        ctx.exit(2)
    return [s for s in config.sources if s.name in names]


@main.command()
@_config_option
@click.pass_context
def run(ctx: click.Context) -> None:
    """Poll every source on its interval and serve the feeds over HTTP until stopped."""
    _setup_logging(ctx, "info")
    config = _load(ctx)
    from feedwatch.daemon import run_daemon

    ctx.exit(run_daemon(config))


@main.command(name="preview")
@_config_option
@click.argument("target", metavar="URL_OR_NAME")
@click.option("--toml", "as_toml", is_flag=True, help="print a ready [[sources]] block")
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
@click.pass_context
def preview_cmd(ctx: click.Context, target: str, as_toml: bool, as_json: bool) -> None:
    """Fetch one page and show the selectors and entries found; stores nothing."""
    _setup_logging(ctx, "warning")
    path = ctx.find_root().ensure_object(dict).get("config")
    config_path = Path(path) if path else config_mod.default_path()
    source = None
    if not target.startswith(("http://", "https://")) or config_path.exists():
        if config_path.exists() or path:
            source = _load(ctx).source(target)
        if source is None and not target.startswith(("http://", "https://")):
            click.echo(f"feedwatch: {target!r} is neither a URL nor a configured source", err=True)
            ctx.exit(2)
    try:
        found = uvloop.run(preview.preview(target if source is None else source))
    except preview.PreviewError as err:
        click.echo(f"feedwatch: {err}", err=True)
        ctx.exit(1)
    if as_json:
        click.echo(json.dumps(found.as_dict(), ensure_ascii=False, indent=2))
    elif as_toml:
        click.echo(found.as_toml())
    else:
        _print_preview(found)
    ctx.exit(0 if found.entries else 1)


def _print_preview(found: preview.Preview) -> None:
    console = Console(soft_wrap=True)
    console.print(f"[bold]{found.url}[/bold]  ({found.how})")
    for key, value in found.selector_items():
        console.print(f"  {key:10} {value}")
    table = Table(title=f"{len(found.entries)} entries on this page")
    for column in ("date", "title", "link", "teaser"):
        table.add_column(column, overflow="fold")
    for entry in found.entries:
        table.add_row(entry["date"] or "", entry["title"], entry["link"], entry["teaser"])
    console.print(table)
    if not found.entries:
        console.print("nothing entry-like was found on this page")


@main.command()
@_config_option
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show each source's last poll, result, entry count, last new entry and next poll."""
    _setup_logging(ctx, "warning")
    config = _load(ctx)
    from feedwatch.store import Store

    store = Store(config.state)
    try:
        known = {s.source: s for s in store.statuses()}
    finally:
        store.close()
    rows = []
    for source in config.sources:
        st = known.get(source.name)
        rows.append(
            {
                "source": source.name,
                "last_poll": _iso(st.last_poll if st else None),
                "result": _result(st),
                "entries": st.entries if st else 0,
                "last_new": _iso(st.last_new if st else None),
                "next_poll": _iso(st.next_poll if st else None),
                "consecutive_failures": st.consecutive_failures if st else 0,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table = Table()
    for column in ("source", "last poll", "result", "entries", "last new entry", "next poll"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["source"],
            _short(row["last_poll"]),
            row["result"],
            str(row["entries"]),
            _short(row["last_new"]),
            _short(row["next_poll"]),
        )
    Console(soft_wrap=True).print(table)


def _result(st: Any) -> str:
    if st is None or st.ok is None:
        return "never polled"
    if st.ok:
        return "ok"
    streak = f" ({st.consecutive_failures}× in a row)" if st.consecutive_failures > 1 else ""
    return f"error: {st.error}{streak}"


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).isoformat(timespec="seconds") if when else None


def _short(iso: str | None) -> str:
    return iso.replace("T", " ").replace("+00:00", "Z") if iso else "-"


@main.command()
@_config_option
@click.argument("name")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="at most N events")
@click.option("--since", metavar="DATE", default=None, help="2024-05-01, an ISO time, or 7d/12h")
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
@click.pass_context
def history(
    ctx: click.Context, name: str, limit: int | None, since: str | None, as_json: bool
) -> None:
    """What changed for one source and when, newest first."""
    _setup_logging(ctx, "warning")
    config = _load(ctx)
    source = config.source(name)
    if source is None:
        click.echo(f"feedwatch: unknown source {name!r}", err=True)
        ctx.exit(2)
    since_at = None
    if since:
        try:
            since_at = dates.parse_since(since, now=datetime.now(UTC), tz=source.tz)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--since") from err
    from feedwatch.store import Store

    store = Store(config.state)
    try:
        events = store.events(name, limit=limit, since=since_at)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps([_event_dict(e) for e in events], ensure_ascii=False, indent=2))
        return
    if not events:
        click.echo(f"{name}: no history yet")
    for event in events:
        click.echo(describe_event(event))


def _event_dict(event: Event) -> dict[str, Any]:
    return {
        "at": event.at.astimezone(UTC).isoformat(timespec="seconds"),
        "kind": event.kind,
        "link": event.link,
        **event.data,
    }


def describe_event(event: Event) -> str:
    """One human line per event, with the edit's word diff indented below it."""
    at = event.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    data = event.data
    if event.kind == "new":
        tag = " (backfill)" if data.get("backfill") else ""
        return f"{at}  new{tag}: {data.get('title')} <{event.link}>"
    if event.kind == "updated":
        fields = ", ".join(data.get("fields", []))
        lines = [f"{at}  updated ({fields}): {data.get('title')} <{event.link}>"]
        for key in ("title_diff", "teaser_diff"):
            if data.get(key):
                lines.append(f"      {key.removesuffix('_diff')}: {data[key]}")
        return "\n".join(lines)
    if event.kind == "removed":
        dropped = ", dropped from the feed" if data.get("dropped") else ""
        return f"{at}  removed from index{dropped}: {data.get('title')} <{event.link}>"
    if event.kind in ("error", "drift", "failing"):
        label = {"error": "error", "drift": "selector drift", "failing": "failing"}[event.kind]
        return f"{at}  {label}: {data.get('cause')} (failure #{data.get('failures')})"
    if event.kind == "recovered":
        return f"{at}  recovered (after: {data.get('after')})"
    if event.kind == "selectors_redetected":
        return f"{at}  selectors re-detected: {json.dumps(data.get('new'), ensure_ascii=False)}"
    return f"{at}  {event.kind}: {json.dumps(data, ensure_ascii=False)}"
