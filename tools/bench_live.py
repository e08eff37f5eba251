"""Live delivery benchmark: N followers of one room through HAProxy over three chat servers
while posts arrive at a fixed rate, long polls (`wait`) against 1-second polls, side by
side in one run; then the posting rate with and without N idle followers.

Reports, per mode and N: delivery latency from a post's 201 to each follower holding it
(p50, p99, max), missed and repeated messages, requests per second on the tier (HAProxy's
count), database commands per second (FerretDB's own counters) and the CPU of every
process. Starts everything it measures on free ports (tests/lib/harness.py).
"""

from gevent import monkey

monkey.patch_all()

import argparse
import http.client
import json
import os
import re
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import gevent
import gevent.pool
import requests

from scripts.lib import haproxy_stats
from tests.lib import harness
from tools.loadtest.process_tree import cpu_seconds
from tools.loadtest.samples import percentile

ROOT = Path(__file__).resolve().parent.parent


PASSWORD = "benchmark-pass"
LONG_POLL_WAIT = 25


@dataclass
class Tier:
    database: harness.Database
    metrics_url: str
    login: harness.Service
    chats: list[harness.Service]
    balancer: harness.LoadBalancer
    auth: dict[str, str]

    def processes(self) -> dict[str, int]:
        named = {
            "ferretdb": self.database.process.pid,
            "haproxy": self.balancer.process.pid,
            "login": self.login.process.pid,
        }
        named.update({f"chat@{chat.port}": chat.process.pid for chat in self.chats})
        named["benchmark client"] = os.getpid()
        return named

    def database_commands(self) -> dict[str, int]:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as answer:
            text = answer.read().decode()
        return {
            command: int(count)
            for command, count in re.findall(
                r'^ferretdb_client_requests_total\{command="([^"]+)",opcode="OP_MSG"\} (\d+)', text, re.M
            )
        }

    def tier_requests(self) -> int:
        return haproxy_stats.frontend_requests(self.balancer.command("show stat"), "entry")


def start_tier(group: harness.ProcessGroup) -> Tier:
    metrics_port = harness.free_port()
    database = harness.start_ferretdb(group, debug_port=metrics_port)
    env = {"MONGO_URI": database.uri}
    login = harness.start_service(group, "login", env)
    chats = [
        harness.start_service(group, "chat", {**env, "LOGIN_URL": login.url, "GUNICORN_WORKERS": "1"}) for _ in range(3)
    ]
    balancer = harness.start_haproxy(group, [chat.port for chat in chats])
    harness.wait_until(lambda: list(balancer.server_states().values()).count("UP") == 3, 20, "three chat servers up")
    user = f"live{int(time.time())}"
    requests.post(f"{login.url}/users", json={"username": user, "password": PASSWORD}, timeout=10)
    token = requests.post(f"{login.url}/login", json={"username": user, "password": PASSWORD}, timeout=10).json()[
        "token"
    ]
    return Tier(
        database,
        f"http://127.0.0.1:{metrics_port}/debug/metrics",
        login,
        chats,
        balancer,
        {"Authorization": f"Bearer {token}"},
    )


def new_room(tier: Tier, label: str) -> str:
    name = f"{label}-{int(time.time() * 1000)}"
    assert (
        requests.post(f"{tier.balancer.url}/rooms", json={"name": name}, headers=tier.auth, timeout=10).status_code
        == 201
    )
    return name


@dataclass
class Run:
    mode: str
    followers: int
    seconds: float = 0.0
    posted: dict[int, float] = field(default_factory=dict)  # seq -> time of its 201
    received: list[dict[int, float]] = field(default_factory=list)  # per follower: seq -> time held
    repeated: int = 0
    failures: int = 0
    tier_requests: int = 0
    database_commands: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    done: bool = False  # posting is over

    def last_seq(self) -> int:
        return max(self.posted, default=0)

    def latencies_ms(self) -> list[float]:
        return [
            (held - self.posted[seq]) * 1000
            for follower in self.received
            for seq, held in follower.items()
            if seq in self.posted
        ]

    def missed(self) -> int:
        return sum(len(set(self.posted) - set(follower)) for follower in self.received)


SEQ = re.compile(rb'"seq":\s*(\d+)')
NEXT_AFTER = re.compile(rb'"next_after":\s*(\d+)')


