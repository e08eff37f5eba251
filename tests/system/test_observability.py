"""Observability (docs/observability.md): metrics, request ids, JSON log lines, Prometheus.

The process-level tests run the stack as `make run` does (scripts/start.sh, then
scripts/stop.sh), on ports of their own: FerretDB, login, profile, three chat servers of
two workers each, HAProxy, Prometheus and the node exporter. The fast ones build the apps
in-process.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pymongo
import pytest
import requests
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from service_kit import metrics
from tests.lib import harness
from tests.lib.accounts import register_and_login, unique_name
from tests.lib.contract import assert_problem
from tests.lib.fast import fresh_database_uri
from tests.lib.fast import register_and_login as register_fast
from tools.loadtest import search, timeline

ROOT = harness.ROOT
MESSAGES_ROUTE = "/rooms/<room>/messages"
# Where the ports of the stack sit in its block (METRICS_PORT_OFFSET puts each service's
# metrics 10 above its port).
LAYOUT = dict(
    HAPROXY_PORT=0,
    LOGIN_PORT=1,
    PROFILE_PORT=2,
    HAPROXY_STATS_PORT=3,
    LOGIN_SERVICE_PORT=4,
    PROFILE_SERVICE_PORT=5,
    MONGO_PORT=9,
    # Its own offset: lib/common.sh's default (the stats port + 1) is LOGIN_SERVICE_PORT here.
    HAPROXY_PEER_PORT=10,
    FERRETDB_METRICS_PORT=19,
    NODE_EXPORTER_PORT=20,
    PROMETHEUS_PORT=21,
)
CHAT_OFFSETS = (6, 7, 8)
STATS_USER, STATS_PASSWORD = "observer", "stats password"
METRICS_OFFSET = 10
BLOCK = 22


# --- the fast layer: request ids, problem bodies, refusals, in-process ------------------------


@pytest.fixture
def login_app(apps, database):
    return apps.login(fresh_database_uri(database, "observability"), login_max_failures=2)


@pytest.mark.fast
def test_the_request_id_haproxy_sent_comes_back_in_the_answer_and_the_problem_body(login_app):
    answer = login_app.test_client().post("/login", json={"username": 5}, headers={"X-Request-ID": "7F000001:AB_1"})
    body = answer.get_json()
    assert answer.status_code == 400
    assert answer.headers["X-Request-ID"] == body["request_id"] == "7F000001:AB_1"


@pytest.mark.fast
def test_a_malformed_request_id_is_replaced_not_logged(login_app):
    answer = login_app.test_client().get("/validate", headers={"X-Request-ID": 'x" injected\\nline'})
    request_id = answer.headers["X-Request-ID"]
    assert len(request_id) == 32 and int(request_id, 16) >= 0
    assert answer.get_json()["request_id"] == request_id


@pytest.mark.fast
def test_a_refused_login_names_its_limit_in_the_metrics_and_the_log_line(login_app, caplog):
    client = login_app.test_client()
    username = unique_name()
    client.post("/users", json={"username": username, "password": "correct horse 1"})
    before = REGISTRY.get_sample_value("chatsys_refusals_total", {"limit": "LOGIN_MAX_FAILURES"}) or 0.0
    with caplog.at_level(logging.INFO, logger="chatsys.access"):
        answers = [client.post("/login", json={"username": username, "password": "wrong password"}) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [401, 401, 429]
    assert REGISTRY.get_sample_value("chatsys_refusals_total", {"limit": "LOGIN_MAX_FAILURES"}) == before + 1
    refused = [record for record in caplog.records if getattr(record, "status", None) == 429]
    assert len(refused) == 1
    assert refused[0].limit == "LOGIN_MAX_FAILURES"
    assert refused[0].request_id == answers[2].headers["X-Request-ID"]
    assert refused[0].route == "/login" and not hasattr(refused[0], "token")


@pytest.mark.fast
def test_each_request_moves_its_route_histogram_once_and_leaves_none_in_flight(login_app):
    client = login_app.test_client()
    username = unique_name()

    def count(route: str, method: str, status: str) -> float:
        labels = {"route": route, "method": method, "status": status}
        return REGISTRY.get_sample_value("chatsys_http_request_duration_seconds_count", labels) or 0.0

    created, unmatched = count("/users", "POST", "201"), count("(unmatched)", "GET", "404")
    assert client.post("/users", json={"username": username, "password": "correct horse 1"}).status_code == 201
    assert client.get(f"/no-such-route/{username}").status_code == 404
    assert client.get(f"/no-such-route/{username}").status_code == 404
    assert count("/users", "POST", "201") == created + 1
    assert count("(unmatched)", "GET", "404") == unmatched + 2
    assert REGISTRY.get_sample_value("chatsys_http_requests_in_flight") == 0


def database_counts(name: str = "chatsys_db_operation_duration_seconds_count") -> Counter[tuple[str, str]]:
    """The in-process value of a database series, by (operation, collection)."""
    return Counter(
        {
            (sample.labels["operation"], sample.labels["collection"]): sample.value
            for family in REGISTRY.collect()
            for sample in family.samples
            if sample.name == name
        }
    )


class SentCommands(pymongo.monitoring.CommandListener):
    """The commands a client sent, by (command, collection) as the database sees them, but
    pymongo's own housekeeping (closing cursors and sessions), which no store calls."""

    def __init__(self) -> None:
        self._sent: dict[int, tuple[str, str]] = {}
        self.answered: Counter[tuple[str, str]] = Counter()
        self.failed_commands: Counter[tuple[str, str]] = Counter()

    def started(self, event) -> None:
        name = event.command_name
        if name not in ("killCursors", "endSessions"):
            target = event.command.get("collection" if name == "getMore" else name)
            self._sent[event.request_id] = (name, target if isinstance(target, str) else "")

    def succeeded(self, event) -> None:
        if event.request_id in self._sent:
            self.answered[self._sent.pop(event.request_id)] += 1

    def failed(self, event) -> None:
        if event.request_id in self._sent:
            key = self._sent.pop(event.request_id)
            self.answered[key] += 1
            self.failed_commands[key] += 1


