"""Side-by-side service benchmarks with wrk: ratios measured in one run, written to a report.

Starts its own FerretDB, services and HAProxy on free ports (tests/harness.py), measures
pairs of endpoints alternately (A, B, A, B ...) so machine noise hits both alike, and
reports requests per second, their ratios and each process's resident memory.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import harness  # noqa: E402


def wrk(url: str, seconds: int, connections: int, headers: dict[str, str], lua: str | None = None) -> float:
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    if lua:
        argv += ["-s", lua]
    output = subprocess.run(argv + [url], capture_output=True, text=True, timeout=seconds + 30).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if not match:
        raise RuntimeError(f"wrk printed no rate:\n{output}")
    if errors and int(errors.group(1)):
        raise RuntimeError(f"{url}: {errors.group(1)} non-2xx answers:\n{output}")
    return float(match.group(1))


def side_by_side(pairs: dict[str, tuple], rounds: int, seconds: int, connections: int) -> dict[str, float]:
    """Median rate per name; each round measures every name once, in turn."""
    rates: dict[str, list[float]] = {name: [] for name in pairs}
    for _ in range(rounds):
        for name, (url, headers, lua) in pairs.items():
            rates[name].append(wrk(url, seconds, connections, headers, lua))
    return {name: statistics.median(values) for name, values in rates.items()}


def rss_mb(pid: int) -> float:
    """Resident memory of a gunicorn master and its workers, in MB (largest process)."""
    sizes = []
    for candidate in [pid] + children(pid):
        try:
            for line in Path(f"/proc/{candidate}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]) / 1024)
        except OSError:
            pass
    return max(sizes) if sizes else 0.0


def children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per comparison")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (scripts/setup.sh installs it)", file=sys.stderr)
        return 2
    out = args.out or ROOT / "results" / f"bench-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    out.mkdir(parents=True, exist_ok=True)
    group = harness.ProcessGroup(prefix="chatsys-bench-")
    try:
        return run(args, group, out)
    finally:
        group.close()


def run(args, group, out: Path) -> int:
    database = harness.start_ferretdb(group)
    base = {"MONGO_URI": database.uri}
    login = harness.start_service(group, "login", base)
    profile = harness.start_service(group, "profile", {**base, "LOGIN_URL": login.url})
    chat = harness.start_service(group, "chat", {**base, "LOGIN_URL": login.url})
    chat_uncached = harness.start_service(group, "chat", {**base, "LOGIN_URL": login.url, "TOKEN_CACHE": "off"})
    balancer = harness.start_haproxy(group, [chat.port, harness.free_port(), harness.free_port()])
    harness.wait_until(lambda: balancer.server_states().get("chat1") == "UP", 15, "HAProxy to see chat1")
    for server in ("chat2", "chat3"):
        balancer.command(f"disable server chat_servers/{server}")

    user = f"bench{int(time.time())}"
    requests.post(f"{login.url}/users", json={"username": user, "password": "benchmark-pass"}, timeout=10)
    token = requests.post(f"{login.url}/login", json={"username": user, "password": "benchmark-pass"}, timeout=10).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    room = f"bench-{int(time.time())}"
    requests.post(f"{chat.url}/rooms", json={"name": room}, headers=auth, timeout=10)
    for number in range(50):
        requests.post(f"{chat.url}/rooms/{room}/messages", json={"text": f"warm-up {number}"}, headers=auth, timeout=10)
    newest = f"/rooms/{room}/messages?limit=20"
    post_script = Path(tempfile.mkstemp(suffix=".lua", dir=group.dir)[1])
    post_script.write_text('wrk.method = "POST"\nwrk.body = \'{"text": "benchmark message of some length"}\'\n'
                           'wrk.headers["Content-Type"] = "application/json"\n')

    requests.put(f"{profile.url}/profiles/{user}", json={"bio": "benchmark"}, headers=auth, timeout=10)
    everyday = [(login, "/validate"), (profile, f"/profiles/{user}"), (chat, newest), (chat_uncached, newest)]
    for server, path in everyday:
        session = requests.Session()
        for _ in range(1000):
            session.get(f"{server.url}{path}", headers=auth, timeout=10)
    memory = {f"{name}@{server.port}": rss_mb(server.process.popen.pid)
              for name, server in (("login", login), ("profile", profile), ("chat", chat),
                                   ("chat-uncached", chat_uncached))}

    common = dict(rounds=args.rounds, seconds=args.seconds, connections=args.connections)
    login_rates = side_by_side({
        "login /health": (f"{login.url}/health", {}, None),
        "login /validate": (f"{login.url}/validate", auth, None),
    }, **common)
    chat_rates = side_by_side({
        "chat /health": (f"{chat.url}/health", {}, None),
        "chat GET messages": (f"{chat.url}{newest}", auth, None),
        "chat GET messages, token cache off": (f"{chat_uncached.url}{newest}", auth, None),
    }, **common)
    post_rates = side_by_side({
        "chat /health (with POST)": (f"{chat.url}/health", {}, None),
        "chat POST message": (f"{chat.url}/rooms/{room}/messages", auth, str(post_script)),
    }, **common)
    proxy_rates = side_by_side({
        "direct /health": (f"{chat.url}/health", {}, None),
        "HAProxy /health": (f"{balancer.url}/health", {}, None),
        "direct GET messages": (f"{chat.url}{newest}", auth, None),
        "HAProxy GET messages": (f"{balancer.url}{newest}", auth, None),
    }, **common)

    ratios = {
        "/validate ÷ /health (login)": login_rates["login /validate"] / login_rates["login /health"],
        "GET messages ÷ /health (chat)": chat_rates["chat GET messages"] / chat_rates["chat /health"],
        "POST message ÷ /health (chat)": post_rates["chat POST message"] / post_rates["chat /health (with POST)"],
        "GET cache on ÷ cache off": chat_rates["chat GET messages"] / chat_rates["chat GET messages, token cache off"],
        "HAProxy ÷ direct, /health": proxy_rates["HAProxy /health"] / proxy_rates["direct /health"],
        "HAProxy ÷ direct, GET messages": proxy_rates["HAProxy GET messages"] / proxy_rates["direct GET messages"],
    }
    rates = {**login_rates, **chat_rates, **post_rates, **proxy_rates}
    report = render(args, rates, ratios, memory)
    (out / "bench.md").write_text(report)
    (out / "bench.json").write_text(json.dumps({"rates": rates, "ratios": ratios, "rss_mb": memory}, indent=2))
    print(report)
    print(f"written to {out}")
    return 0


def render(args, rates, ratios, memory) -> str:
    lines = [f"# Service benchmarks ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
             f"Command: `scripts/bench.sh --seconds {args.seconds} --rounds {args.rounds} --connections {args.connections}`; "
             f"wrk -t2 -c{args.connections}, median of {args.rounds} alternating rounds; "
             f"{__import__('os').cpu_count()} cores, each service 1 gunicorn worker with 8 threads, FerretDB on SQLite.", "",
             "| measurement | requests/s |", "|---|---|"]
    lines += [f"| {name} | {rate:,.0f} |" for name, rate in rates.items()]
    lines += ["", "| ratio (same run) | value |", "|---|---|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in ratios.items()]
    lines += ["", "| process after 1,000 of its everyday requests | resident memory (largest process) |", "|---|---|"]
    lines += [f"| {name} | {size:.0f} MB |" for name, size in memory.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
