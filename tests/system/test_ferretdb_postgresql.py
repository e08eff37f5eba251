"""FerretDB on PostgreSQL (docs/postgresql.md): scripts/ferretdb.sh's private cluster, started
and stopped twice over and started again on the same data; two FerretDB processes on one
PostgreSQL database, whose concurrent updates of one document lose nothing (the advisory lock
of patches/ferretdb.patch); and two chat servers, each on one of them, serving one room."""

from __future__ import annotations

import os
import subprocess
import threading

import pymongo
import pytest
import requests
from pymongo import ReturnDocument

from tests.lib import harness
from tests.lib.accounts import register_and_login, unique_name

pytestmark = pytest.mark.local


def test_the_start_script_runs_ferretdb_on_a_private_postgresql_and_keeps_its_data(processes):
    harness.postgres_bin()  # fails the test when PostgreSQL is not installed
    var = harness.script_var(processes)
    mongo_port = harness.free_port()
    env = {
        **os.environ,
        "FERRETDB_HANDLER": "postgresql",
        "CHATSYS_VAR": str(var),
        "MONGO_PORT": str(mongo_port),
        "POSTGRES_PORT": str(harness.free_port()),
        "FERRETDB_METRICS_PORT": "0",
    }

    def script(command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(harness.ROOT / "scripts" / "ferretdb.sh"), command], env=env, capture_output=True, text=True
        )

    uri = f"mongodb://127.0.0.1:{mongo_port}/chatsys_script"
    try:
        for _ in range(2):  # the second start finds both running and does no harm
            assert script("start").returncode == 0
        status = script("status")
        assert status.returncode == 0 and "postgresql running" in status.stdout, status
        with pymongo.MongoClient(uri) as client:
            client.get_database().notes.insert_one({"_id": "kept", "text": "across restarts"})
        for _ in range(2):
            assert script("stop").returncode == 0
        status = script("status")
        assert status.returncode == 3 and "ferretdb stopped" in status.stdout, status
        assert "postgresql stopped" in status.stdout, status
        started = script("start")
        assert started.returncode == 0 and "creating the PostgreSQL cluster" not in started.stderr, started
        with pymongo.MongoClient(uri) as client:
            assert client.get_database().notes.find_one({"_id": "kept"})["text"] == "across restarts"
    finally:
        script("stop")
    assert not harness.port_open(mongo_port)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_the_start_script_says_so_when_postgresql_cannot_reach_its_folder(tmp_path):
    harness.postgres_bin()
    # pytest's tmp_path is under a folder of root's alone (mode 700), as /root is.
    mongo_port = harness.free_port()
    env = {
        **os.environ,
        "FERRETDB_HANDLER": "postgresql",
        "CHATSYS_VAR": str(tmp_path / "var"),
        "MONGO_PORT": str(mongo_port),
        "POSTGRES_PORT": str(harness.free_port()),
        "FERRETDB_METRICS_PORT": "0",
    }
    script = str(harness.ROOT / "scripts" / "ferretdb.sh")
    try:
        started = subprocess.run([script, "start"], env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode != 0, started.stdout
        assert "postgres cannot reach" in started.stderr and "CHATSYS_VAR" in started.stderr, started.stderr
        assert not (tmp_path / "var/postgresql/data").exists() and not harness.port_open(mongo_port)
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, timeout=120)


