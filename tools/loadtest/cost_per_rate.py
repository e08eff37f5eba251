"""One chat server's CPU per request at fixed arrival rates, from far below its CPU cap to
the cap: how much of a request's cost is paid per wake-up rather than per request.

The scale test found a capped chat server spending 2.0 ms per request at one rate and 3.2
ms at a lower one (docs/load-testing.md). This measures that apart. It starts FerretDB,
login and one chat server (gevent, one worker, as the scale test's) on free ports
(tests/lib/harness.py), optionally caps the chat server as `scale_test.sh --cpu-cap` does
(scripts/cpu_cap.sh), and sends it an open-loop schedule at each rate in turn: every
arrival at its time, a post and a read of a 20-message page by turns (the plan's hot room).
For each rate it reads the server's CPU (all its processes) and its voluntary context
switches (times it went to sleep) from /proc, and the latency of each request from its
scheduled arrival.

A control follows each rate: the same schedule, kept by one thread of this program that does
a fixed piece of Python work at each arrival (a page of 20 messages to JSON and back) and
sleeps until the next. No server, no socket, no database, no gevent: if its CPU per arrival
rises as the rate falls as the server's does, that part of the server's rise is what a
sleep costs any process on this machine (caches and predictors gone cold while it slept),
not something the chat server does per wake-up. Its floor is the same work back to back.
Last, the same work back to back on one core while the machine's other cores are idle, spin
in a loop, or do the same work: what sharing the machine with busy neighbours costs a process
that never sleeps (the scale test's servers share two cores with each other, FerretDB,
HAProxy and JMeter).

Each rate's control runs twice: as it is, and with every core kept awake by a spinner of the
idle scheduling class (SCHED_IDLE, pinned to its core), which yields at once to any other
process: a wake-up then finds its core running rather than halted. What the control saves
that way is the part of a sleep's cost that the (virtual) CPU's halt and wake-up make.

With `--profile`, py-spy samples the chat worker through each rate (a flame graph,
`chat-RATE.svg`, and the collapsed stacks, `chat-RATE.txt`) and FerretDB's pprof the
database (`ferretdb-RATE.pprof`, its top functions in `ferretdb-RATE-top.txt`). The report
then splits each rate's CPU per request over the layers of the worker that ran it.

    python -m tools.loadtest.cost_per_rate --cap 0.15 --rates "10 20 30 40 50" --seconds 15 --out DIR

Writes DIR/cost_per_rate.md and DIR/cost_per_rate.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import psutil
import requests

from tests.lib import harness
from tests.lib.accounts import register_and_login, unique_name
from tools import profiling
from tools.loadtest.samples import percentile

ROOT = Path(__file__).resolve().parents[2]
PAGE = 20
CLIENT_THREADS = 32
CAP_NAME = "chat-cost-per-rate"


class Server:
    """The chat server's processes (gunicorn master and worker), read from /proc."""

    def __init__(self, pid: int):
        self.master = psutil.Process(pid)

    def _processes(self) -> list[psutil.Process]:
        return [self.master, *self.master.children(recursive=True)]

    def counters(self) -> tuple[float, int]:
        """CPU seconds (user + system) and voluntary context switches, over all its processes."""
        cpu, switches = 0.0, 0
        for process in self._processes():
            times = process.cpu_times()
            cpu += times.user + times.system
            switches += process.num_ctx_switches().voluntary
        return cpu, switches


# The control's unit of work: what a read's answer costs in JSON, both ways, a few times over
# (about half a millisecond of CPU back to back on the machine this was written on).
_CONTROL_PAGE = [
    {
        "room": "control",
        "seq": seq,
        "author": f"user{seq}",
        "text": f"control message {seq} " * 4,
        "created_at": "2026-12-07T10:00:00+00:00",
    }
    for seq in range(1, PAGE + 1)
]
CONTROL_ROUNDS = 12


