"""The scale test's reset between runs (python -m tools.loadtest reset-db) against the real
embedded database, on whichever backend the session's FerretDB runs (FERRETDB_HANDLER):
what the migration set up stays, what the runs wrote goes."""

from __future__ import annotations

import pymongo
import pytest

from tests.lib.fast import fresh_database_uri
from tools.loadtest.__main__ import reset_database

pytestmark = [pytest.mark.fast, pytest.mark.local]


@pytest.mark.parametrize("compact", [False, True], ids=["deleted", "deleted-and-compacted"])
def test_a_reset_empties_every_collection_and_keeps_the_migrations_indexes_and_mark(database, compact):
    uri = fresh_database_uri(database, "chatsys_reset_test")
    client: pymongo.MongoClient = pymongo.MongoClient(uri)
    with client:
        db = client.get_default_database()
        # Collections with indexes of their own are emptied; the others (rooms) are dropped.
        indexed = ("users", "idempotency_keys")
        indexes_before = {name: db[name].index_information() for name in indexed}
        assert all(len(indexes) > 1 for indexes in indexes_before.values())
        marks_before = list(db.schema_marks.find())
        db.users.insert_many([{"username": f"u{n}", "skeleton": f"u{n}"} for n in range(300)])
        db.idempotency_keys.insert_many([{"_id": f"k{n}", "created_at": n} for n in range(300)])
        db.rooms.insert_one({"name": "lobby", "next_seq": 301})

        reset_database(uri, compact=compact)

        assert all(db[name].count_documents({}) == 0 for name in (*indexed, "rooms"))
        assert {name: db[name].index_information() for name in indexed} == indexes_before
        assert list(db.schema_marks.find()) == marks_before
        assert "rooms" not in db.list_collection_names()
        # The next run writes what the first one did, unique index and all.
        db.users.insert_one({"username": "u1", "skeleton": "u1"})
        with pytest.raises(pymongo.errors.DuplicateKeyError):
            db.users.insert_one({"username": "u1 again", "skeleton": "u1"})
        db.idempotency_keys.insert_one({"_id": "k1", "created_at": 1})
        assert db.idempotency_keys.count_documents({}) == 1
