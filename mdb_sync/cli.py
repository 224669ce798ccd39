"""The ``mdb`` command line (click).

Human-readable output by default, ``--json`` for machines; exit status 0 on success, 1 when
the command ran and found a problem (an invalid manifest, an unhealthy server), 2 for usage
errors (click's own convention).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from . import __version__, embedded
from .exceptions import MongoDBEngineError

#: Key of ``click.Context.obj`` holding an engine provided by a host (``flask mdb``).
ENGINE_KEY = "mdb_engine"


def engine_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--uri``/``--db`` and pass an initialized engine as the ``engine`` argument.

    When the command runs under a host that already has an engine (``flask mdb`` puts it in
    ``ctx.obj[ENGINE_KEY]``), that engine is used and the options are ignored; otherwise one
    is created from the options (or ``MDB_MONGO_URI``/``MDB_DB_NAME``, or the embedded
    server) and shut down afterwards. A connection failure exits with status 1.
    """

    @click.option(
        "--uri",
        envvar="MDB_MONGO_URI",
        default=None,
        help="MongoDB URI (env MDB_MONGO_URI; default: the embedded server).",
    )
    @click.option(
        "--db",
        "db_name",
        envvar="MDB_DB_NAME",
        default=None,
        help="Database name (env MDB_DB_NAME).",
    )
    @click.pass_context
    @functools.wraps(func)
    def wrapper(ctx: click.Context, uri: str | None, db_name: str | None, **kwargs: Any) -> Any:
        hosted = (ctx.obj or {}).get(ENGINE_KEY) if isinstance(ctx.obj, dict) else None
        if hosted is not None:
            return ctx.invoke(func, engine=hosted, **kwargs)
        from .engine import MongoDBEngine

        engine = MongoDBEngine(uri, db_name)
        try:
            engine.initialize()
        except MongoDBEngineError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)
        try:
            return ctx.invoke(func, engine=engine, **kwargs)
        finally:
            engine.shutdown()

    return wrapper


def _emit(data: Any, as_json: bool, human: str) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(human)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mdb")
def cli() -> None:
    """mdb-sync: manage apps, indexes, data and the embedded server."""


# --- embedded server ----------------------------------------------------------------------------


@cli.group("embedded")
def embedded_group() -> None:
    """Start, inspect or stop the shared embedded MongoDB-compatible server."""