def control_work() -> None:
    for _ in range(CONTROL_ROUNDS):
        json.loads(json.dumps({"room": "control", "messages": _CONTROL_PAGE, "next_after": PAGE}))


def _thread_counters() -> tuple[float, int]:
    """This thread's CPU seconds and voluntary context switches."""
    return time.thread_time(), resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw


def control_run(rate: float | None, seconds: float) -> dict:
    """The control at one rate: `control_work` at each arrival of an open-loop schedule, in
    this thread, sleeping in between; with `rate` None, `seconds` of it back to back. CPU
    and sleeps per arrival of this thread alone."""
    for _ in range(50):
        control_work()  # warm, as the server is warm when its runs start
    cpu_before, switches_before = _thread_counters()
    done = 0
    if rate is None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            control_work()
            done += 1
    else:
        start = time.monotonic()
        for number in range(max(1, round(rate * seconds))):
            delay = start + number / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            control_work()
            done += 1
    cpu_after, switches_after = _thread_counters()
    return {
        "rate": rate,
        "arrivals": done,
        "cpu_ms_per_arrival": round(1000 * (cpu_after - cpu_before) / done, 3),
        "sleeps_per_arrival": round((switches_after - switches_before) / done, 3),
    }


# The neighbours of the co-runner rows: each says it has started, then spins or does the
# control's work, for the seconds it is given.
_NEIGHBOUR = {
    "spin": "import sys, time\nprint('go', flush=True)\nend = time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end:\n    pass\n",
    "json": "import json, sys, time\n"
    "page = [{'room': 'n', 'seq': s, 'author': f'user{s}', 'text': f'neighbour {s} ' * 4, "
    "'created_at': '2026-12-07T10:00:00+00:00'} for s in range(20)]\n"
    "print('go', flush=True)\nend = time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end:\n    json.loads(json.dumps({'messages': page}))\n",
}


@contextlib.contextmanager
def pinned(kind: str, cpus: list[int], seconds: float, idle_class: bool = False):
    """A neighbour of `kind` ("spin", "json") pinned to each of `cpus` for at most `seconds`
    (`idle_class`: of the idle scheduling class, SCHED_IDLE), each started before this yields;
    all gone after."""
    neighbours: list[subprocess.Popen] = []
    try:
        for cpu in cpus:
            neighbour = subprocess.Popen(
                [sys.executable, "-c", _NEIGHBOUR[kind], str(seconds)], stdout=subprocess.PIPE, text=True
            )
            neighbours.append(neighbour)
            os.sched_setaffinity(neighbour.pid, {cpu})
            if idle_class:
                os.sched_setscheduler(neighbour.pid, os.SCHED_IDLE, os.sched_param(0))
        for neighbour in neighbours:
            said = neighbour.stdout.readline().strip() if neighbour.stdout else ""
            if said != "go":
                raise RuntimeError(f"a {kind} neighbour did not start (it said {said!r})")
        yield
    finally:
        for neighbour in neighbours:
            neighbour.kill()
            neighbour.communicate()  # reaps it and closes its pipe


