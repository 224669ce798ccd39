"""The ``mdb`` command line (click).

Human-readable output by default, ``--json`` for machines; exit status 0 on success, 1 when
the command ran and found a problem (an invalid manifest, an unhealthy server), 2 for usage
errors (click's own convention).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from . import __version__, embedded
from .exceptions import MongoDBEngineError

if TYPE_CHECKING:
    from .auth import AuthService

#: Key of ``click.Context.obj`` holding an engine provided by a host (``flask mdb``).
ENGINE_KEY = "mdb_engine"


def engine_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--uri``/``--db`` and pass an initialized engine as the ``engine`` argument.

    When the command runs under a host that already has an engine (``flask mdb`` puts it in
    ``ctx.obj[ENGINE_KEY]``), that engine is used and ``--uri``/``--db`` typed on the command
    line are refused (exit 2) rather than silently ignored; otherwise one
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
    def wrapper(ctx: click.Context, /, uri: str | None, db_name: str | None, **kwargs: Any) -> Any:
        if isinstance(ctx.obj, dict) and ENGINE_KEY in ctx.obj:
            typed = [
                f"--{name.replace('db_name', 'db')}"
                for name in ("uri", "db_name")
                if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
            ]
            if typed:
                raise click.UsageError(
                    f"{' and '.join(typed)} cannot be used here: this command runs on the "
                    "host application's engine (configure it there, e.g. MDB_MONGO_URI)"
                )
            hosted = ctx.obj.get(ENGINE_KEY)
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


def _json_default(value: Any) -> Any:
    """``--json`` output: datetimes in ISO 8601 (UTC, ``Z``), ObjectIds and other BSON values
    as the JSON responses render them, anything else as its string."""
    from .bson_json import bson_json_default

    try:
        return bson_json_default(value)
    except TypeError:
        return str(value)


def _emit(data: Any, as_json: bool, human: str) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=_json_default))
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
@click.option(
    "--durable/--no-durable",
    default=None,
    help="Fsync every commit (--sync-on-commit: acknowledged writes survive a crash; the "
    "default, unless MDB_EMBEDDED_DURABLE=0), or not (about twice the write throughput). "
    "Applies to a server this command starts.",
)
@_json_option
def embedded_start(embedded_dir: str | None, durable: bool | None, as_json: bool) -> None:
    """Start the server (or find the running one) and keep it up until `mdb embedded stop`."""
    try:
        server = embedded.ensure_running(embedded_dir, pin=True, durable=durable)
    except MongoDBEngineError as exc:
        raise click.ClickException(str(exc)) from exc
    info = embedded.status(embedded_dir)
    _emit(
        info,
        as_json,
        f"embedded server running (pid {server.pid}, "
        f"{'durable' if server.durable else 'NOT durable'}) at {server.uri}\n"
        f"data: {info['data_dir']}\nexport MDB_MONGO_URI='{server.uri}'",
    )


@embedded_group.command("status")
@_dir_option
@_json_option
def embedded_status(embedded_dir: str | None, as_json: bool) -> None:
    """Show whether the server runs, where, and which processes use it (exit 1 if stopped).

    A missing or damaged state file does not hide a running server: it is found by the lock
    it holds on its data directory (reported as found_by)."""
    info = embedded.status(embedded_dir)
    notes = []
    if info["state_file"] != "ok":
        notes.append(
            f"state file {info['state_file']}"
            + (f": found by the {info['found_by']}" if info.get("found_by") else "")
            + " (the next start or stop rewrites it)"
        )
    if info["running"]:
        human = (
            f"running (pid {info['pid']}) at {info['uri']}\ndata: {info['data_dir']}\n"
            f"durable: {info['durable']}; pinned: {info['pinned']}; "
            f"processes using it: {len(info['leases'])}"
        )
    elif info.get("pid"):
        human = (
            f"not answering: pid {info['pid']} holds {info['data_dir']} (stopped or "
            f"overloaded); `mdb embedded stop` stops it"
        )
    else:
        human = f"not running (data: {info['data_dir']})"
        if info.get("stopped_by"):
            human += f"; stopped with `{info['stopped_by']}`"
    human = "\n".join([human, *notes])
    _emit(info, as_json, human)
    if not info["running"]:
        sys.exit(1)


@embedded_group.command("stop")
@_dir_option
@_json_option
def embedded_stop(embedded_dir: str | None, as_json: bool) -> None:
    """Stop the server, whoever started it (engines using it then report it stopped, and do
    not restart it; a new engine or `mdb embedded start` does)."""
    try:
        stopped = embedded.stop(embedded_dir)
    except MongoDBEngineError as exc:
        raise click.ClickException(str(exc)) from exc
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


# --- apps, health, export / import ---------------------------------------------------------------


def _fail(exc: Exception) -> click.ClickException:
    """A MongoDBEngineError as a click error: message on stderr, exit status 1."""
    message = str(exc)
    errors = getattr(exc, "errors", None)
    if errors:
        message += "".join(
            f"\n  {path or '<root>'}: {'; '.join(msgs)}" for path, msgs in errors.items()
        )
    return click.ClickException(message)


def _registered(engine: Any, app: str) -> None:
    """Refuse an app that is not registered: a typo must not register a new app."""
    try:
        if engine.get_app(app) is None:
            raise click.ClickException(f"app {app!r} is not registered")
    except MongoDBEngineError as exc:
        raise _fail(exc) from exc


@cli.group("apps")
def apps_group() -> None:
    """List, register and inspect apps."""


@apps_group.command("list")
@click.option("--status", type=click.Choice(["active", "inactive", "archived"]), default=None)
@_json_option
@engine_options
def apps_list(engine: Any, status: str | None, as_json: bool) -> None:
    """List the registered apps."""
    from .observability.health import PROBLEM_INDEX_STATUSES

    rows = []
    for manifest in engine.list_apps(status=status):
        record = engine.registry.get_record(manifest["slug"]) or {}
        outcomes = record.get("index_outcomes") or []
        rows.append(
            {
                "slug": manifest["slug"],
                "name": manifest.get("name", manifest["slug"]),
                "status": record.get("status", manifest.get("status", "active")),
                "implicit": bool(record.get("implicit")),
                "indexes": len(outcomes),
                "index_problems": sum(
                    1 for o in outcomes if o.get("status") in PROBLEM_INDEX_STATUSES
                ),
            }
        )
    if not rows:
        human = (
            f"no apps registered in database {engine.db_name!r} on {engine.describe_server()}"
            + (f" with status {status}" if status else "")
            + " (another database? pass --db NAME or set MDB_DB_NAME; another server? --uri)"
        )
    else:
        width = max(len(r["slug"]) for r in rows)
        human = "\n".join(
            f"{r['slug']:<{width}}  {r['status']:<8}  {r['name']}"
            + (f"  ({r['index_problems']} index problem(s))" if r["index_problems"] else "")
            for r in rows
        )
    _emit(rows, as_json, human)


@apps_group.command("register")
@click.argument("manifests", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--no-indexes", is_flag=True, help="Do not create the declared indexes.")
@_json_option
@engine_options
def apps_register(engine: Any, manifests: tuple[str, ...], no_indexes: bool, as_json: bool) -> None:
    """Validate and register MANIFESTS (manifest.json files); exit 1 on the first invalid."""
    results = []
    for path in manifests:
        try:
            manifest = engine.load_manifest(path)
            result = engine.register_app(manifest, create_indexes=not no_indexes)
        except (MongoDBEngineError, OSError) as exc:
            raise _fail(exc) from exc
        results.append({"manifest": path, **result})
    lines = []
    for r in results:
        problems = [
            o
            for o in r["indexes"]
            if o.get("status") not in ("created", "exists", "exact_fallback")
        ]
        lines.append(
            f"{'registered' if r['created'] else 'updated'} {r['slug']} ({r['manifest']}): "
            f"{len(r['indexes'])} index(es)"
            + (f", {len(problems)} with problems" if problems else "")
        )
        lines.extend(
            f"  {o.get('collection')}.{o.get('name')}: {o.get('status')}"
            + (f" ({o['error']})" if o.get("error") else "")
            for o in problems
        )
    _emit(results, as_json, "\n".join(lines))


@apps_group.command("show")
@click.argument("slug")
@_json_option
@engine_options
def apps_show(engine: Any, slug: str, as_json: bool) -> None:
    """Show an app's registration: status, manifest and index outcomes (exit 1 if unknown)."""
    record = engine.registry.get_record(slug)
    if record is None:
        raise click.ClickException(f"app {slug!r} is not registered")
    record.pop("_id", None)
    lines = [
        f"{slug}: {record.get('status', 'active')}"
        + (" (registered implicitly)" if record.get("implicit") else ""),
        f"registered: {record.get('registered_at')}  updated: {record.get('updated_at')}",
    ]
    for outcome in record.get("index_outcomes") or []:
        lines.append(
            f"  index {outcome.get('collection')}.{outcome.get('name')}: {outcome.get('status')}"
            + (f" ({outcome['error']})" if outcome.get("error") else "")
        )
    from .auth.demo_users import redact_demo_passwords

    record["manifest"] = redact_demo_passwords(record.get("manifest") or {})
    lines.append("manifest:")
    lines.append(json.dumps(record["manifest"], indent=2, default=_json_default))
    _emit(record, as_json, "\n".join(lines))


