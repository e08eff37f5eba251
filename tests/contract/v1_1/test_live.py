"""Long poll (`wait`, contract v1.1) on the stateless tier: a wait ends with the first
message any server acknowledges, followers see every message once and in order, a server's
death or the database's costs a follower nothing, and waiting costs the database per room,
not per follower."""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import service_env
from tests.lib import harness
from tests.lib.accounts import User, register_and_login, unique_name

pytestmark = pytest.mark.chat


def new_room(url: str, user: User) -> str:
    name = unique_name("live")
    assert requests.post(f"{url}/rooms", json={"name": name}, headers=user.auth, timeout=10).status_code == 201
    return name


def post(url: str, user: User, room: str, text: str, session=requests) -> int:
    answer = session.post(f"{url}/rooms/{room}/messages", json={"text": text}, headers=user.auth, timeout=10)
    assert answer.status_code == 201, answer.text
    return answer.json()["seq"]


def poll(url: str, user: User, room: str, after: int, wait: int, session=requests) -> requests.Response:
    return session.get(
        f"{url}/rooms/{room}/messages", params={"after": after, "wait": wait}, headers=user.auth, timeout=wait + 15
    )


@pytest.mark.local
def test_a_wait_ends_with_a_message_posted_through_another_server(stack, user):
    follower_server, poster_server = stack.chat_servers[0].url, stack.chat_servers[1].url
    room = new_room(stack.chat_url, user)
    post(poster_server, user, room, "before")
    timer = threading.Timer(1.0, post, args=(poster_server, user, room, "news"))
    timer.start()
    try:
        answer = poll(follower_server, user, room, after=1, wait=25)
    finally:
        timer.join()
    assert answer.status_code == 200
    page = answer.json()
    assert [(m["seq"], m["text"]) for m in page["messages"]] == [(2, "news")]
    assert page["next_after"] == 2


def test_a_wait_ends_with_a_message_posted_meanwhile(stack, user):
    room = new_room(stack.chat_url, user)
    post(stack.chat_url, user, room, "before")
    timer = threading.Timer(1.0, post, args=(stack.chat_url, user, room, "news"))
    timer.start()
    try:
        page = poll(stack.chat_url, user, room, after=1, wait=25).json()
    finally:
        timer.join()
    assert [(m["seq"], m["text"]) for m in page["messages"]] == [(2, "news")]


def test_a_wait_with_messages_already_there_answers_them(stack, user):
    room = new_room(stack.chat_url, user)
    post(stack.chat_url, user, room, "one")
    page = poll(stack.chat_url, user, room, after=0, wait=25).json()
    assert [m["text"] for m in page["messages"]] == ["one"]


def test_a_wait_that_times_out_is_an_empty_page_at_the_same_position(stack, user):
    room = new_room(stack.chat_url, user)
    post(stack.chat_url, user, room, "one")
    answer = poll(stack.chat_url, user, room, after=1, wait=1)
    assert answer.status_code == 200
    assert answer.json() == {"room": room, "messages": [], "next_after": 1}


def test_a_wait_ahead_of_the_room_waits_for_its_own_position(stack, user):
    room = new_room(stack.chat_url, user)
    post(stack.chat_url, user, room, "one")
    threading.Timer(0.5, post, args=(stack.chat_url, user, room, "two")).start()
    answer = poll(stack.chat_url, user, room, after=5, wait=2)
    assert answer.json()["messages"] == [] and answer.json()["next_after"] == 5


@pytest.mark.parametrize(
    "query", ["wait=5", "after=0&wait=31", "after=0&wait=-1", "after=0&wait=abc", "after=0&wait=1.5", "after=0&wait="]
)
def test_wait_out_of_range_or_without_after_is_a_400_problem(stack, user, query):
    room = new_room(stack.chat_url, user)
    answer = requests.get(f"{stack.chat_url}/rooms/{room}/messages?{query}", headers=user.auth, timeout=10)
    assert answer.status_code == 400
    assert answer.headers["Content-Type"] == "application/problem+json"


def test_a_wait_on_a_missing_room_is_404_at_once(stack, user):
    answer = poll(stack.chat_url, user, unique_name("nothere"), after=0, wait=25)
    assert answer.status_code == 404


