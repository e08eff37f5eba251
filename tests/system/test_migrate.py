"""The migration command (`python -m service_kit.migrate`) on a real FerretDB: every
collection and index the services use, a second run and two runs at once that change
nothing more, and one line naming the database when it cannot be reached."""

from __future__ import annotations

import os
import subprocess

import pymongo
import pytest

from service_kit import migrate, schema
from tests.lib import harness
from tests.lib.accounts import unique_name

pytestmark = pytest.mark.local

# Every secondary index, by collection: (keys, unique). docs/architecture.md lists them too.
INDEXES = {
    "users": {((("skeleton", 1),), True)},
    "tokens": {((("expires_at", 1),), False)},
    "login_failures": {((("username", 1), ("at", 1)), False), ((("address", 1), ("at", 1)), False)},
    "registrations": {((("address", 1), ("at", 1)), False)},
    "idempotency_keys": {((("created_at", 1),), False)},
    "idempotency_seqs": {((("created_at", 1),), False)},
    "room_creations": {((("creator", 1), ("at", 1)), False)},
    "budgets": {((("until", 1),), False)},
}


def secondary_indexes(db) -> dict[str, set]:
    found: dict[str, set] = {}
    for name in db.list_collection_names():
        indexes = db[name].index_information()
        keys = {
            (tuple((field, int(order)) for field, order in index["key"]), bool(index.get("unique")))
            for index in indexes.values()
        }
        found[name] = keys - {((("_id", 1),), False)}
    return found


def schema_mark(db) -> dict:
    return db.schema_marks.find_one({"_id": "schema"})


def test_the_command_creates_every_collection_and_index_and_a_second_run_changes_nothing(processes):
    database = harness.start_ferretdb(processes, name=f"ferretdb-migrate-{unique_name()}", migrated=False)
    first = harness.run_migrate(database.uri)
    assert first.returncode == 0, first.stderr
    assert f"schema version {schema.SCHEMA_VERSION}" in first.stdout
    with pymongo.MongoClient(database.uri) as client:
        db = client.get_default_database()
        every_collection = {name for names in migrate.COLLECTIONS.values() for name in names}
        assert every_collection <= set(db.list_collection_names())
        indexes = secondary_indexes(db)
        for collection, expected in INDEXES.items():
            assert indexes[collection] == expected, collection
        assert {name for name, keys in indexes.items() if keys} == set(INDEXES)
        assert db.rooms.find_one({"_id": "lobby"}) is not None
        mark = schema_mark(db)
        assert mark["version"] == schema.SCHEMA_VERSION

        second = harness.run_migrate(database.uri)
        assert second.returncode == 0, second.stderr
        assert secondary_indexes(db) == indexes
        assert set(db.list_collection_names()) == set(indexes)
        assert schema_mark(db)["version"] == schema.SCHEMA_VERSION


def test_two_runs_at_once_both_succeed(processes):
    database = harness.start_ferretdb(processes, name=f"ferretdb-migrate-twice-{unique_name()}", migrated=False)
    command = [str(harness.VENV_BIN / "python"), "-m", "service_kit.migrate"]
    env = {**os.environ, "MONGO_URI": database.uri}
    runs = [
        subprocess.Popen(command, env=env, cwd=harness.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outcomes = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outcomes
    with pymongo.MongoClient(database.uri) as client:
        db = client.get_default_database()
        indexes = secondary_indexes(db)
        for collection, expected in INDEXES.items():
            assert indexes[collection] == expected, collection
        assert db.rooms.count_documents({"_id": "lobby"}) == 1
        assert schema_mark(db)["version"] == schema.SCHEMA_VERSION


def test_an_unreachable_database_is_named_in_one_line_and_a_non_zero_exit(processes):
    port = harness.free_port()  # nothing listens there
    failed = harness.run_migrate(f"mongodb://127.0.0.1:{port}/chatsys", wait_seconds=1)
    assert failed.returncode != 0
    assert failed.stdout == ""
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1, failed.stderr
    assert lines[0].startswith("migrate: no answer from the database at 127.0.0.1:") and f":{port}" in lines[0]


def test_a_uri_without_a_database_name_is_refused_in_one_line():
    failed = harness.run_migrate("mongodb://127.0.0.1:1/", wait_seconds=1)
    assert failed.returncode != 0
    assert len(failed.stderr.strip().splitlines()) == 1 and "name a database" in failed.stderr