_dir_option = click.option(
    "--dir",
    "embedded_dir",
    envvar=embedded.EMBEDDED_DIR_ENV,
    default=None,
    help="Directory of the embedded server (default ./.mdb; env MDB_EMBEDDED_DIR).",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@embedded_group.command("start")
@_dir_option
@_json_option
def embedded_start(embedded_dir: str | None, as_json: bool) -> None:
    """Start the server (or find the running one) and keep it up until `mdb embedded stop`."""
    try:
        server = embedded.ensure_running(embedded_dir, pin=True)
    except MongoDBEngineError as exc:
        raise click.ClickException(str(exc)) from exc
    info = embedded.status(embedded_dir)
    _emit(
        info,
        as_json,
        f"embedded server running (pid {server.pid}) at {server.uri}\n"
        f"data: {info['data_dir']}\nexport MDB_MONGO_URI='{server.uri}'",
    )


@embedded_group.command("status")
@_dir_option
@_json_option
def embedded_status(embedded_dir: str | None, as_json: bool) -> None:
    """Show whether the server runs, where, and which processes use it (exit 1 if stopped)."""
    info = embedded.status(embedded_dir)
    if info["running"]:
        human = (
            f"running (pid {info['pid']}) at {info['uri']}\ndata: {info['data_dir']}\n"
            f"pinned: {info['pinned']}; processes using it: {len(info['leases'])}"
        )
    else:
        human = f"not running (data: {info['data_dir']})"
    _emit(info, as_json, human)
    if not info["running"]:
        sys.exit(1)


@embedded_group.command("stop")
@_dir_option
@_json_option
def embedded_stop(embedded_dir: str | None, as_json: bool) -> None:
    """Stop the server, whoever started it."""
    stopped = embedded.stop(embedded_dir)
    _emit({"stopped": stopped}, as_json, "stopped" if stopped else "no embedded server was running")


# --- manifests and indexes -------------------------------------------------------------------


@cli.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--lenient", is_flag=True, help="Keep unknown keys instead of refusing them.")
@_json_option
def validate_command(files: tuple[str, ...], lenient: bool, as_json: bool) -> None:
    """Validate manifest files; exit 1 if any is invalid."""
    from .manifest import load_manifest

    report = []
    for path in files:
        try:
            manifest = load_manifest(path, lenient=lenient)
            report.append({"file": path, "valid": True, "slug": manifest["slug"]})
        except MongoDBEngineError as exc:
            errors = getattr(exc, "errors", {}) or {"": [str(exc)]}
            report.append({"file": path, "valid": False, "errors": errors})
    lines = []
    for entry in report:
        if entry["valid"]:
            lines.append(f"ok      {entry['file']} ({entry['slug']})")
        else:
            lines.append(f"INVALID {entry['file']}")
            for where, messages in entry["errors"].items():
                lines.append(f"  {where or '<file>'}: {'; '.join(messages)}")
    _emit(report, as_json, "\n".join(lines))
    if not all(entry["valid"] for entry in report):
        sys.exit(1)


@cli.group("indexes")
def indexes_group() -> None:
    """List, reconcile and suggest the indexes of registered apps."""


def _keys_text(keys: Any) -> str:
    return ", ".join(f"{k}: {v}" for k, v in keys or [])


@indexes_group.command("list")
@click.argument("app", required=False)
@_json_option
@engine_options
def indexes_list(engine: Any, app: str | None, as_json: bool) -> None:
    """Show every index of APP (or of all registered apps) and where it comes from."""
    from .indexes.tools import list_indexes

    try:
        rows = list_indexes(engine, app)
    except MongoDBEngineError as exc:
        raise click.ClickException(str(exc)) from exc
    lines = [
        f"{r['slug']}.{r['collection']}  {r['name']}  [{_keys_text(r.get('keys'))}]  "
        f"{r['origin']}, {r['status']}" + (f": {r['error']}" if r.get("error") else "")
        for r in rows
    ]
    _emit(rows, as_json, "\n".join(lines) or "no indexes")


@indexes_group.command("sync")
@click.argument("app", required=False)
@click.option("--replace", is_flag=True, help="Rebuild indexes whose definition changed.")
@click.option(
    "--wait",
    "wait",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for Atlas Search indexes to become queryable.",
)
@_json_option
@engine_options
def indexes_sync(engine: Any, app: str | None, replace: bool, wait: float, as_json: bool) -> None:
    """Reconcile the declared indexes of APP (or all apps); exit 1 on conflicts or failures."""
    from .indexes.tools import sync_indexes

    try:
        results = sync_indexes(engine, app, replace=replace, search_timeout=wait)
    except MongoDBEngineError as exc:
        raise click.ClickException(str(exc)) from exc
    lines = []
    for slug, outcomes in results.items():
        for o in outcomes:
            error = f": {o['error']}" if o.get("error") else ""
            lines.append(f"{slug}.{o['collection']}  {o['name']}  {o['status']}{error}")
    _emit(results, as_json, "\n".join(lines) or "no declared indexes")
    if any(o["status"] in ("conflict", "failed") for v in results.values() for o in v):
        sys.exit(1)


@indexes_group.command("suggest")
@click.argument("app", required=False)
@click.option("--min-count", type=int, default=1, show_default=True, help="Ignore rarer shapes.")
@click.option("--apply", "apply_", is_flag=True, help="Build the suggested indexes.")
@_json_option
@engine_options
def indexes_suggest(
    engine: Any, app: str | None, min_count: int, apply_: bool, as_json: bool
) -> None:
    """Indexes that the observed queries of APP (or all apps) would use."""
    from .indexes.tools import apply_suggestions, suggest_indexes

    try:
        rows = suggest_indexes(engine, app, min_count=min_count)
    except MongoDBEngineError as exc:
        raise click.ClickException(str(exc)) from exc
    data: Any = rows
    lines = [
        f"{r['slug']}.{r['collection']}  [{_keys_text(r['keys'])}]  seen {r['count']}x  "
        f"{r['status']}"
        for r in rows
    ]
    if apply_:
        built = apply_suggestions(engine, rows)
        data = {"suggestions": rows, "applied": built}
        lines += [
            f"built {b['name']} on {b['slug']}.{b['collection']}: {b['status']}" for b in built
        ]
    _emit(data, as_json, "\n".join(lines) or "no query shapes observed yet")


def main() -> None:
    """Entry point of the ``mdb`` console script."""
    cli(prog_name="mdb")


if __name__ == "__main__":  # pragma: no cover
    main()
