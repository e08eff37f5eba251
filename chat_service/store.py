"""Rooms and messages in MongoDB, numbered 1, 2, 3 ... per room without gaps or repeats.

Layout (docs/chat-ordering.md has the whole argument, docs/architecture.md the indexes):
- `rooms`: one document per room, `_id` the name, with the seq allocator: `allocated`, the
  highest seq handed out, and `log`, the messages of the seqs from `log_base` on, written
  in the same atomic update that hands their seq out. A post is that one update: from
  then on its message is stored, whatever happens to its poster.
- `message_buckets`: the messages that have left the log, BUCKET_SIZE seqs per document,
  `_id` = `<room>/<bucket number, 12 digits>`: bucket b holds seqs b*16+1 ... b*16+16 (from
  `first` on). The poster of a bucket's last seq moves the log's complete buckets here, so
  the log holds fewer than BUCKET_SIZE entries, and a page of 20 messages is two or three
  documents read by `_id`.
- `messages`: one document per message, `_id` = `<room>/<seq, 12 digits>`: the history of
  the earlier layouts, below a room's `bucket_base`, still read as it is.
- `idempotency_keys`: one claim per (room, author, Idempotency-Key), inserted before the
  seq is allocated; the log entry carries it, and `idempotency_seqs` names the seq of each
  keyed message that has left the log, so a retry finds the message of its first attempt.

Why it costs the same with any number of servers: a post is one atomic `$inc`-and-`$push`
on the room (atomic on MongoDB; on FerretDB through patches/ferretdb.patch), one more write
per post for an Idempotency-Key's claim, and a sweep of three writes per BUCKET_SIZE posts.
Servers never race for a seq, so nothing is retried. Why the order stays exact: every seq
up to `allocated` is in the log, a bucket or `messages` from the moment it is handed out,
and the sweep removes entries from the log only after their bucket is stored, so a
reader never finds a hole below the newest seq.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import current_app
from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from chat_service import room_directory
from service_kit import database, names
from service_kit.housekeeping import Every
from service_kit.problems import Problem, unavailable
from service_kit.timeutil import utcnow

LOBBY = "lobby"
SEQ_DIGITS = 12
# How many seqs past a known one a query names first, in a room of the layout before the
# allocator (whose newest seq is probed for): the smaller the `$in` list, the cheaper.
LOOKAHEAD = 16
# The most `_id`s one query names (the embedded database pushes down up to 1000).
MAX_IDS_PER_QUERY = 500
# Seqs per bucket document. The log holds fewer than this many entries, and FerretDB
# reads and rewrites the whole room on every post: a post's update costs it 0.8 ms of CPU
# with an empty log, 1.1 ms with 8 to 16 entries and 1.6 ms with 32. Each entry is one
# JSON string, which costs FerretDB a fraction of a sub-document.
BUCKET_SIZE = 16
IDEMPOTENCY_WINDOW = timedelta(hours=24)
# A room's creator gives up inserting it after this long (see room_directory.record).
STORE_DEADLINE_SECONDS = 10.0
# A post never sends its allocation after this long, so a claim older than CLAIM_ABANDONED
# with no log entry and no mapped seq can only belong to a request that died (7 s after the
# last moment its allocation could have been sent); its key may then be taken over.
ALLOCATION_DEADLINE_SECONDS = 5.0
CLAIM_ABANDONED = timedelta(seconds=12)
# How long a repeat waits for the request that holds its key. As long as a claim takes to
# be abandoned: a repeat HAProxy resent because the first attempt's server died (its claim
# taken, its allocation never sent, or dropped by the database with its connection) takes
# the key over and answers 201 within HAProxy's 15 s `timeout server`, instead of a 409.
IN_FLIGHT_WAIT_SECONDS = 12.0
# Names of rooms seen to exist. Rooms are never deleted, so this caches a fact that cannot
# go stale; its only use is to answer a post to a room that does not exist without a claim.
KNOWN_ROOMS_KEPT = 10_000
_known_rooms: set[str] = set()
# Per room, the `log_base` this process saw last. It only grows, so a read that starts
# below it reads the buckets first and needs the room only when the page goes further; one
# that starts at or above it reads the room first, and usually nothing else. A stale or
# wrong hint costs a query, never a wrong page: every read ends on the room it has read.
_log_base_seen: dict[str, tuple[int, int]] = {}  # room -> (log_base, bucket_base)
# Collections of the layout before one `messages` collection: messages.<room>.<partition>.
_PARTITION_COLLECTION = re.compile(rf"messages\.({names.ROOM_NAME})\.\d{{6}}")


def _messages():
    return database.db().messages


def message_id(room: str, seq: int) -> str:
    return f"{room}/{seq:0{SEQ_DIGITS}d}"


def seq_of(message: dict) -> int:
    return int(message["_id"].rsplit("/", 1)[1])


def bucket_id(room: str, seq: int) -> str:
    """The `_id` of the bucket that holds `seq` of `room`."""
    return f"{room}/{(seq - 1) // BUCKET_SIZE:0{SEQ_DIGITS}d}"


def ensure_schema() -> None:
    db = database.db()
    db.idempotency_keys.create_index([("created_at", ASCENDING)])
    db.idempotency_seqs.create_index([("created_at", ASCENDING)])
    # Room creations are counted in a collection of their own: `rooms` is updated on every
    # post (last_seq), and a secondary index there would be kept up on every post too.
    db.room_creations.create_index([("creator", ASCENDING), ("at", ASCENDING)])
    db.budgets.create_index([("until", ASCENDING)])
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
    room = {"_id": name, "created_at": utcnow(), "allocated": 0, "log_base": 1, "bucket_base": 1, "log": []}
    if database.db().rooms.find_one({"_id": name}, {"_id": 1}) is not None:
        return None
    if creator is not None:
        room["created_by"] = creator
        claim = database.db().room_creations.insert_one({"creator": creator, "at": room["created_at"]})
        if limit > 0 and rooms_created_since(creator, since) > limit:
            database.db().room_creations.delete_one({"_id": claim.inserted_id})
            raise TooManyRooms
    room_directory.record(name, STORE_DEADLINE_SECONDS)
    try:
        database.db().rooms.insert_one(room)
    except DuplicateKeyError:
        return None
    return room


def rooms_created_since(creator: str, since) -> int:
    forget_old_room_creations()
    return database.db().room_creations.count_documents({"creator": creator, "at": {"$gt": since}})


class BudgetSpent(Exception):
    """The budget of this window is spent; it is renewed in `retry_after` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(retry_after)
        self.retry_after = retry_after


