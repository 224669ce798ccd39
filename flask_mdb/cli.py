"""``flask mdb ...``: the ``mdb`` command line, run against the Flask app's own engine.

Every engine-bound command of :data:`mdb_sync.cli.cli` (all but ``embedded``, which manages a
server process of its own) is offered under ``flask mdb``, looked up when the command line
runs, so commands added to the core later appear without changes here. Commands written with
:func:`mdb_sync.cli.engine_options` find the app's engine in ``ctx.obj[ENGINE_KEY]``; it is
made ready (connected, configured manifests registered) only when a command asks for it, so
``flask mdb validate manifest.json`` works without a database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from flask.cli import AppGroup, with_appcontext

from mdb_sync import cli as core_cli
from mdb_sync.exceptions import MongoDBEngineError

from .state import get_state

#: Core commands not offered under ``flask mdb``.
EXCLUDED = frozenset({"embedded"})


class HostedEngine(dict[str, Any]):
    """``ctx.obj`` of ``flask mdb`` commands: ``ENGINE_KEY`` maps to the app's engine, made
    ready on first access; a connection failure ends the command with status 1."""

    def __init__(self, provide: Callable[[], Any]) -> None:
        super().__init__({core_cli.ENGINE_KEY: None})
        self._provide = provide

    def __getitem__(self, key: str) -> Any:
        if key == core_cli.ENGINE_KEY and dict.__getitem__(self, key) is None:
            try:
                self[key] = self._provide()
            except MongoDBEngineError as exc:
                click.echo(f"Error: {exc}", err=True)
                click.get_current_context().exit(1)
        return dict.__getitem__(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        if key == core_cli.ENGINE_KEY:
            return self[key]
        return super().get(key, default)


class MDBGroup(AppGroup):
    """A click group of its own commands plus the core ``mdb`` commands, resolved lazily."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        core = [name for name in core_cli.cli.list_commands(ctx) if name not in EXCLUDED]
        return sorted(set(super().list_commands(ctx)) | set(core))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name not in EXCLUDED:
            command = core_cli.cli.get_command(ctx, cmd_name)
        return command


@click.group("mdb", cls=MDBGroup)
@with_appcontext
def mdb_cli() -> None:
    """mdb-sync commands (apps, indexes, health, export...) on this app's database."""
    state = get_state()
    # A command exits when done: it builds the declared indexes before it starts.
    click.get_current_context().obj = HostedEngine(lambda: state.ensure_ready(blocking=True))
