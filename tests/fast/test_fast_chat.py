"""The chat service's routes in-process (Flask's test client) on the real FerretDB: rooms,
their limits and pages, posting with and without Idempotency-Key, reading with after,
limit and wait, and the body and query rules.

Tokens are checked by the real login code: the chat app's token check
(`app.extensions["token_check"]`) is tests.lib.fast.InProcessTokenCheck, the login service's
own `LocalTokenCheck` run under a login app, where a deployment asks the login service
over HTTP. Nothing is mocked; only the HTTP hop between the services is left out (the
process-level tests cover it, and the chat servers side by side).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from chat_service import live
from tests.lib import harness
from tests.lib.accounts import unique_name
from tests.lib.fast import assert_problem, field_errors, fresh_database_uri, register_and_login

pytestmark = [pytest.mark.fast, pytest.mark.local]


@pytest.fixture(scope="module")
def uri(database):
    return fresh_database_uri(database, "chatsys_fast_chat")


@pytest.fixture(scope="module")
def login(module_apps, uri):
    return module_apps.login(uri)


@pytest.fixture(scope="module")
def app(module_apps, uri, login):
    return module_apps.chat(uri, login)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def user(login):
    return register_and_login(login)


@pytest.fixture
def other(login):
    return register_and_login(login)


def create_room(client, account, name: str | None = None) -> str:
    name = name or unique_name("room-")
    created = client.post("/rooms", json={"name": name}, headers=account.auth)
    assert created.status_code == 201, created.get_data(as_text=True)
    return name


def post(client, account, room: str, text: str, key: str | None = None):
    headers = {**account.auth, **({"Idempotency-Key": key} if key is not None else {})}
    return client.post(f"/rooms/{room}/messages", json={"text": text}, headers=headers)


def read(client, account, room: str, **params):
    return client.get(f"/rooms/{room}/messages", query_string=params, headers=account.auth)


def seqs(answer) -> list[int]:
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return [message["seq"] for message in answer.get_json()["messages"]]


# --- tokens ----------------------------------------------------------------------------


def test_every_route_needs_a_live_token(client, login, user):
    room = create_room(client, user)
    for method, path in (
        ("GET", "/rooms"),
        ("POST", "/rooms"),
        ("GET", f"/rooms/{room}/messages"),
        ("POST", f"/rooms/{room}/messages"),
    ):
        assert_problem(client.open(path, method=method, json={"text": "x"}), 401)
        assert_problem(
            client.open(path, method=method, json={"text": "x"}, headers={"Authorization": "Bearer not-a-token"}), 401
        )
    assert client.get("/rooms", headers={"Authorization": f"BEARER {user.token}"}).status_code == 200
    assert login.test_client().post("/logout", headers=user.auth).status_code == 204
    assert_problem(client.get("/rooms", headers=user.auth), 401)


# --- rooms -----------------------------------------------------------------------------


def test_the_room_list_has_the_lobby_and_every_room_by_name(client, user):
    name = create_room(client, user)
    answer = client.get("/rooms", headers=user.auth)
    assert answer.headers["X-Instance"] == "chat@4000"
    body = answer.get_json()
    assert list(body) == ["rooms"]  # the v1 answer: no next_after
    names = [room["name"] for room in body["rooms"]]
    assert {"lobby", name} <= set(names) and names == sorted(names)
    assert all(list(room) == ["name", "created_at", "last_seq"] for room in body["rooms"])


def test_a_new_room_answers_201_with_its_location_and_a_taken_name_409(client, user, other):
    name = unique_name("room_")
    created = client.post("/rooms", json={"name": name}, headers=user.auth)
    assert created.status_code == 201 and created.headers["Location"] == f"/rooms/{name}"
    body = created.get_json()
    assert (body["name"], body["last_seq"]) == (name, 0) and body["created_at"].endswith("Z")
    taken = assert_problem(client.post("/rooms", json={"name": name}, headers=other.auth), 409)
    assert taken["type"].endswith("/room-exists")
    assert_problem(client.post("/rooms", json={"name": "lobby"}, headers=user.auth), 409)


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "ünï", "a/b", "a.b", 5, None, ["a"]])
def test_an_invalid_room_name_is_a_400_naming_the_field(client, user, name):
    assert "name" in field_errors(client.post("/rooms", json={"name": name}, headers=user.auth))


def test_a_name_of_64_characters_is_a_room(client, user):
    name = unique_name("r") + "x" * 51
    assert len(name) == 64
    create_room(client, user, name)


def test_room_pages_join_up_into_the_whole_list(client, user):
    for _ in range(3):
        create_room(client, user)
    everything = [room["name"] for room in client.get("/rooms", headers=user.auth).get_json()["rooms"]]
    paged, after = [], None
    for _ in range(len(everything)):
        page = client.get(
            "/rooms", query_string={"limit": 2, **({"after": after} if after else {})}, headers=user.auth
        ).get_json()
        assert len(page["rooms"]) <= 2
        paged += [room["name"] for room in page["rooms"]]
        after = page["next_after"]
        if after is None:
            break
    assert paged == everything


def test_a_room_page_after_a_name_starts_past_it(client, user):
    prefix = unique_name("pg-")
    names = [create_room(client, user, f"{prefix}-{n}") for n in range(3)]
    page = client.get("/rooms", query_string={"limit": 2, "after": names[0]}, headers=user.auth).get_json()
    assert [room["name"] for room in page["rooms"]] == names[1:]
    assert page["next_after"] in (None, names[2])
    last = client.get("/rooms", query_string={"after": "zzzz"}, headers=user.auth).get_json()
    assert last == {"rooms": [], "next_after": None}
    default = client.get("/rooms", query_string={"after": names[0]}, headers=user.auth).get_json()
    assert "next_after" in default and [room["name"] for room in default["rooms"]][:2] == names[1:]


@pytest.mark.parametrize(
    "query",
    [
        {"limit": 0},
        {"limit": 501},
        {"limit": "x"},
        {"limit": "-1"},
        {"limit": "1.5"},
        {"limit": 2, "after": "a b"},
        {"after": "x" * 65},
    ],
)
def test_an_invalid_room_page_query_is_a_400(client, user, query):
    assert_problem(client.get("/rooms", query_string=query, headers=user.auth), 400)


def test_the_largest_room_page_is_allowed(client, user):
    assert client.get("/rooms", query_string={"limit": 500}, headers=user.auth).status_code == 200


def test_rooms_per_user_are_bounded_per_window(apps, uri, login):
    client = apps.chat(uri, login, rooms_per_user=2, room_window_seconds=3600).test_client()
    creator, other = register_and_login(login), register_and_login(login)
    create_room(client, creator)
    create_room(client, creator)
    refused = assert_problem(client.post("/rooms", json={"name": unique_name("r")}, headers=creator.auth), 429)
    assert refused["detail"].startswith("You may create 2 rooms per 3600 s")
    assert client.post("/rooms", json={"name": unique_name("r")}, headers=creator.auth).headers["Retry-After"] == "3600"
    create_room(client, other)


def test_new_rooms_in_all_are_bounded_per_window(apps, database, login):
    # A database of its own, holding the lobby and what this test creates.
    client = apps.chat(fresh_database_uri(database, "chatsys_fast_max_rooms"), login, max_rooms=3).test_client()
    user = register_and_login(login)
    for _ in range(3):
        create_room(client, user)
    refused = client.post("/rooms", json={"name": unique_name("r")}, headers=user.auth)
    assert assert_problem(refused, 429)["detail"].startswith("The server allows 3 new rooms per 3600 s in all")
    assert 0 < int(refused.headers["Retry-After"]) <= 3600


# --- posting ---------------------------------------------------------------------------


def test_posts_are_numbered_in_order_and_answer_the_message(client, user):
    room = create_room(client, user)
    answers = [post(client, user, room, f"m{n}") for n in range(3)]
    assert [answer.status_code for answer in answers] == [201] * 3
    body = answers[-1].get_json()
    assert list(body) == ["room", "seq", "author", "text", "created_at"]
    assert (body["room"], body["seq"], body["author"], body["text"]) == (room, 3, user.username, "m2")
    assert body["created_at"].endswith("Z")


def test_the_longest_message_is_kept_exactly(client, user):
    room = create_room(client, user)
    text = "🙂 é\u0301" * 500  # 2000 code points
    assert post(client, user, room, text).status_code == 201
    assert read(client, user, room).get_json()["messages"][-1]["text"] == text


@pytest.mark.parametrize(
    "body, field",
    [
        ({"text": ""}, "text"),
        ({"text": "t" * 2001}, "text"),
        ({"text": None}, "text"),
        ({"text": 7}, "text"),
        ({"text": "x\u0000"}, "text"),
        ({}, "text"),
        ({"text": "x", "room": "other"}, "room"),
    ],
)
def test_an_invalid_message_is_a_400_naming_the_field(client, user, body, field):
    room = create_room(client, user)
    assert field in field_errors(client.post(f"/rooms/{room}/messages", json=body, headers=user.auth))
    assert seqs(read(client, user, room)) == []


def test_the_body_rules_hold_for_messages(client, user):
    room = create_room(client, user)
    path = f"/rooms/{room}/messages"
    assert_problem(client.post(path, data='{"text": "x"}', content_type="text/plain", headers=user.auth), 415)
    assert_problem(
        client.post(path, data='{"text": "a", "text": "b"}', content_type="application/json", headers=user.auth), 400
    )
    too_large = '{"text": "' + "t" * (32 * 1024) + '"}'
    assert_problem(client.post(path, data=too_large, content_type="application/json", headers=user.auth), 413)
    assert seqs(read(client, user, room)) == []


@pytest.mark.parametrize("room", ["nothing-here", "bad%20name", "x" * 65])
def test_posting_to_or_reading_a_room_that_does_not_exist_is_404(client, user, room):
    body = assert_problem(post(client, user, room, "hello"), 404)
    assert body["type"].endswith("/room-not-found")
    assert_problem(read(client, user, room), 404)
    assert_problem(read(client, user, room, after=0), 404)


def test_an_idempotency_key_repeat_answers_200_with_the_first_message(client, user, other):
    room = create_room(client, user)
    first = post(client, user, room, "once", key="k-1")
    repeat = post(client, user, room, "once", key="k-1")
    assert (first.status_code, repeat.status_code) == (201, 200)
    assert repeat.get_json() == first.get_json()
    assert post(client, other, room, "once", key="k-1").status_code == 201  # keys are per author
    assert seqs(read(client, user, room)) == [1, 2]


@pytest.mark.parametrize("key, status", [("k" * 64, 201), ("k" * 65, 400), ("", 400), ("a b", 400), ("ü", 400)])
def test_an_idempotency_key_is_up_to_64_safe_characters(client, user, key, status):
    room = create_room(client, user)
    answer = post(client, user, room, "hi", key=key)
    assert answer.status_code == status
    if status == 400:
        assert_problem(answer, 400)


# --- reading ---------------------------------------------------------------------------


def test_reading_without_after_gives_the_newest_page(client, user):
    room = create_room(client, user)
    for n in range(60):
        post(client, user, room, f"m{n}")
    assert seqs(read(client, user, room)) == list(range(11, 61))
    newest = read(client, user, room, limit=3)
    assert seqs(newest) == [58, 59, 60] and newest.get_json()["next_after"] == 60
    assert newest.get_json()["room"] == room


def test_reading_after_a_seq_gives_the_run_after_it(client, user):
    room = create_room(client, user)
    for n in range(20):
        post(client, user, room, f"m{n}")
    assert seqs(read(client, user, room, after=0)) == list(range(1, 21))
    assert seqs(read(client, user, room, after=5, limit=10)) == list(range(6, 16))
    assert seqs(read(client, user, room, after=19)) == [20]
    past = read(client, user, room, after=20).get_json()
    assert (past["messages"], past["next_after"]) == ([], 20)
    beyond = read(client, user, room, after=500).get_json()
    assert (beyond["messages"], beyond["next_after"]) == ([], 500)
    assert seqs(read(client, user, room, after=0, limit=200)) == list(range(1, 21))


def test_an_empty_room_reads_as_an_empty_page(client, user):
    room = create_room(client, user)
    assert read(client, user, room).get_json() == {"room": room, "messages": [], "next_after": 0}
    assert read(client, user, room, after=0).get_json() == {"room": room, "messages": [], "next_after": 0}


@pytest.mark.parametrize(
    "query",
    [
        {"limit": 0},
        {"limit": 201},
        {"limit": "ten"},
        {"after": -1},
        {"after": "x"},
        {"after": "1e3"},
        {"after": "٣"},
        {"wait": 1},
        {"after": 0, "wait": 31},
        {"after": "9" * 19},
    ],
)
def test_an_invalid_read_query_is_a_400(client, user, query):
    room = create_room(client, user)
    assert_problem(read(client, user, room, **query), 400)


def test_a_wait_on_a_quiet_room_ends_with_an_empty_page(client, user):
    room = create_room(client, user)
    post(client, user, room, "only")
    quiet = read(client, user, room, after=1, wait=1).get_json()
    assert (quiet["messages"], quiet["next_after"]) == ([], 1)


def test_a_waiting_reader_gets_the_message_posted_meanwhile(app, client, user, other):
    room = create_room(client, user)
    post(client, user, room, "before")
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(read, app.test_client(), other, room, after=1, wait=20)
        harness.wait_until(lambda: live.is_watched(room), 10, "the reader to wait on the room")
        assert post(client, user, room, "while waiting").status_code == 201
        answer = waiting.result(timeout=20)
    assert [(m["seq"], m["text"]) for m in answer.get_json()["messages"]] == [(2, "while waiting")]


def test_a_long_poll_that_can_answer_at_once_takes_a_plain_reads_turn(client, user, monkeypatch):
    """HAProxy sends every long poll past the plain reads' queue; one that finds messages
    at once does a plain read's work, so it waits for one of live.IMMEDIATE_READS turns."""
    room = create_room(client, user)
    assert post(client, user, room, "ready").status_code == 201
    monkeypatch.setattr(live, "IMMEDIATE_READ_QUEUE_SECONDS", 0.2)
    held = [live._immediate_reads.acquire(timeout=1) for _ in range(live.IMMEDIATE_READS)]
    try:
        assert all(held)
        busy = read(client, user, room, after=0, wait=5)
        assert_problem(busy, 503)
        assert busy.headers["Retry-After"] == "1"
    finally:
        for _ in held:
            live._immediate_reads.release()
    answered = read(client, user, room, after=0, wait=5)
    assert [message["text"] for message in answered.get_json()["messages"]] == ["ready"]
