"""Faults under client load through HAProxy: the database stopped or frozen, the login
service stopped. Errors are prompt 503 problems, everything recovers by itself, and every
acknowledged message is stored exactly once, also when clients retry with their key.

The module runs its own FerretDB, login, three chat servers and HAProxy, so stopping the
database disturbs no other test.
"""

from __future__ import annotations

import re
import signal
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import pytest
import requests

from tests.conftest import service_env
from tests.lib import harness
from tests.lib.accounts import User, register_and_login, unique_name
from tests.lib.contract import assert_problem
from tests.lib.rooms import read_room

pytestmark = [pytest.mark.local, pytest.mark.chat]

# HAProxy's `timeout server` (conf/haproxy/haproxy.cfg) is the longest any answer may take;
# the slack is for a machine shared with other load.
HAPROXY_SERVER_TIMEOUT = 15.0
ANSWER_BOUND = HAPROXY_SERVER_TIMEOUT + 3.0
OUTAGE_SECONDS = 5.0
# A frozen database answers nothing and refuses nothing, so a call in flight notices only
# when its socket times out: 3 x MONGO_TIMEOUT_SECONDS = 6 s (service_kit/database.py). A
# freeze shorter than that was noticed only when the driver's heartbeat fell into it.
FREEZE_SECONDS = 8.0
# An Idempotency-Key whose first attempt died with the database is taken over once its
# claim is 30 s old (docs/chat-ordering.md), so retries must be allowed a while longer.
RETRY_WINDOW = 75.0


@dataclass
class FaultStack:
    database: harness.Database
    login: harness.Service
    chats: list[harness.Service]
    balancer: harness.LoadBalancer

    @property
    def url(self) -> str:
        return self.balancer.url

    def all_up(self) -> bool:
        return list(self.balancer.server_states().values()).count("UP") == len(self.chats)

    def wait_healthy(self, timeout: float = 30) -> None:
        harness.wait_until(self.all_up, timeout, "HAProxy to see every chat server up", interval=0.2)
        harness.wait_until(lambda: harness.http_ok(self.login.url + "/ready"), timeout, "login to be ready")


@pytest.fixture(scope="module")
def fault_stack(processes) -> FaultStack:
    database = harness.start_ferretdb(processes, name=unique_name("ferretdb-faults-"))
    login = harness.start_service(processes, "login", service_env(database))
    # A long cache bound: the login outage test relies on tokens cached before it.
    chats = [
        harness.start_service(processes, "chat", service_env(database, login.url, TOKEN_CACHE_SECONDS=300))
        for _ in range(3)
    ]
    # Traffic is logged at level info: a failing assertion quotes HAProxy's view of the errors.
    balancer = harness.start_haproxy(processes, [chat.port for chat in chats], {"HAPROXY_LOG_LEVEL": "info"})
    stack = FaultStack(database, login, chats, balancer)
    stack.wait_healthy()
    return stack


def new_room(url: str, user: User) -> str:
    name = unique_name("room-")
    response = requests.post(f"{url}/rooms", json={"name": name}, headers=user.auth, timeout=10)
    assert response.status_code == 201, response.text
    return name


def warm_token_caches(stack: FaultStack, users: list[User]) -> None:
    """Every chat server validates each token once, so it holds it in its cache."""
    for user in users:
        for chat in stack.chats:
            assert requests.get(f"{chat.url}/rooms", headers=user.auth, timeout=10).status_code == 200


