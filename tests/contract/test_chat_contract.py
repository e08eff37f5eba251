"""The chat service holds to the contract: rooms, posting, reading with after and limit."""

from __future__ import annotations

import uuid

import pytest
import requests

from tests.lib.accounts import unique_name
from tests.lib.contract import assert_instance, assert_problem

pytestmark = pytest.mark.chat


def new_room(stack, user) -> str:
    name = unique_name("room-")
    response = requests.post(f"{stack.chat_url}/rooms", json={"name": name}, headers=user.auth, timeout=10)
    assert response.status_code == 201, response.text
    return name


def post(stack, user, room, text, key=None):
    headers = dict(user.auth)
    if key is not None:
        headers["Idempotency-Key"] = key
    return requests.post(f"{stack.chat_url}/rooms/{room}/messages", json={"text": text}, headers=headers, timeout=10)


def read(stack, user, room, **params):
    return requests.get(f"{stack.chat_url}/rooms/{room}/messages", params=params, headers=user.auth, timeout=10)


def test_lobby_always_exists(stack, user):
    response = requests.get(f"{stack.chat_url}/rooms", headers=user.auth, timeout=10)
    assert response.status_code == 200
    assert_instance(response, "chat")
    rooms = response.json()["rooms"]
    assert "lobby" in [room["name"] for room in rooms]
    assert [room["name"] for room in rooms] == sorted(room["name"] for room in rooms)
    assert all(set(room) == {"name", "created_at", "last_seq"} for room in rooms)


def test_rooms_page_by_name_with_limit_and_after_and_the_pages_join_up(stack, user):
    """v1.1 paging; without `limit` the v1 answer (every room, no next_after) stays."""
    prefix = unique_name("page-")
    names = sorted(f"{prefix}-{n}" for n in range(5))
    for name in names:
        assert (
            requests.post(f"{stack.chat_url}/rooms", json={"name": name}, headers=user.auth, timeout=10).status_code
            == 201
        )
    everything = requests.get(f"{stack.chat_url}/rooms", headers=user.auth, timeout=10).json()
    assert "next_after" not in everything
    paged, after = [], None
    for _ in range(len(everything["rooms"]) + 1):
        params = {"limit": 2, **({"after": after} if after else {})}
        page = requests.get(f"{stack.chat_url}/rooms", params=params, headers=user.auth, timeout=10).json()
        assert len(page["rooms"]) <= 2
        paged += page["rooms"]
        after = page["next_after"]
        if after is None:
            break
    listed = [room["name"] for room in paged]
    assert listed == sorted(listed) and set(names) <= set(listed)
    # Rooms created meanwhile by other tests may appear; none repeats and none is skipped.
    assert len(listed) == len(set(listed)) and {r["name"] for r in everything["rooms"]} <= set(listed)


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 501}, {"limit": "x"}, {"limit": 2, "after": "no space"}])
def test_out_of_range_room_paging_is_400(stack, user, params):
    assert_problem(requests.get(f"{stack.chat_url}/rooms", params=params, headers=user.auth, timeout=10), 400)


def test_creating_a_room_answers_201_and_a_second_time_409(stack, user):
    name = unique_name("room-")
    created = requests.post(f"{stack.chat_url}/rooms", json={"name": name}, headers=user.auth, timeout=10)
    assert created.status_code == 201
    assert created.json()["name"] == name and created.json()["last_seq"] == 0
    assert created.json()["created_at"].endswith("Z")
    again = requests.post(f"{stack.chat_url}/rooms", json={"name": name}, headers=user.auth, timeout=10)
    assert_problem(again, 409)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "r" * 65},
        {"name": "has space"},
        {"name": "dot.ted"},
        {"name": 7},
        {"name": None},
        {"name": "ok", "topic": "x"},
        {"name": "é"},
    ],
)
def test_invalid_room_bodies_are_400(stack, user, body):
    assert_problem(requests.post(f"{stack.chat_url}/rooms", json=body, headers=user.auth, timeout=10), 400)