def _describe_check(check: dict[str, Any]) -> str:
    name = check["name"]
    if "error" in check:
        return f"{check['error']}: {check.get('detail', '')}".strip()
    if name == "engine":
        return f"database {check['database']} on {check['server']}"
    if name == "mongodb":
        return f"ping {check['latency_ms']} ms"
    if name == "pool":
        if not check.get("monitored", True):
            return "not monitored"
        described = (
            f"{check['open_connections']} open, {check['in_use']} in use of "
            f"{check['max_pool_size'] or 'unlimited'}"
        )
        if "checkout_failures" in check:  # counted only with the engine's command_metrics
            described += f", {check['checkout_failures']} failed check-outs"
        return described
    if name == "apps":
        degraded = check.get("degraded") or []
        return f"{check['registered']} registered" + (
            f", degraded: {', '.join(degraded)}" if degraded else ""
        )
    if name == "indexes":
        return ", ".join(f"{n} {s}" for s, n in sorted(check["outcomes"].items())) or "none"
    return ""


@cli.command("health")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.001),
    default=None,
    help="Seconds to wait for the server (default: the selection timeout, max 3).",
)
@click.option("--strict", is_flag=True, help="Exit 1 when degraded too, not only unhealthy.")
@_json_option
@engine_options
def health(engine: Any, timeout: float | None, strict: bool, as_json: bool) -> None:
    """Check the engine, the server, the pool, the apps and their indexes.

    Exit status 0 when healthy or degraded (1 with --strict), 1 when unhealthy.
    """
    report = engine.get_health_status(timeout=timeout)
    lines = [f"status: {report['status']}"]
    for check in report["checks"]:
        lines.append(f"  {check['name']:<8} {check['status']:<9} {_describe_check(check)}")
    for problem in report.get("indexes", {}).get("problems", []):
        lines.append(
            f"    {problem['app']}: index {problem['collection']}.{problem['name']} "
            f"{problem['status']}" + (f" ({problem['error']})" if problem.get("error") else "")
        )
    _emit(report, as_json, "\n".join(lines))
    if report["status"] == "unhealthy" or (strict and report["status"] != "healthy"):
        sys.exit(1)


