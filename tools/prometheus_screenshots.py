"""Screenshots of Prometheus's graph page for docs/observability.md: the stack of `make run`
(scripts/start.sh, on ports of its own, then scripts/stop.sh) under a light, steady load,
each query of the document drawn by Prometheus itself, in Debian's headless Chromium.

    .venv/bin/python -m tools.prometheus_screenshots [--out docs/observability] [--seconds 150]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import requests
from playwright.sync_api import sync_playwright

from tests.lib import harness
from tests.lib.web_stack import launch_chromium

ROOT = harness.ROOT
# The queries of docs/observability.md, by the file name of their picture.
QUERIES = {
    "requests-per-server": "server:chatsys_requests:rate1m",
    "p99-per-server": "server:chatsys_request_duration_seconds:p99_1m",
    "errors-per-server": "server:chatsys_errors:ratio_rate1m",
    "database-p99": (
        "histogram_quantile(0.99, sum by (operation, collection, le) "
        '(rate(chatsys_db_operation_duration_seconds_bucket{service="chat"}[1m])))'
    ),
    "cpu-per-server": "server:chatsys_cpu:rate1m",
    "haproxy-per-server": 'haproxy_server:responses:rate1m{proxy="chat_servers"}',
    "long-polls": "sum by (server) (chatsys_long_polls_waiting)",
    "database-cpu": 'rate(process_cpu_seconds_total{job="ferretdb"}[1m])',
}


def stack_env(var: Path) -> dict[str, str]:
    base = harness.free_port_block(40)
    names = [
        "HAPROXY_PORT",
        "LOGIN_PORT",
        "PROFILE_PORT",
        "HAPROXY_STATS_PORT",
        "LOGIN_SERVICE_PORT",
        "PROFILE_SERVICE_PORT",
        "MONGO_PORT",
        "FERRETDB_METRICS_PORT",
        "NODE_EXPORTER_PORT",
        "PROMETHEUS_PORT",
    ]
    env = {name: str(base + index) for index, name in enumerate(names)}
    env.update(
        CHATSYS_VAR=str(var),
        CHAT_PORTS=" ".join(str(base + 10 + index) for index in range(3)),
        METRICS_PORT_OFFSET="20",  # the services' metrics at base + 24 .. 32, clear of the ports above
        HAPROXY_PEER_PORT=str(base + 35),
        **harness.UNLIMITED_EDGE,
    )
    return env


def load(entry: str, login: str, stop: threading.Event) -> list[threading.Thread]:
    """Four followers and four writers in one room, about 40 requests a second in all,
    until `stop` is set."""
    username = f"shots{random.randrange(10**8)}"
    requests.post(f"{login}/users", json={"username": username, "password": "correct horse 1"}, timeout=10)
    token = requests.post(f"{login}/login", json={"username": username, "password": "correct horse 1"}, timeout=10)
    auth = {"Authorization": f"Bearer {token.json()['token']}"}
    requests.post(f"{entry}/rooms", json={"name": "lobby"}, headers=auth, timeout=10)

    def writer() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                session.post(f"{entry}/rooms/lobby/messages", json={"text": "hello"}, headers=auth, timeout=10)
                session.get(f"{entry}/rooms/lobby/messages?limit=50", headers=auth, timeout=10)
                time.sleep(0.2)

    def follower() -> None:
        after = 0
        with requests.Session() as session:
            while not stop.is_set():
                page = session.get(f"{entry}/rooms/lobby/messages?after={after}&wait=5", headers=auth, timeout=15)
                after = page.json().get("next_after", after)

    threads = [threading.Thread(target=writer, daemon=True) for _ in range(4)] + [
        threading.Thread(target=follower, daemon=True) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    return threads


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.prometheus_screenshots", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "observability")
    parser.add_argument("--seconds", type=float, default=150, help="how long the load runs before the pictures")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chatsys-prometheus-shots-") as var:
        env = stack_env(Path(var))
        full_env = {**os.environ, **env}
        full_env.pop("MONGO_URI", None)
        stop = threading.Event()
        try:
            subprocess.run([str(ROOT / "scripts/start.sh")], env=full_env, check=True, timeout=180)
            entry, login = f"http://127.0.0.1:{env['HAPROXY_PORT']}", f"http://127.0.0.1:{env['LOGIN_PORT']}"
            threads = load(entry, login, stop)
            time.sleep(args.seconds)  # the pictures are taken under the load
            prometheus = f"http://127.0.0.1:{env['PROMETHEUS_PORT']}"
            with sync_playwright() as playwright:
                browser = launch_chromium(playwright)
                page = browser.new_page(viewport={"width": 1200, "height": 760})
                for name, query in QUERIES.items():
                    parameters = {"g0.expr": query, "g0.tab": "0", "g0.range_input": "3m", "g0.stacked": "0"}
                    page.goto(f"{prometheus}/graph?{urllib.parse.urlencode(parameters)}")
                    page.wait_for_selector("canvas, .graph-chart, svg", timeout=30000)
                    page.wait_for_timeout(1500)  # the chart is drawn after its data arrives
                    page.screenshot(path=args.out / f"{name}.png", full_page=True)
                    print(f"wrote {args.out / name}.png")
                browser.close()
            stop.set()
            for thread in threads:
                thread.join(30)
        finally:
            stop.set()
            subprocess.run([str(ROOT / "scripts/stop.sh")], env=full_env, timeout=120)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
