"""The migration command: run once before the services start, on every deployment.

    python -m service_kit.migrate [--wait SECONDS]      (MONGO_URI names the database)

It waits, for a bounded time, until the database answers; creates every collection and
index of login, profile and chat; runs the migrations of earlier layouts; and writes the
schema mark (service_kit.schema) that the services' /ready waits for. Every step is
idempotent: a second run changes nothing, and two runs at once both succeed (a step a
concurrent run changed under it is run again once). Creating every collection and index
here, before any service, is also what lets two FerretDB processes share one PostgreSQL
(docs/postgresql.md). Exit 0, or 1 with one line on stderr naming what failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import pymongo
from flask import Flask
from pymongo.database import Database
from pymongo.errors import CollectionInvalid, ConfigurationError, OperationFailure, PyMongoError
from pymongo.uri_parser import parse_uri

from service_kit import database, schema
from service_kit.config import Settings

# Every collection of the three services (their store modules describe the layouts).
COLLECTIONS = {
    "login": ("users", "tokens", "login_failures", "registrations", "schema_marks"),
    "profile": ("profiles",),
    "chat": (
        "rooms",
        "message_buckets",
        "messages",
        "idempotency_keys",
        "idempotency_seqs",
        "room_creations",
        "room_directory",
        "budgets",
    ),
}
# MongoDB's code for "the collection exists", answered to a create that lost a race.
_NAMESPACE_EXISTS = 48
# Long enough for an index build or a migration step on a big collection.
_OPERATION_TIMEOUT_SECONDS = 30.0


class MigrationFailed(Exception):
    """What failed, in one line."""


def create_collections(db: Database) -> None:
    existing = set(db.list_collection_names())
    for name in (name for names in COLLECTIONS.values() for name in names):
        if name in existing:
            continue
        try:
            db.create_collection(name)
        except CollectionInvalid:
            pass  # created since we listed them
        except OperationFailure as error:
            if error.code != _NAMESPACE_EXISTS:
                raise


def migrate_login(_db: Database) -> None:
    from login_service import store

    store.migrate()


def migrate_chat(_db: Database) -> None:
    from chat_service import store

    store.ensure_schema()


STEPS: list[tuple[str, Callable[[Database], None]]] = [
    ("creating the collections", create_collections),
    ("the login service's indexes and migrations", migrate_login),
    ("the chat service's indexes and migrations", migrate_chat),
    ("writing the schema mark", schema.mark_migrated),
]


def hosts_of(uri: str) -> str:
    """The hosts of a MongoDB URI, never its password."""
    return ",".join(f"{host}:{port}" for host, port in parse_uri(uri)["nodelist"]) or "(from DNS SRV)"


def _one_line(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


def wait_for_database(db: Database, hosts: str, wait_seconds: float) -> None:
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            with pymongo.timeout(2.0):
                db.command("ping")
            return
        except OperationFailure as error:  # it answered and refused (credentials): waiting will not help
            raise MigrationFailed(f"the database at {hosts} refused the ping: {_one_line(error)}") from None
        except PyMongoError as error:
            if time.monotonic() >= deadline:
                raise MigrationFailed(
                    f"no answer from the database at {hosts} within {wait_seconds:g} s ({type(error).__name__})"
                ) from None
            time.sleep(0.5)


def _run_twice_if_raced(step: Callable[[Database], None], db: Database) -> None:
    try:
        step(db)
    except OperationFailure:
        step(db)  # a concurrent run changed what this one had just read (an index it dropped)


def migrate(uri: str, wait_seconds: float = 60.0) -> int:
    """Bring the database of `uri` to schema.SCHEMA_VERSION; the version it is at now.
    Raises MigrationFailed, whose message names what failed."""
    try:
        hosts = hosts_of(uri)
    except ConfigurationError as error:
        raise MigrationFailed(f"MONGO_URI is not a MongoDB URI: {error}") from None
    settings = Settings(
        service="migrate",
        port=0,
        mongo_uri=uri,
        mongo_timeout_seconds=_OPERATION_TIMEOUT_SECONDS,
        metrics_enabled=False,
        access_log=False,
    )
    # The stores reach the database and their logger through a Flask app, as in a service.
    app = Flask("migrate")
    app.config["SETTINGS"] = settings
    database.init_app(app)
    try:
        with app.app_context():
            db = database.db()
            wait_for_database(db, hosts, wait_seconds)
            for what, step in STEPS:
                try:
                    _run_twice_if_raced(step, db)
                except Exception as error:  # any failure: named in one line
                    raise MigrationFailed(f"{what} failed on {hosts}: {_one_line(error)}") from None
            return schema.version_of(db)
    finally:
        database.close(app)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service_kit.migrate",
        description="Create every collection and index of chatsys and run the migrations of earlier layouts "
        "on the database MONGO_URI names; run it before the services start. Idempotent.",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=float(os.environ.get("DB_WAIT_SECONDS") or 60),
        metavar="SECONDS",
        help="how long to wait for the database to answer (default: DB_WAIT_SECONDS, or 60)",
    )
    arguments = parser.parse_args(argv)
    uri = os.environ.get("MONGO_URI")
    if not uri:
        print(
            "migrate: MONGO_URI must be set and name a database, e.g. mongodb://127.0.0.1:27017/chatsys",
            file=sys.stderr,
        )
        return 1
    try:
        version = migrate(uri, arguments.wait)
    except MigrationFailed as error:
        print(f"migrate: {error}", file=sys.stderr)
        return 1
    except SystemExit as error:  # database.init_app: a URI without a database name
        print(f"migrate: {error}", file=sys.stderr)
        return 1
    print(f"migrate: the database at {hosts_of(uri)} is at schema version {version}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
