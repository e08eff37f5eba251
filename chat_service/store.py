"""Rooms and messages in MongoDB, numbered 1, 2, 3 ... per room without gaps or repeats.

Layout (docs/chat-ordering.md has the whole argument, docs/architecture.md the indexes):
- `rooms`: one document per room, `_id` the name, with the seq allocator: `allocated`, the
  highest seq handed out, and `log`, the messages of the seqs from `log_base` on, written
  in the same atomic update that hands their seq out. Every seq up to `allocated` is
  stored in `messages` or still in the log, so none can be lost by a poster that dies.
- `messages`: every message of every room, `_id` = `<room>/<seq, 12 digits>`. The unique
  `_id` index is the (room, seq) uniqueness, and every read names the `_id`s it wants
  (`$in`), so each query is a lookup in that index whatever the history's size, on
  MongoDB and on the embedded FerretDB alike (patches/ferretdb.patch pushes `$in` on
  `_id` down to its index).
- `idempotency_keys`: one claim per (room, author, Idempotency-Key), inserted before the
  seq is allocated and told the seq before the message is stored, so a retry finds the
  message the first attempt stored, or the log entry it left.

Why it costs the same with any number of servers: a post is one atomic `$inc`-and-`$push`
on the room (atomic on MongoDB; on FerretDB through patches/ferretdb.patch) and one insert.
Servers never race for a seq, so nothing is retried. Why the order stays exact: a reader
returns only the contiguous run after its `after`, and a seq missing below a stored one is
stored from the log by the reader that finds it, so a follower can be delayed, never made
to skip a message.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from chat_service import room_directory
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
# A request gives up before its seq is allocated after this long, so a claim older than
# CLAIM_ABANDONED with no seq and no log entry can only belong to a request that died; its
# key may then be taken over.
STORE_DEADLINE_SECONDS = 10.0
CLAIM_ABANDONED = timedelta(seconds=30)
IN_FLIGHT_WAIT_SECONDS = 5.0
# Every SWEEP_EVERY-th post moves the log's older entries out of the room document once
# their messages are stored; the newest SWEEP_EVERY stay for their posters. The log holds
# between SWEEP_EVERY and twice as many entries. Each entry is one JSON string: FerretDB
# rewrites the whole room on every post, and a string costs it a fraction of a document
# (a post's update with 16 string entries: 1.1 ms of its CPU; with 16 documents: 3.1 ms).
SWEEP_EVERY = 8
# Names of rooms seen to exist. Rooms are never deleted, so this caches a fact that cannot
# go stale; its only use is to answer a post to a room that does not exist without a claim.
KNOWN_ROOMS_KEPT = 10_000
_known_rooms: set[str] = set()
# Collections of the layout before one `messages` collection: messages.<room>.<partition>.
_PARTITION_COLLECTION = re.compile(rf"messages\.({names.ROOM_NAME})\.\d{{6}}")


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
    room = {"_id": name, "created_at": utcnow(), "allocated": 0, "log_base": 1, "log": []}
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
    found = []
    for start in range(0, len(ids), MAX_IDS_PER_QUERY):
        found += _messages().find({"_id": {"$in": ids[start : start + MAX_IDS_PER_QUERY]}}, projection)
    return found


def _contiguous(messages: list[dict], first: int) -> list[dict]:
    """The run of messages first, first+1, ... up to the first missing seq.

    A follower must never step over a number it has not seen: a seq whose poster is still
    storing it (or died before it could) ends the run until it is stored."""
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
    """A seq of the room known to be stored with every seq before it (or 0)."""
    return room["log_base"] - 1 if "log_base" in room else room.get("last_seq", 0)


def list_rooms(after: str | None = None, limit: int | None = None) -> list[dict]:
    """Every room, by name, with its newest seq (`last_seq`), or with `limit` those after
    `after`. All of them: the room list and one `$in` query per MAX_IDS_PER_QUERY rooms
    (plus one per room whose newest seq is still in flight). A page: the names from the
    process's room directory, then lookups by `_id` alone, so its cost does not grow with
    the number of rooms."""
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
    # A room with the allocator: its top is almost always stored, so one lookup confirms it.
    # A room of the earlier layout: its hint may lag, so look one past it.
    probes = {
        room["_id"]: _top(room) if "allocated" in room else _top(room) + 1
        for room in rooms
        if "allocated" not in room or room["allocated"] > 0
    }
    found = {message["_id"] for message in _find_by_ids([message_id(n, seq) for n, seq in probes.items()], {"_id": 1})}
    for room in rooms:
        name, top = room["_id"], _top(room)
        if name not in probes:
            newest = 0
        elif "allocated" in room:
            newest = top if message_id(name, top) in found else newest_seq(name, known=stored_through(room))
        else:
            newest = newest_seq(name, known=top + 1) if message_id(name, top + 1) in found else top
        room["last_seq"] = newest
        for field in ("allocated", "log_base"):
            room.pop(field, None)
    return rooms


def newest_seq(room: str, known: int = 0) -> int:
    """The highest seq of the room's contiguous stored run; `known` is a seq known to be
    stored (or 0)."""
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
    ids = [message_id(room, seq) for seq in range(first, last + 1)]
    found = _find_by_ids(ids)
    run = _contiguous(found, first)
    if len(run) < len(found):
        # A seq is missing below one that is stored: its poster is still storing it, or
        # died after its seq was handed out. Its message is in the room's log; store it.
        if _store_from_log(room, first + len(run), last):
            run = _contiguous(_find_by_ids(ids), first)
    return run


def read_newest(room: dict, limit: int) -> list[dict]:
    """The newest `limit` messages, ascending. One query reads the top's last `limit`
    messages and a few after it, so the lagging hint of a room of the earlier layout costs
    nothing more."""
    name, top = room["_id"], _top(room)
    first = max(1, top - limit + 1)
    run = _read_run(name, first, top + LOOKAHEAD)
    if run and seq_of(run[-1]) == top + LOOKAHEAD:
        newest = newest_seq(name, known=top + LOOKAHEAD)
        run = read_after(name, max(0, newest - limit), limit)
    return run[-limit:]


@dataclass
class Posted:
    message: dict
    created: bool  # False: an Idempotency-Key repeat, answered with the first message


class _Claim:
    """The right to store one message under an Idempotency-Key, held by one request.

    The claim is one document whose `_id` names (room, author, key); it learns its seq
    before the message is stored, and the message (and its log entry) carries the claim
    and owner, so a repeat finds the message with lookups by `_id` alone."""

    def __init__(self, room: str, author: str, key: str):
        self.id = f"{room}/{author}/{key}"
        self.owner = uuid.uuid4().hex
        self.room = room

    def try_take(self) -> bool:
        """Insert the claim; False when the key is claimed."""
        try:
            database.db().idempotency_keys.insert_one(
                {"_id": self.id, "owner": self.owner, "seqs": [], "created_at": utcnow()}
            )
        except DuplicateKeyError:
            return False
        return True

    def release(self) -> None:
        database.db().idempotency_keys.delete_one({"_id": self.id, "owner": self.owner})

    def stored_message(self, existing: dict) -> dict | None:
        """The message the owner of the claim `existing` stored or had a seq for, if any."""
        # A claim of the earlier layouts holds the seqs it tried, or its one seq in `seq`.
        seqs = existing.get("seqs") or ([existing["seq"]] if "seq" in existing else [])
        ids = [message_id(self.room, seq) for seq in sorted(set(seqs))]
        for message in sorted(_find_by_ids(ids), key=seq_of):
            if message.get("idem") == self.id and message.get("owner") == existing["owner"]:
                return message
        # Its seq was handed out, but neither it nor a reader has stored the message yet.
        room = database.db().rooms.find_one({"_id": self.room}, {"log_base": 1, "log": 1}) or {}
        for offset, raw in enumerate(room.get("log", [])):
            entry = _decode(raw)
            if entry.get("idem") == self.id and entry["owner"] == existing["owner"]:
                return _store_entry(self.room, room["log_base"] + offset, entry)
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
    started = time.monotonic()
    claim = _Claim(name, author, idempotency_key) if idempotency_key else None
    for _ in range(3):
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
        if time.monotonic() - started > STORE_DEADLINE_SECONDS:
            break  # before a seq is handed out: after that, the message is as good as stored
        # One atomic update hands out the seq and keeps the message with it. (It answers
        # with the whole room, log and all: FerretDB has no projection for findAndModify.)
        allocated = rooms.find_one_and_update(
            {"_id": name, "allocated": {"$exists": True}},
            {"$inc": {"allocated": 1}, "$push": {"log": _encode(entry)}},
            return_document=ReturnDocument.AFTER,
        )
        if allocated is not None:
            seq = allocated["allocated"]
            message = _store_entry(name, seq, entry)
            if message.get("owner") != entry["owner"]:
                # Only a writer that bypasses the allocator (a server of the earlier layout
                # during an upgrade) can have stored this seq; never answer with its message.
                raise unavailable("The room's numbering is being upgraded; try again.")
            if seq % SWEEP_EVERY == 0:
                _sweep_log(name)
            return Posted(message, created=True)
        if not _adopt_allocator(name):
            _known_rooms.discard(name)  # emptied by a test harness's reset; rooms are never deleted
            if claim is not None:
                claim.release()
            return None
    if claim is not None:
        claim.release()  # no seq was handed out under it, so a retry may go ahead at once
    raise unavailable("The room is too busy right now; try again.")


def _store_entry(name: str, seq: int, entry: dict) -> dict:
    """Store the log entry at `seq`, by its poster or by anybody who finds it missing, and
    answer with the message stored there. Its claim learns the seq first, so a stored
    message's claim always names it. Storing twice is harmless: every copy of a seq's
    message is the same document."""
    if "idem" in entry:
        database.db().idempotency_keys.update_one(
            {"_id": entry["idem"], "owner": entry["owner"]}, {"$set": {"seqs": [seq]}}
        )
    message = {"_id": message_id(name, seq), **entry}
    try:
        _messages().insert_one(message)
    except DuplicateKeyError:
        # Stored already, by a reader or a sweep that found it missing first: the stored
        # copy is the answer (and only a seq stored outside the allocator differs).
        return _messages().find_one({"_id": message["_id"]}) or message
    return message


def _store_from_log(name: str, first: int, last: int) -> bool:
    """Store the messages of seqs first..last that are still only in the room's log;
    False when none of them is there (handed out, but not yet written to the room)."""
    room = database.db().rooms.find_one({"_id": name}, {"log_base": 1, "log": 1})
    if room is None or "log_base" not in room:
        return False
    base, log = room["log_base"], room["log"]
    first, last = max(first, base), min(last, base + len(log) - 1)
    if first > last:
        return False
    _store_missing(name, first, [_decode(raw) for raw in log[first - base : last - base + 1]])
    return True


def _store_missing(name: str, first: int, entries: list[dict]) -> None:
    """Store each of `entries` (the log entries of seqs first, first+1, ...) not stored yet."""
    ids = [message_id(name, first + offset) for offset in range(len(entries))]
    stored = {message["_id"] for message in _find_by_ids(ids, {"_id": 1})}
    for offset, entry in enumerate(entries):
        if ids[offset] not in stored:
            _store_entry(name, first + offset, entry)


def _sweep_log(name: str) -> None:
    """Move the log's older entries out of the room document once their messages are
    stored (storing any that are not). Only entries whose message is stored ever leave the
    log; a sweep that races another finds `log_base` moved and changes nothing."""
    rooms = database.db().rooms
    room = rooms.find_one({"_id": name}, {"log_base": 1, "log": 1})
    if room is None:
        return
    base, log = room["log_base"], room["log"]
    done = len(log) - SWEEP_EVERY
    if done <= 0:
        return
    _store_missing(name, base, [_decode(raw) for raw in log[:done]])
    rooms.update_one({"_id": name, "log_base": base}, {"$pullAll": {"log": log[:done]}, "$inc": {"log_base": done}})


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
            {"$set": {"allocated": newest, "log_base": newest + 1, "log": []}, "$unset": {"last_seq": ""}},
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