def test_posting_numbers_messages_from_one(stack, user):
    room = new_room(stack, user)
    first, second = post(stack, user, room, "one"), post(stack, user, room, "two")
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["seq"] == 1 and second.json()["seq"] == 2
    body = first.json()
    assert set(body) == {"room", "seq", "author", "text", "created_at"}
    assert body["room"] == room and body["author"] == user.username and body["text"] == "one"
    listed = {
        r["name"]: r for r in requests.get(f"{stack.chat_url}/rooms", headers=user.auth, timeout=10).json()["rooms"]
    }
    assert listed[room]["last_seq"] == 2


@pytest.mark.parametrize("text", ["", "x" * 2001, None, 5, ["a"], {"$ne": 1}, "nul\u0000"])
def test_invalid_message_texts_are_400(stack, user, text):
    room = new_room(stack, user)
    response = requests.post(
        f"{stack.chat_url}/rooms/{room}/messages", json={"text": text}, headers=user.auth, timeout=10
    )
    assert_problem(response, 400)


def test_a_2000_code_point_message_is_accepted_exactly(stack, user):
    room = new_room(stack, user)
    text = "😀" * 1000 + "e\u0301" * 500  # 2000 code points, no normalisation
    response = post(stack, user, room, text)
    assert response.status_code == 201
    assert read(stack, user, room).json()["messages"][0]["text"] == text


def test_unknown_room_is_404(stack, user):
    assert_problem(post(stack, user, unique_name("none-"), "hello"), 404)
    assert_problem(read(stack, user, unique_name("none-")), 404)
    assert_problem(read(stack, user, "not a room name"), 404)


def test_chat_calls_need_a_valid_token(stack):
    for response in (
        requests.get(f"{stack.chat_url}/rooms", timeout=10),
        requests.get(f"{stack.chat_url}/rooms/lobby/messages", headers={"Authorization": "Bearer nope"}, timeout=10),
        requests.post(f"{stack.chat_url}/rooms/lobby/messages", json={"text": "x"}, timeout=10),
    ):
        assert_problem(response, 401)


def test_reading_after_and_limit_follow_the_contract(stack, user):
    room = new_room(stack, user)
    for number in range(1, 8):
        post(stack, user, room, f"m{number}")
    newest = read(stack, user, room, limit=3).json()
    assert [m["seq"] for m in newest["messages"]] == [5, 6, 7] and newest["next_after"] == 7
    page = read(stack, user, room, after=2, limit=2).json()
    assert [m["seq"] for m in page["messages"]] == [3, 4] and page["next_after"] == 4
    assert page["room"] == room
    empty = read(stack, user, room, after=7).json()
    assert empty["messages"] == [] and empty["next_after"] == 7
    default = read(stack, user, room).json()
    assert [m["seq"] for m in default["messages"]] == list(range(1, 8))
    nothing = read(stack, user, new_room(stack, user)).json()
    assert nothing["messages"] == [] and nothing["next_after"] == 0


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 201}, {"limit": "ten"}, {"after": -1}, {"after": "x"}, {"limit": "1.5"}, {"after": ""}],
)
def test_out_of_range_query_parameters_are_400(stack, user, params):
    assert_problem(read(stack, user, "lobby", **params), 400)


def test_idempotency_key_repeat_stores_nothing_new(stack, user):
    room = new_room(stack, user)
    key = uuid.uuid4().hex
    first = post(stack, user, room, "once", key)
    repeat = post(stack, user, room, "once", key)
    assert first.status_code == 201 and repeat.status_code == 200
    assert repeat.json() == first.json()
    assert [m["text"] for m in read(stack, user, room).json()["messages"]] == ["once"]


def test_idempotency_keys_are_per_user(stack, user, other_user):
    room = new_room(stack, user)
    assert post(stack, user, room, "mine", "same-key").status_code == 201
    assert post(stack, other_user, room, "yours", "same-key").status_code == 201
    assert len(read(stack, user, room).json()["messages"]) == 2


@pytest.mark.parametrize("key", ["", "k" * 65, "has space", "semi;colon"])
def test_invalid_idempotency_keys_are_400(stack, user, key):
    assert_problem(post(stack, user, "lobby", "x", key), 400)
