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


def main() -> None:
    """Entry point of the ``mdb`` console script."""
    cli(prog_name="mdb")


if __name__ == "__main__":  # pragma: no cover
    main()