def neighbours_run(kind: str, seconds: float) -> dict | None:
    """The control back to back on this machine's first core, with its other cores idle
    (`kind` "idle") or each running a neighbour ("spin", "json"); None on one core."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    mine, others = cpus[0], cpus[1:]
    before = os.sched_getaffinity(0)
    with pinned(kind, others if kind != "idle" else [], seconds + 5):
        try:
            os.sched_setaffinity(0, {mine})  # this thread only
            row = control_run(None, seconds)
        finally:
            os.sched_setaffinity(0, before)
    return {**row, "rate": None, "neighbours": kind}


def awake_control_run(rate: float, seconds: float) -> dict:
    """`control_run` at `rate` with every core kept awake: a spinner of the idle scheduling
    class on each, which yields its core at once to any other process that wakes, so a
    wake-up finds its core running rather than halted."""
    with pinned("spin", sorted(os.sched_getaffinity(0)), seconds + 30, idle_class=True):
        row = control_run(rate, seconds)
    return {**row, "awake": True}


# Where a sample of the chat worker is: the innermost frame of a known layer names it (a
# json.dumps that Flask calls is Flask's); stacks with none are "other".
LAYERS = (
    ("pymongo and bson (the database driver)", ("pymongo/", "bson/")),
    ("chat_service and service_kit (the service)", ("chat_service/", "service_kit/")),
    ("Flask and Werkzeug", ("flask/", "werkzeug/")),
    ("gunicorn", ("gunicorn/",)),
    ("gevent (hub, switches, cooperative sockets)", ("gevent/", "greenlet")),
)
OTHER = "other (no frame of the above)"


def layer_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, markers in LAYERS:
            if any(marker in frame for marker in markers):
                return name
    return OTHER


SAMPLES_PER_SECOND = 250
# py-spy counts a thread as busy when it is runnable, and a worker the CPU cap has stopped is
# runnable: at its cap, its samples measure the time it waited for the next period as well,
# spread over wherever the cap stopped it. Its layer shares then are not a CPU profile, and
# the table says so when the samples exceed the worker's CPU by more than this.
SAMPLED_OVER_CPU_LIMIT = 1.25


def layer_shares(raw: Path) -> tuple[float, dict[str, float]]:
    """The seconds py-spy found the worker busy, and each layer's share of those samples."""
    counts: dict[str, int] = {}
    for frames, count in profiling.collapsed_stacks(raw):
        name = layer_of(frames)
        counts[name] = counts.get(name, 0) + count
    total = sum(counts.values())
    shares = {name: round(count / total, 4) for name, count in counts.items()} if total else {}
    return round(total / SAMPLES_PER_SECOND, 3), shares


@contextlib.contextmanager
def profiled(out: Path | None, rate: float, seconds: float, worker: int, debug_port: int):
    """With `out`, py-spy (a flame graph and the collapsed stacks) on the chat worker and pprof
    on FerretDB, from before the rate's run until a second after it; yields a dict that holds
    the worker's layer shares once the samplers are done."""
    found: dict = {}
    if out is None:
        yield found
        return
    name = f"{rate:g}"
    length = seconds + 1
    spies = [
        profiling.py_spy(worker, length, out / f"chat-{name}.svg", rate=SAMPLES_PER_SECOND),
        profiling.py_spy(worker, length, out / f"chat-{name}.txt", fmt="raw", rate=SAMPLES_PER_SECOND),
    ]
    pprof = profiling.ferretdb_cpu_profile(debug_port, length, out / f"ferretdb-{name}.pprof")
    try:
        for spy in spies:
            profiling.wait_sampling(spy)
        yield found
    finally:
        for sampler in (*spies, pprof):
            sampler.communicate(timeout=length + 60)
    failed = [sampler.returncode for sampler in (*spies, pprof) if sampler.returncode != 0]
    if failed:
        raise RuntimeError(f"a profiler failed at {name} req/s (exit codes {failed})")
    (out / f"ferretdb-{name}-top.txt").write_text(profiling.pprof_top(out / f"ferretdb-{name}.pprof", True))
    found["sampled_seconds"], found["layers"] = layer_shares(out / f"chat-{name}.txt")