@pytest.mark.fast
def test_the_database_histogram_counts_every_command_the_database_is_sent(database):
    """The stores' calls are timed where they reach a collection (metrics.TimedDatabase):
    each command the database is sent moves its (operation, collection) by one, as
    pymongo's own command monitoring counts them, a cursor once per batch. A failed
    command counts once among the errors; a write refused for a taken key does not (the
    stores expect that answer)."""
    sent = SentCommands()
    uri = fresh_database_uri(database, "observability_database_timing")
    with pymongo.MongoClient(uri, event_listeners=[sent]) as client:
        timed = metrics.TimedDatabase(client.get_default_database())
        timed.examples.create_index([("at", pymongo.ASCENDING)])  # a collection no service has
        sent.answered.clear()
        histogram, errors = database_counts(), database_counts("chatsys_db_operation_errors_total")
        timed.examples.insert_many([{"_id": f"example-{number}"} for number in range(5)])
        with pytest.raises(pymongo.errors.DuplicateKeyError):
            timed.examples.insert_one({"_id": "example-0"})
        with pytest.raises(pymongo.errors.BulkWriteError):
            timed.examples.insert_many([{"_id": "example-0"}, {"_id": "example-5"}], ordered=False)
        assert timed.examples.find_one({"_id": "example-1"}) == {"_id": "example-1"}
        assert len(list(timed.examples.find({}, batch_size=2).sort("_id", pymongo.ASCENDING))) == 6
        assert next(timed.examples.find({}).sort("_id", pymongo.ASCENDING).skip(2).limit(1)) == {"_id": "example-2"}
        assert timed.examples.count_documents({}) == 6
        timed.examples.update_one({"_id": "example-1"}, {"$set": {"at": 1}})
        timed.examples.find_one_and_update({"_id": "example-2"}, {"$set": {"at": 2}})
        timed.examples.delete_one({"_id": "example-3"})
        timed.examples.delete_many({"_id": "no such room"})
        timed.command("ping")
        with pytest.raises(pymongo.errors.OperationFailure):
            timed.command({"noSuchCommand": "examples"})
        assert "examples" in timed.list_collection_names()
        assert "at_1" in timed.examples.index_information()
        timed.examples.drop_index("at_1")
        assert database_counts() - histogram == sent.answered
        # 6 documents in batches of 2: two getMores, and a third if the server closes the cursor
        # only when asked again (an empty batch, counted too).
        assert sent.answered[("getMore", "examples")] >= 2
        assert database_counts("chatsys_db_operation_errors_total") - errors == sent.failed_commands
        assert sent.failed_commands == {("noSuchCommand", "examples"): 1}
        # What it does not time passes through to pymongo's database, as it is.
        assert timed.create_collection("more_examples").name == "more_examples"