def follow(tier: Tier, room: str, mode: str, seen: dict[int, float], run: Run) -> None:
    """Follow until posting is over and this follower holds the last message. A plain
    http.client connection and two regular expressions per answer: a thousand of these
    run in the one benchmark process, whose CPU must stay small beside the tier's."""
    connection = http.client.HTTPConnection("127.0.0.1", tier.balancer.port, timeout=LONG_POLL_WAIT + 15)
    headers = {"Authorization": tier.auth["Authorization"]}
    after = 0
    try:
        while not (run.done and after >= run.last_seq()):
            query = f"after={after}&limit=200" + (f"&wait={LONG_POLL_WAIT}" if mode == "long poll" else "")
            try:
                connection.request("GET", f"/rooms/{room}/messages?{query}", headers=headers)
                answer = connection.getresponse()
                body = answer.read()
                status = answer.status
            except (OSError, http.client.HTTPException):
                connection.close()
                status, body = 0, b""
            next_after = NEXT_AFTER.search(body) if status == 200 else None
            if next_after is None:
                run.failures += 1
                gevent.sleep(0.5)
                continue
            now = time.monotonic()
            for seq in map(int, SEQ.findall(body)):
                if seq in seen:
                    run.repeated += 1
                seen[seq] = now
            after = int(next_after.group(1))
            if mode == "1-s polls" and not (run.done and after >= run.last_seq()):
                gevent.sleep(1.0)
    finally:
        connection.close()


def measure(tier: Tier, mode: str, followers: int, post_rate: float, seconds: float) -> Run:
    room = new_room(tier, "live")
    run = Run(mode, followers)
    run.received = [{} for _ in range(followers)]
    pool = gevent.pool.Pool(followers)
    for number in range(followers):
        pool.spawn(follow, tier, room, mode, run.received[number], run)
    gevent.sleep(3)  # every follower has made its first request
    cpu_before = {name: cpu_seconds(pid) for name, pid in tier.processes().items()}
    commands_before, requests_before, started = tier.database_commands(), tier.tier_requests(), time.monotonic()
    with requests.Session() as poster:
        for number in range(int(seconds * post_rate)):
            gevent.sleep(max(0.0, started + number / post_rate - time.monotonic()))
            answer = poster.post(
                f"{tier.balancer.url}/rooms/{room}/messages",
                json={"text": f"live {number}"},
                headers=tier.auth,
                timeout=10,
            )
            if answer.status_code == 201:
                run.posted[answer.json()["seq"]] = time.monotonic()
    gevent.sleep(max(0.0, started + seconds - time.monotonic()))
    run.done = True
    run.seconds = time.monotonic() - started
    commands_after, requests_after = tier.database_commands(), tier.tier_requests()
    run.cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in tier.processes().items()}
    run.database_commands = {
        command: count - commands_before.get(command, 0) for command, count in commands_after.items()
    }
    run.tier_requests = requests_after - requests_before
    if not pool.join(timeout=LONG_POLL_WAIT + 30):
        pool.kill()
    return run


def posting_rate(tier: Tier, idle_followers: int, seconds: float) -> float:
    """Posts per second from 8 concurrent posters to one room while `idle_followers` long
    polls wait on another room."""
    idle_room, room = new_room(tier, "idle"), new_room(tier, "posts")
    pool = gevent.pool.Pool(idle_followers + 8)
    url = f"{tier.balancer.url}/rooms/{idle_room}/messages"

    def idle() -> None:
        with requests.Session() as session:
            try:
                session.get(
                    url, params={"after": 0, "wait": LONG_POLL_WAIT}, headers=tier.auth, timeout=LONG_POLL_WAIT + 15
                )
            except requests.RequestException:
                pass

    for _ in range(idle_followers):
        pool.spawn(idle)
    gevent.sleep(3 if idle_followers else 0)
    count, deadline = [0], time.monotonic() + seconds

    def poster() -> None:
        with requests.Session() as session:
            while time.monotonic() < deadline:
                if (
                    session.post(
                        f"{tier.balancer.url}/rooms/{room}/messages", json={"text": "x"}, headers=tier.auth, timeout=10
                    ).status_code
                    == 201
                ):
                    count[0] += 1

    posters = [pool.spawn(poster) for _ in range(8)]
    gevent.joinall(posters)
    pool.kill()
    return count[0] / seconds