def take_from_budget(name: str, limit: int, window_seconds: int) -> str:
    """Take one from the budget `name` of `limit` per window (fixed windows of
    `window_seconds`, counted from the epoch); the id of the window's counter, for
    `give_back`. Raises BudgetSpent when `limit` are taken in this window. One counter
    document per window, incremented atomically (on FerretDB through patches/ferretdb.patch):
    however many take at once, no more than `limit` keep what they took."""
    forget_spent_budgets()
    now = time.time()
    start = int(now // window_seconds) * window_seconds
    counter_id = f"{name}/{start}"
    budgets = database.db().budgets
    counter = budgets.find_one_and_update(
        {"_id": counter_id},
        {"$inc": {"taken": 1}, "$set": {"until": datetime.fromtimestamp(start + window_seconds, UTC)}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    if counter is None or counter["taken"] > limit:
        give_back(counter_id)
        raise BudgetSpent(max(1, math.ceil(start + window_seconds - now)))
    return counter_id


def give_back(counter_id: str) -> None:
    """Return what `take_from_budget` took (the request it was for did not go ahead)."""
    database.db().budgets.update_one({"_id": counter_id}, {"$inc": {"taken": -1}})


def _forget_spent_budgets() -> None:
    database.db().budgets.delete_many({"until": {"$lt": utcnow()}})


forget_spent_budgets = Every(3600, _forget_spent_budgets)


def _find_by_ids(ids: list[str], projection: dict | None = None) -> list[dict]:
    """The per-message documents (the earlier layouts') of these `_id`s."""
    found = []
    for start in range(0, len(ids), MAX_IDS_PER_QUERY):
        found += _messages().find({"_id": {"$in": ids[start : start + MAX_IDS_PER_QUERY]}}, projection)
    return found


def _contiguous(messages: list[dict], first: int) -> list[dict]:
    """The run of messages first, first+1, ... up to the first missing seq.

    A follower must never step over a number it has not seen: a page ends before any seq
    it could not read."""
    by_seq = {seq_of(message): message for message in messages}
    run: list[dict] = []
    while first + len(run) in by_seq:
        run.append(by_seq[first + len(run)])
    return run


def _top(room: dict) -> int:
    """The highest seq the room handed out; in a room not yet moved to the allocator (see
    _adopt_allocator), a stored seq at or below the newest."""
    return room["allocated"] if "allocated" in room else room.get("last_seq", 0)


def stored_through(room: dict) -> int:
    """A seq of the room known to be stored with every seq before it (or 0): with the
    allocator, every seq it handed out is."""
    return _top(room)


def list_rooms(after: str | None = None, limit: int | None = None) -> list[dict]:
    """Every room, by name, with its newest seq (`last_seq`), or with `limit` those after
    `after`. All of them: the room list (plus one `$in` query per MAX_IDS_PER_QUERY rooms
    of the layout before the allocator, whose newest seq is probed for). A page: the names
    from the process's room directory, then lookups by `_id` alone, so its cost does not
    grow with the number of rooms."""
    rooms_of = database.db().rooms
    projection = {"log": 0}
    if limit is not None:
        rooms = room_directory.page(
            after, limit, lambda names: list(rooms_of.find({"_id": {"$in": names}}, projection))
        )
    else:
        rooms = list(rooms_of.find({}, projection).sort("_id", ASCENDING))
        if not any(room["_id"] == LOBBY for room in rooms):
            find_room(LOBBY)
            rooms = list(rooms_of.find({}, projection).sort("_id", ASCENDING))
    # A room of the earlier layout: its hint may lag, so look one past it.
    probes = {room["_id"]: _top(room) + 1 for room in rooms if "allocated" not in room}
    found = {message["_id"] for message in _find_by_ids([message_id(n, seq) for n, seq in probes.items()], {"_id": 1})}
    for room in rooms:
        name, top = room["_id"], _top(room)
        if name in probes and message_id(name, top + 1) in found:
            top = newest_seq(name, known=top + 1)
        room["last_seq"] = top
        for field in ("allocated", "log_base", "bucket_base"):
            room.pop(field, None)
    return rooms


def newest_seq(room: str, known: int = 0) -> int:
    """The room's newest seq, every seq up to it readable; `known` is a seq known to be
    stored (or 0). With the allocator, it is the allocator's; in a room of the layout
    before it, the end of the run of stored messages from `known` on."""
    state = database.db().rooms.find_one({"_id": room}, {"allocated": 1})
    if state is not None and "allocated" in state:
        return state["allocated"]
    newest = known
    while True:
        window = [message_id(room, seq) for seq in range(newest + 1, newest + LOOKAHEAD + 1)]
        run = _contiguous(_find_by_ids(window, {"_id": 1}), newest + 1)
        if not run:
            return newest
        newest = seq_of(run[-1])
        if len(run) < LOOKAHEAD:
            return newest


_ROOM_STATE = {"allocated": 1, "log_base": 1, "bucket_base": 1, "log": 1, "last_seq": 1}


def read_after(room: str, after: int, limit: int) -> list[dict]:
    """Up to `limit` messages after seq `after`, ascending: a contiguous run."""
    first, last = after + 1, after + limit
    found: dict[int, dict] = {}
    seen = _log_base_seen.get(room)
    if seen is not None and first < seen[0]:
        # Most likely all stored (a reader catching up): read those first.
        found = _from_buckets(room, first, min(last, seen[0] - 1), seen[1])
        run = _run(found, first, last)
        if len(run) == limit:
            return run
    state = database.db().rooms.find_one({"_id": room}, _ROOM_STATE)
    if state is None:
        return []
    return _page(room, state, first, last, found)


def read_newest(room: dict, limit: int) -> list[dict]:
    """The newest `limit` messages, ascending. `room` is the whole room document (with its
    log), as find_room answers it."""
    name = room["_id"]
    if "allocated" not in room:
        newest = newest_seq(name, known=room.get("last_seq", 0))
        return read_after(name, max(0, newest - limit), limit)
    return _page(name, room, max(1, room["allocated"] - limit + 1), room["allocated"], {})


def _page(name: str, room: dict, first: int, last: int, found: dict[int, dict]) -> list[dict]:
    """The run first..last (at most to the room's newest seq) of the room whose document,
    with its log, was read as `room`; `found` holds messages read before that."""
    if "allocated" not in room:  # the layout before the allocator: one document per message
        ids = [message_id(name, seq) for seq in range(first, last + 1)]
        return _contiguous(_find_by_ids(ids), first)
    base, top = room["log_base"], room["allocated"]
    bucket_base = room.get("bucket_base", base)  # a room of the layout before the buckets: none yet
    if len(_log_base_seen) >= KNOWN_ROOMS_KEPT:
        _log_base_seen.clear()
    _log_base_seen[name] = (base, bucket_base)
    last = min(last, top)
    for seq in range(max(first, base), last + 1):
        found[seq] = _message(name, seq, _decode(room["log"][seq - base]))
    below = [seq for seq in range(first, min(last, base - 1) + 1) if seq not in found]
    if below:
        found.update(_from_buckets(name, below[0], below[-1], bucket_base))
        below = [seq for seq in below if seq not in found]
    if below:
        # Left the log one at a time, as servers of the layout before the buckets did.
        found.update((seq_of(m), m) for m in _find_by_ids([message_id(name, seq) for seq in below]))
    return _run(found, first, last)


def _from_buckets(name: str, first: int, last: int, bucket_base: int = 1) -> dict[int, dict]:
    """The messages first..last that are stored: from their buckets, and below
    `bucket_base` from the one-per-message documents of the earlier layouts."""
    found: dict[int, dict] = {}
    if first > last:
        return found
    if first < bucket_base:
        below = [message_id(name, seq) for seq in range(first, min(last, bucket_base - 1) + 1)]
        found.update((seq_of(m), m) for m in _find_by_ids(below))
    if last >= bucket_base:
        start = max(first, bucket_base)
        ids = sorted({bucket_id(name, seq) for seq in range(start, last + 1, BUCKET_SIZE)} | {bucket_id(name, last)})
        for bucket in database.db().message_buckets.find({"_id": {"$in": ids}}):
            for offset, raw in enumerate(bucket["entries"]):
                seq = bucket["first"] + offset
                if start <= seq <= last:
                    found[seq] = _message(name, seq, _decode(raw))
    return found


def _run(found: dict[int, dict], first: int, last: int) -> list[dict]:
    run: list[dict] = []
    while first + len(run) <= last and first + len(run) in found:
        run.append(found[first + len(run)])
    return run


def _message(name: str, seq: int, entry: dict) -> dict:
    return {"_id": message_id(name, seq), **entry}


@dataclass
class Posted:
    message: dict
    created: bool  # False: an Idempotency-Key repeat, answered with the first message


class _Claim:
    """The right to store one message under an Idempotency-Key, held by one request.

    The claim is one document whose `_id` names (room, author, key), inserted before the
    seq is handed out. The log entry carries the claim and its owner, and when the entry
    leaves the log, `idempotency_seqs` gets the claim's seq, so a repeat finds the message
    with lookups by `_id` alone."""

    def __init__(self, room: str, author: str, key: str):
        self.id = f"{room}/{author}/{key}"
        self.owner = uuid.uuid4().hex
        self.room = room

    def try_take(self) -> bool:
        """Insert the claim; False when the key is claimed."""
        try:
            database.db().idempotency_keys.insert_one({"_id": self.id, "owner": self.owner, "created_at": utcnow()})
        except DuplicateKeyError:
            return False
        return True

    def release(self) -> None:
        database.db().idempotency_keys.delete_one({"_id": self.id, "owner": self.owner})

    def stored_message(self, existing: dict) -> dict | None:
        """The message the owner of the claim `existing` had a seq handed out for, if any.

        The log is read before the seq map: a sweep writes the map before it removes the
        entry from the log, so an entry that is not in the log when it is read is in the
        map when that is read next."""
        owner = existing["owner"]
        # A claim of the earlier layouts holds the seqs it tried, or its one seq in `seq`.
        seqs = sorted(set(existing.get("seqs") or ([existing["seq"]] if "seq" in existing else [])))
        room = database.db().rooms.find_one({"_id": self.room}, _ROOM_STATE)
        if room is not None and "log" in room:
            for offset, raw in enumerate(room["log"]):
                entry = _decode(raw)
                if entry.get("idem") == self.id and entry["owner"] == owner:
                    return _message(self.room, room["log_base"] + offset, entry)
        mapped = database.db().idempotency_seqs.find_one({"_id": _seq_map_id(self.id, owner)})
        if mapped is not None:
            seqs.insert(0, mapped["seq"])
        for seq in seqs:
            for message in read_after(self.room, seq - 1, 1):
                if message.get("idem") == self.id and message.get("owner") == owner:
                    return message
        return None


def _seq_map_id(claim_id: str, owner: str) -> str:
    """The `_id` of a claim's entry in `idempotency_seqs`: a key used again after its window
    is a new claim, with a new owner."""
    return f"{claim_id}/{owner}"


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
    for collection in ("idempotency_keys", "idempotency_seqs"):
        database.db()[collection].delete_many({"created_at": {"$lt": utcnow() - IDEMPOTENCY_WINDOW}})


forget_old_claims = Every(3600, _forget_old_claims)

# How long a room creation counts against its creator's limit at most (ROOM_WINDOW_SECONDS
# may be shorter; a longer window than this counts a day).
ROOM_CREATIONS_KEPT = timedelta(days=1)


def _forget_old_room_creations() -> None:
    database.db().room_creations.delete_many({"at": {"$lt": utcnow() - ROOM_CREATIONS_KEPT}})


forget_old_room_creations = Every(3600, _forget_old_room_creations)


def _room_exists(name: str) -> bool:
    if name in _known_rooms:
        return True
    if find_room(name) is None:
        return False
    if len(_known_rooms) >= KNOWN_ROOMS_KEPT:
        _known_rooms.clear()
    _known_rooms.add(name)
    return True


def post_message(name: str, author: str, text: str, idempotency_key: str | None) -> Posted | None:
    """Store a message in the room `name` (None when there is no such room)."""
    if not _room_exists(name):
        return None
    forget_old_claims()
    claim = _Claim(name, author, idempotency_key) if idempotency_key else None
    for _ in range(3):
        # The allocation deadline counts from just before the claim is taken (its
        # created_at is later), which a repeat's takeover of an abandoned claim relies on.
        started = time.monotonic()
        if claim is None or claim.try_take():
            return _allocate_and_store(name, author, text, claim, started)
        # The key is claimed already: answer with its message, or claim again.
        earlier = _resolve_existing_claim(claim)
        if earlier is not None:
            return Posted(earlier, created=False)
    raise unavailable("The Idempotency-Key is contended; try again.")


def _allocate_and_store(name: str, author: str, text: str, claim: _Claim | None, started: float) -> Posted | None:
    entry = {
        "author": author,
        "text": text,
        "created_at": utcnow(),
        "owner": claim.owner if claim else uuid.uuid4().hex,
    }
    if claim is not None:
        entry["idem"] = claim.id
    rooms = database.db().rooms
    for _ in range(3):
        if time.monotonic() - started > ALLOCATION_DEADLINE_SECONDS:
            break  # before a seq is handed out: after that, the message is stored
        # One atomic update hands out the seq and stores the message with it. (It answers
        # with the whole room, log and all: FerretDB has no projection for findAndModify.)
        room = rooms.find_one_and_update(
            {"_id": name, "allocated": {"$exists": True}},
            {"$inc": {"allocated": 1}, "$push": {"log": _encode(entry)}},
            return_document=ReturnDocument.AFTER,
        )
        if room is not None:
            seq = room["allocated"]
            if seq % BUCKET_SIZE == 0:
                _sweep_log(room)
            return Posted(_message(name, seq, entry), created=True)
        if not _adopt_allocator(name):
            _known_rooms.discard(name)  # emptied by a test harness's reset; rooms are never deleted
            if claim is not None:
                claim.release()
            return None
    if claim is not None:
        claim.release()  # no seq was handed out under it, so a retry may go ahead at once
    raise unavailable("The room is too busy right now; try again.")


def _sweep_log(room: dict) -> None:
    """Move the log's complete buckets into `message_buckets`: called by the poster of a
    bucket's last seq, with the room as its post's update answered it. An entry leaves the
    log only after its bucket (and its claim's seq) is stored, and only by an update
    conditional on `log_base`, so a sweep that races another removes nothing twice. The
    message is stored already, in the log: a sweep that fails is left to the next one."""
    try:
        _move_buckets(room)
    except PyMongoError:
        current_app.logger.warning(
            "moving the log of room %r to its buckets failed; the next sweep does it", room["_id"]
        )


def _move_buckets(room: dict) -> None:
    name, base, log = room["_id"], room["log_base"], room["log"]
    end = (room["allocated"] // BUCKET_SIZE) * BUCKET_SIZE  # the last seq of the last complete bucket
    if end < base:
        return
    moving = log[: end - base + 1]
    buckets = []
    seq = base
    while seq <= end:
        last = ((seq - 1) // BUCKET_SIZE + 1) * BUCKET_SIZE
        buckets.append({"_id": bucket_id(name, seq), "first": seq, "entries": moving[seq - base : last - base + 1]})
        seq = last + 1
    db = database.db()
    for bucket in buckets:
        try:
            db.message_buckets.insert_one(bucket)
        except DuplicateKeyError:
            # Stored by a sweep that raced this one (the same entries), or, after a server
            # of the layout before the buckets swept part of it, from a later seq on: keep
            # what it lacks one document per message, where readers look next.
            stored = db.message_buckets.find_one({"_id": bucket["_id"]}, {"first": 1}) or {"first": bucket["first"]}
            _store_one_by_one(name, bucket["first"], bucket["entries"][: max(0, stored["first"] - bucket["first"])])
    keyed = []
    for offset, raw in enumerate(moving):
        entry = _decode(raw)
        if "idem" in entry:
            keyed.append(
                {
                    "_id": _seq_map_id(entry["idem"], entry["owner"]),
                    "seq": base + offset,
                    "created_at": entry["created_at"],
                }
            )
    if keyed:
        try:
            db.idempotency_seqs.insert_many(keyed, ordered=False)
        except BulkWriteError as failed:
            if any(error.get("code") != 11000 for error in failed.details.get("writeErrors", [])):
                raise  # only "mapped already, by a sweep that raced this one" is expected
    update: dict = {"$pullAll": {"log": moving}, "$inc": {"log_base": len(moving)}}
    if "bucket_base" not in room:
        update["$set"] = {"bucket_base": base}  # a room of the earlier layout: its buckets start here
    db.rooms.update_one({"_id": name, "log_base": base}, update)


def _store_one_by_one(name: str, first: int, entries: list[str]) -> None:
    for offset, raw in enumerate(entries):
        try:
            _messages().insert_one(_message(name, first + offset, _decode(raw)))
        except DuplicateKeyError:
            pass  # stored by a sweep that raced this one


def _encode(entry: dict) -> str:
    return json.dumps({**entry, "created_at": entry["created_at"].isoformat()}, ensure_ascii=False)


def _decode(raw: str) -> dict:
    entry = json.loads(raw)
    return {**entry, "created_at": datetime.fromisoformat(entry["created_at"])}


def _adopt_allocator(name: str) -> bool:
    """Give a room of the earlier layout (a `last_seq` hint, no allocator) its allocator,
    starting after its newest stored message; False when there is no such room."""
    room = find_room(name)
    if room is None:
        return False
    if "allocated" not in room:
        newest = newest_seq(name, known=room.get("last_seq", 0))
        database.db().rooms.update_one(
            {"_id": name, "allocated": {"$exists": False}},
            {
                "$set": {"allocated": newest, "log_base": newest + 1, "bucket_base": newest + 1, "log": []},
                "$unset": {"last_seq": ""},
            },
        )
    return True


def message_view(message: dict, room: str) -> dict:
    return {
        "room": room,
        "seq": seq_of(message),
        "author": message["author"],
        "text": message["text"],
        "created_at": message["created_at"],
    }
