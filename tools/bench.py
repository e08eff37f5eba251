"""Side-by-side service benchmarks with wrk: ratios measured in one run, written to a report.

Starts its own services and HAProxy on free ports (tests/lib/harness.py), on its own FerretDB
or on the MongoDB that --mongo-uri names, measures pairs of endpoints alternately (A, B,
A, B ...) so machine noise hits both alike, and reports requests per second, their ratios,
the CPU each request cost the service and the database, and each process's resident memory.

Four modes:
- `ratios` (default): each request against `/health` of the same service, the token cache
  on against off, and HAProxy against direct.
- `data-size`: the same requests against an empty database and against one seeded with a
  long history, many live tokens and many rooms, side by side.
- `post`: a post, with and without an Idempotency-Key (the load plan always sends one),
  against `/health` of the same chat server. With `--profile`, one more keyed run is
  recorded by py-spy (the chat worker, a flame graph) and by FerretDB's own pprof.
- `metrics`: the same requests with metrics on (and served), with `METRICS=off`, and with
  `METRICS=off ACCESS_LOG=off`, side by side: what the metrics and the log lines cost.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pymongo
import requests

from chat_service.store import message_id
from service_kit.token_cache import token_digest
from tests.lib import harness
from tools import profiling
from tools.loadtest.process_tree import cpu_seconds, resident_mib

ROOT = Path(__file__).resolve().parent.parent


PASSWORD = "benchmark-pass"
POST_SCRIPT = (
    'wrk.method = "POST"\nwrk.body = \'{"text": "benchmark message of some length"}\'\n'
    'wrk.headers["Content-Type"] = "application/json"\n'
)
# Every request its own Idempotency-Key: the wrk thread's number, the start time, a count.
KEYED_POST_SCRIPT = POST_SCRIPT + (
    "local threads = 0\n"
    'function setup(thread) threads = threads + 1; thread:set("number", threads) end\n'
    "local sent = 0\n"
    "function request()\n"
    "  sent = sent + 1\n"
    '  wrk.headers["Idempotency-Key"] = "bench-" .. number .. "-" .. os.time() .. "-" .. sent\n'
    "  return wrk.format()\n"
    "end\n"
)


@dataclass
class Target:
    """One measured request: where it goes and whose CPU it costs."""

    url: str
    headers: dict[str, str]
    service_pids: list[int]
    lua: str | None = None


@dataclass
class Measurement:
    rate: float
    service_ms: float  # CPU of the answering service per request
    database_ms: float  # CPU of the database server per request (0 when not local)
    service_ms_rounds: tuple[float, ...] = ()  # each round's, in order (side_by_side)


def wrk(target: Target, seconds: int, connections: int, database_pids: list[int]) -> Measurement:
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in target.headers.items():
        argv += ["-H", f"{name}: {value}"]
    if target.lua:
        argv += ["-s", target.lua]
    service_before, database_before = cpu_seconds(*target.service_pids), cpu_seconds(*database_pids)
    output = subprocess.run(argv + [target.url], capture_output=True, text=True, timeout=seconds + 30).stdout
    service_used = cpu_seconds(*target.service_pids) - service_before
    database_used = cpu_seconds(*database_pids) - database_before
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if not match or not total:
        raise RuntimeError(f"wrk printed no rate:\n{output}")
    if errors and int(errors.group(1)):
        raise RuntimeError(f"{target.url}: {errors.group(1)} non-2xx answers:\n{output}")
    count = max(1, int(total.group(1)))
    return Measurement(float(match.group(1)), service_used / count * 1000, database_used / count * 1000)


def side_by_side(
    pairs: dict[str, Target], rounds: int, seconds: int, connections: int, database_pids: list[int]
) -> dict[str, Measurement]:
    """Median rate and CPU per name; each round measures every name once, in turn."""
    runs: dict[str, list[Measurement]] = {name: [] for name in pairs}
    for _ in range(rounds):
        for name, target in pairs.items():
            runs[name].append(wrk(target, seconds, connections, database_pids))
    return {
        name: Measurement(
            statistics.median(m.rate for m in values),
            statistics.median(m.service_ms for m in values),
            statistics.median(m.database_ms for m in values),
            tuple(m.service_ms for m in values),
        )
        for name, values in runs.items()
    }


def rss_mb(pid: int) -> float:
    """Resident memory of a gunicorn master and its workers, in MB (largest process)."""
    return max(resident_mib(pid).values(), default=0.0)


@dataclass
class Stack:
    """Login and chat services on one database, with a user, a room and its token."""

    database_uri: str
    login: harness.Service
    chat: harness.Service
    auth: dict[str, str]
    user: str
    room: str

    def pids(self, service: harness.Service) -> list[int]:
        return [service.process.pid]

    def newest_seq(self) -> int:
        page = requests.get(f"{self.chat.url}/rooms/{self.room}/messages?limit=1", headers=self.auth, timeout=10)
        return page.json()["next_after"]


def start_stack(group: harness.ProcessGroup, database_uri: str, warm_up_messages: int = 50, **env: str) -> Stack:
    base = {"MONGO_URI": database_uri}
    harness.migrate(database_uri)  # as every deployment does before the services start
    login = harness.start_service(group, "login", base)
    chat = harness.start_service(group, "chat", {**base, "LOGIN_URL": login.url, **env})
    user, room = f"bench{secrets.token_hex(4)}", f"bench-{secrets.token_hex(4)}"
    requests.post(f"{login.url}/users", json={"username": user, "password": PASSWORD}, timeout=10)
    token = requests.post(f"{login.url}/login", json={"username": user, "password": PASSWORD}, timeout=10).json()[
        "token"
    ]
    auth = {"Authorization": f"Bearer {token}"}
    requests.post(f"{chat.url}/rooms", json={"name": room}, headers=auth, timeout=10)
    with requests.Session() as session:
        for number in range(warm_up_messages):
            session.post(
                f"{chat.url}/rooms/{room}/messages", json={"text": f"warm-up {number}"}, headers=auth, timeout=10
            )
    return Stack(database_uri, login, chat, auth, user, room)


def request_targets(stack: Stack, lua: str, prefix: str = "") -> dict[str, dict[str, Target]]:
    """The measured requests of one stack, in groups that are measured side by side; the
    follower's page is 3 messages (after = newest - 3)."""
    chat, login, auth = stack.chat, stack.login, stack.auth
    messages = f"{chat.url}/rooms/{stack.room}/messages"
    follower = f"{messages}?after={stack.newest_seq() - 3}"
    return {
        "login": {f"{prefix}login /validate": Target(f"{login.url}/validate", auth, stack.pids(login))},
        "get": {
            f"{prefix}chat GET newest 50": Target(f"{messages}?limit=50", auth, stack.pids(chat)),
            f"{prefix}chat GET after (3 new)": Target(follower, auth, stack.pids(chat)),
        },
        "post": {f"{prefix}chat POST message": Target(messages, auth, stack.pids(chat), lua)},
    }