def test_two_ferretdb_processes_on_one_postgresql_lose_no_increment(processes):
    """FerretDB's update is a read, the operators applied in Go, and a write: without a lock
    that both processes take, two `$inc`s that both read n both write n+1."""
    postgres = harness.start_postgres(processes)
    first = harness.start_ferretdb(processes, "ferretdb-first", handler="postgresql", postgres=postgres, migrated=False)
    with pymongo.MongoClient(first.uri) as client:
        client.get_database().counters.insert_one({"_id": "shared", "n": 0})
    # Started once the collection exists: FerretDB 1.x reads the list of collections once,
    # and does not see one another process creates later (docs/postgresql.md).
    second = harness.start_ferretdb(
        processes, "ferretdb-second", handler="postgresql", postgres=postgres, migrated=False
    )
    clients = [pymongo.MongoClient(first.uri), pymongo.MongoClient(second.uri)]
    seen: list[int] = []

    def increment(client: pymongo.MongoClient) -> None:
        for _ in range(100):
            after = client.get_database().counters.find_one_and_update(
                {"_id": "shared"}, {"$inc": {"n": 1}}, return_document=ReturnDocument.AFTER
            )
            assert after is not None
            seen.append(after["n"])

    threads = [threading.Thread(target=increment, args=(clients[number % 2],)) for number in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(seen) == list(range(1, 801))
        for client in clients:
            assert client.get_database().counters.find_one({"_id": "shared"})["n"] == 800
    finally:
        for client in clients:
            client.close()


def test_a_ferretdb_killed_while_it_updates_leaves_no_lock_behind(processes):
    """The advisory lock lives in a transaction of the process's own connection: killed, the
    process's connections close, and PostgreSQL frees whatever it held."""
    postgres = harness.start_postgres(processes)
    doomed = harness.start_ferretdb(
        processes, "ferretdb-doomed", handler="postgresql", postgres=postgres, migrated=False
    )
    with pymongo.MongoClient(doomed.uri) as client:
        client.get_database().counters.insert_one({"_id": "shared", "n": 0})
    survivor = harness.start_ferretdb(
        processes, "ferretdb-survivor", handler="postgresql", postgres=postgres, migrated=False
    )
    # A hang guard, not a speed bound: a lock left behind would block the survivor for ever.
    survivor_client: pymongo.MongoClient = pymongo.MongoClient(survivor.uri, socketTimeoutMS=120_000)
    doomed_client: pymongo.MongoClient = pymongo.MongoClient(doomed.uri, retryWrites=False)
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                doomed_client.get_database().counters.update_one({"_id": "shared"}, {"$inc": {"n": 1}})
            except pymongo.errors.PyMongoError:
                return

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        counters = survivor_client.get_database().counters
        harness.wait_until(
            lambda: counters.find_one({"_id": "shared"})["n"] >= 200, 120, "the doomed process's updates"
        )
        doomed.process.kill()
        before = counters.find_one({"_id": "shared"})["n"]
        values = [
            counters.find_one_and_update({"_id": "shared"}, {"$inc": {"n": 1}}, return_document=ReturnDocument.AFTER)[
                "n"
            ]
            for _ in range(50)
        ]
        assert values[0] > before and values == list(range(values[0], values[0] + 50))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        doomed_client.close()
        survivor_client.close()


# Posters per chat server, and posts each: bounded in count.
POSTERS_PER_SERVER = 3
POSTS_PER_POSTER = 40


def test_two_ferretdb_processes_on_one_postgresql_serve_the_chat_tier(processes):
    """Two chat servers, each on a FerretDB process of its own, both FerretDBs on one
    PostgreSQL: posts through both into one room get seqs 1..N without a gap or a repeat,
    each server reads the same history, and a repeated Idempotency-Key finds the first
    message whichever server stored it. The migration creates every collection and index
    before the second FerretDB starts (FerretDB 1.x reads its catalogue once a process)."""
    postgres = harness.start_postgres(processes)
    first = harness.start_ferretdb(processes, "ferretdb-a", handler="postgresql", postgres=postgres, migrated=True)
    second = harness.start_ferretdb(processes, "ferretdb-b", handler="postgresql", postgres=postgres, migrated=False)
    login = harness.start_service(processes, "login", {"MONGO_URI": first.uri})
    servers = [
        harness.start_service(processes, "chat", {"MONGO_URI": database.uri, "LOGIN_URL": login.url})
        for database in (first, second)
    ]
    user = register_and_login(login.url)
    room = unique_name("pg")
    created = requests.post(f"{servers[0].url}/rooms", json={"name": room}, headers=user.auth, timeout=30)
    assert created.status_code == 201, created.text

    acknowledged: dict[str, int] = {}  # text -> seq answered
    failures: list[str] = []
    lock = threading.Lock()

    def post(server: harness.Service, poster: str) -> None:
        with requests.Session() as session:
            for number in range(POSTS_PER_POSTER):
                text = f"{poster} {number}"
                answer = session.post(
                    f"{server.url}/rooms/{room}/messages", json={"text": text}, headers=user.auth, timeout=60
                )
                with lock:
                    if answer.status_code == 201:
                        acknowledged[text] = answer.json()["seq"]
                    else:
                        failures.append(f"{answer.status_code} {answer.text[:200]}")

    threads = [
        threading.Thread(target=post, args=(server, f"{index}-{poster}"))
        for index, server in enumerate(servers)
        for poster in range(POSTERS_PER_SERVER)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:5]
    total = len(servers) * POSTERS_PER_SERVER * POSTS_PER_POSTER
    assert sorted(acknowledged.values()) == list(range(1, total + 1))

    histories = []
    for server in servers:
        messages, after = [], 0
        while True:
            page = requests.get(
                f"{server.url}/rooms/{room}/messages",
                params={"after": after, "limit": 200},
                headers=user.auth,
                timeout=30,
            ).json()
            if not page["messages"]:
                break
            messages += page["messages"]
            after = page["next_after"]
        histories.append([(message["seq"], message["text"]) for message in messages])
    assert histories[0] == histories[1] == sorted((seq, text) for text, seq in acknowledged.items())

    key = {**user.auth, "Idempotency-Key": unique_name("key")}
    first_try = requests.post(f"{servers[0].url}/rooms/{room}/messages", json={"text": "once"}, headers=key, timeout=30)
    assert first_try.status_code == 201, first_try.text
    repeat = requests.post(f"{servers[1].url}/rooms/{room}/messages", json={"text": "once"}, headers=key, timeout=30)
    assert repeat.status_code == 200 and repeat.json()["seq"] == first_try.json()["seq"] == total + 1, repeat.text