@pytest.mark.fast
def test_requests_move_the_database_histogram_by_their_number(apps, database):
    """A known number of reads and posts moves the room reads and the posts' updates by
    exactly that number."""
    uri = fresh_database_uri(database, "observability_database_requests")
    login = apps.login(uri)
    client = apps.chat(uri, login).test_client()
    user = register_fast(login)
    room = unique_name("r")
    assert client.post("/rooms", json={"name": room}, headers=user.auth).status_code == 201
    # The server's first post to a room reads the room once more (then it knows it exists).
    assert client.post(f"/rooms/{room}/messages", json={"text": "first"}, headers=user.auth).status_code == 201
    before = database_counts()
    for number in range(7):
        posted = client.post(f"/rooms/{room}/messages", json={"text": f"m{number}"}, headers=user.auth)
        assert posted.status_code == 201, posted.get_data(as_text=True)
    for _ in range(11):
        assert client.get(f"/rooms/{room}/messages?limit=50", headers=user.auth).status_code == 200
    moved = database_counts() - before
    assert moved[("findAndModify", "rooms")] == 7
    assert moved[("find", "rooms")] == 11


# --- the stack of `make run` ------------------------------------------------------------------


@dataclass
class Running:
    env: dict[str, str]
    var: Path

    def port(self, name: str) -> int:
        return int(self.env[name])

    @property
    def chat_ports(self) -> list[int]:
        return [int(port) for port in self.env["CHAT_PORTS"].split()]

    @property
    def entry(self) -> str:
        return f"http://127.0.0.1:{self.port('HAPROXY_PORT')}"

    @property
    def login(self) -> str:
        return f"http://127.0.0.1:{self.port('LOGIN_PORT')}"

    def metrics(self, port: int) -> dict[tuple[str, tuple], float]:
        """The samples a service's metrics listener serves, by name and labels."""
        text = requests.get(f"http://127.0.0.1:{port + METRICS_OFFSET}/metrics", timeout=10).text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def chat_total(self, name: str, **labels: str) -> float:
        wanted = tuple(sorted(labels.items()))
        return sum(self.metrics(port).get((name, wanted), 0.0) for port in self.chat_ports)

    def workers(self, service_port: int, name: str = "chat") -> list[int]:
        """The master's living workers; one that dies between the listing and its status
        (the killed one, reaped by gunicorn) is not among them."""
        master = int((self.var / "run" / f"{name}-{service_port}.pid").read_text())
        living = []
        for child in psutil.Process(master).children():
            try:
                if child.status() != psutil.STATUS_ZOMBIE:
                    living.append(child.pid)
            except psutil.NoSuchProcess:
                pass
        return living

    def prometheus(self, query: str) -> list[dict]:
        answer = requests.get(
            f"http://127.0.0.1:{self.port('PROMETHEUS_PORT')}/api/v1/query", params={"query": query}, timeout=10
        )
        return answer.json()["data"]["result"]

    def log_lines(self, pattern: str) -> Iterator[dict]:
        for path in sorted((self.var / "log").glob(pattern)):
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    yield json.loads(line)


@pytest.fixture(scope="module")
def running(processes) -> Iterator[Running]:
    harness.require_tool("prometheus")
    harness.require_tool("prometheus-node-exporter")
    base = harness.free_port_block(BLOCK)
    var = harness.script_var(processes, "chatsys-test-observability-")
    env = {name: str(base + offset) for name, offset in LAYOUT.items()}
    env.update(
        CHATSYS_VAR=str(var),
        CHAT_PORTS=" ".join(str(base + offset) for offset in CHAT_OFFSETS),
        METRICS_PORT_OFFSET=str(METRICS_OFFSET),
        GUNICORN_WORKERS="2",
        ROOMS_PER_USER="1",  # the second room of a user is refused by the chat server (429)
        LOG_MAX_BYTES="40000",  # small, so that the rotation test rotates a file
        # With a stats password: Prometheus must scrape HAProxy with it (basic auth).
        HAPROXY_STATS_USER=STATS_USER,
        HAPROXY_STATS_PASSWORD=STATS_PASSWORD,
        **harness.UNLIMITED_EDGE,
    )
    full_env = {**os.environ, **env}
    full_env.pop("MONGO_URI", None)
    full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    try:
        started = subprocess.run(
            [str(ROOT / "scripts/start.sh")], env=full_env, capture_output=True, text=True, timeout=180
        )
        assert started.returncode == 0, started.stderr + started.stdout
        yield Running(env, var)
    finally:
        subprocess.run([str(ROOT / "scripts/stop.sh")], env=full_env, capture_output=True, timeout=120)