def run_ratios(args, group: harness.ProcessGroup, database_uri: str, database_pids: list[int]) -> dict:
    stack = start_stack(group, database_uri)
    uncached = harness.start_service(
        group, "chat", {"MONGO_URI": database_uri, "LOGIN_URL": stack.login.url, "TOKEN_CACHE": "off"}
    )
    balancer = harness.start_haproxy(group, [stack.chat.port, harness.free_port(), harness.free_port()])
    harness.wait_until(lambda: balancer.server_states().get("chat1") == "UP", 15, "HAProxy to see chat1")
    for server in ("chat2", "chat3"):
        balancer.command(f"disable server chat_servers/{server}")
    lua = write_post_script(group)
    targets = request_targets(stack, lua)
    newest = targets["get"]["chat GET newest 50"]
    login_health = Target(f"{stack.login.url}/health", {}, stack.pids(stack.login))
    chat_health = Target(f"{stack.chat.url}/health", {}, stack.pids(stack.chat))

    everyday = [
        (stack.login, "/validate"),
        (stack.chat, f"/rooms/{stack.room}/messages?limit=50"),
        (uncached, f"/rooms/{stack.room}/messages?limit=50"),
    ]
    for service, path in everyday:
        with requests.Session() as session:
            for _ in range(1000):
                session.get(f"{service.url}{path}", headers=stack.auth, timeout=10)
    memory = {
        f"{name}@{server.port}": rss_mb(server.process.pid)
        for name, server in (("login", stack.login), ("chat", stack.chat), ("chat-uncached", uncached))
    }

    common = dict(rounds=args.rounds, seconds=args.seconds, connections=args.connections, database_pids=database_pids)
    results = {}
    results.update(side_by_side({"login /health": login_health, **targets["login"]}, **common))
    results.update(
        side_by_side(
            {
                "chat /health": chat_health,
                **targets["get"],
                "chat GET newest 50, token cache off": Target(
                    newest.url.replace(stack.chat.url, uncached.url), stack.auth, [uncached.process.pid]
                ),
            },
            **common,
        )
    )
    results.update(side_by_side({"chat /health (with POST)": chat_health, **targets["post"]}, **common))
    results.update(
        side_by_side(
            {
                "direct /health": chat_health,
                "HAProxy /health": Target(f"{balancer.url}/health", {}, stack.pids(stack.chat)),
                "direct GET newest 50": newest,
                "HAProxy GET newest 50": Target(
                    newest.url.replace(stack.chat.url, balancer.url), stack.auth, stack.pids(stack.chat)
                ),
            },
            **common,
        )
    )
    rate = {name: measurement.rate for name, measurement in results.items()}
    ratios = {
        "/validate ÷ /health (login)": (rate["login /validate"] / rate["login /health"], 0.6),
        "GET newest 50 ÷ /health (chat)": (rate["chat GET newest 50"] / rate["chat /health"], 0.5),
        "GET after, 3 new ÷ /health (chat)": (rate["chat GET after (3 new)"] / rate["chat /health"], 0.6),
        "POST message ÷ /health (chat)": (rate["chat POST message"] / rate["chat /health (with POST)"], 0.35),
        "GET newest 50, cache on ÷ cache off": (
            rate["chat GET newest 50"] / rate["chat GET newest 50, token cache off"],
            None,
        ),
        "HAProxy ÷ direct, /health": (rate["HAProxy /health"] / rate["direct /health"], 0.9),
        "HAProxy ÷ direct, GET newest 50": (rate["HAProxy GET newest 50"] / rate["direct GET newest 50"], 0.9),
    }
    return {"results": results, "ratios": ratios, "memory": memory}


