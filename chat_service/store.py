"""Rooms and messages in MongoDB, numbered 1, 2, 3 ... per room without gaps.

How the order stays exact across servers (docs/chat-ordering.md has the whole argument):
a message is one insert of one document whose unique key is (room, seq), and a server
only tries seq k after it has seen k-1 stored. So whenever k is visible, k-1 was already
committed: a reader can never see 7 while 6 is still on its way. Two servers racing for
the same k collide on the unique index; the loser looks up the newest seq and tries the
next one. Nothing relies on a multi-document transaction or on an atomic counter, which
FerretDB's SQLite backend does not provide.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from pymongo import ASCENDING, DESCENDING

from service_kit import database
from service_kit.problems import unavailable
from service_kit.timeutil import utcnow

LOBBY = "lobby"
IDEMPOTENCY_WINDOW = timedelta(hours=24)
MAX_INSERT_ATTEMPTS = 64


def ensure_schema() -> None:
    db = database.db()
    db.messages.create_index([("room", ASCENDING), ("seq", ASCENDING)], unique=True, name="room_seq")
    db.messages.create_index([("room", ASCENDING), ("idem", ASCENDING)], unique=True, name="room_idempotency")
    ensure_lobby()


def ensure_lobby() -> dict:
    return find_room(LOBBY)


def _message_id(room: str, seq: int) -> str:
    return f"{room}:{seq:012d}"


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
        ensure_lobby()
        rooms = list(database.db().rooms.find({}).sort("_id", ASCENDING))
    for room in rooms:
        room["last_seq"] = newest_seq(room["_id"], at_least=room.get("last_seq", 0))
    return rooms


def newest_seq(room: str, at_least: int = 0) -> int:
    """The highest stored seq of the room; `at_least` is a seq known to be stored (or 0)."""
    newest = database.db().messages.find_one(
        {"room": room, "seq": {"$gt": at_least}}, {"seq": 1}, sort=[("seq", DESCENDING)])
    return newest["seq"] if newest else at_least


@dataclass
class Posted:
    message: dict
    created: bool  # False: an Idempotency-Key repeat, answered with the first message


def post_message(room: dict, author: str, text: str, idempotency_key: str | None) -> Posted:
    messages = database.db().messages
    name = room["_id"]
    idem = f"key:{author}/{idempotency_key}" if idempotency_key else f"auto:{uuid.uuid4().hex}"
    seq = room.get("last_seq", 0) + 1  # a hint: every value it ever holds was stored
    for _ in range(MAX_INSERT_ATTEMPTS):
        message = {"_id": _message_id(name, seq), "room": name, "seq": seq, "author": author,
                   "text": text, "created_at": utcnow(), "idem": idem}
        try:
            messages.insert_one(message)
        except Exception as error:
            if not database.is_duplicate_key(error):
                raise
            if idempotency_key:
                earlier = messages.find_one({"room": name, "idem": idem})
                if earlier is not None:
                    if utcnow() - earlier["created_at"] < IDEMPOTENCY_WINDOW:
                        return Posted(earlier, created=False)
                    # The key was used more than 24 h ago: it is free again.
                    messages.update_one({"_id": earlier["_id"], "idem": idem},
                                        {"$set": {"idem": f"expired:{uuid.uuid4().hex}"}})
                    continue
            seq = newest_seq(name, at_least=seq) + 1
            continue
        database.db().rooms.update_one({"_id": name, "last_seq": {"$lt": seq}}, {"$set": {"last_seq": seq}})
        return Posted(message, created=True)
    raise unavailable("The room is too busy right now; try again.")


def read_messages(room: str, after: int | None, limit: int) -> list[dict]:
    """Messages in ascending seq: after `after`, or the newest `limit` when it is None."""
    messages = database.db().messages
    if after is None:
        found = list(messages.find({"room": room}).sort("seq", DESCENDING).limit(limit))
        found.reverse()
    else:
        found = list(messages.find({"room": room, "seq": {"$gt": after}}).sort("seq", ASCENDING).limit(limit))
    return _contiguous_prefix(found, after)


def _contiguous_prefix(found: list[dict], after: int | None) -> list[dict]:
    # By construction a stored seq k implies k-1 is stored; this cut is the safety net that
    # keeps a follower from ever stepping over a number it has not seen.
    expected = None if after is None else after + 1
    prefix = []
    for message in found:
        if expected is not None and message["seq"] != expected:
            break
        prefix.append(message)
        expected = message["seq"] + 1
    return prefix


