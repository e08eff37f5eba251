"""Rooms and messages in MongoDB, numbered 1, 2, 3 ... per room without gaps or repeats.

Layout (docs/chat-ordering.md has the whole argument, docs/architecture.md the indexes):
- `rooms`: one document per room, `_id` the name, with `last_seq`, a hint that only ever
  holds a seq that is stored.
- `messages`: every message of every room, `_id` = `<room>/<seq, 12 digits>`. The unique
  `_id` index is the (room, seq) uniqueness, and every read names the `_id`s it wants
  (`$in`), so each query is a lookup in that index whatever the history's size, on
  MongoDB and on the embedded FerretDB alike (scripts/ferretdb.patch pushes `$in` on
  `_id` down to its index).
- `idempotency_keys`: one claim per (room, author, Idempotency-Key), inserted before the
  message and holding every seq its owner tried, so a retry finds the message the first
  attempt stored.

Why the order is exact: a message is one insert of one document, and a server only
tries seq k after it has seen k-1 stored. So whenever k is visible, k-1 was committed
earlier: a reader can never see 7 while 6 is still on its way. Servers racing for the
same k collide on `_id`; the loser looks up the newest seq and tries the next one. Nothing relies on transactions or
on atomic read-modify-write updates, which FerretDB's SQLite backend does not provide.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from service_kit import database, names
from service_kit.housekeeping import Every
from service_kit.problems import Problem, unavailable
from service_kit.timeutil import utcnow

LOBBY = "lobby"
SEQ_DIGITS = 12
# How many seqs past a known one a query names first. Most reads are followers asking
# for the few messages since their last read: the smaller the `$in` list, the cheaper
# the query; a full window is followed by a query for the rest.
LOOKAHEAD = 16
# The most `_id`s one query names (the embedded database pushes down up to 1000).
MAX_IDS_PER_QUERY = 500
IDEMPOTENCY_WINDOW = timedelta(hours=24)
MAX_INSERT_ATTEMPTS = 200
# A request gives up storing after this long, so a claim older than CLAIM_ABANDONED
# can only belong to a request that died; its key may then be taken over.
STORE_DEADLINE_SECONDS = 10.0
CLAIM_ABANDONED = timedelta(seconds=30)
IN_FLIGHT_WAIT_SECONDS = 5.0
# Collections of the layout before one `messages` collection: messages.<room>.<partition>.
_PARTITION_COLLECTION = re.compile(rf"messages\.({names.ROOM_NAME})\.\d{{6}}")

# Threads of one process take turns per room: they would only collide with each other.
_room_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)


def _messages():
    return database.db().messages


def message_id(room: str, seq: int) -> str:
    return f"{room}/{seq:0{SEQ_DIGITS}d}"


def seq_of(message: dict) -> int:
    return int(message["_id"].rsplit("/", 1)[1])


def ensure_schema() -> None:
    db = database.db()
    db.idempotency_keys.create_index([("created_at", ASCENDING)])
    # Room creations are counted in a collection of their own: `rooms` is updated on every
    # post (last_seq), and a secondary index there would be kept up on every post too.
    db.room_creations.create_index([("creator", ASCENDING), ("at", ASCENDING)])
    if "created_by_1_created_at_1" in db.rooms.index_information():
        db.rooms.drop_index("created_by_1_created_at_1")  # this layout's first cut had one
    migrate_partitions()
    find_room(LOBBY)


def migrate_partitions() -> None:
    """Move messages of the earlier layout (a collection per 100 messages of a room) into
    `messages`, then drop the old collections. Safe to run in any number of processes at
    once and to interrupt: a copy that exists already is skipped, and a collection is
    dropped only after all its messages are copied."""
    db = database.db()
    for name in db.list_collection_names():
        match = _PARTITION_COLLECTION.fullmatch(name)
        if match is None:
            continue
        room = match.group(1)
        for old in db[name].find({}):
            seq = old.pop("_id")
            try:
                _messages().insert_one({"_id": message_id(room, seq), **old})
            except DuplicateKeyError:
                pass  # copied by an earlier or a concurrent run
        db.drop_collection(name)


def find_room(name: str) -> dict | None:
    room = database.db().rooms.find_one({"_id": name})
    if room is None and name == LOBBY:
        room = create_room(LOBBY) or database.db().rooms.find_one({"_id": name})
    return room


class TooManyRooms(Exception):
    """The creator has created their limit of rooms in the window already."""


def create_room(name: str, creator: str | None = None, limit: int = 0, since=None) -> dict | None:
    """The new room, or None when it exists already. With a `limit`, raises TooManyRooms
    when `creator` has `limit` creations since `since` already. The creation is recorded
    before the count, which counts it too: however many run at once, the last of those
    that pass counts all the others, so none passes the limit (racing ones may all be
    refused, never all let through)."""
    room = {"_id": name, "created_at": utcnow(), "last_seq": 0}
    if creator is not None:
        room["created_by"] = creator
        claim = database.db().room_creations.insert_one({"creator": creator, "at": room["created_at"]})
        if limit > 0 and rooms_created_since(creator, since) > limit:
            database.db().room_creations.delete_one({"_id": claim.inserted_id})
            raise TooManyRooms
    try:
        database.db().rooms.insert_one(room)
    except DuplicateKeyError:
        return None
    return room


def rooms_created_since(creator: str, since) -> int:
    forget_old_room_creations()
    return database.db().room_creations.count_documents({"creator": creator, "at": {"$gt": since}})


def room_count() -> int:
    return database.db().rooms.estimated_document_count()


def _find_by_ids(ids: list[str], projection: dict | None = None) -> list[dict]:
    found = []
    for start in range(0, len(ids), MAX_IDS_PER_QUERY):
        found += _messages().find({"_id": {"$in": ids[start : start + MAX_IDS_PER_QUERY]}}, projection)
    return found


def _contiguous(messages: list[dict], first: int) -> list[dict]:
    """The run of messages first, first+1, ... up to the first missing seq.

    By construction k stored means k-1 stored; this cut is the safety net that keeps a
    follower from ever stepping over a number it has not seen."""
    by_seq = {seq_of(message): message for message in messages}
    run: list[dict] = []
    while first + len(run) in by_seq:
        run.append(by_seq[first + len(run)])
    return run


def list_rooms(after: str | None = None, limit: int | None = None) -> list[dict]:
    """Every room, by name, with its exact newest seq, or with `limit` those after `after`:
    the room list and one `$in` query per MAX_IDS_PER_QUERY rooms (plus one per room whose
    hint is more than a message behind). MAX_ROOMS bounds the count, and so the list and
    its cost."""
    rooms_of = database.db().rooms
    if limit is not None:
        rooms = list(rooms_of.find({"_id": {"$gt": after}} if after else {}).sort("_id", ASCENDING).limit(limit))
    else:
        rooms = list(rooms_of.find({}).sort("_id", ASCENDING))
        if not any(room["_id"] == LOBBY for room in rooms):
            find_room(LOBBY)
            rooms = list(rooms_of.find({}).sort("_id", ASCENDING))
    hints = {room["_id"]: room.get("last_seq", 0) for room in rooms}
    beyond = _find_by_ids([message_id(name, hint + 1) for name, hint in hints.items()], {"_id": 1})
    for message in beyond:
        name = message["_id"].rsplit("/", 1)[0]
        hints[name] = newest_seq(name, known=hints[name] + 1)
    for room in rooms:
        room["last_seq"] = hints[room["_id"]]
    return rooms


def newest_seq(room: str, known: int = 0) -> int:
    """The highest stored seq of the room; `known` is a seq known to be stored (or 0)."""
    newest = known
    while True:
        window = [message_id(room, seq) for seq in range(newest + 1, newest + LOOKAHEAD + 1)]
        run = _contiguous(_find_by_ids(window, {"_id": 1}), newest + 1)
        if not run:
            return newest
        newest = seq_of(run[-1])
        if len(run) < LOOKAHEAD:
            return newest


def read_after(room: str, after: int, limit: int) -> list[dict]:
    """Up to `limit` messages after seq `after`, ascending."""
    window = min(limit, LOOKAHEAD)
    run = _read_run(room, after + 1, after + window)
    if len(run) == window < limit:
        run += _read_run(room, after + window + 1, after + limit)
    return run


def _read_run(room: str, first: int, last: int) -> list[dict]:
    return _contiguous(_find_by_ids([message_id(room, seq) for seq in range(first, last + 1)]), first)


def read_newest(room: dict, limit: int) -> list[dict]:
    """The newest `limit` messages, ascending. One query reads the `last_seq` hint's last
    `limit` messages and a few after it, so a hint that lags a little costs nothing more."""
    name, hint = room["_id"], room.get("last_seq", 0)
    first = max(1, hint - limit + 1)
    run = _read_run(name, first, hint + LOOKAHEAD)
    if run and seq_of(run[-1]) == hint + LOOKAHEAD:
        newest = newest_seq(name, known=hint + LOOKAHEAD)
        run = read_after(name, max(0, newest - limit), limit)
    return run[-limit:]


@dataclass
class Posted:
    message: dict
    created: bool  # False: an Idempotency-Key repeat, answered with the first message


class _Claim:
    """The right to store one message under an Idempotency-Key, held by one request.

    The claim is one document whose `_id` names (room, author, key); it lists every seq
    its owner tried, and the message stored carries the claim and owner, so a repeat
    finds the message with lookups by `_id` alone."""

    def __init__(self, room: str, author: str, key: str):
        self.id = f"{room}/{author}/{key}"
        self.owner = uuid.uuid4().hex
        self.room = room

    def try_take(self, seq: int) -> bool:
        """Insert the claim, with `seq` as its first attempt; False when the key is claimed."""
        try:
            database.db().idempotency_keys.insert_one(
                {"_id": self.id, "owner": self.owner, "seqs": [seq], "created_at": utcnow()}
            )
        except DuplicateKeyError:
            return False
        return True

    def record_attempt(self, seq: int) -> None:
        # Only the owner writes to its claim, so this update needs no atomicity.
        database.db().idempotency_keys.update_one({"_id": self.id, "owner": self.owner}, {"$push": {"seqs": seq}})

    def release(self) -> None:
        database.db().idempotency_keys.delete_one({"_id": self.id, "owner": self.owner})

    def stored_message(self, existing: dict) -> dict | None:
        """The message the owner of the claim `existing` stored, if it stored one."""
        # A claim of the earlier layout holds its first seq in `seq`.
        seqs = existing.get("seqs") or [existing.get("seq", 0)]
        ids = [message_id(self.room, seq) for seq in sorted(set(seqs))]
        for message in sorted(_find_by_ids(ids), key=seq_of):
            if message.get("idem") == self.id and message.get("owner") == existing["owner"]:
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
            keys.delete_one({"_id": claim.id, "owner": existing["owner"]})
            return None
        message = claim.stored_message(existing)
        if message is not None:
            return message
        if age >= CLAIM_ABANDONED:
            keys.delete_one({"_id": claim.id, "owner": existing["owner"]})
            return None
        if time.monotonic() > deadline:
            raise Problem(
                409,
                "Conflict",
                "A request with this Idempotency-Key is still being processed.",
                kind="idempotency-key-in-use",
                headers={"Retry-After": "1"},
            )
        time.sleep(0.1)


def _forget_old_claims() -> None:
    database.db().idempotency_keys.delete_many({"created_at": {"$lt": utcnow() - IDEMPOTENCY_WINDOW}})


forget_old_claims = Every(3600, _forget_old_claims)

# How long a room creation counts against its creator's limit at most (ROOM_WINDOW_SECONDS
# may be shorter; a longer window than this counts a day).
ROOM_CREATIONS_KEPT = timedelta(days=1)


def _forget_old_room_creations() -> None:
    database.db().room_creations.delete_many({"at": {"$lt": utcnow() - ROOM_CREATIONS_KEPT}})


forget_old_room_creations = Every(3600, _forget_old_room_creations)


def post_message(name: str, author: str, text: str, idempotency_key: str | None) -> Posted | None:
    """Store a message in the room `name` (None when there is no such room)."""
    forget_old_claims()
    claim = _Claim(name, author, idempotency_key) if idempotency_key else None
    for _ in range(3):
        # The room's hint is read under the lock: threads of this process that queued
        # behind each other would otherwise all start from the same stale seq.
        with _room_locks[name]:
            room = find_room(name)
            if room is None:
                return None
            seq = room.get("last_seq", 0) + 1
            if claim is None or claim.try_take(seq):
                return _store(name, author, text, seq, claim)
        # The key is claimed already; waiting for its owner must not hold the room's lock.
        earlier = _resolve_existing_claim(claim)
        if earlier is not None:
            return Posted(earlier, created=False)
    raise unavailable("The Idempotency-Key is contended; try again.")


def _store(name: str, author: str, text: str, seq: int, claim: _Claim | None) -> Posted:
    """Insert the message at `seq` or, when other servers took it, the next free seq."""
    started = time.monotonic()
    for attempt in range(MAX_INSERT_ATTEMPTS):
        if time.monotonic() - started > STORE_DEADLINE_SECONDS:
            break
        if attempt:
            # seq collided, so seq is stored: one read finds the newest to try after it,
            # where stepping by one would collide again whenever two servers leapfrog.
            seq = newest_seq(name, known=seq) + 1
            if claim is not None:
                claim.record_attempt(seq)
        message = {"_id": message_id(name, seq), "author": author, "text": text, "created_at": utcnow()}
        if claim is not None:
            message.update(idem=claim.id, owner=claim.owner)
        try:
            _messages().insert_one(message)
        except DuplicateKeyError:
            continue
        database.db().rooms.update_one({"_id": name, "last_seq": {"$lt": seq}}, {"$set": {"last_seq": seq}})
        return Posted(message, created=True)
    if claim is not None:
        claim.release()  # nothing was stored under it, so a retry may go ahead at once
    raise unavailable("The room is too busy right now; try again.")


def message_view(message: dict, room: str) -> dict:
    return {
        "room": room,
        "seq": seq_of(message),
        "author": message["author"],
        "text": message["text"],
        "created_at": message["created_at"],
    }