@pytest.mark.local
@pytest.mark.chat
def test_requests_move_their_route_and_database_histograms_by_exactly_their_number_across_workers_servers_and_restarts(
    running,
):
    user = register_and_login(running.login)
    room = unique_name("r")
    assert (
        requests.post(f"{running.entry}/rooms", json={"name": room}, headers=user.auth, timeout=10).status_code == 201
    )
    labels = {"route": MESSAGES_ROUTE, "method": "GET", "status": "200"}
    count = "chatsys_http_request_duration_seconds_count"
    # A post is one findAndModify of its room (a worker's start, which reads rooms too, is none).
    posts = {"operation": "findAndModify", "collection": "rooms"}
    database_count = "chatsys_db_operation_duration_seconds_count"
    before, posts_before = running.chat_total(count, **labels), running.chat_total(database_count, **posts)

    def read(times: int) -> None:
        with requests.Session() as session:
            for number in range(times):
                answer = session.get(f"{running.entry}/rooms/{room}/messages", headers=user.auth, timeout=10)
                assert answer.status_code == 200, answer.text
                if number % 2:
                    posted = session.post(
                        f"{running.entry}/rooms/{room}/messages", json={"text": "m"}, headers=user.auth, timeout=10
                    )
                    assert posted.status_code == 201, posted.text

    read(40)
    # A worker dies (as on a crash or a timeout); gunicorn starts another. What it counted stays.
    server = running.chat_ports[0]
    victim = running.workers(server)[0]
    os.kill(victim, signal.SIGKILL)
    harness.wait_until(
        lambda: victim not in running.workers(server) and len(running.workers(server)) == 2,
        30,
        "gunicorn to replace the killed worker",
    )
    harness.wait_until(lambda: harness.http_ok(f"http://127.0.0.1:{server}/ready"), 30, "the chat server ready")
    read(30)
    after = running.chat_total(count, **labels)
    per_server = {
        port: running.metrics(port).get((count, tuple(sorted(labels.items()))), 0.0) for port in running.chat_ports
    }
    assert after - before == 70, per_server
    assert running.chat_total(database_count, **posts) - posts_before == 35
    assert running.metrics(server)[("chatsys_workers", ())] == 2
    # Nothing of the killed worker stays in flight. HAProxy's health checks are requests
    # too, so one may be in flight at any scrape: wait for a scrape between them.
    harness.wait_until(
        lambda: running.metrics(server)[("chatsys_http_requests_in_flight", ())] == 0,
        30,
        "no request in flight at the chat server",
    )


@pytest.mark.local
@pytest.mark.chat
def test_a_refused_request_has_one_id_in_its_answer_its_body_and_the_service_log(running):
    user = register_and_login(running.login)
    refusals = running.chat_total("chatsys_refusals_total", limit="ROOMS_PER_USER")
    first = requests.post(f"{running.entry}/rooms", json={"name": unique_name("r")}, headers=user.auth, timeout=10)
    assert first.status_code == 201
    # A client's own X-Request-ID is replaced: it is not one of HAPROXY_TRUSTED_PROXIES.
    refused = requests.post(
        f"{running.entry}/rooms",
        json={"name": unique_name("r")},
        headers={**user.auth, "X-Request-ID": "chosen-by-the-client"},
        timeout=10,
    )
    body = assert_problem(refused, 429)
    request_id = refused.headers["X-Request-ID"]
    assert request_id == body["request_id"] != "chosen-by-the-client"

    def logged() -> list[dict]:
        return [line for line in running.log_lines("chat-*.log*") if line.get("request_id") == request_id]

    lines = harness.wait_until(logged, 15, "the refused request's line in a chat server's log")
    assert len(lines) == 1
    line = lines[0]
    assert line["status"] == 429 and line["limit"] == "ROOMS_PER_USER" and line["user"] == user.username
    assert line["route"] == "/rooms" and line["server"].startswith("chat@")
    assert user.token not in json.dumps(line)
    assert running.chat_total("chatsys_refusals_total", limit="ROOMS_PER_USER") == refusals + 1
    # HAProxy's own refusals carry an id too, and its request log (one line per request)
    # names both ids.
    too_large = requests.post(f"{running.entry}/rooms", data=b"x" * 40000, headers=user.auth, timeout=10)
    assert too_large.status_code == 413 and too_large.headers["X-Request-ID"]

    def in_haproxy_log(wanted: str) -> list[str]:
        text = (running.var / "log" / "haproxy.log").read_text(errors="replace")
        return [line for line in text.splitlines() if f"request_id={wanted} " in line]

    served = harness.wait_until(lambda: in_haproxy_log(request_id), 15, "the refused request's line in HAProxy's log")
    assert " 429 " in served[0] and "POST /rooms " in served[0]
    refusal = harness.wait_until(
        lambda: in_haproxy_log(too_large.headers["X-Request-ID"]), 15, "HAProxy's refusal in its log"
    )
    assert " 413 " in refusal[0]


