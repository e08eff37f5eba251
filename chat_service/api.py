"""Routes of the chat service, as in the service contract."""

from __future__ import annotations

import json
import re
import select
import socket
from contextlib import nullcontext
from datetime import timedelta
from typing import Annotated

from flask import Blueprint, Flask, current_app, g, jsonify, request

from chat_service import live, store
from service_kit import names
from service_kit.auth import LoginServiceClient, require_user
from service_kit.problems import Problem, bad_request
from service_kit.timeutil import iso, utcnow
from service_kit.validation import StrictBody, parse_body, query_int, text_checks

blueprint = Blueprint("chat", __name__)

_ROOM_NAME = names.ROOM_NAME
_IDEMPOTENCY_KEY = re.compile(names.IDEMPOTENCY_KEY)
MAX_WAIT_SECONDS = 30
MAX_ROOMS_PER_PAGE = 500
DEFAULT_ROOMS_PER_PAGE = 100


RoomName = Annotated[str, *text_checks(pattern=names.ROOM_NAME, rule=names.ROOM_NAME_RULE)]
MessageText = Annotated[str, *text_checks(min_length=1, max_length=2000)]


class NewRoom(StrictBody):
    name: RoomName


class NewMessage(StrictBody):
    text: MessageText


def setup(app: Flask) -> None:
    app.extensions["token_check"] = LoginServiceClient(app.config["SETTINGS"])


def _room_view(room: dict) -> dict:
    return {"name": room["_id"], "created_at": iso(room["created_at"]), "last_seq": room.get("last_seq", 0)}


def _message_view(message: dict, room: str) -> dict:
    view = store.message_view(message, room)
    view["created_at"] = iso(view["created_at"])
    return view


def _no_such_room(name: str) -> Problem:
    return Problem(404, "Not Found", f"No room named {name!r}.", kind="room-not-found")


def _existing_room(name: str) -> dict:
    room = store.find_room(name) if re.fullmatch(_ROOM_NAME, name) else None
    if room is None:
        raise _no_such_room(name)
    return room


@blueprint.get("/rooms")
@require_user
def list_rooms():
    after = request.args.get("after")
    if "limit" not in request.args and after is None:  # v1: every room
        return jsonify(rooms=[_room_view(room) for room in store.list_rooms()])
    limit = query_int("limit", minimum=1, maximum=MAX_ROOMS_PER_PAGE, default=DEFAULT_ROOMS_PER_PAGE)
    if after is not None and not re.fullmatch(_ROOM_NAME, after):
        raise bad_request("Query parameter 'after' must be a room name.")
    rooms = store.list_rooms(after, limit + 1)  # one more tells whether a next page exists
    page = rooms[:limit]
    next_after = page[-1]["_id"] if len(rooms) > limit else None
    return jsonify(rooms=[_room_view(room) for room in page], next_after=next_after)


@blueprint.post("/rooms")
@require_user
def create_room():
    name = parse_body(NewRoom).name
    settings = current_app.config["SETTINGS"]
    window = settings.room_window_seconds
    since = utcnow() - timedelta(seconds=window)
    if settings.rooms_per_user > 0 and store.rooms_created_since(g.username, since) >= settings.rooms_per_user:
        raise _too_many_rooms_per_user(settings)
    budget = _take_from_the_rooms_of_all(settings)
    try:
        room = store.create_room(name, g.username, max(0, settings.rooms_per_user), since)
    except store.TooManyRooms:
        _give_back(budget)
        raise _too_many_rooms_per_user(settings) from None
    if room is None:
        _give_back(budget)
        raise Problem(409, "Conflict", f"A room named {name!r} exists already.", kind="room-exists")
    response = jsonify(_room_view(room))
    response.status_code = 201
    response.headers["Location"] = f"/rooms/{name}"
    return response


# Rooms cannot be deleted, so their creation is bounded: per user per window
# (ROOMS_PER_USER per ROOM_WINDOW_SECONDS; store.create_room holds it exactly, however many
# requests race), per client address at the edge (HAPROXY_ROOMS_PER_ADDRESS), and in all
# per window (MAX_ROOMS, a budget renewed every window, so that nobody can spend it for
# good: a total of rooms ever made would be reached once and refuse everyone after).