def _progress(total: int, label: str) -> Any:
    return click.progressbar(length=max(total, 1), label=label, file=sys.stderr, show_pos=True)


def _finish(bar: Any) -> None:
    """Bring a progress bar to its total once the work is done (an empty export counts 1, a
    collection that changed meanwhile may count a little less)."""
    if bar.pos < bar.length:
        bar.update(bar.length - bar.pos)


@cli.command("export")
@click.argument("app")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Replace an existing export of APP in DIRECTORY.")
@_json_option
@engine_options
def export_command(engine: Any, app: str, directory: str, force: bool, as_json: bool) -> None:
    """Export APP to DIRECTORY/APP in mongodump's layout (restorable with mongorestore)."""
    from .portability import count_app_documents

    try:
        total = count_app_documents(engine, app)
        with _terminated_as_exit() as termination, _progress(total, f"exporting {app}") as bar:
            result = engine.export_app(
                app, directory, overwrite=force, progress=_stepper(termination, bar, False)
            )
            _finish(bar)
    except MongoDBEngineError as exc:
        raise _fail(exc) from exc
    lines = [f"exported {app}: {result['documents']} document(s) to {result['directory']}"]
    lines.extend(
        f"  {c['collection']}: {c['documents']} document(s), {c['indexes']} index(es)"
        for c in result["collections"]
    )
    lines.extend(f"  skipped {s['collection']} ({s['type']})" for s in result["skipped"])
    _emit(result, as_json, "\n".join(lines))


class _Termination:
    """SIGTERM during long, undoable work: :meth:`check` (called between batches) ends it
    like Ctrl-C, through the code that undoes it — at a batch boundary, so no write is left
    in flight to land after the undo. A second SIGTERM ends it at once. Exit status 143."""

    def __init__(self) -> None:
        self.requested = False

    def handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise SystemExit(128 + signum)
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise SystemExit(128 + signal.SIGTERM)


@contextlib.contextmanager
def _terminated_as_exit() -> Iterator[_Termination]:
    termination = _Termination()
    if threading.current_thread() is not threading.main_thread():
        yield termination
        return
    previous = signal.signal(signal.SIGTERM, termination.handle)
    try:
        yield termination
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stepper(termination: _Termination, bar: Any, use_size: bool) -> Callable[[int, int], None]:
    def step(documents: int, size: int) -> None:
        termination.check()
        bar.update(size if use_size else documents)

    return step