def run_metrics(args, group: harness.ProcessGroup, database_uri: str, database_pids: list[int]) -> dict:
    """Metrics on (the default, with a listener a scraper reads), off, and off with the
    request log lines off too; each request measured on the three servers in turn."""
    kinds = {
        "metrics on": {"METRICS_PORT": str(harness.free_port())},
        "metrics off": {"METRICS": "off"},
        "metrics and log lines off": {"METRICS": "off", "ACCESS_LOG": "off"},
    }
    stack = start_stack(group, database_uri, 50, **kinds["metrics on"])
    logins = {"metrics on": stack.login}
    chats = {"metrics on": stack.chat}
    for kind, env in list(kinds.items())[1:]:
        logins[kind] = harness.start_service(group, "login", {"MONGO_URI": database_uri, **env})
        chats[kind] = harness.start_service(
            group, "chat", {"MONGO_URI": database_uri, "LOGIN_URL": stack.login.url, **env}
        )
    lua = write_post_script(group)
    messages = f"/rooms/{stack.room}/messages"
    requests_measured = {
        "chat /health": ("chat", "/health", None),
        "chat GET newest 50": ("chat", f"{messages}?limit=50", None),
        "chat POST message": ("chat", messages, lua),
        "login /validate": ("login", "/validate", None),
    }
    for server in [*chats.values(), *logins.values()]:
        with requests.Session() as session:
            for _ in range(500):
                session.get(
                    f"{server.url}/validate" if server.service == "login" else f"{server.url}{messages}",
                    headers=stack.auth,
                    timeout=10,
                )
    common = dict(rounds=args.rounds, seconds=args.seconds, connections=args.connections, database_pids=database_pids)
    results: dict[str, Measurement] = {}
    ratios: dict[str, tuple[float, float | None]] = {}
    spread: dict[str, tuple[float, float]] = {}
    for request, (service, path, script) in requests_measured.items():
        servers = chats if service == "chat" else logins
        measured = side_by_side(
            {
                f"{request}, {kind}": Target(f"{server.url}{path}", stack.auth, stack.pids(server), script)
                for kind, server in servers.items()
            },
            **common,
        )
        results.update(measured)
        on, off = measured[f"{request}, metrics on"], measured[f"{request}, metrics off"]
        quiet = measured[f"{request}, metrics and log lines off"]
        # The ratio round by round (the two measured one after the other), and its median:
        # a machine whose speed drifts over the run moves both of a round alike, where the
        # ratio of the two medians compares rounds far apart (0.85-1.16 per round, median
        # 1.00, and 1.14 as a ratio of medians, for a post on a quiet machine).
        each_round = [a / b for a, b in zip(on.service_ms_rounds, off.service_ms_rounds, strict=True)]
        ratios[f"{request}: service CPU per request, metrics on ÷ off"] = (statistics.median(each_round), 1.05)
        spread[f"{request}: service CPU per request, metrics on ÷ off"] = (min(each_round), max(each_round))
        ratios[f"{request}: service CPU per request, log lines on ÷ off (metrics off)"] = (
            off.service_ms / quiet.service_ms,
            None,
        )
    memory = {f"chat, {kind}": rss_mb(server.process.pid) for kind, server in chats.items()}
    return {"results": results, "ratios": ratios, "memory": memory, "spread": spread}


