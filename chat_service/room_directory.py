"""The names of every room, in order, kept in each process, so that a page of the room list
(`GET /rooms?limit=&after=`) costs lookups by `_id` alone, whatever the number of rooms.

The embedded FerretDB pushes down only lookups by `_id` (patches/ferretdb.patch): a query
for the rooms after a name, sorted and limited, read and sorted every room (10,000 rooms:
570-709 ms for a page of none). Here a page is a bisection of the process's sorted names,
then one `$in` lookup of the page's rooms by `_id`.

A process learns rooms created anywhere from `room_directory`, a log of names numbered
1, 2, 3 ... without gaps: a creator inserts its name at the number after the newest it
knows, and on a duplicate reads on and tries the next, so a number is taken only after
every number below it. A reader asks for the numbers after its newest (LOOKAHEAD at a
time) and stops at the first missing one. The name is logged before its room is inserted,
so a listed name may lack its room (its creator failed, or lost the race for the name),
never the other way round; a page looks its rooms up and skips such names. On its first use
the process also reads every room's name once, for rooms made before this log existed.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable

from flask import current_app
from pymongo.errors import DuplicateKeyError

from service_kit import database
from service_kit.problems import unavailable

NUMBER_DIGITS = 12
LOOKAHEAD = 16
MAX_IDS_PER_QUERY = 500
_EXTENSION = "chat.room_directory"


def _entry_id(number: int) -> str:
    return f"{number:0{NUMBER_DIGITS}d}"


class RoomDirectory:
    """The sorted room names this process knows, and the newest log number it has read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._forget()

    def _forget(self) -> None:
        self._names: list[str] = []
        self._known: set[str] = set()
        self._newest = 0
        self._built = False

    def _learn(self, name: str) -> None:
        if name not in self._known:
            self._known.add(name)
            bisect.insort(self._names, name)

    def _read_log(self) -> bool:
        """Learn the names logged after the newest this process has read; False when that
        newest is gone from the log (the database was emptied: a test harness's reset)."""
        log = database.db().room_directory
        while True:
            numbers = range(self._newest, self._newest + LOOKAHEAD + 1)
            ids = [_entry_id(number) for number in numbers]
            found = {entry["_id"]: entry["name"] for entry in log.find({"_id": {"$in": ids}})}
            if self._newest and ids[0] not in found:
                return False
            for number, entry_id in zip(numbers[1:], ids[1:], strict=True):
                if entry_id not in found:
                    return True
                self._learn(found[entry_id])
                self._newest = number

    def sync(self) -> int:
        """Bring the names up to date with the log; the newest log number read."""
        with self._lock:
            if self._built and not self._read_log():
                self._forget()
            if not self._built:
                self._read_log()
                # Rooms made before the log existed (one read of every room, once per process).
                for room in database.db().rooms.find({}, {"_id": 1}):
                    self._learn(room["_id"])
                self._built = True
            return self._newest

    def names_after(self, after: str | None, count: int) -> list[str]:
        with self._lock:
            start = bisect.bisect_right(self._names, after) if after else 0
            return self._names[start : start + count]


def directory() -> RoomDirectory:
    """The directory of the current app (one app per gunicorn worker, one per test database)."""
    return current_app.extensions.setdefault(_EXTENSION, RoomDirectory())


def record(name: str, deadline_seconds: float) -> None:
    """Log `name` at the next free number (before its room is inserted)."""
    log = database.db().room_directory
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        newest = directory().sync()
        try:
            log.insert_one({"_id": _entry_id(newest + 1), "name": name})
            return
        except DuplicateKeyError:
            continue  # another creator took that number: read it, and try the next
    raise unavailable("Rooms are being created too fast right now; try again.")


def page(after: str | None, limit: int, lookup: Callable[[list[str]], list[dict]]) -> list[dict]:
    """Up to `limit` rooms whose names sort after `after`, in order: the directory's names
    after it, looked up by `lookup` (which answers the rooms of the names that exist)."""
    found: list[dict] = []
    directory().sync()
    while len(found) < limit:
        names = directory().names_after(after, min(limit - len(found), MAX_IDS_PER_QUERY))
        if not names:
            break
        by_name = {room["_id"]: room for room in lookup(names)}
        found += [by_name[name] for name in names if name in by_name]
        after = names[-1]
    return found