def _too_many_rooms_per_user(settings) -> Problem:
    window = settings.room_window_seconds
    return Problem(
        429,
        "Too Many Requests",
        f"You may create {settings.rooms_per_user} rooms per {window} s; wait before creating another.",
        headers={"Retry-After": str(window)},
        limit="ROOMS_PER_USER",
    )


def _take_from_the_rooms_of_all(settings) -> str | None:
    if settings.max_rooms <= 0:
        return None
    try:
        return store.take_from_budget("rooms", settings.max_rooms, settings.room_window_seconds)
    except store.BudgetSpent as spent:
        raise Problem(
            429,
            "Too Many Requests",
            f"The server allows {settings.max_rooms} new rooms per {settings.room_window_seconds} s in all, "
            "and they are made; wait before creating another.",
            headers={"Retry-After": str(spent.retry_after)},
            limit="MAX_ROOMS",
        ) from None


def _give_back(budget: str | None) -> None:
    if budget is not None:
        store.give_back(budget)


@blueprint.post("/rooms/<room>/messages")
@require_user
def post_message(room: str):
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        raise bad_request(f"Idempotency-Key must be {names.IDEMPOTENCY_KEY_RULE}.")
    text = parse_body(NewMessage).text
    posted = store.post_message(room, g.username, text, key) if re.fullmatch(_ROOM_NAME, room) else None
    if posted is None:
        raise _no_such_room(room)
    response = jsonify(_message_view(posted.message, room))
    response.status_code = 201 if posted.created else 200
    return response


@blueprint.get("/rooms/<room>/messages")
@require_user
def read_messages(room: str):
    after = query_int("after", minimum=0)
    limit = query_int("limit", minimum=1, maximum=200, default=50)
    wait = query_int("wait", minimum=0, maximum=MAX_WAIT_SECONDS, default=0)
    if after is None:
        if "wait" in request.args:
            raise bad_request("Query parameter 'wait' needs 'after': a wait is for messages after a seq.")
        messages = _within_page_bytes(store.read_newest(_existing_room(room), limit), newest=True)
    elif wait and live.is_watched(room):
        # The room's watcher read the database a moment ago: wait on it without a read.
        messages = live.wait_for_messages(room, after, limit, wait, _client_gone)
    else:
        # A long poll that finds messages at once does a plain read's work, so it takes a
        # plain read's turn (live.immediate_read), though HAProxy sent it past their queue.
        with live.immediate_read() if wait else nullcontext():
            messages = store.read_after(room, after, limit) if re.fullmatch(_ROOM_NAME, room) else []
        if not messages:
            existing = _existing_room(room)  # an empty page needs the room to exist; a full one proves it
            if wait:
                messages = live.wait_for_messages(
                    room, after, limit, wait, _client_gone, known=store.stored_through(existing)
                )
    messages = _within_page_bytes(messages)
    next_after = store.seq_of(messages[-1]) if messages else (after or 0)
    return jsonify(room=room, messages=[_message_view(m, room) for m in messages], next_after=next_after)


# The JSON one page of messages carries, about: a page ends before the message that would
# pass this (a message of 2,000 emoji is 24 KB as JSON escapes, so 200 of them would be
# 4.8 MB). `next_after` then says where to go on; a page keeps at least one message.
MAX_PAGE_BYTES = 256 * 1024
_MESSAGE_OVERHEAD = 160  # the fields around the text: room, seq, author, created_at


def _within_page_bytes(messages: list[dict], newest: bool = False) -> list[dict]:
    """The longest run of `messages` within MAX_PAGE_BYTES: from the oldest, or with
    `newest` (a room's newest page) from the newest."""
    ordered = list(reversed(messages)) if newest else messages
    total, kept = 0, 0
    for message in ordered:
        total += len(json.dumps(message["text"])) + len(message["_id"]) + _MESSAGE_OVERHEAD
        if kept and total > MAX_PAGE_BYTES:
            break
        kept += 1
    if kept == len(messages):
        return messages
    return messages[len(messages) - kept :] if newest else messages[:kept]


def _client_gone() -> bool:
    """True once the client of this request has closed its connection (checked while a
    long poll waits, so that a client that left frees its connection slot)."""
    sock = request.environ.get("gunicorn.socket")
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True