def seed(database_uri: str, room: str, messages: int, tokens: int, rooms: int) -> dict[str, float]:
    """Write history straight into the database, in batches: messages into `room`, live
    tokens of unknown users, and empty rooms. Returns seconds per part."""
    db: pymongo.database.Database = pymongo.MongoClient(database_uri, tz_aware=True).get_default_database()
    now = datetime.now(UTC)
    batch_size, took = 5000, {}

    def insert(collection, documents) -> None:
        batch = []
        for document in documents:
            batch.append(document)
            if len(batch) == batch_size:
                collection.insert_many(batch, ordered=False)
                batch = []
        if batch:
            collection.insert_many(batch, ordered=False)

    started = time.monotonic()
    # Seeded before any post, so the room's log is empty and its allocator may simply
    # move past the seeded history.
    seeded = db.rooms.find_one({"_id": room})
    assert seeded is not None, f"room {room} is created before it is seeded"
    first = seeded.get("allocated", seeded.get("last_seq", 0)) + 1
    insert(
        db.messages,
        (
            {"_id": message_id(room, seq), "author": "seed", "text": f"seeded message {seq}", "created_at": now}
            for seq in range(first, first + messages)
        ),
    )
    last = first + messages - 1
    db.rooms.update_one({"_id": room}, {"$set": {"allocated": last, "log_base": last + 1, "log": []}})
    took["messages"] = time.monotonic() - started
    started = time.monotonic()
    insert(
        db.tokens,
        (
            {
                "_id": token_digest(secrets.token_urlsafe(32)),
                "username": f"seed{number}",
                "expires_at": now + timedelta(hours=1),
            }
            for number in range(tokens)
        ),
    )
    took["tokens"] = time.monotonic() - started
    started = time.monotonic()
    insert(db.rooms, ({"_id": f"seed-{number}", "created_at": now, "last_seq": 0} for number in range(rooms)))
    took["rooms"] = time.monotonic() - started
    return took


def run_data_size(args, group: harness.ProcessGroup, database_uri: str, database_pids: list[int]) -> dict:
    empty = start_stack(group, with_database_name(database_uri, "chatsys_bench_empty"))
    seeded = start_stack(group, with_database_name(database_uri, "chatsys_bench_seeded"))
    seeding = seed(seeded.database_uri, seeded.room, args.seed_messages, args.seed_tokens, args.seed_rooms)
    print(f"seeded in {seeding}", file=sys.stderr)
    lua = write_post_script(group)
    empty_targets, seeded_targets = request_targets(empty, lua, "empty: "), request_targets(seeded, lua, "seeded: ")
    common = dict(rounds=args.rounds, seconds=args.seconds, connections=args.connections, database_pids=database_pids)
    results = {}
    for part in ("login", "get", "post"):
        results.update(side_by_side({**empty_targets[part], **seeded_targets[part]}, **common))
    ratios = {}
    for name in results:
        if name.startswith("empty: "):
            request = name.removeprefix("empty: ")
            ratios[f"{request}: seeded ÷ empty, CPU per request"] = (
                total_ms(results[f"seeded: {request}"]) / total_ms(results[name]),
                1.2,
            )
    memory = {
        f"{name}@{service.port}": rss_mb(service.process.pid)
        for name, service in (
            ("chat, empty", empty.chat),
            ("chat, seeded", seeded.chat),
            ("login, seeded", seeded.login),
        )
    }
    return {"results": results, "ratios": ratios, "memory": memory, "seeding": seeding}


