"""The schema this release needs, and the mark that says a database has it.

`python -m service_kit.migrate` makes every collection and index and runs the migrations of
earlier layouts, then writes the mark: a document `schema` in `schema_marks` with the
highest SCHEMA_VERSION that has run on the database. The services never migrate; they
read the mark (service_kit.app) and answer 503 "database not migrated" until it is there.
"""

from __future__ import annotations

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from service_kit.timeutil import utcnow

# One more whenever service_kit.migrate makes something new a release relies on (a
# collection, an index, a migration): services of that release wait for the new mark.
SCHEMA_VERSION = 1
MIGRATE_COMMAND = "python -m service_kit.migrate"
_MARK = "schema"


def version_of(db: Database) -> int:
    """The schema version the migration command has brought `db` to; 0 when it never ran."""
    mark = db.schema_marks.find_one({"_id": _MARK}, {"version": 1})
    return int(mark.get("version", 0)) if mark else 0


def is_migrated(db: Database) -> bool:
    return version_of(db) >= SCHEMA_VERSION


def mark_migrated(db: Database) -> None:
    """Record SCHEMA_VERSION, never lowering a newer release's mark."""
    update = {"$max": {"version": SCHEMA_VERSION}, "$set": {"at": utcnow()}}
    try:
        db.schema_marks.update_one({"_id": _MARK}, update, upsert=True)
    except DuplicateKeyError:  # a concurrent run inserted the mark between our find and insert
        db.schema_marks.update_one({"_id": _MARK}, update)


def not_migrated_detail(version: int) -> str:
    return (
        f"database not migrated (schema version {version}, this release needs {SCHEMA_VERSION}); "
        f"run `{MIGRATE_COMMAND}` with this service's MONGO_URI"
    )
