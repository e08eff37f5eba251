"""Rooms and messages in MongoDB, numbered 1, 2, 3 ... per room without gaps or repeats.

Layout (docs/chat-ordering.md has the whole argument and the measurements):
- `rooms`: one document per room, `_id` the name, with `last_seq`, a hint that only ever
  holds a seq that is stored.
- `messages.<room>.<partition>`: the messages of one room, 100 per collection, `_id` the
  seq. The unique `_id` index is the (room, seq) uniqueness; a partition is small, so
  reads stay fast at any history size even on a server that cannot use secondary
  indexes (FerretDB 1.x on SQLite scans every query).
- `idempotency_keys`: one claim per (room, author, Idempotency-Key), inserted before
  the message, so a retry finds the message the first attempt stored.

Why the order is exact: a message is one insert of one document, and a server only
tries seq k after it has seen k-1 stored. So whenever k is visible, k-1 was committed
earlier: a reader can never see 7 while 6 is still on its way. Servers racing for the
same k collide on `_id`; the loser looks up the newest seq and tries the next one.
Nothing relies on transactions or on atomic read-modify-write updates, which FerretDB's
SQLite backend does not provide.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from pymongo import ASCENDING

from service_kit import database
from service_kit.housekeeping import Every
from service_kit.problems import Problem, unavailable
from service_kit.timeutil import utcnow

LOBBY = "lobby"
PARTITION_SIZE = 100
IDEMPOTENCY_WINDOW = timedelta(hours=24)
MAX_INSERT_ATTEMPTS = 200
# A request gives up storing after this long, so a claim older than CLAIM_ABANDONED
# can only belong to a request that died; its key may then be taken over.
STORE_DEADLINE_SECONDS = 10.0
CLAIM_ABANDONED = timedelta(seconds=30)
IN_FLIGHT_WAIT_SECONDS = 5.0

# Threads of one process take turns per room: they would only collide with each other.
_room_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)


def ensure_schema() -> None:
    db = database.db()
    db.idempotency_keys.create_index([("claim", ASCENDING), ("owner", ASCENDING)])
    db.idempotency_keys.create_index([("created_at", ASCENDING)])
    find_room(LOBBY)


def partition_of(seq: int) -> int:
    return (seq - 1) // PARTITION_SIZE


def _partition(room: str, partition: int):
    return database.db()[f"messages.{room}.{partition:06d}"]


def find_room(name: str) -> dict | None:
    room = database.db().rooms.find_one({"_id": name})
    if room is None and name == LOBBY:
        room = create_room(LOBBY) or database.db().rooms.find_one({"_id": name})
    return room


def create_room(name: str) -> dict | None:
    """The new room, or None when it exists already."""
    room = {"_id": name, "created_at": utcnow(), "last_seq": 0}
    try:
        database.db().rooms.insert_one(room)
    except Exception as error:
        if database.is_duplicate_key(error):
            return None
        raise
    return room


def list_rooms() -> list[dict]:
    rooms = list(database.db().rooms.find({}).sort("_id", ASCENDING))
    if not any(room["_id"] == LOBBY for room in rooms):
        find_room(LOBBY)
        rooms = list(database.db().rooms.find({}).sort("_id", ASCENDING))
    for room in rooms:
        room["last_seq"] = newest_seq(room["_id"], known=room.get("last_seq", 0))
    return rooms


def newest_seq(room: str, known: int = 0) -> int:
    """The highest stored seq of the room; `known` is a seq known to be stored (or 0)."""
    newest = known
    partition = partition_of(known + 1)
    while True:
        top = _partition(room, partition).find_one({"_id": {"$gt": newest}}, {"_id": 1}, sort=[("_id", -1)])
        if top is None:
            return newest
        newest = top["_id"]
        if newest % PARTITION_SIZE:  # the partition is not full: nothing lies beyond it
            return newest
        partition += 1


def read_range(room: str, first: int, last: int) -> list[dict]:
    """Stored messages with first <= seq <= last, ascending, cut at the first gap."""
    found = []
    for partition in range(partition_of(first), partition_of(last) + 1):
        found += _partition(room, partition).find({"_id": {"$gte": first, "$lte": last}})
    found.sort(key=lambda message: message["_id"])
    prefix, expected = [], first
    for message in found:
        # By construction k stored means k-1 stored; this cut is the safety net that keeps
        # a follower from ever stepping over a number it has not seen.
        if message["_id"] != expected:
            break
        prefix.append(message)
        expected += 1
    return prefix


def read_after(room: str, after: int, limit: int) -> list[dict]:
    """Up to `limit` messages after seq `after`, ascending."""
    return read_range(room, after + 1, after + limit)


def read_newest(room: dict, limit: int) -> list[dict]:
    """The newest `limit` messages, ascending. Reads forward from the `last_seq` hint, so
    one partition query usually answers it."""
    name, hint = room["_id"], room.get("last_seq", 0)
    first = max(1, hint - limit + 1)
    found, partition = [], partition_of(first)
    while True:
        batch = list(_partition(name, partition).find({"_id": {"$gte": first}}))
        found += batch
        # A partition that does not end full has nothing beyond it.
        if not batch or max(message["_id"] for message in batch) % PARTITION_SIZE:
            break
        partition += 1
    found.sort(key=lambda message: message["_id"])
    contiguous = []
    for message in found:
        if contiguous and message["_id"] != contiguous[-1]["_id"] + 1:
            break
        contiguous.append(message)
    return contiguous[-limit:]


@dataclass
class Posted:
    message: dict
    created: bool  # False: an Idempotency-Key repeat, answered with the first message


class _Claim:
    """The right to store one message under an Idempotency-Key, held by one request."""

    def __init__(self, room: str, author: str, key: str):
        self.id = f"{room}/{author}/{key}"
        self.owner = uuid.uuid4().hex
        self.room = room

    def record_attempt(self, seq: int, first: bool) -> None:
        keys = database.db().idempotency_keys
        document = {"claim": self.id, "owner": self.owner, "seq": seq, "created_at": utcnow()}
        if first:
            keys.insert_one({"_id": self.id, **document})
        else:
            keys.insert_one({"_id": f"{self.id}#{self.owner}#{seq}", **document})

    def release(self) -> None:
        database.db().idempotency_keys.delete_many({"claim": self.id, "owner": self.owner})

    def stored_message(self, owner: str) -> dict | None:
        """The message a claim's owner stored, if it stored one."""
        attempts = database.db().idempotency_keys.find({"claim": self.id, "owner": owner}, {"seq": 1})
        for seq in sorted({attempt["seq"] for attempt in attempts}):
            message = _partition(self.room, partition_of(seq)).find_one({"_id": seq})
            if message is not None and message.get("idem") == self.id and message.get("owner") == owner:
                return message
        return None