def total_ms(measurement: Measurement) -> float:
    return measurement.service_ms + measurement.database_ms


def with_database_name(uri: str, name: str) -> str:
    base, _, query = uri.partition("?")
    scheme, _, rest = base.partition("://")
    hosts = rest.split("/", 1)[0]
    return f"{scheme}://{hosts}/{name}" + (f"?{query}" if query else "")


def write_post_script(group: harness.ProcessGroup, script: str = POST_SCRIPT) -> str:
    path = Path(tempfile.mkstemp(suffix=".lua", dir=group.dir)[1])
    path.write_text(script)
    return str(path)


def run_post(args, group: harness.ProcessGroup, database_uri: str, database_pids: list[int]) -> dict:
    """A post against /health of one chat server (one gevent worker, as under a CPU cap),
    with and without an Idempotency-Key, side by side."""
    stack = start_stack(group, database_uri, GUNICORN_WORKERS="1")
    messages = f"{stack.chat.url}/rooms/{stack.room}/messages"
    chat = stack.pids(stack.chat)
    keyed = Target(messages, stack.auth, chat, write_post_script(group, KEYED_POST_SCRIPT))
    pairs = {
        "chat /health": Target(f"{stack.chat.url}/health", {}, chat),
        "chat POST message": Target(messages, stack.auth, chat, write_post_script(group)),
        "chat POST message, Idempotency-Key": keyed,
    }
    common = dict(rounds=args.rounds, seconds=args.seconds, connections=args.connections, database_pids=database_pids)
    results = side_by_side(pairs, **common)
    health = results["chat /health"]
    ratios = {
        f"{name}: chat CPU ÷ /health's": (results[name].service_ms / health.service_ms, 3.0)
        for name in pairs
        if name != "chat /health"
    }
    if args.profile:
        profile(args, keyed, database_pids)
    memory = {f"chat@{stack.chat.port}": rss_mb(stack.chat.process.pid)}
    return {"results": results, "ratios": ratios, "memory": memory}