def _registration_lines(registration: dict[str, Any] | None) -> list[str]:
    if not registration:
        return []
    lines = [
        f"registered {registration['slug']} from the dump's manifest: name "
        f"{registration['name']!r}, status {registration['status']}, owner "
        f"{registration['developer_id'] or '(none)'}, users "
        f"{registration['users'] or '(none)'}",
        f"  reads: {', '.join(registration['read_scopes'])}",
    ]
    if registration["dropped_read_scopes"]:
        dropped = ", ".join(registration["dropped_read_scopes"])
        lines.append(
            f"  dropped grant(s) of the dump's manifest to read: {dropped} (keep one with "
            "--allow-read-scope APP, if that app's owner allows it)"
        )
    return lines


@cli.command("import")
@click.argument("app")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--into",
    "--uri",
    "into",
    envvar="MDB_MONGO_URI",
    default=None,
    help="MongoDB URI of the target (env MDB_MONGO_URI; default: the embedded server).",
)
@click.option("--db", "db_name", envvar="MDB_DB_NAME", default=None, help="Target database.")
@click.option("--as", "new_slug", default=None, help="Import under this slug instead.")
@click.option(
    "--drop-app-id",
    is_flag=True,
    help="Standalone target: plain collection names, no app_id, no registration.",
)
@click.option("--drop", is_flag=True, help="Replace collections that already hold the app's data.")
@click.option("--no-register", is_flag=True, help="Do not register the app in the target.")
@click.option(
    "--allow-read-scope",
    "allow_read_scopes",
    multiple=True,
    metavar="APP",
    help="Keep the dump manifest's grant to read APP (repeat; only if APP's owner allows).",
)
@click.option(
    "--quiesce",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds an app in use stays inactive before its data is replaced in place "
    "(default: the registry refresh period, 5 s).",
)
@_json_option
@click.pass_context
def import_command(
    ctx: click.Context,
    app: str,
    directory: str,
    into: str | None,
    db_name: str | None,
    new_slug: str | None,
    drop_app_id: bool,
    drop: bool,
    no_register: bool,
    allow_read_scopes: tuple[str, ...],
    quiesce: float | None,
    as_json: bool,
) -> None:
    """Import the export of APP found in DIRECTORY into a database.

    The target is the database of --into/--db (or of MDB_MONGO_URI/MDB_DB_NAME, or the
    embedded server; under `flask mdb`, the app's engine unless --into is given). The app
    never sees a half-done import; an import that was killed is finished or undone by the
    next import of the app, or by `mdb cleanup`. The dump's manifest never grants access to
    another app's data unless --allow-read-scope says so.
    """
    from .engine import MongoDBEngine
    from .portability import find_app_dir
    from .portability.layout import BSON_SUFFIX

    try:
        source = find_app_dir(directory, app)
    except MongoDBEngineError as exc:
        raise _fail(exc) from exc
    total = sum(p.stat().st_size for p in source.glob(f"*{BSON_SUFFIX}") if not p.is_symlink())
    hosted = (ctx.obj or {}).get(ENGINE_KEY) if isinstance(ctx.obj, dict) else None
    engine = hosted if hosted is not None and into is None and db_name is None else None
    owned = engine is None
    try:
        if engine is None:
            engine = MongoDBEngine(into, db_name).initialize()
        with _terminated_as_exit() as termination, _progress(total, f"importing {app}") as bar:
            result = engine.import_app(
                app,
                directory,
                target_slug=new_slug,
                drop_app_id=drop_app_id,
                drop=drop,
                register=not no_register,
                allow_read_scopes=allow_read_scopes,
                quiesce=quiesce,
                progress=_stepper(termination, bar, True),
            )
            _finish(bar)
    except MongoDBEngineError as exc:
        raise _fail(exc) from exc
    finally:
        if owned and engine is not None:
            engine.shutdown()
    where = "standalone collections" if drop_app_id else f"app {result['app']}"
    lines = [
        f"an interrupted import ({r['token']}) of {r['app'] or 'these collections'} was "
        f"{r['outcome']}"
        for r in result["recovered"]
    ]
    verb = "completed the interrupted import of" if result["resumed"] else "imported"
    lines.append(
        f"{verb} {result['documents']} document(s) of {app} into database "
        f"{result['database']} as {where}" + (" (registered)" if result["registered"] else "")
    )
    lines.extend(
        f"  {c['collection']} -> {c['target']}: {c['documents']} document(s), "
        f"{c['indexes']} index(es)"
        for c in result["collections"]
    )
    lines.extend(_registration_lines(result.get("registration")))
    _emit(result, as_json, "\n".join(lines))


