"""Soak benchmark: a constant-rate mix of posts and reads through HAProxy for minutes, then
the books: error rate, lost or duplicated messages, latency, and each process's memory.

Starts its own FerretDB, login, three chat servers and HAProxy on free ports
(tests/lib/harness.py). Requests are started on a fixed schedule (open loop): a slow answer
does not slow the offered load, and latency is counted from the scheduled start. Posts
carry an Idempotency-Key; a failed post is retried later with the same key, as a careful
client would. At the end every room is read back and compared with what was acknowledged.
This is a benchmark, not a test: it prints figures and writes results/soak-<time>/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import psutil
import requests

from tests.lib import harness
from tools.loadtest.process_tree import resident_mib
from tools.loadtest.samples import percentile

ROOT = Path(__file__).resolve().parent.parent


POST_SHARE, LIST_SHARE = 0.25, 0.05  # the rest are reads of new messages
RETRY_DEADLINE = 90.0  # seconds to get every pending post acknowledged at the end


# --- memory ---------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.Error:
        return []


def memory_snapshot(processes: dict[str, int]) -> dict[str, dict]:
    """Per named process: its own resident memory and each descendant's (gunicorn workers)."""
    snapshot = {}
    for name, pid in processes.items():
        children_mib = resident_mib(pid)
        own = children_mib.pop(pid, 0.0)
        snapshot[name] = {
            "pid": pid,
            "rss_mib": own,
            "children": children_mib,
            "total_mib": own + sum(children_mib.values()),
        }
    return snapshot


# --- the load ---------------------------------------------------------------------------------


