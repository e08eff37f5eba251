"""A synchronous PostgreSQL standby under FerretDB (docs/postgresql.md), made and promoted by
scripts/ferretdb.sh: the primary stopped dead while clients post through real chat servers,
the standby promoted and FerretDB restarted on it; every post answered 201 is stored once at
its seq, and the seqs of the room run without a gap. The outage is measured and printed,
never asserted. And a stopped standby holds the primary's commits until `sync off`."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pymongo
import pytest
import requests

from tests.lib import harness
from tests.lib.accounts import User, register_and_login, unique_name
from tests.lib.contract import assert_problem
from tests.lib.rooms import read_room

pytestmark = [pytest.mark.local, pytest.mark.chat]

WRITERS = 4
# Posts acknowledged before the primary is stopped, and after the promotion before the load
# ends: bounds in count. Each writer stops at MAX_POSTS_PER_WRITER whatever happens.
POSTS_BEFORE = 40
POSTS_AFTER = 40
MAX_POSTS_PER_WRITER = 1000
# Hang guards, not speed bounds.
REQUEST_TIMEOUT = 30.0
CONDITION_TIMEOUT = 180.0


@dataclass
class ScriptDatabase:
    """FerretDB, a primary and its synchronous standby, as scripts/ferretdb.sh runs them in a
    folder of their own, on free ports."""

    var: Path
    env: dict[str, str]
    mongo_port: int

    def script(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(harness.ROOT / "scripts" / "ferretdb.sh"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.mongo_port}/chatsys_failover"

    def cluster(self, name: str) -> Path:
        return self.var / "postgresql" / name

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*harness.as_postgres(), str(harness.postgres_bin() / "pg_ctl"), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def primary_sql(self, sql: str) -> str:
        """SQL on the first cluster (the primary until a promotion), as FerretDB's role."""
        password = (self.var / "ferretdb" / "postgresql.password").read_text().strip()
        return subprocess.run(
            [str(harness.postgres_bin() / "psql"), "-h", "127.0.0.1", "-p", self.env["POSTGRES_PORT"]]
            + ["-U", "ferretdb", "-d", "postgres", "-X", "-A", "-t", "-c", sql],
            env={**os.environ, "PGPASSWORD": password},
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()


@pytest.fixture
def standby_database(request, processes) -> ScriptDatabase:
    harness.postgres_bin()  # fails the test when PostgreSQL is not installed
    var = harness.script_var(processes, "chatsys-test-standby-")
    mongo_port = harness.free_port()
    env = {
        **os.environ,
        "FERRETDB_HANDLER": "postgresql",
        "POSTGRES_STANDBY": "on",
        "CHATSYS_VAR": str(var),
        "MONGO_PORT": str(mongo_port),
        "POSTGRES_PORT": str(harness.free_port()),
        "POSTGRES_STANDBY_PORT": str(harness.free_port()),
        "FERRETDB_METRICS_PORT": "0",
    }
    database = ScriptDatabase(var, env, mongo_port)

    def stop() -> None:
        database.script("stop")
        shutil.rmtree(var, ignore_errors=True)

    request.addfinalizer(stop)
    started = database.script("start")
    assert started.returncode == 0, started.stderr
    status = database.script("status")
    assert "replication: streaming sync" in status.stdout, status
    return database


@dataclass
class ChatStack:
    login: harness.Service
    chats: list[harness.Service]


@pytest.fixture
def chat_stack(standby_database) -> Iterator[ChatStack]:
    """Login and two chat servers on the script's FerretDB, stopped at the end of the test,
    before the database (fixtures are torn down in reverse)."""
    group = harness.ProcessGroup(prefix="chatsys-test-failover-")
    try:
        env = {"MONGO_URI": standby_database.uri, "TOKEN_CACHE_SECONDS": "300"}
        harness.migrate(standby_database.uri)  # as every deployment does before the services start
        login = harness.start_service(group, "login", env)
        chats = [harness.start_service(group, "chat", {**env, "LOGIN_URL": login.url}) for _ in range(2)]
        yield ChatStack(login, chats)
    finally:
        group.close()


@dataclass
class Answer:
    sent: float
    answered: float
    status: int | str  # the HTTP status, or the exception's name


@dataclass
class PostingLoad:
    """Writers post numbered messages, each once (no retry, no key): a post answered 201 is
    acknowledged, any other answer is recorded as it came."""

    chats: list[harness.Service]
    users: list[User]
    room: str
    answers: list[Answer] = field(default_factory=list)
    acknowledged: dict[str, dict] = field(default_factory=dict)  # text -> the message answered
    bad_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> PostingLoad:
        self.threads = [threading.Thread(target=self._write, args=(index,), daemon=True) for index in range(WRITERS)]
        for thread in self.threads:
            thread.start()
        return self

    def _write(self, index: int) -> None:
        user, chat, session = (
            self.users[index % len(self.users)],
            self.chats[index % len(self.chats)],
            requests.Session(),
        )
        for number in range(MAX_POSTS_PER_WRITER):
            if self.stop.is_set():
                return
            text = f"w{index}-{number}"
            sent = time.monotonic()
            try:
                response = session.post(
                    f"{chat.url}/rooms/{self.room}/messages",
                    json={"text": text},
                    headers=user.auth,
                    timeout=REQUEST_TIMEOUT,
                )
            except requests.RequestException as error:
                self._record(Answer(sent, time.monotonic(), type(error).__name__))
                time.sleep(0.05)  # a refused connection answers at once: no busy loop
                continue
            self._record(Answer(sent, time.monotonic(), response.status_code))
            if response.status_code == 201:
                with self.lock:
                    self.acknowledged[text] = response.json()
            else:
                try:
                    assert_problem(response, response.status_code)
                except (AssertionError, KeyError, ValueError) as error:
                    with self.lock:
                        self.bad_errors.append(f"{response.status_code}: {error}")
                time.sleep(0.05)

    def _record(self, answer: Answer) -> None:
        with self.lock:
            self.answers.append(answer)

    def acknowledged_since(self, moment: float) -> int:
        with self.lock:
            return sum(1 for answer in self.answers if answer.status == 201 and answer.sent > moment)

    def first_failure(self) -> Answer | None:
        with self.lock:
            return next((answer for answer in self.answers if answer.status != 201), None)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(REQUEST_TIMEOUT + 30)
        assert not any(thread.is_alive() for thread in self.threads), "a writer hung"


def test_promoted_standby_keeps_every_acknowledged_post_at_its_seq(standby_database, chat_stack):
    database, chats = standby_database, chat_stack.chats
    users = [register_and_login(chat_stack.login.url) for _ in range(2)]
    for user in users:  # each chat server holds each token: the login service's database goes too
        for chat in chats:
            assert requests.get(f"{chat.url}/rooms", headers=user.auth, timeout=REQUEST_TIMEOUT).status_code == 200
    room = unique_name("room-")
    created = requests.post(
        f"{chats[0].url}/rooms", json={"name": room}, headers=users[0].auth, timeout=REQUEST_TIMEOUT
    )
    assert created.status_code == 201, created.text

    load = PostingLoad(chats, users, room).start()
    try:
        harness.wait_until(
            lambda: load.acknowledged_since(0) >= POSTS_BEFORE, CONDITION_TIMEOUT, "posts on the primary"
        )
        stopped_at = time.monotonic()
        database.pg_ctl("stop", "-D", str(database.cluster("data")), "-m", "immediate")
        harness.wait_until(load.first_failure, CONDITION_TIMEOUT, "a post to fail without the primary")
        promote_started = time.monotonic()
        promoted = database.script("promote")
        promoted_at = time.monotonic()
        assert promoted.returncode == 0, promoted.stderr
        harness.wait_until(
            lambda: load.acknowledged_since(promoted_at) >= POSTS_AFTER,
            CONDITION_TIMEOUT,
            "posts on the promoted standby",
        )
    finally:
        load.finish()

    stored = read_room(chats[1].url, room, users[0].auth)
    seqs = [message["seq"] for message in stored]
    texts = [message["text"] for message in stored]
    assert seqs == list(range(1, len(stored) + 1)), f"seqs are not 1..{len(stored)}: {seqs}"
    assert len(texts) == len(set(texts)), f"stored twice: {[t for t, n in Counter(texts).items() if n > 1]}"
    by_seq = {message["seq"]: message for message in stored}
    lost = [m for m in load.acknowledged.values() if by_seq.get(m["seq"], {}).get("text") != m["text"]]
    assert not lost, f"{len(lost)} acknowledged posts lost or moved, e.g. {lost[:3]}"
    for message in load.acknowledged.values():
        assert by_seq[message["seq"]] == message
    assert not load.bad_errors, load.bad_errors[:5]

    first_failure = load.first_failure()
    assert first_failure is not None
    first_success = min(
        (answer for answer in load.answers if answer.status == 201 and answer.sent > first_failure.answered),
        key=lambda answer: answer.answered,
    )
    outcomes = Counter(answer.status for answer in load.answers)
    # The database down is the database down, however FerretDB words it: 503, never 500.
    assert 500 not in outcomes, dict(outcomes)
    print(
        f"\nfailover: {len(load.acknowledged)} posts acknowledged, all stored at their seq; "
        f"{len(stored) - len(load.acknowledged)} stored without an acknowledgement; answers {dict(outcomes)}\n"
        f"outage {first_success.answered - first_failure.answered:.2f} s from the first failed post to the first "
        f"201 after it; first failure {first_failure.answered - stopped_at:.2f} s after the primary stopped, "
        f"`ferretdb.sh promote` took {promoted_at - promote_started:.2f} s, first 201 "
        f"{first_success.answered - promoted_at:.2f} s after it returned"
    )


def test_a_stopped_standby_holds_commits_until_sync_is_turned_off(standby_database, chat_stack):
    """Synchronous replication without its standby: a commit on the primary waits (SyncRep)
    rather than be acknowledged with one copy, and a post is answered 503 when the chat
    server's socket timeout passes; `sync off` lets the commits through, `start` brings the
    standby back and makes commits synchronous again."""
    database, chat = standby_database, chat_stack.chats[0]
    user = register_and_login(chat_stack.login.url)
    room = unique_name("room-")
    created = requests.post(f"{chat.url}/rooms", json={"name": room}, headers=user.auth, timeout=REQUEST_TIMEOUT)
    assert created.status_code == 201, created.text
    client: pymongo.MongoClient = pymongo.MongoClient(database.uri, socketTimeoutMS=int(CONDITION_TIMEOUT * 1000))
    try:
        notes = client.get_database().notes
        notes.insert_one({"_id": "before"})
        database.pg_ctl("stop", "-D", str(database.cluster("data2")), "-m", "immediate")
        held_post = requests.post(
            f"{chat.url}/rooms/{room}/messages", json={"text": "held"}, headers=user.auth, timeout=REQUEST_TIMEOUT
        )
        assert_problem(held_post, 503)
        inserted = threading.Event()
        writer = threading.Thread(target=lambda: (notes.insert_one({"_id": "held"}), inserted.set()), daemon=True)
        writer.start()
        harness.wait_until(
            lambda: database.primary_sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'") != "0",
            CONDITION_TIMEOUT,
            "a commit to wait for the standby",
            interval=0.2,
        )
        assert not inserted.is_set()
        turned_off = database.script("sync", "off")
        assert turned_off.returncode == 0, turned_off.stderr
        writer.join(CONDITION_TIMEOUT)
        assert inserted.is_set() and notes.find_one({"_id": "held"}) is not None

        restarted = database.script("start")
        assert restarted.returncode == 0, restarted.stderr
        status = database.script("status")
        assert "postgresql standby running" in status.stdout and "streaming sync" in status.stdout, status
        posted = requests.post(
            f"{chat.url}/rooms/{room}/messages", json={"text": "after"}, headers=user.auth, timeout=REQUEST_TIMEOUT
        )
        assert posted.status_code == 201, posted.text
    finally:
        client.close()
