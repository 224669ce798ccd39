"""Connection strings are read by pymongo's parser (mdb_sync.uri): hosts, database and option
names as pymongo connects; credentials never shown; mongodb+srv never resolved to describe."""

from __future__ import annotations

import time

import pytest

from mdb_sync import MongoDBEngine, uri
from mdb_sync.celery import mongodb_broker_settings
from mdb_sync.engine import describe_uri
from mdb_sync.exceptions import ConfigurationError


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("mongodb://user:s3cret@h1:27017,h2/db.coll?replicaSet=rs", "mongodb://h1:27017,h2:27017"),
        ("mongodb://al%40ce:p%3Ass@[::1]:27018/x", "mongodb://[::1]:27018"),
        (
            "mongodb+srv://u:s3cret@cluster0.mdb-sync.invalid/app",
            "mongodb+srv://cluster0.mdb-sync.invalid",
        ),
        ("http://user:s3cret@h/x", "<unparseable URI>"),
        # pymongo refuses these; the host text is still shown, the credentials never.
        ("mongodb://user:s3cret@/x", "mongodb://<no host>"),
        ("mongodb://user:s3cret@db.example:notaport/", "mongodb://db.example:notaport"),
        ("mongodb://user:s3/cr@et@h:1/x?w=1", "mongodb://h:1"),
        ("", "<unparseable URI>"),
    ],
)
def test_describe_never_shows_credentials(given, shown):
    assert describe_uri(given) == shown
    assert "s3cret" not in describe_uri(given)


def test_srv_is_not_resolved_to_describe_or_name_the_database():
    # .invalid never resolves (RFC 2606): a DNS lookup would raise or wait; the parse does not.
    started = time.monotonic()
    srv = "mongodb+srv://u:p@nowhere.mdb-sync.invalid/appdb?retryWrites=true&srvMaxHosts=2"
    assert uri.describe(srv) == "mongodb+srv://nowhere.mdb-sync.invalid"
    assert uri.database(srv) == "appdb"
    assert uri.option_names(srv) == {"retrywrites", "srvmaxhosts"}
    assert time.monotonic() - started < 5


def test_database_and_options_as_pymongo_reads_them():
    assert uri.database("mongodb://h/shop.orders?w=1") == "shop"
    assert uri.database("mongodb://h/my%2Ddb") == "my-db"
    assert uri.database("mongodb://h/?w=1") is None
    assert uri.option_names("mongodb://h/?connectTimeoutMS=5;serverSelectionTimeoutMS=7") == {
        "connecttimeoutms",
        "serverselectiontimeoutms",
    }
    assert uri.option_names("not a uri") == set()


def test_engine_reads_the_database_and_timeouts_from_the_uri():
    engine = MongoDBEngine(
        mongo_uri="mongodb://127.0.0.1:1/fromuri.coll?serverSelectionTimeoutMS=9"
    )
    assert engine.db_name == "fromuri"
    settings = engine.client_settings()
    assert "serverSelectionTimeoutMS" not in settings  # the URI's own value wins
    assert "connectTimeoutMS" in settings
    assert engine.describe_server() == "mongodb://127.0.0.1:1"


def test_broker_settings_keep_credentials_and_options_and_set_the_database():
    settings = mongodb_broker_settings(
        "mongodb+srv://u:p@c.mdb-sync.invalid/x?retryWrites=false", "appdb"
    )
    assert settings["broker_url"] == "mongodb+srv://u:p@c.mdb-sync.invalid/appdb?retryWrites=false"
    with pytest.raises(ConfigurationError, match="mongodb://"):
        mongodb_broker_settings("redis://localhost/0")