@pytest.mark.local
def test_metrics_are_served_on_loopback_only_and_never_through_haproxy(running):
    answer = requests.get(f"{running.entry}/metrics", timeout=10)
    assert answer.status_code == 404 and "chatsys_" not in answer.text
    listening = {
        connection.laddr.port: connection.laddr.ip
        for connection in psutil.net_connections(kind="tcp")
        if connection.status == psutil.CONN_LISTEN
    }
    for port in [*running.chat_ports, running.port("LOGIN_SERVICE_PORT"), running.port("PROFILE_SERVICE_PORT")]:
        assert listening[port + METRICS_OFFSET] == "127.0.0.1"
    for name in ("FERRETDB_METRICS_PORT", "NODE_EXPORTER_PORT", "PROMETHEUS_PORT"):
        assert listening[running.port(name)] == "127.0.0.1", name
    stats_url = f"http://127.0.0.1:{running.port('HAPROXY_STATS_PORT')}"
    assert requests.get(f"{stats_url}/metrics", timeout=10).status_code == 401, "the stats password is asked"
    stats = requests.get(f"{stats_url}/", auth=(STATS_USER, STATS_PASSWORD), allow_redirects=False, timeout=10)
    assert stats.status_code == 302 and stats.headers["Location"] == "/stats"


@pytest.mark.local
def test_prometheus_reports_every_target_up_and_the_recording_rules(running):
    expected = {"prometheus": 1, "haproxy": 1, "services": 5, "ferretdb": 1, "node": 1}

    def all_up() -> bool:
        answer = requests.get(
            f"http://127.0.0.1:{running.port('PROMETHEUS_PORT')}/api/v1/targets", params={"state": "active"}, timeout=10
        ).json()
        targets = answer["data"]["activeTargets"]
        jobs: dict[str, int] = {}
        for target in targets:
            if target["health"] == "up":
                jobs[target["labels"]["job"]] = jobs.get(target["labels"]["job"], 0) + 1
        return jobs == expected and len(targets) == sum(expected.values())

    harness.wait_until(all_up, 60, "Prometheus to see every target up", interval=1)
    servers = {f"chat@{port}" for port in running.chat_ports} | {
        f"login@{running.port('LOGIN_SERVICE_PORT')}",
        f"profile@{running.port('PROFILE_SERVICE_PORT')}",
    }
    assert {sample["metric"]["server"] for sample in running.prometheus("up{job='services'}")} == servers

    def rules_answer() -> bool:
        requests.get(f"{running.login}/health", timeout=10)
        return bool(running.prometheus("server:chatsys_requests:rate1m{service='login'} > 0")) and bool(
            running.prometheus("server:chatsys_request_duration_seconds:p99_1m{service='login'}")
        )

    harness.wait_until(rules_answer, 60, "the recording rules to give login's rate and p99", interval=1)


@pytest.mark.local
def test_status_shows_every_process_ready_and_the_last_minute(running):
    full_env = {**os.environ, **running.env}
    shown = subprocess.run(
        [str(ROOT / "scripts/status.sh")], env=full_env, capture_output=True, text=True, timeout=60
    ).stdout
    rows = {line.split()[0]: line.split() for line in shown.splitlines() if line and not line.startswith(" ")}
    for name in [f"chat@{port}" for port in running.chat_ports] + ["ferretdb", "haproxy", "prometheus"]:
        assert rows[name][-1] == "200", shown
    assert "HAProxy's view of each server:" in shown and "Last minute" in shown