def profile(args, target: Target, database_pids: list[int]) -> None:
    """One more run of `target` while py-spy samples the chat worker (flame graph, SVG) and
    FerretDB's pprof samples the database (profile and its top functions)."""
    args.profile.mkdir(parents=True, exist_ok=True)
    worker = psutil.Process(target.service_pids[0]).children()[0].pid
    seconds = args.seconds * 2
    spy = profiling.py_spy(worker, seconds, args.profile / "chat-post.svg", rate=200)
    pprof = profiling.ferretdb_cpu_profile(args.ferretdb_debug_port, seconds, args.profile / "ferretdb-post.pprof")
    wrk(target, seconds, args.connections, database_pids)
    spy.wait(timeout=60)
    pprof.wait(timeout=60)
    top = profiling.pprof_top(args.profile / "ferretdb-post.pprof")
    (args.profile / "ferretdb-post-top.txt").write_text(top)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("ratios", "data-size", "post", "metrics"), default="ratios")
    parser.add_argument("--seconds", type=int, default=5, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per comparison")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--mongo-uri", default="", help="a MongoDB to use instead of starting FerretDB")
    parser.add_argument("--seed-messages", type=int, default=1_000_000, help="data-size: messages in the read room")
    parser.add_argument("--seed-tokens", type=int, default=100_000, help="data-size: live tokens")
    parser.add_argument("--seed-rooms", type=int, default=10_000, help="data-size: rooms")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--profile", type=Path, default=None, help="post: write the profiles into this directory")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (scripts/setup.sh installs it)", file=sys.stderr)
        return 2
    out = args.out or ROOT / "results" / f"bench-{args.mode}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    out.mkdir(parents=True, exist_ok=True)
    group = harness.ProcessGroup(prefix="chatsys-bench-")
    try:
        if args.mongo_uri:
            database_uri, database_pids, database_name = args.mongo_uri, [], f"MongoDB at {args.mongo_uri}"
        else:
            args.ferretdb_debug_port = harness.free_port()
            database = harness.start_ferretdb(group, debug_port=args.ferretdb_debug_port)
            database_uri, database_pids = database.uri, [database.process.pid]
            database_name = "FerretDB on SQLite, patched (patches/ferretdb.patch)"
        run = {"ratios": run_ratios, "data-size": run_data_size, "post": run_post, "metrics": run_metrics}[args.mode]
        outcome = run(args, group, database_uri, database_pids)
    finally:
        group.close()
    report = render(args, database_name, outcome)
    (out / "bench.md").write_text(report)
    (out / "bench.json").write_text(
        json.dumps(
            {
                "command": command_line(args),
                "database": database_name,
                "results": {
                    name: {"rate": m.rate, "service_ms": m.service_ms, "database_ms": m.database_ms}
                    for name, m in outcome["results"].items()
                },
                "ratios": {name: value for name, (value, _) in outcome["ratios"].items()},
                "ratio_spread": outcome.get("spread"),
                "service_ms_rounds": {name: m.service_ms_rounds for name, m in outcome["results"].items()},
                "rss_mb": outcome["memory"],
                "seeding_seconds": outcome.get("seeding"),
            },
            indent=2,
        )
    )
    print(report)
    print(f"written to {out}")
    return 0


def command_line(args) -> str:
    text = f"scripts/bench.sh --mode {args.mode} --seconds {args.seconds} --rounds {args.rounds}"
    if args.profile:
        text += f" --profile {args.profile}"
    if args.mode == "data-size":
        text += f" --seed-messages {args.seed_messages} --seed-tokens {args.seed_tokens} --seed-rooms {args.seed_rooms}"
    return text


def render(args, database_name: str, outcome: dict) -> str:
    lines = [
        f"# Service benchmarks, {args.mode} ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `{command_line(args)}`; wrk -t2 -c{args.connections}, median of {args.rounds} alternating "
        f"rounds of {args.seconds} s; {os.cpu_count()} cores; each service 1 gunicorn worker (login: gthread, 8 threads; chat: gevent); "
        f"database: {database_name}. CPU is user + system time of the answering service (all its processes) "
        "and of the database server over the run, divided by the requests wrk completed.",
        "",
    ]
    if outcome.get("seeding"):
        seeding = outcome["seeding"]
        lines += [
            f"Seeded database: {args.seed_messages:,} messages in the room read and posted to "
            f"({seeding['messages']:.0f} s), {args.seed_tokens:,} live tokens ({seeding['tokens']:.0f} s), "
            f"{args.seed_rooms:,} more rooms ({seeding['rooms']:.0f} s), written straight into the database.",
            "",
        ]
    lines += ["| measurement | requests/s | service CPU ms/req | database CPU ms/req |", "|---|---|---|---|"]
    lines += [
        f"| {name} | {m.rate:,.0f} | {m.service_ms:.2f} | {m.database_ms:.2f} |"
        for name, m in outcome["results"].items()
    ]
    spread = outcome.get("spread") or {}
    lines += [
        "",
        "| ratio (same run; with a range: the median of the rounds' ratios) | value | goal | range over the rounds |",
        "|---|---|---|---|",
    ]
    for name, (value, goal) in outcome["ratios"].items():
        at_most = "seeded ÷ empty" in name or "CPU ÷" in name or "on ÷ off" in name
        bound = "" if goal is None else (f"≤ {goal}" if at_most else f"≥ {goal}")
        low_high = f"{spread[name][0]:.2f} – {spread[name][1]:.2f}" if name in spread else ""
        lines.append(f"| {name} | {value:.2f} | {bound} | {low_high} |")
    lines += ["", "| process | resident memory (largest process) |", "|---|---|"]
    lines += [f"| {name} | {size:.0f} MB |" for name, size in outcome["memory"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