def _resolve_existing_claim(claim: _Claim) -> dict | None:
    """Called when the key is claimed already: the message stored under it, or None when
    the earlier claim was expired or abandoned and has been removed (claim again)."""
    keys = database.db().idempotency_keys
    deadline = time.monotonic() + IN_FLIGHT_WAIT_SECONDS
    while True:
        existing = keys.find_one({"_id": claim.id})
        if existing is None:
            return None
        age = utcnow() - existing["created_at"]
        if age >= IDEMPOTENCY_WINDOW:
            keys.delete_many({"claim": claim.id, "owner": existing["owner"]})
            return None
        message = claim.stored_message(existing["owner"])
        if message is not None:
            return message
        if age >= CLAIM_ABANDONED:
            keys.delete_many({"claim": claim.id, "owner": existing["owner"]})
            return None
        if time.monotonic() > deadline:
            raise Problem(409, "Conflict", "A request with this Idempotency-Key is still being processed.",
                          kind="idempotency-key-in-use", headers={"Retry-After": "1"})
        time.sleep(0.1)


def _claim_key(claim: _Claim, seq: int) -> dict | None:
    """Own the claim (None), or the message an earlier request stored under the key."""
    for _ in range(3):
        try:
            claim.record_attempt(seq, first=True)
            return None
        except Exception as error:
            if not database.is_duplicate_key(error):
                raise
        earlier = _resolve_existing_claim(claim)
        if earlier is not None:
            return earlier
    raise unavailable("The Idempotency-Key is contended; try again.")


def _forget_old_claims() -> None:
    database.db().idempotency_keys.delete_many({"created_at": {"$lt": utcnow() - IDEMPOTENCY_WINDOW}})


forget_old_claims = Every(3600, _forget_old_claims)


def post_message(room: dict, author: str, text: str, idempotency_key: str | None) -> Posted:
    name = room["_id"]
    forget_old_claims()
    started = time.monotonic()
    # The hint is right unless another server just posted; then the insert collides and
    # the loop below looks up the newest seq. Trusting it first saves a query per post.
    seq = room.get("last_seq", 0) + 1
    claim = _Claim(name, author, idempotency_key) if idempotency_key else None
    if claim is not None:
        earlier = _claim_key(claim, seq)
        if earlier is not None:
            return Posted(earlier, created=False)
    with _room_locks[name]:
        for attempt in range(MAX_INSERT_ATTEMPTS):
            if time.monotonic() - started > STORE_DEADLINE_SECONDS:
                break
            if attempt:
                seq = newest_seq(name, known=seq) + 1
                if claim is not None:
                    claim.record_attempt(seq, first=False)
            message = {"_id": seq, "author": author, "text": text, "created_at": utcnow()}
            if claim is not None:
                message.update(idem=claim.id, owner=claim.owner)
            try:
                _partition(name, partition_of(seq)).insert_one(message)
            except Exception as error:
                if not database.is_duplicate_key(error):
                    raise
                continue
            database.db().rooms.update_one({"_id": name, "last_seq": {"$lt": seq}}, {"$set": {"last_seq": seq}})
            return Posted(message, created=True)
    if claim is not None:
        claim.release()  # nothing was stored under it, so a retry may go ahead at once
    raise unavailable("The room is too busy right now; try again.")


def message_view(message: dict, room: str) -> dict:
    return {"room": room, "seq": message["_id"], "author": message["author"], "text": message["text"],
            "created_at": message["created_at"]}