class Soak:
    def __init__(self, url: str, users: list[dict], rooms: list[str], rate: float, seconds: float, clients: int):
        self.url, self.users, self.rooms = url, users, rooms
        self.rate, self.seconds, self.clients = rate, seconds, clients
        self.lock = threading.Lock()
        self.next_slot = 0
        self.started = 0.0
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.outcomes: dict[str, Counter] = defaultdict(Counter)
        self.late_starts = 0  # slots begun more than a second after their time
        self.acknowledged: dict[str, dict] = {}  # Idempotency-Key -> message
        self.posted: dict[str, tuple[str, str]] = {}  # Idempotency-Key -> (room, text)
        self.retried_keys: set[str] = set()
        self.follow_after: dict[tuple[int, str], int] = {}

    def _take_slot(self) -> float | None:
        with self.lock:
            slot = self.next_slot
            self.next_slot += 1
        due = self.started + slot / self.rate
        if due - self.started >= self.seconds:
            return None
        return due

    def _record(self, kind: str, outcome, latency: float) -> None:
        with self.lock:
            self.outcomes[kind][outcome] += 1
            self.latencies[kind].append(latency)

    def _call(self, session, kind: str, due: float, method: str, path: str, **kwargs):
        try:
            response = session.request(method, self.url + path, timeout=30, **kwargs)
            outcome = response.status_code
        except requests.RequestException as error:
            response, outcome = None, type(error).__name__
        self._record(kind, outcome, time.monotonic() - due)
        return response

    def _post(self, session, client: int, user: dict, due: float, pending: list) -> None:
        if pending:  # a failed post goes again first, with its own key
            key, room, text = pending.pop(0)
            with self.lock:
                self.retried_keys.add(key)
        else:
            key, room = uuid.uuid4().hex, random.choice(self.rooms)
            text = f"c{client}-{key[:12]}"
            with self.lock:
                self.posted[key] = (room, text)
        response = self._call(
            session,
            "post",
            due,
            "POST",
            f"/rooms/{room}/messages",
            json={"text": text},
            headers={**user["auth"], "Idempotency-Key": key},
        )
        if response is not None and response.status_code in (200, 201):
            with self.lock:
                self.acknowledged.setdefault(key, response.json())
        else:
            pending.append((key, room, text))

    def _read(self, session, client: int, user: dict, due: float) -> None:
        room = random.choice(self.rooms)
        after = self.follow_after.get((client, room), 0)
        response = self._call(
            session,
            "read",
            due,
            "GET",
            f"/rooms/{room}/messages",
            params={"after": after, "limit": 100},
            headers=user["auth"],
        )
        if response is not None and response.status_code == 200:
            self.follow_after[(client, room)] = response.json()["next_after"]

    def _client(self, client: int, pending_out: list) -> None:
        session, user = requests.Session(), self.users[client % len(self.users)]
        pending: list = []
        chooser = random.Random(client)
        while (due := self._take_slot()) is not None:
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1.0:
                with self.lock:
                    self.late_starts += 1
            draw = chooser.random()
            if draw < POST_SHARE:
                self._post(session, client, user, due, pending)
            elif draw < POST_SHARE + LIST_SHARE:
                self._call(session, "list", due, "GET", "/rooms", headers=user["auth"])
            else:
                self._read(session, client, user, due)
        pending_out.extend((client, *item) for item in pending)

    def run(self) -> list:
        self.started = time.monotonic() + 0.5
        pending: list = []
        threads = [threading.Thread(target=self._client, args=(n, pending), daemon=True) for n in range(self.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self.seconds + 120)
        return pending

    def settle(self, pending: list) -> int:
        """Retry every post still unacknowledged with its key; the count left over."""
        deadline = time.monotonic() + RETRY_DEADLINE
        session = requests.Session()
        left = list(pending)
        while left and time.monotonic() < deadline:
            client, key, room, text = left.pop(0)
            user = self.users[client % len(self.users)]
            try:
                response = session.post(
                    f"{self.url}/rooms/{room}/messages",
                    json={"text": text},
                    headers={**user["auth"], "Idempotency-Key": key},
                    timeout=30,
                )
            except requests.RequestException:
                response = None
            self.retried_keys.add(key)
            if response is not None and response.status_code in (200, 201):
                self.acknowledged.setdefault(key, response.json())
            else:
                left.append((client, key, room, text))
                time.sleep(0.5)
        return len(left)


def read_room(url: str, auth: dict, room: str) -> list[dict]:
    messages: list[dict] = []
    after = 0
    for _ in range(100000):
        page = requests.get(
            f"{url}/rooms/{room}/messages", params={"after": after, "limit": 200}, headers=auth, timeout=60
        ).json()
        if not page["messages"]:
            return messages
        messages += page["messages"]
        after = page["next_after"]
    raise RuntimeError(f"room {room} never ended")


def audit(soak: Soak, url: str, auth: dict) -> dict:
    """Compare what is stored with what was acknowledged."""
    stored_by_room = {room: read_room(url, auth, room) for room in soak.rooms}
    texts = Counter(message["text"] for messages in stored_by_room.values() for message in messages)
    acknowledged_texts = {message["text"] for message in soak.acknowledged.values()}
    posted_texts = {text for _, text in soak.posted.values()}
    gaps = [
        room
        for room, messages in stored_by_room.items()
        if [m["seq"] for m in messages] != list(range(1, len(messages) + 1))
    ]
    stored_copy = {(room, m["seq"]): m for room, messages in stored_by_room.items() for m in messages}
    mismatched = [
        key
        for key, message in soak.acknowledged.items()
        if stored_copy.get((message["room"], message["seq"])) != message
    ]
    return {
        "posted": len(soak.posted),
        "acknowledged": len(soak.acknowledged),
        "stored": sum(texts.values()),
        "lost": len(acknowledged_texts - set(texts)),
        "duplicated": sum(count - 1 for count in texts.values() if count > 1),
        "stored_never_posted": len(set(texts) - posted_texts),
        "rooms_with_seq_gaps": gaps,
        "acknowledged_differs_from_stored": len(mismatched),
        "posts_retried_with_same_key": len(soak.retried_keys),
    }


# --- report -------------------------------------------------------------------------------------


def render(args, rate, soak: Soak, books: dict, memory: list[tuple[str, dict]], worker_pids, elapsed, left) -> str:
    total = sum(sum(counter.values()) for counter in soak.outcomes.values())
    errors = sum(
        count for counter in soak.outcomes.values() for outcome, count in counter.items() if outcome not in (200, 201)
    )
    lines = [
        f"# Soak ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `scripts/soak.sh {' '.join(sys.argv[1:])}`",
        "",
        f"{rate:.1f} requests/s offered for {args.minutes:g} min ({elapsed:.0f} s measured) through HAProxy to "
        f"3 chat servers ({args.workers} gunicorn workers × {args.threads} threads each), login, FerretDB on "
        f"SQLite; {args.clients} client threads, {len(soak.users)} users, {len(soak.rooms)} rooms; "
        f"{int(POST_SHARE * 100)} % posts with Idempotency-Key, {int(LIST_SHARE * 100)} % room lists, the rest "
        f"reads with after=next_after. {os.cpu_count()} cores shared with whatever else runs; load average at "
        f"the end {os.getloadavg()[0]:.1f}.",
        "",
        "## Answers",
        "",
        f"{total:,} requests, {errors:,} not 2xx: error rate {errors / max(1, total) * 100:.3f} %; "
        f"{soak.late_starts} started over 1 s late (client side could not keep the schedule).",
        "",
        "| kind | requests | answers | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in ("post", "read", "list"):
        values = soak.latencies.get(kind, [])
        answers = ", ".join(f"{outcome}: {count:,}" for outcome, count in sorted(soak.outcomes[kind].items(), key=str))
        lines.append(
            f"| {kind} | {len(values):,} | {answers} | {percentile(values, 50) * 1000:.0f} | "
            f"{percentile(values, 95) * 1000:.0f} | {percentile(values, 99) * 1000:.0f} | "
            f"{max(values, default=0) * 1000:.0f} |"
        )
    lines += ["", "## Messages (read back at the end)", "", "| measure | count |", "|---|---|"]
    lines += [
        f"| {name.replace('_', ' ')} | {value if not isinstance(value, list) else len(value)} |"
        for name, value in books.items()
    ]
    lines += [f"| posts still unacknowledged after {RETRY_DEADLINE:.0f} s of retries | {left} |"]
    lines += [
        "",
        "## Resident memory (MiB)",
        "",
        "| process | " + " | ".join(label for label, _ in memory) + " |",
        "|---|" + "---|" * len(memory),
    ]
    for name in memory[0][1]:
        cells = []
        for _, snapshot in memory:
            entry = snapshot[name]
            parts = [f"{entry['rss_mib']:.0f}"] + [f"{size:.0f}" for size in entry["children"].values()]
            cells.append(
                f"{entry['total_mib']:.0f} ({' + '.join(parts)})" if entry["children"] else f"{entry['total_mib']:.0f}"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Gunicorn rows: total (master + each worker). "
        + (
            "Worker processes were the same at the end as at the start (none restarted)."
            if worker_pids[0] == worker_pids[1]
            else f"Worker processes changed during the run: {worker_pids[0]} -> {worker_pids[1]}."
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, help="requests per second offered")
    parser.add_argument("--peak", type=float, help="a measured peak in requests/s; the rate is then 70 %% of it")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=16, help="client threads sharing the schedule")
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per service")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if (args.rate is None) == (args.peak is None):
        parser.error("give exactly one of --rate or --peak")
    rate = args.rate if args.rate is not None else 0.7 * args.peak
    if rate <= 0 or args.minutes <= 0:
        parser.error("the rate and the minutes must be positive")
    out = args.out or ROOT / "results" / f"soak-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    out.mkdir(parents=True, exist_ok=True)
    group = harness.ProcessGroup(prefix="chatsys-soak-")
    try:
        return run(args, rate, group, out)
    finally:
        group.close()


def run(args, rate: float, group, out: Path) -> int:
    database = harness.start_ferretdb(group)
    base = {"MONGO_URI": database.uri, "GUNICORN_WORKERS": str(args.workers), "GUNICORN_THREADS": str(args.threads)}
    login = harness.start_service(group, "login", base)
    chats = [harness.start_service(group, "chat", {**base, "LOGIN_URL": login.url}) for _ in range(3)]
    balancer = harness.start_haproxy(group, [chat.port for chat in chats])
    harness.wait_until(lambda: list(balancer.server_states().values()).count("UP") == 3, 30, "three chat servers up")

    users: list[dict] = []
    for _ in range(args.users):
        name, password = f"soak{uuid.uuid4().hex[:10]}", "soak-password"
        requests.post(
            f"{login.url}/users", json={"username": name, "password": password}, timeout=30
        ).raise_for_status()
        token = requests.post(f"{login.url}/login", json={"username": name, "password": password}, timeout=30).json()[
            "token"
        ]
        users.append({"username": name, "auth": {"Authorization": f"Bearer {token}"}})
    rooms = [f"soak-{uuid.uuid4().hex[:8]}" for _ in range(args.rooms)]
    for room in rooms:
        requests.post(
            f"{balancer.url}/rooms", json={"name": room}, headers=users[0]["auth"], timeout=30
        ).raise_for_status()

    pids = {
        "login": login.process.pid,
        **{f"chat@{chat.port}": chat.process.pid for chat in chats},
        "FerretDB": database.process.pid,
        "HAProxy": balancer.process.pid,
    }
    memory = [("start", memory_snapshot(pids))]
    workers_at_start = {name: children(pid) for name, pid in pids.items() if name.startswith(("login", "chat"))}
    soak = Soak(balancer.url, users, rooms, rate, args.minutes * 60, args.clients)

    sampler_stop = threading.Event()

    def sample_memory():
        for minute in range(1, 100000):
            if sampler_stop.wait(60 * max(1.0, args.minutes / 5)):
                return
            memory.append((f"{minute * max(1.0, args.minutes / 5):g} min", memory_snapshot(pids)))

    sampler = threading.Thread(target=sample_memory, daemon=True)
    sampler.start()
    print(f"soak: {rate:.1f} requests/s for {args.minutes:g} min through {balancer.url}", flush=True)
    started = time.monotonic()
    pending = soak.run()
    elapsed = time.monotonic() - started
    sampler_stop.set()
    sampler.join(10)
    memory.append(("end", memory_snapshot(pids)))
    workers_at_end = {name: children(pid) for name, pid in pids.items() if name.startswith(("login", "chat"))}
    left = soak.settle([item for item in pending])
    books = audit(soak, balancer.url, users[0]["auth"])

    report = render(args, rate, soak, books, memory, (workers_at_start, workers_at_end), elapsed, left)
    (out / "soak.md").write_text(report)
    (out / "soak.json").write_text(
        json.dumps(
            {
                "rate": rate,
                "minutes": args.minutes,
                "outcomes": {kind: {str(k): v for k, v in counter.items()} for kind, counter in soak.outcomes.items()},
                "latency_ms": {
                    kind: {
                        "p50": percentile(v, 50) * 1000,
                        "p95": percentile(v, 95) * 1000,
                        "p99": percentile(v, 99) * 1000,
                        "max": max(v, default=0) * 1000,
                        "mean": statistics.fmean(v) * 1000 if v else 0,
                    }
                    for kind, v in soak.latencies.items()
                },
                "books": books,
                "unacknowledged_after_retries": left,
                "late_starts": soak.late_starts,
                "memory_mib": {label: snapshot for label, snapshot in memory},
            },
            indent=2,
            default=str,
        )
    )
    print(report)
    print(f"written to {out}")
    clean = books["lost"] == 0 and books["duplicated"] == 0 and not books["rooms_with_seq_gaps"] and left == 0
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
