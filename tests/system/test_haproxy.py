"""HAProxy on the entry port in front of three chat servers: spread, failover, rotation;
and in front of exactly the chat servers scripts/start.sh starts, however many."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections import Counter

import pytest
import requests

from scripts.lib import haproxy_runtime, haproxy_stats
from tests.conftest import service_env
from tests.lib import harness
from tests.lib.accounts import register_and_login, unique_name
from tests.lib.contract import assert_problem

pytestmark = [pytest.mark.local, pytest.mark.chat]


@pytest.fixture(scope="module")
def tier(processes, stack):
    """Three chat servers of our own behind an HAProxy of our own (the session's stay intact)."""
    chats = [harness.start_service(processes, "chat", service_env(stack.database, stack.login_url)) for _ in range(3)]
    balancer = harness.start_haproxy(processes, [chat.port for chat in chats])
    harness.wait_until(lambda: list(balancer.server_states().values()).count("UP") == 3, 15, "three servers up")
    return chats, balancer


def spread(url: str, user, count: int) -> Counter:
    session = requests.Session()
    seen: Counter[str] = Counter()
    for _ in range(count):
        response = session.get(f"{url}/rooms", headers=user.auth, timeout=10)
        assert response.status_code == 200
        seen[response.headers["X-Instance"]] += 1
    return seen


def rotation(balancer, count: int) -> str:
    env = {**os.environ, "HAPROXY_RUNTIME_SOCKET": str(balancer.socket_path)}
    result = subprocess.run(
        [str(harness.ROOT / "scripts/rotation.sh"), str(count)], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_requests_reach_all_three_servers_in_roughly_equal_shares(tier, stack):
    chats, balancer = tier
    user = register_and_login(stack.login_url)
    seen = spread(balancer.url, user, 300)
    assert set(seen) == {f"chat@{chat.port}" for chat in chats}
    assert all(80 <= count <= 120 for count in seen.values()), seen


def test_rotation_script_changes_which_servers_answer(tier, stack):
    chats, balancer = tier
    user = register_and_login(stack.login_url)
    try:
        assert "1 of 3" in rotation(balancer, 1)
        assert set(spread(balancer.url, user, 30)) == {f"chat@{chats[0].port}"}
        rotation(balancer, 2)
        seen = spread(balancer.url, user, 60)
        assert set(seen) == {f"chat@{chats[0].port}", f"chat@{chats[1].port}"}
    finally:
        rotation(balancer, 3)
    assert len(spread(balancer.url, user, 60)) == 3


def test_killing_a_server_under_traffic_loses_nothing_and_it_rejoins(tier, stack):
    chats, balancer = tier
    victim = chats[2]
    user = register_and_login(stack.login_url)
    room = unique_name("room-")
    assert requests.post(f"{balancer.url}/rooms", json={"name": room}, headers=user.auth, timeout=10).status_code == 201

    outcomes = Counter()
    acknowledged: list[dict] = []
    answered_by_victim_after_restart = threading.Event()
    restarted = threading.Event()
    stop = threading.Event()

    rounds = [0]  # post-and-read rounds the client has finished

    def client_loop():
        session, after = requests.Session(), 0
        for number in range(100000):
            if stop.is_set():
                return
            rounds[0] = number
            key = uuid.uuid4().hex
            try:
                posted = session.post(
                    f"{balancer.url}/rooms/{room}/messages",
                    json={"text": f"m{number}"},
                    headers={**user.auth, "Idempotency-Key": key},
                    timeout=10,
                )
                outcomes[posted.status_code] += 1
                if posted.status_code == 201:
                    acknowledged.append(posted.json())
                read = session.get(
                    f"{balancer.url}/rooms/{room}/messages", params={"after": after}, headers=user.auth, timeout=10
                )
                outcomes[read.status_code] += 1
                if read.status_code == 200:
                    after = read.json()["next_after"]
                for response in (posted, read):
                    if restarted.is_set() and response.headers.get("X-Instance") == f"chat@{victim.port}":
                        answered_by_victim_after_restart.set()
            except requests.RequestException:
                outcomes["exception"] += 1

    def more_rounds(count: int, what: str) -> None:
        """Until the client has done `count` more rounds, however slow the machine."""
        target = rounds[0] + count
        harness.wait_until(lambda: rounds[0] >= target or not client.is_alive(), 120, f"{count} rounds {what}")

    client = threading.Thread(target=client_loop)
    client.start()
    more_rounds(160, "before the kill")
    victim.kill()
    harness.wait_until(lambda: balancer.server_states().get("chat3") == "DOWN", 10, "HAProxy to mark chat3 down")
    more_rounds(100, "while chat3 is down")
    victim.start()
    restarted.set()
    harness.wait_until(lambda: balancer.server_states().get("chat3") == "UP", 15, "chat3 to rejoin")
    answered_by_victim_after_restart.wait(15)
    more_rounds(50, "after chat3 rejoined")
    stop.set()
    client.join(30)

    total = sum(outcomes.values())
    errors = total - outcomes[200] - outcomes[201]
    assert total >= 600, outcomes
    assert errors <= max(1, total // 1000), outcomes
    assert answered_by_victim_after_restart.is_set(), "the restarted server got no traffic"
    stored = requests.get(
        f"{balancer.url}/rooms/{room}/messages", params={"after": 0, "limit": 200}, headers=user.auth, timeout=10
    ).json()["messages"]
    while len(stored) % 200 == 0 and stored:
        more = requests.get(
            f"{balancer.url}/rooms/{room}/messages",
            params={"after": stored[-1]["seq"], "limit": 200},
            headers=user.auth,
            timeout=10,
        ).json()["messages"]
        if not more:
            break
        stored += more
    texts = [m["text"] for m in stored]
    assert len(texts) == len(set(texts)), "a message was stored twice"
    assert {m["text"] for m in acknowledged} <= set(texts), "an acknowledged message was lost"


def test_all_chat_servers_down_answers_503_problem_within_the_timeout(processes, stack):
    dead_ports = [harness.free_port() for _ in range(3)]
    balancer = harness.start_haproxy(processes, dead_ports)
    user = register_and_login(stack.login_url)
    for _ in range(3):
        started = time.monotonic()
        response = requests.get(f"{balancer.url}/rooms", headers=user.auth, timeout=20)
        elapsed = time.monotonic() - started
        assert_problem(response, 503)
        assert elapsed < 6, f"took {elapsed:.1f} s; HAProxy's queue timeout is 5 s"


def test_statistics_are_read_by_column_name_whatever_the_order():
    # HAProxy adds columns between versions; the reader goes by the header, not positions.
    text = (
        "# svname,status,pxname,req_tot,scur\n"
        "FRONTEND,OPEN,entry,42,1\n"
        "chat1,UP,chat_servers,,0\n"
        "chat2,MAINT,chat_servers,,0\n"
        "BACKEND,UP,chat_servers,,0\n"
        "\n"
    )
    assert haproxy_stats.server_states(text) == {"chat1": "UP", "chat2": "MAINT"}
    assert haproxy_stats.frontend_requests(text, "entry") == 42
    assert haproxy_stats.frontend_requests(text, "no_such_frontend") == 0


# A stack of scripts/start.sh's own on a block of free ports: these offsets, three ports
# of CHAT_PORTS from CHAT_OFFSET (--chat 4 takes the one after them too), each service's
# metrics at its port + METRICS_OFFSET.
STACK_LAYOUT = dict(
    HAPROXY_PORT=0,
    LOGIN_PORT=1,
    PROFILE_PORT=2,
    HAPROXY_STATS_PORT=3,
    HAPROXY_PEER_PORT=4,
    LOGIN_SERVICE_PORT=5,
    PROFILE_SERVICE_PORT=6,
    MONGO_PORT=7,
    FERRETDB_METRICS_PORT=8,
)
CHAT_OFFSET = 9
METRICS_OFFSET = 13
STACK_BLOCK = 26


@pytest.mark.parametrize("servers", [2, 4])
def test_start_sh_with_n_chat_servers_gets_haproxy_to_spread_over_exactly_those(servers, processes):
    base = harness.free_port_block(STACK_BLOCK)
    var = harness.script_var(processes)
    env = {
        **os.environ,
        **{name: str(base + offset) for name, offset in STACK_LAYOUT.items()},
        "CHATSYS_VAR": str(var),
        "CHAT_PORTS": " ".join(str(base + CHAT_OFFSET + index) for index in range(3)),
        "METRICS_PORT_OFFSET": str(METRICS_OFFSET),
        "PROMETHEUS": "off",
        "GUNICORN_WORKERS": "1",
        **harness.UNLIMITED_EDGE,
    }
    env.pop("MONGO_URI", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    chat_ports = [base + CHAT_OFFSET + index for index in range(servers)]
    try:
        started = subprocess.run(
            [str(harness.ROOT / "scripts/start.sh"), "--chat", str(servers)],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert started.returncode == 0, started.stderr + started.stdout

        def states() -> dict[str, str]:
            return haproxy_stats.server_states(haproxy_runtime.command(str(var / "run/haproxy.sock"), "show stat"))

        harness.wait_until(lambda: set(states().values()) == {"UP"}, 15, "HAProxy to see every chat server up")
        assert sorted(states()) == sorted(f"chat{number}" for number in range(1, servers + 1))
        user = register_and_login(f"http://127.0.0.1:{base + STACK_LAYOUT['LOGIN_PORT']}")
        seen = spread(f"http://127.0.0.1:{base + STACK_LAYOUT['HAPROXY_PORT']}", user, 30 * servers)
        assert set(seen) == {f"chat@{port}" for port in chat_ports}
    finally:
        subprocess.run([str(harness.ROOT / "scripts/stop.sh")], env=env, capture_output=True, timeout=120)