@cli.command("cleanup")
@click.option(
    "--exports",
    "export_dirs",
    multiple=True,
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Also look for killed exports' staging directories in DIR (repeat).",
)
@click.option(
    "--remove",
    is_flag=True,
    help="Finish or undo the abandoned imports and remove the leftovers (default: list).",
)
@_json_option
@engine_options
def cleanup_command(engine: Any, export_dirs: tuple[str, ...], remove: bool, as_json: bool) -> None:
    """List what interrupted imports and exports left behind; --remove cleans it up.

    An abandoned import (its process is gone) is finished if it had built everything, else
    undone: its app is back as it was. Collections named mdb_import_* that no import
    accounts for are dropped; killed exports' staging directories are removed. Work still
    running is listed and never touched.
    """
    from .portability import leftovers

    try:
        found = leftovers.import_leftovers(engine)
        exports = [item for d in export_dirs for item in leftovers.export_leftovers(d)]
        data: dict[str, Any] = {**found, "exports": exports, "removed": None}
        if remove:
            data["removed"] = leftovers.remove_import_leftovers(engine)
            data["removed"]["exports"] = [
                item for d in export_dirs for item in leftovers.remove_abandoned_exports(d)
            ]
    except (MongoDBEngineError, OSError) as exc:
        raise _fail(exc) from exc
    lines = []
    for item in found["imports"]:
        state = "running" if item["running"] else f"abandoned: will {item['action']}"
        lines.append(
            f"import {item['token']} of {item['app'] or '(standalone)'} ({item['phase']}, "
            f"{item['owner']}, started {item['started_at']}): {state}"
        )
    lines.extend(f"orphaned collection {name}" for name in found["orphans"])
    lines.extend(
        f"inactive registration of {slug} left by an import" for slug in found["placeholders"]
    )
    for item in exports:
        state = "running" if item["running"] else f"abandoned: will {item['action']}"
        lines.append(f"export {item['kind']} directory {item['path']}: {state}")
    if not lines:
        lines.append("nothing left behind")
    elif remove:
        removed = data["removed"]
        lines.append(
            f"done: {len(removed['imports'])} import(s) finished or undone, "
            f"{len(removed['orphans'])} collection(s) dropped, "
            f"{len(removed['placeholders'])} registration(s) removed, "
            f"{len(removed['exports'])} export directory(ies) removed or put back"
            + (f"; {len(removed['running'])} still running" if removed["running"] else "")
        )
    else:
        lines.append("(run with --remove to clean up)")
    _emit(data, as_json, "\n".join(lines))


# --- users ---------------------------------------------------------------------------------


@cli.group("users")
def users_group() -> None:
    """Manage the users of an app whose manifest enables auth.users."""


def _auth_service(engine: Any, app: str) -> AuthService:
    """The app's AuthService for administration: no token keys needed (nothing is signed)."""
    from .auth import AuthService

    _registered(engine, app)
    try:
        auth = AuthService(engine, app, signing=False)
    except MongoDBEngineError as exc:
        raise _fail(exc) from exc
    if auth.users is None:
        raise click.ClickException(f"app {app!r} does not enable auth.users")
    return auth


def _user(auth: AuthService, email: str) -> dict[str, Any]:
    try:
        user = auth.get_user_by_email(email)
    except MongoDBEngineError as exc:
        raise _fail(exc) from exc
    if user is None:
        raise click.ClickException(f"app {auth.slug!r} has no user with the email {email!r}")
    return user


def _user_line(user: dict[str, Any]) -> str:
    state = "active" if user.get("active", True) else "inactive"
    line = f"{user['email']}  {user['user_id']}  [{', '.join(user.get('roles') or [])}]  {state}"
    if user.get("login_count"):
        line += f"  logins={user['login_count']}"
    return line


def _when(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value or "-")


def _password_prompt() -> str:
    # Prompted, never an option: a password on the command line ends up in shell history.
    # A script can pipe it twice on stdin.
    password: str = click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    return password


@users_group.command("list")
@click.argument("app")
@_json_option
@engine_options
def users_list(engine: Any, app: str, as_json: bool) -> None:
    """List the users of APP."""
    auth = _auth_service(engine, app)
    users = auth.list_users()
    _emit(users, as_json, "\n".join(_user_line(u) for u in users) or "no users")