@pytest.mark.local
def test_a_service_log_file_is_rotated_and_written_on_after(running):
    server = running.chat_ports[2]
    log = running.var / "log" / f"chat-{server}.log"
    with requests.Session() as session:
        # Unauthenticated reads: logged, cheap; about 300 bytes a line.
        for _ in range(200):
            session.get(f"http://127.0.0.1:{server}/rooms", timeout=10)
    harness.wait_until(lambda: log.with_name(log.name + ".1").exists(), 30, "the log file to be rotated")
    marker = f"after-rotation-{unique_name()}"
    requests.get(f"http://127.0.0.1:{server}/rooms", headers={"X-Request-ID": marker}, timeout=10)
    harness.wait_until(lambda: marker in log.read_text(), 15, "the workers to write to the new file")


@pytest.mark.local
@pytest.mark.chat
def test_haproxy_keeps_the_request_id_of_a_trusted_proxy_only_when_well_formed(running, processes):
    balancer = harness.start_haproxy(
        processes, running.chat_ports, extra_env={"HAPROXY_TRUSTED_PROXIES": "10.9.0.0/16 127.0.0.1"}
    )
    harness.wait_until(
        lambda: list(balancer.server_states().values()).count("UP") == 3, 15, "HAProxy to see the chat servers up"
    )
    kept = requests.get(f"{balancer.url}/rooms", headers={"X-Request-ID": "edge-42.a:b_c"}, timeout=10)
    assert kept.status_code == 401 and kept.headers["X-Request-ID"] == "edge-42.a:b_c"
    assert assert_problem(kept, 401)["request_id"] == "edge-42.a:b_c"
    harness.wait_until(
        lambda: any(line.get("request_id") == "edge-42.a:b_c" for line in running.log_lines("chat-*.log*")),
        15,
        "the kept id in a chat server's log",
    )
    malformed = requests.get(f"{balancer.url}/rooms", headers={"X-Request-ID": "has spaces in it"}, timeout=10)
    assert malformed.headers["X-Request-ID"] not in ("", "has spaces in it")


@pytest.mark.local
@pytest.mark.chat
def test_the_timeline_records_each_chat_server_over_a_run_and_the_report_shows_it(running, tmp_path):
    user = register_and_login(running.login)
    room = unique_name("r")
    assert (
        requests.post(f"{running.entry}/rooms", json={"name": room}, headers=user.auth, timeout=10).status_code == 201
    )
    prometheus = f"http://127.0.0.1:{running.port('PROMETHEUS_PORT')}"

    def reads(count: int) -> None:
        with requests.Session() as session:
            for _ in range(count):  # HAProxy spreads them over the three chat servers
                assert session.get(f"{running.entry}/rooms/{room}/messages", headers=user.auth, timeout=10).ok

    # rate() counts increases between scrapes: each server's series must exist before the run.
    reads(30)
    timeline.wait_scraped(prometheus, time.time())
    started = time.time()
    reads(90)
    ended = time.time()
    columns = [*search.RUNS_COLUMNS]
    row = dict.fromkeys(columns, "")
    row.update(series="servers-3", servers="3", phase="grow", dir="x", status="ok", workload="hot")
    row.update(started=f"{started:.1f}", ended=f"{ended:.1f}")
    with open(tmp_path / "runs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerow(row)
    assert timeline.span(tmp_path) == (round(started, 1), round(ended, 1))

    def recorded() -> bool:
        timeline.wait_scraped(prometheus, ended)
        timeline.record(prometheus, started, ended + 2 * timeline.STEP_S, tmp_path)
        lines = timeline.load(tmp_path)
        served = {line for line, points in lines.get("requests", {}).items() if max(v for _, v in points) > 0}
        cpu = set(lines.get("cpu_cores", {}))
        return served == {f"chat@{port}" for port in running.chat_ports} and "database (FerretDB)" in cpu

    harness.wait_until(recorded, 60, "Prometheus to show every chat server's requests and CPU", interval=1)
    lines = timeline.load(tmp_path)
    assert {"database (FerretDB)", "whole machine", "login + profile"} <= set(lines["cpu_cores"])
    assert set(lines["p99_ms"]) >= {f"chat@{port}" for port in running.chat_ports}
    assert all(value >= 0 for points in lines["p99_ms"].values() for _, value in points)
    assert timeline.plot(tmp_path) and (tmp_path / timeline.PNG).stat().st_size > 10_000
    assert "## Over time" in "\n".join(timeline.section(tmp_path))