class ChatLoad:
    """Writers post numbered messages with an Idempotency-Key and retry a failed post with
    the same key until it is acknowledged; followers poll with after=next_after. Every
    answer is recorded: status, time taken, and whether an error was a proper problem."""

    def __init__(
        self, url: str, users: list[User], room: str, writers: int = 3, followers: int = 2, pace: float = 0.05
    ):
        self.url, self.users, self.room, self.pace = url, users, room, pace
        self.outcomes: Counter = Counter()
        self.slowest = 0.0
        self.bad_errors: list[str] = []
        self.attempted: dict[str, str] = {}  # key -> text
        self.acknowledged: dict[str, dict] = {}  # key -> the first message answered for it
        self.repeats_differing: list[str] = []
        self.retried_keys: set[str] = set()
        self.acknowledged_at: list[float] = []
        self.seen: dict[int, list[dict]] = {}
        self.lock = threading.Lock()
        self.stop_writing = threading.Event()
        self.writers_done = threading.Event()
        self.retry_until = 0.0
        self.writer_threads = [threading.Thread(target=self._write, args=(i,), daemon=True) for i in range(writers)]
        self.follower_threads = [
            threading.Thread(target=self._follow, args=(i,), daemon=True) for i in range(followers)
        ]

    def start(self) -> ChatLoad:
        self.retry_until = time.monotonic() + 600  # reset by finish()
        for thread in self.writer_threads + self.follower_threads:
            thread.start()
        return self

    def _request(self, session: requests.Session, method: str, path: str, **kwargs) -> requests.Response | None:
        started = time.monotonic()
        try:
            response = session.request(method, self.url + path, timeout=40, **kwargs)
        except requests.RequestException as error:
            elapsed = time.monotonic() - started
            with self.lock:
                self.outcomes[f"exception {type(error).__name__}"] += 1
                self.slowest = max(self.slowest, elapsed)
            return None
        elapsed = time.monotonic() - started
        with self.lock:
            self.outcomes[response.status_code] += 1
            self.slowest = max(self.slowest, elapsed)
        if response.status_code >= 400:
            try:
                assert_problem(response, response.status_code)
            except (AssertionError, KeyError, ValueError) as error:
                with self.lock:
                    self.bad_errors.append(f"{method} {path}: {error}")
        return response

    def _write(self, index: int) -> None:
        user, session = self.users[index % len(self.users)], requests.Session()
        for number in range(100000):
            if self.stop_writing.is_set():
                return
            key, text = uuid.uuid4().hex, f"w{index}-{number}"
            with self.lock:
                self.attempted[key] = text
            headers = {**user.auth, "Idempotency-Key": key}
            for attempt in range(100000):
                if time.monotonic() > self.retry_until:
                    break
                if attempt:
                    with self.lock:
                        self.retried_keys.add(key)
                response = self._request(
                    session, "POST", f"/rooms/{self.room}/messages", json={"text": text}, headers=headers
                )
                if response is not None and response.status_code in (200, 201):
                    self._acknowledge(key, response.json())
                    if attempt:  # once more: a repeat must answer the message first stored
                        repeat = self._request(
                            session, "POST", f"/rooms/{self.room}/messages", json={"text": text}, headers=headers
                        )
                        if repeat is not None and repeat.status_code == 200:
                            self._acknowledge(key, repeat.json())
                    break
                retry_after = response.headers.get("Retry-After", "") if response is not None else ""
                time.sleep(min(1.0, float(retry_after)) if retry_after.isdigit() else 0.2)
            time.sleep(self.pace)

    def _acknowledge(self, key: str, message: dict) -> None:
        with self.lock:
            first = self.acknowledged.setdefault(key, message)
            if first != message:
                self.repeats_differing.append(f"{key}: {first} then {message}")
            self.acknowledged_at.append(time.monotonic())

    def _follow(self, index: int) -> None:
        user, session = self.users[index % len(self.users)], requests.Session()
        after, seen = 0, []
        for _ in range(100000):
            writers_finished = self.writers_done.is_set()  # read before the request: no late ack slips by
            response = self._request(
                session, "GET", f"/rooms/{self.room}/messages", params={"after": after, "limit": 50}, headers=user.auth
            )
            if response is None or response.status_code != 200:
                time.sleep(0.2)
                continue
            page = response.json()
            seen += page["messages"]
            after = page["next_after"]
            if writers_finished and not page["messages"]:
                break
            time.sleep(self.pace * 2)
        with self.lock:
            self.seen[index] = seen

    def finish(self) -> None:
        """Stop starting new messages; let writers get their last one acknowledged and
        followers catch up. Bounded: every thread is joined with a deadline."""
        self.retry_until = time.monotonic() + RETRY_WINDOW
        self.stop_writing.set()
        for thread in self.writer_threads:
            thread.join(RETRY_WINDOW + 45)
        self.writers_done.set()
        for thread in self.follower_threads:
            thread.join(60)
        threads = self.writer_threads + self.follower_threads
        assert not any(thread.is_alive() for thread in threads), "a client thread hung"

    def errors(self) -> int:
        return sum(count for outcome, count in self.outcomes.items() if outcome not in (200, 201))