def test_long_polling_followers_see_every_message_once_in_order_across_servers(stack, user):
    room = new_room(stack.chat_url, user)
    writers, per_writer, followers = 4, 15, 5
    acknowledged: list[int] = []
    seen: dict[int, list[int]] = {number: [] for number in range(followers)}
    done = threading.Event()

    def write(number: int) -> None:
        with requests.Session() as session:
            for index in range(per_writer):
                acknowledged.append(post(stack.chat_url, user, room, f"w{number}-{index}", session))

    def follow(number: int) -> None:
        after, deadline = 0, time.monotonic() + 60
        with requests.Session() as session:
            while time.monotonic() < deadline:
                page = poll(stack.chat_url, user, room, after, wait=2, session=session).json()
                seen[number] += [m["seq"] for m in page["messages"]]
                after = page["next_after"]
                if done.is_set() and after >= writers * per_writer:
                    return

    follower_threads = [threading.Thread(target=follow, args=(n,)) for n in range(followers)]
    writer_threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in follower_threads + writer_threads:
        thread.start()
    for thread in writer_threads:
        thread.join()
    done.set()
    for thread in follower_threads:
        thread.join()
    assert sorted(acknowledged) == list(range(1, writers * per_writer + 1))
    for number in range(followers):
        assert seen[number] == list(range(1, writers * per_writer + 1)), f"follower {number}"


@dataclass
class LiveStack:
    database: harness.Database
    metrics_url: str
    login: harness.Service
    chats: list[harness.Service]
    balancer: harness.LoadBalancer
    user: User
    chat_metrics_urls: dict[int, str]  # by chat server port: its Prometheus metrics

    def waits_held(self, chat: harness.Service) -> float:
        """The long polls the chat server holds now (its chatsys_long_polls_waiting)."""
        text = requests.get(self.chat_metrics_urls[chat.port], timeout=10).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "chatsys_long_polls_waiting"
        )

    def wait_for_held_waits(self, chat: harness.Service, count: int) -> None:
        harness.wait_until(lambda: self.waits_held(chat) == count, 30, f"chat@{chat.port} to hold {count} waits")


@pytest.fixture(scope="module")
def live(processes):
    """A stack of its own: these tests stop its database and kill its chat servers."""
    metrics_port = harness.free_port()
    database = harness.start_ferretdb(processes, "ferretdb-live", debug_port=metrics_port)
    login = harness.start_service(processes, "login", service_env(database))
    chat_metrics_ports = [harness.free_port() for _ in range(3)]
    chats = [
        harness.start_service(processes, "chat", service_env(database, login.url, METRICS_PORT=port))
        for port in chat_metrics_ports
    ]
    balancer = harness.start_haproxy(processes, [chat.port for chat in chats])
    harness.wait_until(lambda: list(balancer.server_states().values()).count("UP") == 3, 15, "three chat servers up")
    return LiveStack(
        database,
        f"http://127.0.0.1:{metrics_port}/debug/metrics",
        login,
        chats,
        balancer,
        register_and_login(login.url),
        {chat.port: f"http://127.0.0.1:{port}/metrics" for chat, port in zip(chats, chat_metrics_ports, strict=True)},
    )


def database_finds(live: LiveStack) -> int:
    with urllib.request.urlopen(live.metrics_url, timeout=5) as answer:
        text = answer.read().decode()
    found = re.search(r'^ferretdb_client_requests_total\{command="find",opcode="OP_MSG"\} (\d+)', text, re.M)
    return int(found.group(1)) if found else 0