@users_group.command("create")
@click.argument("app")
@click.argument("email")
@click.option("--role", "roles", multiple=True, help="A role (repeat; default: the manifest's).")
@_json_option
@engine_options
def users_create(engine: Any, app: str, email: str, roles: tuple[str, ...], as_json: bool) -> None:
    """Create a user of APP (the password is prompted for); the CLI's operator vouches for
    the email (the user may be the app's owner, developer_id)."""
    auth = _auth_service(engine, app)
    try:
        user = auth.create_user(
            email,
            _password_prompt(),
            roles=list(roles) or None,
            verified_via="cli",
            platform_admin=True,
        )
    except MongoDBEngineError as exc:
        raise _fail(exc) from exc
    _emit(user, as_json, f"created {_user_line(user)}")


def _user_command(name: str) -> Callable[[Callable[..., Any]], Any]:
    """A ``mdb users NAME APP EMAIL`` command: the function gets the app's AuthService and
    the email; engine errors end it with their message and exit status 1."""

    def decorator(func: Callable[..., Any]) -> Any:
        @users_group.command(name)
        @click.argument("app")
        @click.argument("email")
        @engine_options
        @functools.wraps(func)
        def command(engine: Any, app: str, email: str, **kwargs: Any) -> Any:
            auth = _auth_service(engine, app)
            try:
                return func(auth, email, **kwargs)
            except MongoDBEngineError as exc:
                raise _fail(exc) from exc

        return command

    return decorator


@_user_command("show")
@_json_option
def users_show(auth: Any, email: str, as_json: bool) -> None:
    """Show a user of APP: roles, status, verified e-mail, second factor, and login tracking
    (count, current and previous sign-in's time and address)."""
    user = _user(auth, email)
    proof = f"yes ({user.get('email_verified_via')})" if user.get("email_verified") else "no"
    current = f"{_when(user.get('current_login_at'))} from {user.get('current_login_ip') or '-'}"
    last = f"{_when(user.get('last_login_at'))} from {user.get('last_login_ip') or '-'}"
    lines = [
        _user_line(user),
        f"email verified: {proof}",
        f"two-factor: {'on' if user.get('two_factor_enabled') else 'off'}",
        f"logins: {user.get('login_count') or 0}",
        f"current login: {current}",
        f"last login: {last}",
    ]
    _emit(user, as_json, "\n".join(lines))


@_user_command("set-password")
def users_set_password(auth: Any, email: str) -> None:
    """Set a new password (prompted for); the user's sessions and tokens end (in every app,
    for a global_users account: the CLI acts as a platform administrator)."""
    user = _user(auth, email)
    auth.set_password(user["user_id"], _password_prompt(), platform_admin=True)
    click.echo(f"password of {user['email']} changed; their sessions and tokens ended")


@_user_command("roles")
@click.argument("roles", nargs=-1)
@_json_option
def users_roles(auth: Any, email: str, roles: tuple[str, ...], as_json: bool) -> None:
    """Show the roles of a user, or set them to ROLES."""
    user = _user(auth, email)
    if roles:
        user = auth.set_roles(user["user_id"], list(roles))
    _emit(user, as_json, _user_line(user))


@_user_command("deactivate")
def users_deactivate(auth: Any, email: str) -> None:
    """Disable a user of APP; their sessions and tokens end."""
    auth.deactivate(_user(auth, email)["user_id"])
    click.echo(f"deactivated {email}; their sessions and tokens ended")


@_user_command("activate")
def users_activate(auth: Any, email: str) -> None:
    """Enable a user of APP again."""
    auth.activate(_user(auth, email)["user_id"])
    click.echo(f"activated {email}")


@_user_command("unlock")
def users_unlock(auth: Any, email: str) -> None:
    """Lift an account lockout (token_management.security.account_lockout) on EMAIL."""
    auth.unlock_account(email, platform_admin=True)
    click.echo(f"unlocked {email}")


@_user_command("verify")
def users_verify(auth: Any, email: str) -> None:
    """Record that EMAIL is proven (you checked it): the user may then be the app's owner
    (developer_id with owner_can_access)."""
    auth.mark_email_verified(_user(auth, email)["user_id"], via="cli", platform_admin=True)
    click.echo(f"{email}: email verified")


# --- realtime events -------------------------------------------------------------------------


@cli.group("events")
def events_group() -> None:
    """Send realtime messages to an app's live clients, or watch its events go by."""


def _event_record(event: Any) -> dict[str, Any]:
    created = event.created_at
    if created.tzinfo is None:  # read back from the database: UTC
        created = created.replace(tzinfo=datetime.timezone.utc)
    return {
        "id": str(event.id),
        "app": event.app_id,
        "created_at": created.isoformat(timespec="milliseconds"),
        "user_id": event.user_id,
        "connection_id": event.connection_id,
        "exclude": list(event.exclude),
        "message": event.message,
    }