def run_rate(url: str, auth: dict[str, str], room: str, rate: float, seconds: float, server: Server) -> dict:
    """One open-loop run: every arrival sent at its time by a free client thread, posts and
    reads by turns; the server's CPU and sleeps per request over the run."""
    arrivals = max(1, round(rate * seconds))
    local = threading.local()
    sessions: list[requests.Session] = []  # one per client thread, closed at the end

    def send(number: int, scheduled: float) -> tuple[bool, float]:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            sessions.append(session)
        if number % 2 == 0:
            answer = session.post(
                f"{url}/rooms/{room}/messages",
                json={"text": f"cost per rate {number}"},
                headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
                timeout=30,
            )
            ok = answer.status_code == 201
        else:
            answer = session.get(f"{url}/rooms/{room}/messages", params={"limit": PAGE}, headers=auth, timeout=30)
            ok = answer.status_code == 200
        return ok, time.monotonic() - scheduled

    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        start = time.monotonic() + 0.2
        cpu_before, switches_before = server.counters()
        futures = []
        for number in range(arrivals):
            scheduled = start + number / rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(send, number, scheduled))
        outcomes = [future.result() for future in futures]
        cpu_after, switches_after = server.counters()
        elapsed = time.monotonic() - start
    for session in sessions:
        session.close()
    latencies = [1000 * latency for ok, latency in outcomes if ok]
    return {
        "rate": rate,
        "requests": arrivals,
        "ok": len(latencies),
        "seconds": round(elapsed, 2),
        "cores": round((cpu_after - cpu_before) / elapsed, 4),
        "cpu_ms_per_request": round(1000 * (cpu_after - cpu_before) / arrivals, 3),
        "sleeps_per_request": round((switches_after - switches_before) / arrivals, 3),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
    }


def measure(args: argparse.Namespace, out: Path) -> dict:
    group = harness.ProcessGroup(prefix="chatsys-cost-per-rate-")
    capped = False
    debug_port = harness.free_port()
    try:
        database = harness.start_ferretdb(group, debug_port=debug_port)
        login = harness.start_service(group, "login", {"MONGO_URI": database.uri})
        chat = harness.start_service(
            group,
            "chat",
            {
                "MONGO_URI": database.uri,
                "LOGIN_URL": login.url,
                "GUNICORN_WORKERS": "1",
                "GUNICORN_WORKER_CLASS": "gevent",
            },
        )
        user = register_and_login(login.url, unique_name("rate"), "cost per rate 1")
        room = f"rate-{uuid.uuid4().hex[:8]}"
        created = requests.post(f"{chat.url}/rooms", json={"name": room}, headers=user.auth, timeout=10)
        created.raise_for_status()
        server = Server(chat.process.pid)
        if args.cap:
            subprocess.run(
                [str(ROOT / "scripts" / "cpu_cap.sh"), "apply", CAP_NAME, str(args.cap), str(server.master.pid)],
                check=True,
            )
            capped = True
        idle_before, _ = server.counters()
        time.sleep(args.idle_seconds)
        idle_cores = (server.counters()[0] - idle_before) / args.idle_seconds
        # A short run first, so that the first measured rate finds a warm server.
        run_rate(chat.url, user.auth, room, args.rates[0], 2, server)
        worker = server.master.children()[0].pid
        rows, control = [], [control_run(None, min(args.seconds, 5))]
        for rate in args.rates:
            with profiled(out if args.profile else None, rate, args.seconds, worker, debug_port) as found:
                row = run_rate(chat.url, user.auth, room, rate, args.seconds, server)
            rows.append(row | found)
            control.append(control_run(rate, args.seconds))
            control.append(awake_control_run(rate, args.seconds))
            print(json.dumps(rows[-1]), json.dumps(control[-2:]), flush=True)
        control.append(control_run(None, min(args.seconds, 5)))  # the floor again, after
        shared = [neighbours_run(kind, min(args.seconds, 5)) for kind in ("idle", "spin", "json", "idle")]
        return {
            "idle_cores": round(idle_cores, 4),
            "rows": rows,
            "control": control,
            "neighbours": [row for row in shared if row is not None],
        }
    finally:
        if capped:
            subprocess.run([str(ROOT / "scripts" / "cpu_cap.sh"), "release", CAP_NAME], check=False)
        group.close()


def command_line(args: argparse.Namespace) -> str:
    rates = " ".join(f"{rate:g}" for rate in args.rates)
    cap = f" --cap {args.cap:g}" if args.cap else ""
    profile = " --profile" if args.profile else ""
    return f'python -m tools.loadtest.cost_per_rate{cap} --rates "{rates}" --seconds {args.seconds:g}{profile}'