def render(args, runs: list[Run], rates: dict[int, float]) -> str:
    lines = [
        f"# Live delivery benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `scripts/bench_live.sh --followers {' '.join(map(str, args.followers))} --seconds {args.seconds:g} "
        f"--post-rate {args.post_rate:g}`; {os.cpu_count()} cores; one room; 3 chat servers (gevent, 1 worker each) "
        f"behind HAProxy, FerretDB on SQLite (patched); long polls with wait={LONG_POLL_WAIT}, or a poll every "
        "second; posts at a fixed rate through HAProxy. Latency: from the post's 201 to the follower holding the "
        "message, on one clock. Database: FerretDB's own command counters.",
        "",
        "| mode | followers | posts | p50 ms | p99 ms | max ms | missed | repeated | failed requests | tier req/s | "
        "database commands/s | of them find/s | CPU cores (chat servers / haproxy / ferretdb / client) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        latencies = run.latencies_ms()
        chat_cpu = sum(value for name, value in run.cpu.items() if name.startswith("chat@")) / run.seconds
        commands = sum(run.database_commands.values()) / run.seconds
        finds = run.database_commands.get("find", 0) / run.seconds
        lines.append(
            f"| {run.mode} | {run.followers} | {len(run.posted)} | {percentile(latencies, 50):.0f} | "
            f"{percentile(latencies, 99):.0f} | {max(latencies, default=float('nan')):.0f} | {run.missed()} | "
            f"{run.repeated} | {run.failures} | {run.tier_requests / run.seconds:.0f} | {commands:.0f} | {finds:.0f} | "
            f"{chat_cpu:.2f} / {run.cpu['haproxy'] / run.seconds:.2f} / {run.cpu['ferretdb'] / run.seconds:.2f} / "
            f"{run.cpu['benchmark client'] / run.seconds:.2f} |"
        )
    if rates:
        base = rates[0]
        lines += [
            "",
            "Posting rate, 8 posters on one room, while idle followers long-poll another room "
            f"({args.rate_seconds:g} s each):",
            "",
            "| idle followers | posts/s | ÷ without |",
            "|---|---|---|",
        ]
        lines += [f"| {followers} | {rate:.0f} | {rate / base:.2f} |" for followers, rate in rates.items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench_live", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--followers", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--seconds", type=float, default=20, help="posting time of each run")
    parser.add_argument("--post-rate", type=float, default=1.0, help="posts per second during a run")
    parser.add_argument("--rate-seconds", type=float, default=10, help="length of each posting-rate measurement")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or ROOT / "results" / f"live-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    out.mkdir(parents=True, exist_ok=True)
    group = harness.ProcessGroup(prefix="chatsys-live-")
    try:
        tier = start_tier(group)
        runs = []
        for followers in args.followers:
            for mode in ("long poll", "1-s polls"):
                print(f"{mode}, {followers} followers ...", file=sys.stderr)
                runs.append(measure(tier, mode, followers, args.post_rate, args.seconds))
        rates = {}
        for followers in (0, max(args.followers)):
            print(f"posting rate with {followers} idle followers ...", file=sys.stderr)
            rates[followers] = posting_rate(tier, followers, args.rate_seconds)
    finally:
        group.close()
    report = render(args, runs, rates)
    (out / "report.md").write_text(report)
    (out / "report.json").write_text(
        json.dumps(
            {
                "runs": [
                    {
                        "mode": r.mode,
                        "followers": r.followers,
                        "seconds": r.seconds,
                        "posted": len(r.posted),
                        "latency_ms": {
                            "p50": percentile(r.latencies_ms(), 50),
                            "p99": percentile(r.latencies_ms(), 99),
                            "max": max(r.latencies_ms(), default=None),
                        },
                        "missed": r.missed(),
                        "repeated": r.repeated,
                        "failures": r.failures,
                        "tier_requests": r.tier_requests,
                        "database_commands": r.database_commands,
                        "cpu_seconds": r.cpu,
                    }
                    for r in runs
                ],
                "posting_rate": rates,
            },
            indent=2,
        )
    )
    print(report)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