@events_group.command("publish")
@click.argument("app")
@click.argument("message")
@click.option("--user", "user_id", default=None, help="Send only to this user's connections.")
@_json_option
@engine_options
def events_publish(engine: Any, app: str, message: str, user_id: str | None, as_json: bool) -> None:
    """Send MESSAGE (JSON text) to the live connections of APP in every process."""
    try:
        payload = json.loads(message)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="MESSAGE") from exc
    _registered(engine, app)
    try:
        event = engine.events.publish(app, payload, user_id=user_id)
    except MongoDBEngineError as exc:
        raise _fail(exc) from exc
    target = f"user {user_id!r} of {app}" if user_id is not None else f"every client of {app}"
    _emit(_event_record(event), as_json, f"published {event.id} to {target}")


@events_group.command("tail")
@click.argument("app")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after N events.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop after this many seconds (exit 1 if --count events did not come by then).",
)
@_json_option
@engine_options
def events_tail(
    engine: Any, app: str, count: int | None, timeout: float | None, as_json: bool
) -> None:
    """Print the events of APP as they are published, by any process, until Ctrl-C.

    One line per event: JSON with --json, else its time, its target and the message.
    """
    _registered(engine, app)
    events: queue.SimpleQueue[Any] = queue.SimpleQueue()
    try:
        subscription = engine.events.subscribe(app, events.put)
    except MongoDBEngineError as exc:
        raise _fail(exc) from exc
    click.echo(f"listening for events of {app} (Ctrl-C to stop)", err=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = 0
    try:
        while count is None or seen < count:
            wait = 0.5 if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                break
            try:
                event = events.get(timeout=min(wait, 0.5))
            except queue.Empty:
                continue
            seen += 1
            record = _event_record(event)
            if as_json:
                click.echo(json.dumps(record, default=_json_default))
            else:
                target = (
                    f"user {event.user_id}"
                    if event.user_id is not None
                    else f"connection {event.connection_id}"
                    if event.connection_id is not None
                    else "all"
                )
                message = json.dumps(record["message"], default=_json_default)
                click.echo(f"{record['created_at']}  {target}  {message}")
    except KeyboardInterrupt:
        pass
    finally:
        subscription.cancel()
    if count is not None and seen < count:
        click.echo(f"{seen} of {count} event(s) before the timeout", err=True)
        sys.exit(1)


# --- schemas -------------------------------------------------------------------------------------


@cli.group("schema")
def schema_group() -> None:
    """Infer the JSON Schema of an app's collection and apply it as its validator."""


def _inference_options(func: Callable[..., Any]) -> Callable[..., Any]:
    from .schema import DEFAULT_ENUM_MAX_VALUES, DEFAULT_SAMPLE_SIZE, MAX_SAMPLE_SIZE

    for option in reversed(
        [
            click.option(
                "--sample-size",
                type=click.IntRange(1, MAX_SAMPLE_SIZE),
                default=DEFAULT_SAMPLE_SIZE,
                show_default=True,
                help="Documents to sample ($sample).",
            ),
            click.option(
                "--enum-max",
                type=click.IntRange(min=0),
                default=DEFAULT_ENUM_MAX_VALUES,
                show_default=True,
                help="Largest set of string values described as an enum (0: no enums).",
            ),
            click.option(
                "--closed",
                is_flag=True,
                help="Refuse fields the sample does not have (additionalProperties: false).",
            ),
        ]
    ):
        func = option(func)
    return func


def _own_collection(engine: Any, app: str, collection: str) -> Any:
    _registered(engine, app)
    try:
        return engine.get_scoped_db(app, read_scopes=[app], auto_index=False)[collection]
    except MongoDBEngineError as exc:
        raise _fail(exc) from exc


def _fields_text(fields: list[dict[str, Any]]) -> list[str]:
    width = max([len(f["path"]) for f in fields] + [5])
    lines = [f"{'field':<{width}}  {'present':>9}  type"]
    for f in fields:
        line = f"{f['path']:<{width}}  {f['present']:>4}/{f['of']:<4}  {' | '.join(f['types'])}"
        if f["required"]:
            line += "  required"
        if f["enum"] is not None:
            line += f"  enum {json.dumps(f['enum'])}"
        lines.append(line)
    return lines


def _report_text(report: Any) -> str:
    if report.ok:
        return f"{report.checked} document(s) checked: none would fail"
    lines = [f"{report.checked} document(s) checked: {report.failed} would fail"]
    for doc in report.documents:
        lines.append(f"  {_json_default(doc['_id'])}: {'; '.join(doc['problems'])}")
    if report.failed > len(report.documents):
        lines.append(f"  ... and {report.failed - len(report.documents)} more")
    return "\n".join(lines)


@schema_group.command("infer")
@click.argument("app")
@click.argument("collection")
@_inference_options
@_json_option
@engine_options
def schema_infer(
    engine: Any,
    app: str,
    collection: str,
    sample_size: int,
    enum_max: int,
    closed: bool,
    as_json: bool,
) -> None:
    """Infer the JSON Schema of APP's COLLECTION from a sample of its documents."""
    from .schema import infer

    coll = _own_collection(engine, app, collection)
    try:
        inference = infer(coll, sample_size, enum_max_values=enum_max, closed=closed)
    except MongoDBEngineError as exc:
        raise _fail(exc) from exc
    human = "\n".join(
        [
            f"{app}.{collection}: {inference.sampled} document(s) sampled",
            *_fields_text(inference.fields),
            "$jsonSchema:",
            json.dumps(inference.schema, indent=2, default=_json_default),
        ]
    )
    _emit(inference.as_dict(), as_json, human)


@schema_group.command("apply")
@click.argument("app")
@click.argument("collection")
@click.option(
    "--schema",
    "schema_file",
    type=click.File("r", encoding="utf-8"),
    default=None,
    help="JSON file (- for stdin): a $jsonSchema, a validator, or `schema infer --json` "
    "output. Default: infer one now.",
)
@_inference_options
@click.option("--level", type=click.Choice(["strict", "moderate"]), default="strict",
              show_default=True, help="validationLevel.")  # fmt: skip
@click.option("--action", type=click.Choice(["error", "warn"]), default="error",
              show_default=True, help="validationAction.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Only list the documents it would refuse.")
@click.option("--force", is_flag=True, help="Apply even if stored documents would fail.")
@click.option("--limit", type=click.IntRange(0, 1000), default=20, show_default=True,
              help="Failing documents to list.")  # fmt: skip
@_json_option
@engine_options
def schema_apply(
    engine: Any,
    app: str,
    collection: str,
    schema_file: Any,
    sample_size: int,
    enum_max: int,
    closed: bool,
    level: str,
    action: str,
    dry_run: bool,
    force: bool,
    limit: int,
    as_json: bool,
) -> None:
    """Apply a JSON Schema to APP's COLLECTION as its validator, through the app's manifest
    (collection_settings), after a dry run over the stored documents.

    Exit 1 when documents would fail: with --dry-run, or without --force (nothing applied).
    """
    from bson import json_util

    from .schema import apply_schema, as_validator, infer, validate_documents

    if schema_file is not None:
        ctx = click.get_current_context()
        inferring = [
            f"--{name.replace('_', '-')}"
            for name in ("sample_size", "enum_max", "closed")
            if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
        ]
        if inferring:
            raise click.UsageError(f"{', '.join(inferring)}: for inferring, not with --schema")
    coll = _own_collection(engine, app, collection)
    try:
        if schema_file is not None:
            try:
                given = json_util.loads(schema_file.read())
            except ValueError as exc:
                raise click.BadParameter(f"not JSON: {exc}", param_hint="--schema") from exc
            validator = as_validator(given)
        else:
            schema = infer(coll, sample_size, enum_max_values=enum_max, closed=closed).schema
            validator = as_validator(schema)
        report = validate_documents(coll, validator, limit=limit)
        if dry_run or (not report.ok and not force):
            data = {"applied": False, "validator": validator, "report": report.as_dict()}
            _emit(data, as_json, _report_text(report))
            if not report.ok:
                if not dry_run:
                    click.echo("not applied: pass --force to apply it anyway", err=True)
                sys.exit(1)
            return
        result = apply_schema(
            engine, app, collection, validator, level=level, action=action,
            allow_invalid=force, limit=limit,
        )  # fmt: skip
    except MongoDBEngineError as exc:
        raise _fail(exc) from exc
    human = (
        f"applied to {app}.{collection} ({result['status']}; {level}, {action}): "
        f"{_report_text(report)}\n"
        f"It is now collection_settings.{collection}.validation of the registered manifest "
        f"(mdb apps show {app}); put it in the manifest file too."
    )
    _emit({"applied": True, **result}, as_json, human)


def main() -> None:
    """Entry point of the ``mdb`` console script."""
    cli(prog_name="mdb")


if __name__ == "__main__":  # pragma: no cover
    main()
