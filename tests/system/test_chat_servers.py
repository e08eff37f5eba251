"""Several chat servers on one database: exact order, nothing lost, tokens cached within bounds."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest
import requests

from tests.conftest import service_env
from tests.lib import harness
from tests.lib.accounts import register_and_login, unique_name
from tests.lib.contract import assert_problem
from tests.lib.rooms import read_room

pytestmark = [pytest.mark.local, pytest.mark.chat]


class Cluster:
    def __init__(self, login, chats, access_log):
        self.login, self.chats, self.access_log = login, chats, access_log

    def validate_calls(self) -> Counter:
        calls: Counter[str] = Counter()
        for line in self.access_log.read_text().splitlines():
            if "/validate" in line and "chatsys-chat@" in line:
                calls[line.split("chatsys-")[1].split('"')[0]] += 1
        return calls


@pytest.fixture(scope="module")
def cluster(processes, database):
    access_log = processes.dir / f"login-access-{uuid.uuid4().hex[:6]}.log"
    login = harness.start_service(processes, "login", service_env(database, GUNICORN_ACCESS_LOG=str(access_log)))
    chats = [harness.start_service(processes, "chat", service_env(database, login.url)) for _ in range(3)]
    return Cluster(login, chats, access_log)


def new_room(url, user) -> str:
    name = unique_name("room-")
    assert requests.post(f"{url}/rooms", json={"name": name}, headers=user.auth, timeout=10).status_code == 201
    return name


def post(session, url, user, room, text, key=None):
    headers = dict(user.auth, **({"Idempotency-Key": key} if key else {}))
    return session.post(f"{url}/rooms/{room}/messages", json={"text": text}, headers=headers, timeout=10)


def test_message_posted_through_one_server_is_read_through_another(cluster):
    user = register_and_login(cluster.login.url)
    first, second, third = cluster.chats
    room = new_room(first.url, user)
    posted = post(requests, first.url, user, room, "from the first").json()
    for server in (second, third):
        assert read_room(server.url, room, user.auth) == [posted]


def test_nothing_acknowledged_is_lost_when_a_server_is_killed_and_restarted(cluster):
    user = register_and_login(cluster.login.url)
    victim, survivor = cluster.chats[0], cluster.chats[1]
    room = new_room(survivor.url, user)
    acknowledged, stop = [], threading.Event()

    def keep_posting(server):
        session = requests.Session()
        number = 0
        while not stop.is_set():
            number += 1
            try:
                response = post(session, server.url, user, room, f"{server.port}-{number}")
            except requests.RequestException:
                time.sleep(0.05)
                continue
            if response.status_code == 201:
                acknowledged.append(response.json())
                acknowledged_at.append((server.port, time.monotonic()))

    acknowledged_at: list[tuple[int, float]] = []
    writers = [threading.Thread(target=keep_posting, args=(server,)) for server in (victim, survivor)]
    for writer in writers:
        writer.start()
    time.sleep(1.5)
    victim.kill()
    time.sleep(1.0)
    victim.start()
    restarted_at = time.monotonic()
    time.sleep(1.5)
    stop.set()
    for writer in writers:
        writer.join(15)

    stored = read_room(survivor.url, room, user.auth)
    assert len(acknowledged) > 20
    assert {m["seq"] for m in acknowledged} <= {m["seq"] for m in stored}
    assert [m["seq"] for m in stored] == list(range(1, len(stored) + 1))
    assert {m["text"] for m in acknowledged} <= {m["text"] for m in stored}
    assert len({m["text"] for m in stored}) == len(stored), "a message was stored twice"
    assert any(port == victim.port and at > restarted_at for port, at in acknowledged_at), (
        "the restarted server stored nothing"
    )


def test_followers_see_every_acknowledged_message_once_in_order_across_servers(cluster):
    writers_count, per_writer = 6, 25
    users = [register_and_login(cluster.login.url) for _ in range(writers_count)]
    room = new_room(cluster.chats[0].url, users[0])
    acknowledged, done = [], threading.Event()
    lock = threading.Lock()

    def write(index):
        session, server = requests.Session(), cluster.chats[index % 3]
        for number in range(per_writer):
            response = post(session, server.url, users[index], room, f"w{index}-{number}", key=uuid.uuid4().hex)
            assert response.status_code == 201, response.text
            with lock:
                acknowledged.append(response.json())

    seen_by_follower: dict[int, list[dict]] = {}

    def follow(index):
        session, after, seen = requests.Session(), 0, []
        # Each poll goes to the next server in turn, as a load balancer without stickiness would.
        for turn in range(100000):
            server = cluster.chats[(index + turn) % 3]
            writers_finished = done.is_set()  # read before the request, or a late ack slips by
            page = session.get(
                f"{server.url}/rooms/{room}/messages",
                params={"after": after, "limit": 7},
                headers=users[index].auth,
                timeout=10,
            ).json()
            seen += page["messages"]
            after = page["next_after"]
            if writers_finished and not page["messages"]:
                break
        seen_by_follower[index] = seen

    followers = [threading.Thread(target=follow, args=(i,)) for i in range(3)]
    writers = [threading.Thread(target=write, args=(i,)) for i in range(writers_count)]
    for thread in followers + writers:
        thread.start()
    for thread in writers:
        thread.join(120)
    done.set()
    for thread in followers:
        thread.join(120)

    expected = sorted(acknowledged, key=lambda m: m["seq"])
    assert len(expected) == writers_count * per_writer
    assert [m["seq"] for m in expected] == list(range(1, len(expected) + 1))
    for seen in seen_by_follower.values():
        assert seen == expected


def test_one_token_makes_only_a_handful_of_validate_calls_per_server(cluster):
    user = register_and_login(cluster.login.url)
    before = cluster.validate_calls()
    sessions = [requests.Session() for _ in cluster.chats]
    for number in range(1000):
        index = number % 3
        response = sessions[index].get(f"{cluster.chats[index].url}/rooms", headers=user.auth, timeout=10)
        assert response.status_code == 200
    time.sleep(0.2)  # let the access log flush
    after = cluster.validate_calls()
    made = {instance: after[instance] - before[instance] for instance in after}
    # Each server has one gunicorn worker here; 1,000 requests over 3 servers took well
    # under the 30 s cache bound, so one call per server is expected (allow a few).
    assert sum(made.values()) >= 1
    assert all(calls <= 3 for calls in made.values()), made


def test_an_expired_token_is_refused_by_every_server_at_once(processes, database):
    login = harness.start_service(processes, "login", service_env(database, TOKEN_TTL_SECONDS=2))
    chats = [harness.start_service(processes, "chat", service_env(database, login.url)) for _ in range(2)]
    user = register_and_login(login.url)
    expires_at = time.time() + 2
    for chat in chats:
        assert requests.get(f"{chat.url}/rooms", headers=user.auth, timeout=10).status_code == 200
    time.sleep(max(0.0, expires_at - time.time()) + 0.3)
    for chat in chats:
        assert_problem(requests.get(f"{chat.url}/rooms", headers=user.auth, timeout=10), 401)


def test_a_logged_out_token_is_refused_within_the_cache_bound(processes, database, cluster):
    chats = [
        harness.start_service(processes, "chat", service_env(database, cluster.login.url, TOKEN_CACHE_SECONDS=1))
        for _ in range(2)
    ]
    user = register_and_login(cluster.login.url)
    for chat in chats:
        assert requests.get(f"{chat.url}/rooms", headers=user.auth, timeout=10).status_code == 200
    assert requests.post(f"{cluster.login.url}/logout", headers=user.auth, timeout=10).status_code == 204
    time.sleep(1.2)
    for chat in chats:
        assert_problem(requests.get(f"{chat.url}/rooms", headers=user.auth, timeout=10), 401)


def test_login_service_down_gives_503_for_new_tokens_while_cached_tokens_keep_working(processes, database):
    login = harness.start_service(processes, "login", service_env(database))
    chat = harness.start_service(processes, "chat", service_env(database, login.url, LOGIN_READ_TIMEOUT=1))
    cached, uncached = register_and_login(login.url), register_and_login(login.url)
    assert requests.get(f"{chat.url}/rooms", headers=cached.auth, timeout=10).status_code == 200

    login.stop()
    assert requests.get(f"{chat.url}/rooms", headers=cached.auth, timeout=10).status_code == 200
    started = time.monotonic()
    assert_problem(requests.get(f"{chat.url}/rooms", headers=uncached.auth, timeout=10), 503)
    assert time.monotonic() - started < 5

    login.process.signal(0)
    login.start()
    login.process.signal(__import__("signal").SIGSTOP)  # frozen: accepts connections, never answers
    try:
        started = time.monotonic()
        assert_problem(requests.get(f"{chat.url}/rooms", headers=uncached.auth, timeout=10), 503)
        assert time.monotonic() - started < 5
        assert requests.get(f"{chat.url}/rooms", headers=cached.auth, timeout=10).status_code == 200
    finally:
        login.process.signal(__import__("signal").SIGCONT)
    harness.wait_until(
        lambda: requests.get(f"{chat.url}/rooms", headers=uncached.auth, timeout=10).status_code == 200,
        10,
        "chat to accept the token once login answers again",
    )


def test_concurrent_retries_with_one_idempotency_key_store_one_message(cluster):
    user = register_and_login(cluster.login.url)
    room = new_room(cluster.chats[0].url, user)
    key = uuid.uuid4().hex
    answers: list[requests.Response] = []
    barrier = threading.Barrier(6)

    def retry(index):
        barrier.wait()
        answers.append(post(requests, cluster.chats[index % 3].url, user, room, "exactly once", key))

    threads = [threading.Thread(target=retry, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    codes = Counter(answer.status_code for answer in answers)
    assert codes[201] == 1, codes
    assert codes[201] + codes[200] + codes[409] == 6, codes
    first = next(answer.json() for answer in answers if answer.status_code == 201)
    assert all(answer.json() == first for answer in answers if answer.status_code == 200)
    assert [m["text"] for m in read_room(cluster.chats[1].url, room, user.auth)] == ["exactly once"]