def assert_exactly_once(load: ChatLoad, stack: FaultStack, user: User) -> list[dict]:
    """Everything posted was acknowledged, and is stored once, in contiguous seq order."""
    stored = read_room(stack.url, load.room, user.auth)
    texts = [message["text"] for message in stored]
    assert [message["seq"] for message in stored] == list(range(1, len(stored) + 1)), "seqs are not 1..N"
    assert len(texts) == len(set(texts)), f"stored twice: {[t for t, n in Counter(texts).items() if n > 1]}"
    unacknowledged = set(load.attempted) - set(load.acknowledged)
    assert not unacknowledged, f"{len(unacknowledged)} posts never acknowledged within {RETRY_WINDOW} s"
    assert set(texts) == set(load.attempted.values()), "stored messages differ from the ones posted"
    by_seq = {message["seq"]: message for message in stored}
    for message in load.acknowledged.values():
        assert by_seq[message["seq"]] == message, f"acknowledged {message}, stored {by_seq[message['seq']]}"
    assert not load.repeats_differing, load.repeats_differing[:3]
    for index, seen in load.seen.items():
        assert seen == stored, f"follower {index} saw {len(seen)} messages, {len(stored)} are stored"
    return stored


def haproxy_errors(stack: FaultStack) -> str:
    """HAProxy's log lines of answers that were not 2xx, with their termination states."""
    lines = stack.balancer.process.log_path.read_text(errors="replace").splitlines()
    failed = [
        line
        for line in lines
        if (match := re.search(r" -?\d+/-?\d+/-?\d+/-?\d+/-?\d+ (\d{3}) ", line)) and not match.group(1).startswith("2")
    ]
    return "\n".join(failed[-30:])


def assert_errors_were_prompt_problems(load: ChatLoad, stack: FaultStack) -> None:
    assert not load.bad_errors, load.bad_errors[:5]
    unexpected = {outcome: count for outcome, count in load.outcomes.items() if outcome not in (200, 201, 409, 503)}
    assert not unexpected, (
        f"answers other than 200/201/409/503: {unexpected} (all: {load.outcomes})\n{haproxy_errors(stack)}"
    )
    assert load.slowest < ANSWER_BOUND, f"an answer took {load.slowest:.1f} s"


def run_database_fault(
    stack: FaultStack, interrupt, resume, outage: float = OUTAGE_SECONDS
) -> tuple[ChatLoad, list[dict], float]:
    stack.wait_healthy()
    users = [register_and_login(stack.login.url) for _ in range(3)]
    warm_token_caches(stack, users)
    room = new_room(stack.url, users[0])
    load = ChatLoad(stack.url, users, room).start()
    try:
        time.sleep(4)
        interrupt()
        time.sleep(outage)
    finally:
        resume()
    resumed_at = time.monotonic()
    harness.wait_until(stack.all_up, 30, "HAProxy to see every chat server up again", interval=0.2)
    recovered_in = time.monotonic() - resumed_at
    time.sleep(4)
    load.finish()
    stored = assert_exactly_once(load, stack, users[0])
    assert any(at > resumed_at for at in load.acknowledged_at), "nothing was stored after the database returned"
    assert load.retried_keys, "no post was retried: the outage did not reach the writers"
    return load, stored, recovered_in