def render(args: argparse.Namespace, outcome: dict) -> str:
    cap = f"capped at {args.cap:g} core (scripts/cpu_cap.sh, as `scale_test.sh --cpu-cap`)" if args.cap else "uncapped"
    lines = [
        f"# A chat server's CPU per request by arrival rate ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `{command_line(args)}`; {os.cpu_count()} cores; load average at the end "
        f"{os.getloadavg()[0]:.1f}. One chat server (gunicorn, 1 gevent worker) {cap}, on FerretDB "
        f"(SQLite); an open-loop schedule at each rate for {args.seconds:g} s, posts and reads of "
        f"a {PAGE}-message page by turns, in one room. CPU is user + system time of the server's "
        "processes over the run, per request sent; sleeps are its voluntary context switches per "
        "request; latency counts from each request's scheduled arrival. Idle, the server used "
        f"{outcome['idle_cores']:.4f} cores.",
        "",
        "| rate (req/s) | requests | ok | server cores | CPU ms/req | sleeps/req | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {row['rate']:g} | {row['requests']} | {row['ok']} | {row['cores']:.3f} | {row['cpu_ms_per_request']:.2f} "
        f"| {row['sleeps_per_request']:.2f} | {row['p50_ms']:.0f} | {row['p99_ms']:.0f} |"
        for row in outcome["rows"]
    ]
    control = outcome["control"]
    floor = min(row["cpu_ms_per_arrival"] for row in control if row["rate"] is None)
    cheapest = min(row["cpu_ms_per_request"] for row in outcome["rows"])
    lines += [
        "",
        "The control, run after each rate: one thread of this program keeps the same schedule and "
        f"does a fixed piece of Python work at each arrival ({PAGE} messages to JSON and back, "
        f"{CONTROL_ROUNDS} times), sleeping in between; no server, socket, database or gevent. "
        "Back to back (before the first rate and after the last), the same work costs the floor. "
        "Each rate's figure over its floor (the control's back-to-back, the server's cheapest rate) "
        "shows how much of the rise any process sleeping at that rate pays on this machine. "
        '"Cores awake": the same control with a spinner of the idle scheduling class on every core, '
        "so a wake-up finds its core running, not halted.",
        "",
        "| rate (req/s) | control CPU ms/arrival | control sleeps/arrival | control ÷ back to back "
        "| cores awake: control ms/arrival | cores awake ÷ back to back "
        "| server CPU ms/req | server ÷ its cheapest rate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in control:
        if row.get("awake"):
            continue
        if row["rate"] is None:
            lines.append(
                f"| back to back | {row['cpu_ms_per_arrival']:.3f} | {row['sleeps_per_arrival']:.2f} "
                f"| {row['cpu_ms_per_arrival'] / floor:.2f}x | | | | |"
            )
            continue
        server = next(r for r in outcome["rows"] if r["rate"] == row["rate"])
        awake = next(r for r in control if r.get("awake") and r["rate"] == row["rate"])
        lines.append(
            f"| {row['rate']:g} | {row['cpu_ms_per_arrival']:.3f} | {row['sleeps_per_arrival']:.2f} "
            f"| {row['cpu_ms_per_arrival'] / floor:.2f}x | {awake['cpu_ms_per_arrival']:.3f} "
            f"| {awake['cpu_ms_per_arrival'] / floor:.2f}x | {server['cpu_ms_per_request']:.2f} "
            f"| {server['cpu_ms_per_request'] / cheapest:.2f}x |"
        )
    if outcome["neighbours"]:
        alone = min(row["cpu_ms_per_arrival"] for row in outcome["neighbours"] if row["neighbours"] == "idle")
        lines += [
            "",
            "The control back to back on the first core, the other cores idle, each spinning in a "
            "loop, or each doing the same work (a process of its own per core); idle first and last:",
            "",
            "| other cores | control CPU ms/unit | ÷ other cores idle |",
            "|---|---|---|",
        ]
        lines += [
            f"| {row['neighbours']} | {row['cpu_ms_per_arrival']:.3f} | {row['cpu_ms_per_arrival'] / alone:.2f}x |"
            for row in outcome["neighbours"]
        ]
    if any("layers" in row for row in outcome["rows"]):
        lines += layer_table(outcome["rows"])
    return "\n".join(lines) + "\n"


def sampled_over_cpu(row: dict) -> float:
    """py-spy's busy seconds of the worker over the server's CPU seconds in the rate's run."""
    cpu_seconds = row["cores"] * row["seconds"]
    return row["sampled_seconds"] / cpu_seconds if cpu_seconds else float("inf")


def layer_table(rows: list[dict]) -> list[str]:
    """Each rate's CPU per request split over the chat worker's layers (py-spy's samples)."""
    names = [name for name, _ in LAYERS] + [OTHER]
    lines = [
        "",
        "Where the chat server's CPU per request goes, by the layer of its innermost known frame "
        f"(py-spy, {SAMPLES_PER_SECOND} samples/s, not pausing the worker): each layer's share of "
        "the worker's samples times the rate's CPU ms/req. py-spy counts a runnable thread as "
        "busy, and the CPU cap leaves a stopped worker runnable: where its samples exceed the "
        f"server's CPU by more than {SAMPLED_OVER_CPU_LIMIT:g}x (the server at its cap), they "
        "measure where the cap stopped it, not where its CPU went, and the column is left out. "
        "Flame graphs: `chat-RATE.svg`; collapsed stacks: `chat-RATE.txt`; FerretDB's pprof: "
        "`ferretdb-RATE.pprof`, top functions by total time in `ferretdb-RATE-top.txt`.",
        "",
        "| layer | " + " | ".join(f"{row['rate']:g} req/s" for row in rows) + " |",
        "|---|" + "---|" * len(rows),
    ]
    profiles = [row if sampled_over_cpu(row) <= SAMPLED_OVER_CPU_LIMIT else None for row in rows]
    for name in names:
        cells = [
            f"{row['layers'].get(name, 0) * row['cpu_ms_per_request']:.2f} ms ({100 * row['layers'].get(name, 0):.0f} %)"
            if row
            else "(at its cap)"
            for row in profiles
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| all (CPU ms/req) | " + " | ".join(f"{row['cpu_ms_per_request']:.2f} ms" for row in rows) + " |")
    lines.append(
        "| py-spy's busy seconds ÷ CPU seconds | " + " | ".join(f"{sampled_over_cpu(row):.2f}" for row in rows) + " |"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.loadtest.cost_per_rate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rates", default="10 20 30 40 50", help="arrival rates in req/s, in the order run")
    parser.add_argument("--seconds", type=float, default=15, help="length of each rate's run")
    parser.add_argument("--idle-seconds", type=float, default=10, help="the idle server's CPU is read this long")
    parser.add_argument("--cap", type=float, default=0, help="cap the chat server at this many cores (0: none)")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy and pprof through each rate (flame graphs in OUT)"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        args.rates = [float(rate) for rate in args.rates.split()]
    except ValueError:
        parser.error(f"--rates takes numbers, not {args.rates!r}")
    if not args.rates or min(args.rates) <= 0 or args.seconds <= 0 or args.idle_seconds <= 0 or args.cap < 0:
        parser.error("rates, --seconds and --idle-seconds must be positive, --cap not negative")
    out = args.out or ROOT / "results" / f"cost-per-rate-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    out.mkdir(parents=True, exist_ok=True)
    outcome = measure(args, out)
    report = render(args, outcome)
    (out / "cost_per_rate.md").write_text(report)
    (out / "cost_per_rate.json").write_text(json.dumps({"command": command_line(args), **outcome}, indent=2) + "\n")
    print(report)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
