"""Where a chat worker's time goes with metrics on: py-spy samples the worker while wrk sends
one kind of request, and the report gives the share of the samples spent in the metrics' own
code. A finer measure of their cost than `python -m tools.bench --mode metrics`, whose rounds
vary by more than that cost on a shared machine; the share is the part of the request's
time the metrics take, so "at most 5 % more CPU" is a share of at most about 4.8 %.

The metrics' own code: prometheus-client, the request and database timing of
service_kit/metrics.py (not the app that its request timer wraps, nor the database calls
that its timed collections make), and, on code from before the stores' calls were timed,
pymongo's command monitoring (its events existed only because a database timer listened).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import psutil

from tests.lib import harness
from tools import bench, profiling

ROOT = Path(__file__).resolve().parent.parent
DATABASE_TIMING = re.compile(
    r"pymongo/monitoring\.py|pymongo/_telemetry\.py|^DatabaseTimer\.|^_OperationTimer\.(observe|failed) "
)
# The timed database and its collections and cursors wrap pymongo's calls: only their own
# lines count, a sample whose innermost frame is one of them.
DATABASE_WRAPPERS = re.compile(
    r"^(_OperationTimer|TimedCursor|TimedCollection|TimedDatabase)\.\S+ \(service_kit/metrics\.py"
)
REQUEST_METRICS = re.compile(
    r"prometheus_client/"
    r"|^(?!RequestTimer\.__call__|_OperationTimer\.|Timed(Cursor|Collection|Database)\.).* \(service_kit/metrics\.py"
)
# The request timer wraps the whole app, and its start_response gunicorn's: only their own
# lines count, a sample whose innermost frame is one of them.
TIMER_ITSELF = re.compile(r"^RequestTimer\.__call__(\.<locals>\.start_and_observe)? \(service_kit/metrics\.py")


def part_of(frames: list[str]) -> str | None:
    """Which part of the metrics a sample's stack (outermost frame first) is in, if any."""
    if any(DATABASE_TIMING.search(frame) for frame in frames) or DATABASE_WRAPPERS.search(frames[-1]):
        return "database timing"
    if any(REQUEST_METRICS.search(frame) for frame in frames) or TIMER_ITSELF.search(frames[-1]):
        return "request metrics"
    return None


def shares(raw: Path) -> tuple[int, Counter[str]]:
    """Samples in py-spy's raw (collapsed) output, and how many fell in each part."""
    total, parts = 0, Counter[str]()
    for frames, count in profiling.collapsed_stacks(raw):
        total += count
        part = part_of(frames)
        if part:
            parts[part] += count
    return total, parts


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.metrics_profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=int, default=20, help="length of one sampled wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="sampled runs per request")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or ROOT / "results" / f"metrics-profile-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    out.mkdir(parents=True, exist_ok=True)
    group = harness.ProcessGroup(prefix="chatsys-metrics-profile-")
    rows = []
    try:
        database = harness.start_ferretdb(group)
        stack = bench.start_stack(group, database.uri, 50, METRICS_PORT=str(harness.free_port()))
        messages = f"{stack.chat.url}/rooms/{stack.room}/messages"
        chat = [stack.chat.process.pid]
        worker = psutil.Process(stack.chat.process.pid).children()[0].pid
        measured = {
            "chat /health": bench.Target(f"{stack.chat.url}/health", {}, chat),
            "chat GET newest 50": bench.Target(f"{messages}?limit=50", stack.auth, chat),
            "chat POST message": bench.Target(messages, stack.auth, chat, bench.write_post_script(group)),
        }
        for round_number in range(1, args.rounds + 1):
            for name, target in measured.items():
                raw = out / f"{name.replace(' ', '-').replace('/', '')}-{round_number}.txt"
                # Blocking sampling (py-spy stops the worker for each sample): no torn stacks.
                sampler = profiling.py_spy(worker, args.seconds, raw, fmt="raw", blocking=True)
                time.sleep(1)  # py-spy attached
                bench.wrk(target, args.seconds, args.connections, [])
                sampler.wait(timeout=60)
                total, parts = shares(raw)
                rows.append((name, round_number, total, parts))
    finally:
        group.close()
    lines = [
        f"# Metrics' share of a chat worker's samples ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `python -m tools.metrics_profile --seconds {args.seconds} --rounds {args.rounds}`; py-spy, 250 "
        f"samples/s of the one gevent worker while wrk -t2 -c{args.connections} runs; metrics on and served.",
        "",
        "| request | round | samples | metrics | request metrics | database timing |",
        "|---|---|---|---|---|---|",
    ]
    for name, round_number, total, parts in rows:
        share = {part: parts[part] / max(total, 1) * 100 for part in ("request metrics", "database timing")}
        lines.append(
            f"| {name} | {round_number} | {total} | {sum(share.values()):.1f} % | "
            f"{share['request metrics']:.1f} % | {share['database timing']:.1f} % |"
        )
    report = "\n".join(lines) + "\n"
    (out / "profile.md").write_text(report)
    print(report)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