def test_database_stopped_under_load_gives_prompt_503s_and_loses_or_doubles_nothing(fault_stack):
    load, stored, recovered_in = run_database_fault(fault_stack, fault_stack.database.stop, fault_stack.database.start)
    print(
        f"\ndatabase stopped {OUTAGE_SECONDS} s: {len(stored)} messages, answers {dict(load.outcomes)}, "
        f"{len(load.retried_keys)} posts retried with their key, slowest {load.slowest:.1f} s, "
        f"all servers up {recovered_in:.1f} s after restart"
    )
    assert load.outcomes[503] > 0, f"the outage was not noticed: {load.outcomes}"
    assert_errors_were_prompt_problems(load, fault_stack)


def test_database_frozen_under_load_gives_prompt_503s_and_loses_or_doubles_nothing(fault_stack):
    process = fault_stack.database.process
    load, stored, recovered_in = run_database_fault(
        fault_stack, lambda: process.signal(signal.SIGSTOP), lambda: process.signal(signal.SIGCONT), FREEZE_SECONDS
    )
    print(
        f"\ndatabase frozen {FREEZE_SECONDS} s: {len(stored)} messages, answers {dict(load.outcomes)}, "
        f"{len(load.retried_keys)} posts retried with their key, slowest {load.slowest:.1f} s, "
        f"all servers up {recovered_in:.1f} s after SIGCONT"
    )
    assert load.outcomes[503] > 0, f"the freeze was not noticed: {load.outcomes}"
    assert_errors_were_prompt_problems(load, fault_stack)


def test_login_stopped_under_load_cached_tokens_keep_working_and_new_ones_get_503(fault_stack):
    stack = fault_stack
    stack.wait_healthy()
    users = [register_and_login(stack.login.url) for _ in range(3)]
    warm_token_caches(stack, users)
    fresh = [register_and_login(stack.login.url) for _ in range(6)]  # never shown to a chat server
    room = new_room(stack.url, users[0])
    load = ChatLoad(stack.url, users, room).start()
    try:
        time.sleep(3)
        stack.login.stop()
        stopped_at = time.monotonic()
        for user in fresh[:3]:
            started = time.monotonic()
            assert_problem(requests.get(f"{stack.url}/rooms", headers=user.auth, timeout=20), 503)
            assert time.monotonic() - started < 5, "a token check waited past the login read timeout"
        with pytest.raises(requests.ConnectionError):
            requests.post(
                f"{stack.login.url}/login",
                json={"username": users[0].username, "password": users[0].password},
                timeout=5,
            )
        time.sleep(max(0.0, stopped_at + OUTAGE_SECONDS - time.monotonic()))
    finally:
        stack.login.start()
    restarted_at = time.monotonic()
    # Refusals are not cached for an unanswered check: the same fresh tokens now work.
    for user in fresh[:3]:
        harness.wait_until(
            lambda user=user: requests.get(f"{stack.url}/rooms", headers=user.auth, timeout=20).status_code == 200,
            15,
            "a fresh token to be accepted once login is back",
        )
    for user in fresh[3:]:
        for chat in stack.chats:
            assert requests.get(f"{chat.url}/rooms", headers=user.auth, timeout=20).status_code == 200
    assert register_and_login(stack.login.url).token
    time.sleep(2)
    load.finish()
    print(
        f"\nlogin stopped {OUTAGE_SECONDS} s: answers to cached tokens {dict(load.outcomes)}, "
        f"slowest {load.slowest:.1f} s"
    )
    assert load.errors() == 0, f"a cached token was refused or failed: {load.outcomes}"
    assert_exactly_once(load, stack, users[0])
    assert any(at < restarted_at for at in load.acknowledged_at)