def hold_waits(url: str, token: str, room: str, after: int, count: int, wait: int) -> list[socket.socket]:
    """`count` long polls sent on raw connections, answers left unread."""
    port = int(url.rsplit(":", 1)[1])
    request = (
        f"GET /rooms/{room}/messages?after={after}&wait={wait} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()
    sockets = []
    for _ in range(count):
        connection = socket.create_connection(("127.0.0.1", port), timeout=wait + 15)
        connection.sendall(request)
        sockets.append(connection)
    return sockets


def read_answer(connection: socket.socket) -> tuple[int, bytes]:
    answer = http.client.HTTPResponse(connection)
    answer.begin()
    return answer.status, answer.read()


def read_status(connection: socket.socket) -> int:
    return read_answer(connection)[0]


@pytest.mark.local
def test_waiting_costs_the_database_per_room_not_per_follower(live):
    room = new_room(live.balancer.url, live.user)
    post(live.balancer.url, live.user, room, "one")
    chat = live.chats[0]
    rates = {}
    for followers in (10, 200):
        sockets = hold_waits(chat.url, live.user.token, room, after=1, count=followers, wait=6)
        try:
            live.wait_for_held_waits(chat, followers)  # every wait has arrived and joined the room's watcher
            before, started = database_finds(live), time.monotonic()
            time.sleep(3)
            rates[followers] = (database_finds(live) - before) / (time.monotonic() - started)
            assert [read_status(connection) for connection in sockets] == [200] * followers
        finally:
            for connection in sockets:
                connection.close()
    # One watcher per room and process: 20 times the followers, about the same queries.
    assert rates[200] <= rates[10] * 1.5 + 2, rates
    assert rates[200] < 20, rates  # a few polls a second, not one per follower


@pytest.mark.local
def test_a_follower_keeps_every_message_when_a_chat_server_is_killed(live):
    room = new_room(live.balancer.url, live.user)
    total, seen, after = 40, [], 0
    victim = live.chats[1]
    with requests.Session() as poster, requests.Session() as follower:
        for number in range(1, total + 1):
            post(live.balancer.url, live.user, room, f"m{number}", poster)
            if number == total // 2:
                victim.kill()
            page = poll(live.balancer.url, live.user, room, after, wait=1, session=follower)
            assert page.status_code == 200, page.text
            seen += [m["seq"] for m in page.json()["messages"]]
            after = page.json()["next_after"]
        while after < total:
            page = poll(live.balancer.url, live.user, room, after, wait=1, session=follower).json()
            seen += [m["seq"] for m in page["messages"]]
            after = page["next_after"]
    assert seen == list(range(1, total + 1))
    victim.start()
    harness.wait_until(lambda: live.balancer.server_states().get("chat2") == "UP", 15, "the killed server back up")


@pytest.mark.local
def test_a_chat_server_told_to_stop_ends_its_waits_with_empty_pages_at_once(live):
    room = new_room(live.balancer.url, live.user)
    post(live.balancer.url, live.user, room, "one")
    server = live.chats[2]
    sockets = hold_waits(server.url, live.user.token, room, after=1, count=5, wait=30)
    try:
        live.wait_for_held_waits(server, 5)
        server.process.signal(signal.SIGTERM)
        for connection in sockets:
            connection.settimeout(8)  # well before the 30 s wait, and before graceful_timeout
            status, body = read_answer(connection)
            assert status == 200 and json.loads(body)["messages"] == []
    finally:
        for connection in sockets:
            connection.close()
    harness.wait_until(lambda: not server.process.running, 15, "the server to stop")
    server.start()
    harness.wait_until(lambda: live.balancer.server_states().get("chat3") == "UP", 15, "the server back up")


@pytest.mark.local
def test_a_database_outage_ends_waits_with_503_problems_and_waits_work_again_after(live):
    room = new_room(live.balancer.url, live.user)
    post(live.balancer.url, live.user, room, "one")
    chat = live.chats[0].url
    sockets = hold_waits(chat, live.user.token, room, after=1, count=5, wait=25)
    try:
        live.wait_for_held_waits(live.chats[0], 5)
        live.database.stop()
        assert [read_status(connection) for connection in sockets] == [503] * 5
    finally:
        for connection in sockets:
            connection.close()
        if not harness.port_open(live.database.port):
            live.database.start()
    harness.wait_until(lambda: harness.http_ok(f"{chat}/ready"), 20, "the chat server ready again")
    threading.Timer(1.0, post, args=(live.balancer.url, live.user, room, "two")).start()
    assert [m["text"] for m in poll(chat, live.user, room, after=1, wait=25).json()["messages"]] == ["two"]


@pytest.mark.local
def test_a_follower_that_hangs_up_frees_its_connection_on_the_server(live):
    room = new_room(live.balancer.url, live.user)
    chat = live.chats[0]
    sockets = hold_waits(chat.url, live.user.token, room, after=0, count=5, wait=30)

    ours = {connection.getsockname()[1] for connection in sockets}

    def server_side(states: set[str]) -> int:
        """The server's ends of our connections (HAProxy keeps connections of its own)."""
        return sum(
            1
            for connection in psutil.net_connections(kind="tcp")
            if connection.laddr
            and connection.laddr.port == chat.port
            and connection.raddr
            and connection.raddr.port in ours
            and connection.status in states
        )

    harness.wait_until(lambda: server_side({psutil.CONN_ESTABLISHED}) >= 5, 10, "five waits on the server")
    for connection in sockets:
        connection.close()
    # The server sees each connection closed (CLOSE_WAIT) and ends its wait within a second
    # or two, long before the 30 s the waits asked for.
    harness.wait_until(
        lambda: server_side({psutil.CONN_CLOSE_WAIT, psutil.CONN_ESTABLISHED}) == 0,
        10,
        "the server to close the hung-up waits",
    )
