"""``flask mdb ...``: the core ``mdb`` commands, run against the Flask app's engine."""

from __future__ import annotations

import click
import pytest
from flask_apps import FAIL_FAST, AppFactory, unreachable_uri, write_manifest

from mdb_sync import cli as core_cli


@pytest.fixture
def factory(mongo_uri, db_name):
    made = AppFactory(mongo_uri, db_name)
    yield made
    made.close()


@pytest.fixture
def core_commands():
    """Add commands to the core ``mdb`` group for one test (as other features do)."""
    added: list[str] = []

    def add(command: click.Command) -> click.Command:
        core_cli.cli.add_command(command)
        added.append(command.name)
        return command

    yield add
    for name in added:
        core_cli.cli.commands.pop(name, None)


@click.command("whoami")
@core_cli.engine_options
@click.option("--json", "as_json", is_flag=True)
def whoami(engine, as_json):
    """Print which engine and database the command got."""
    apps = [m["slug"] for m in engine.list_apps()]
    core_cli._emit(
        {"engine": id(engine), "db": engine.db_name, "apps": apps},
        as_json,
        f"{id(engine)} {engine.db_name} {','.join(apps)}",
    )


@click.group("things")
def things():
    """A core sub-group."""


@things.command("count")
@click.argument("slug")
@core_cli.engine_options
def things_count(engine, slug):
    click.echo(engine.get_scoped_db(slug).things.count_documents({}))


@click.command("offline")
def offline():
    """A command that needs no database."""
    click.echo("no database needed")


def test_core_commands_run_on_the_apps_engine(factory, core_commands, tmp_path):
    core_commands(whoami)
    app = factory(MDB_MANIFESTS=str(write_manifest(tmp_path, "clidemo")))
    result = app.test_cli_runner().invoke(args=["mdb", "whoami", "--json"])
    assert result.exit_code == 0, result.output
    engine = app.extensions["mdb"].engine
    assert f'"engine": {id(engine)}' in result.output
    assert f'"db": "{factory.db_name}"' in result.output
    assert '"clidemo"' in result.output  # the configured manifests are registered first


def test_core_sub_groups_get_the_engine_too(factory, core_commands):
    core_commands(things)
    app = factory(MDB_APP_SLUG="counted")

    @app.post("/things")
    def add():
        from flask_mdb import db

        db.things.insert_one({})
        return "", 204

    app.test_client().post("/things")
    result = app.test_cli_runner().invoke(args=["mdb", "things", "count", "counted"])
    assert (result.exit_code, result.output) == (0, "1\n")


def test_commands_that_need_no_database_do_not_connect(factory, core_commands):
    core_commands(offline)
    app = factory()
    result = app.test_cli_runner().invoke(args=["mdb", "offline"])
    assert (result.exit_code, result.output) == (0, "no database needed\n")
    assert not app.extensions["mdb"].engine.is_initialized


def test_every_core_command_but_embedded_is_offered(factory, core_commands):
    core_commands(whoami)
    app = factory()
    runner = app.test_cli_runner()
    listing = runner.invoke(args=["mdb", "--help"])
    assert listing.exit_code == 0
    offered = set(core_cli.cli.list_commands(click.Context(core_cli.cli))) - {"embedded"}
    assert "whoami" in offered
    for name in offered:
        assert f"  {name}" in listing.output
        result = runner.invoke(args=["mdb", name, "--help"])
        assert result.exit_code == 0, (name, result.output)
    assert "  embedded" not in listing.output
    refused = runner.invoke(args=["mdb", "embedded", "status"])
    assert refused.exit_code == 2
    assert "No such command 'embedded'" in refused.output


def test_an_unreachable_server_exits_1_with_the_reason(factory, core_commands):
    core_commands(whoami)
    uri = unreachable_uri()
    app = factory(MDB_MONGO_URI=uri, MDB_CLIENT_OPTIONS=FAIL_FAST)
    result = app.test_cli_runner().invoke(args=["mdb", "whoami"])
    assert result.exit_code == 1
    assert f"Error: cannot reach MongoDB at {uri.split('/?')[0]}" in result.output
