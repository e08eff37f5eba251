"""The maximum within a service-level objective: the highest open-model arrival rate a
deployment sustains with p99 within the objective, errors under 1 % and (nearly) every
offered request sent.

The search grows the rate until a criterion fails, bisects (geometrically) between the
last rate that passed and the first that failed until they are within `precision` of each
other, then runs the rate found again until `confirmations` runs of it have passed. A p99 over a
window of a few seconds is the few slowest requests of it, so one run in several misses at
a rate the deployment sustains: up to `misses` failed confirmations are allowed at a rate
(the report says so: "3 of 4"); one more steps the rate down by `precision`, each later
step down twice the one before, and starts the count afresh. Once a rate below is
confirmed in full, the search bisects back up between it and the lowest rate that missed
out, taking a rate only when it is confirmed in full, while the confirmation runs last.
The search itself is pure (`search`, on a `measure` callable); `Runner` measures a step by
running the JMeter plan (scripts/jmeter-run.sh) and appending it to the results' runs.csv.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tools.loadtest import store_figures
from tools.loadtest.samples import StepFigures, figures_of_run

ROOT = Path(__file__).resolve().parents[2]
RUNS_COLUMNS = [
    "series",
    "servers",
    "phase",
    "threads",
    "arrival_rate",
    "fraction",
    "dir",
    "status",
    "workload",
    "duration",
    "started",  # Unix seconds: the run's span, for the timeline (tools/loadtest/timeline.py)
    "ended",
]

# Seconds a run allows its users' setup (register, login) before the arrivals start anyway.
SETUP_SECONDS = 60
# The criteria, in the order the report names them when several fail at one rate.
ERRORS, SENT, P99, NO_DATA = "errors", "sent", "p99", "no data"


@dataclass(frozen=True)
class Objective:
    p99_ms: float = 250.0
    max_error_rate: float = 0.01  # errors must stay under this share
    min_sent_ratio: float = 0.99  # requests sent / offered must reach this

    def failed(self, figures: StepFigures | None) -> list[str]:
        """The criteria a run fails, in the order errors, sent, p99; [NO_DATA] when it has none."""
        if figures is None or figures.requests == 0:
            return [NO_DATA]
        failed = []
        if figures.error_rate >= self.max_error_rate:
            failed.append(ERRORS)
        if figures.sent_ratio is None or figures.sent_ratio < self.min_sent_ratio:
            failed.append(SENT)
        if not figures.p99_ms <= self.p99_ms:  # NaN fails too
            failed.append(P99)
        return failed

    def describe(self) -> str:
        return (
            f"p99 <= {self.p99_ms:.0f} ms, errors < {self.max_error_rate:.0%}, "
            f"sent >= {self.min_sent_ratio:.0%} of offered"
        )


@dataclass(frozen=True)
class Plan:
    """How the search moves: where it starts, how fast it grows, when it stops."""

    start_rate: float = 40.0
    growth: float = 1.5
    precision: float = 0.05
    confirmations: int = 3  # passing runs at the maximum, the search's own included
    misses: int = 1  # failed confirmations allowed at a rate before it steps down
    max_steps: int = 14  # every run before the confirmations
    min_rate: float = 1.0

    @property
    def max_confirmation_runs(self) -> int:
        """Room for four rates' worth of confirmations: 16 with 3 and one miss allowed."""
        return 4 * (self.confirmations + self.misses)


@dataclass
class Step:
    rate: float
    phase: str  # grow | shrink | bisect | confirm
    figures: StepFigures | None
    failed: list[str]
    dir: str = ""
    extra: dict = field(default_factory=dict)  # per-run figures others add (e.g. collisions)

    @property
    def passed(self) -> bool:
        return not self.failed


@dataclass
class Result:
    objective: Objective
    steps: list[Step]
    maximum: float | None  # the highest rate that passed and was confirmed, None: none passed
    failed_first: list[str]  # the criteria that failed at the lowest failing rate
    failing_rate: float | None
    confirmed: list[Step]  # the passing runs at the maximum
    missed: list[Step] = field(default_factory=list)  # the failed confirmations at the maximum

    def spread(self, attribute: str) -> tuple[float, float] | None:
        values = [getattr(step.figures, attribute) for step in self.confirmed if step.figures is not None]
        return (min(values), max(values)) if values else None


Measure = Callable[[float, str], Step]


def search(measure: Measure, plan: Plan = Plan(), objective: Objective = Objective()) -> Result:
    steps: list[Step] = []

    def run(rate: float, phase: str) -> Step:
        step = measure(rate, phase)
        steps.append(step)
        return step

    def budget() -> bool:
        return len(steps) < plan.max_steps

    passed: float | None = None
    failing: float | None = None
    rate = plan.start_rate
    while budget():  # grow until a criterion fails
        if run(rate, "grow").passed:
            passed = rate
            rate *= plan.growth
        else:
            failing = rate
            break
    while passed is None and failing is not None and budget() and failing / plan.growth >= plan.min_rate:
        rate = failing / plan.growth  # failed at the start: shrink until one passes
        if run(rate, "shrink").passed:
            passed = rate
        else:
            failing = rate
    while passed is not None and failing is not None and failing > passed * (1 + plan.precision) and budget():
        rate = math.sqrt(passed * failing)
        if run(rate, "bisect").passed:
            passed = rate
        else:
            failing = rate
    confirmed: list[Step] = []
    missed: list[Step] = []
    tries = 0

    def confirm(rate: float, have: list[Step]) -> tuple[list[Step], list[Step]]:
        """Runs at `rate` until `confirmations` passed, one miss more than allowed, or the
        confirmation runs are spent: the passing runs and the missed ones."""
        nonlocal tries
        passing, failing_runs = list(have), list[Step]()
        while len(passing) < plan.confirmations and len(failing_runs) <= plan.misses:
            if tries >= plan.max_confirmation_runs:
                break
            tries += 1
            step = run(rate, "confirm")
            (passing if step.passed else failing_runs).append(step)
        return passing, failing_runs

    if passed is not None:
        # Each step down is twice the one before (5 %, 10 %, 20 % ...): a rate that passed
        # once at the very edge of the capacity, where the p99 of a short run is a coin
        # toss, is left in a few runs, not walked down from in 5 % steps until the runs are
        # spent. The number of confirmation runs is bounded all the same: when they are
        # spent, a rate with fewer passing runs than asked stands, as passed.
        step_down, missed_out = plan.precision, None
        confirmed, missed = confirm(passed, [s for s in steps if s.passed and s.rate == passed][-1:])
        while len(missed) > plan.misses:
            missed_out = passed
            passed /= 1 + step_down
            step_down *= 2
            if passed < plan.min_rate:
                confirmed, missed = [], []
                break
            confirmed, missed = confirm(passed, [])
        # Steps that double overshoot by up to the last one: bisect back up between the rate
        # confirmed and the lowest that missed out, a rate taken only when confirmed in full.
        while (
            len(confirmed) >= plan.confirmations
            and missed_out is not None
            and missed_out > passed * (1 + plan.precision)
            and tries < plan.max_confirmation_runs
        ):
            middle = math.sqrt(passed * missed_out)
            more, more_missed = confirm(middle, [])
            if len(more) >= plan.confirmations:
                passed, confirmed, missed = middle, more, more_missed
            else:
                missed_out = middle
    if not confirmed:
        missed = []
    # The misses allowed at the maximum are not where the deployment fails the objective.
    failures = [s for s in steps if not s.passed and not any(s is m for m in missed)]
    lowest = min(failures, key=lambda s: s.rate, default=None)
    return Result(
        objective,
        steps,
        passed if confirmed else None,
        list(lowest.failed) if lowest else [],
        lowest.rate if lowest else None,
        confirmed,
        missed,
    )


# --- running steps with JMeter -----------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """The plan's traffic: `hot` (every user in one room, the lobby) or `rooms` (ROOMS rooms
    with a Zipf-like skew of posters and readers)."""

    name: str
    rooms: int = 1
    zipf_s: float = 1.0
    read_limit: int = 20
    room_prefix: str = "load"

    def properties(self) -> list[str]:
        props = [f"-Jread_limit={self.read_limit}"]
        if self.rooms > 1:
            props += [f"-Jrooms={self.rooms}", f"-Jzipf_s={self.zipf_s}", f"-Jroom_prefix={self.room_prefix}"]
        return props

    def describe(self) -> str:
        if self.rooms <= 1:
            return f"hot room: every user posts to and reads one room; pages of at most {self.read_limit}"
        return (
            f"many rooms: {self.rooms} rooms, each round's room picked with a Zipf skew "
            f"(rank k weighs 1/k^{self.zipf_s:g}); pages of at most {self.read_limit}"
        )


WORKLOADS = {"hot": Workload("hot"), "rooms": Workload("rooms", rooms=128)}


def pool_size(rate: float, low: int = 16, high: int = 96) -> int:
    """Users the open model needs so that arrivals rarely find them all busy (Little: rate x
    latency, at a fifth of a second each), yet few enough that their setup stays short."""
    return max(low, min(high, math.ceil(rate * 0.2)))


def _split(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s)://HOST[:PORT] URL: {url}")
    return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def ensure_rooms(chat_url: str, login_url: str, workload: Workload, timeout: float = 10.0) -> None:
    """Create the workload's rooms through the contract (POST /rooms; 409, it exists, is
    fine), ten per user so no per-user room limit of a default deployment is reached."""
    if workload.rooms <= 1:
        return
    import requests

    names = [f"{workload.room_prefix}-{index:03d}" for index in range(workload.rooms)]

    def create(batch: list[str]) -> None:
        with requests.Session() as session:
            username, password = f"rooms_{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
            account = {"username": username, "password": password}
            session.post(f"{login_url}/users", json=account, timeout=timeout).raise_for_status()
            answer = session.post(f"{login_url}/login", json=account, timeout=timeout)
            answer.raise_for_status()
            auth = {"Authorization": f"Bearer {answer.json()['token']}"}
            for name in batch:
                created = session.post(f"{chat_url}/rooms", json={"name": name}, headers=auth, timeout=timeout)
                if created.status_code not in (201, 409):
                    raise RuntimeError(f"POST /rooms {name}: {created.status_code} {created.text[:200]}")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(create, [names[i : i + 10] for i in range(0, len(names), 10)]))


@dataclass
class Runner:
    """Measures one open-model step: optional database reset, the workload's rooms, one
    JMeter run into OUT/DIR with `duration` seconds of arrivals after its users' setup, one
    line in OUT/runs.csv."""

    out: Path
    series: str
    servers: int | None
    chat_url: str
    login_url: str
    workload: Workload
    objective: Objective
    duration: int = 15
    rampup: int = 2
    reset_uri: str = ""
    reset_compact: bool = False  # compact each emptied collection too (tools.loadtest.__main__.reset_database)
    plan_properties: list[str] = field(default_factory=list)
    threads: int | None = None  # the open model's pool; None: pool_size(rate)
    count: int = 0
    rooms_made: bool = False  # the workload's rooms exist (until the next reset)

    def __call__(self, rate: float, phase: str) -> Step:
        self.count += 1
        name = f"{self.series}/{self.workload.name}/{self.count:02d}-{phase}-{rate:.1f}"
        run_dir = self.out / name
        run_dir.mkdir(parents=True, exist_ok=True)
        if self.reset_uri:
            from tools.loadtest.__main__ import reset_database

            reset_database(self.reset_uri, compact=self.reset_compact)
            self.rooms_made = False
        if not self.rooms_made:
            ensure_rooms(self.chat_url, self.login_url, self.workload)
            self.rooms_made = True
        users = self.threads or pool_size(rate)
        scheme, chat_host, chat_port = _split(self.chat_url)
        _, login_host, login_port = _split(self.login_url)
        props = [
            *self.plan_properties,
            *self.workload.properties(),
            f"-Jprotocol={scheme}",
            f"-Jchat_host={chat_host}",
            f"-Jchat_port={chat_port}",
            f"-Jlogin_host={login_host}",
            f"-Jlogin_port={login_port}",
            f"-Jarrival_seconds={self.duration}",
            f"-Jsetup_timeout={SETUP_SECONDS}",
            f"-Jduration={self.duration + SETUP_SECONDS}",
            f"-Jrampup={self.rampup}",
            "-Jmodel=open",
            f"-Jarrival_rate={rate:.2f}",
            f"-Jopen_threads={users}",
        ]
        started = time.time()
        status = "ok" if run_jmeter(props, run_dir) == 0 else "failed"
        ended = time.time()
        if self.reset_uri and status == "ok":
            store_figures.write(self.reset_uri, run_dir)  # before the next run's reset
        with open(self.out / "runs.csv", "a", newline="") as handle:
            csv.writer(handle).writerow(
                [self.series, self.servers or "", phase, users, f"{rate:.2f}", "", name, status]
                + [self.workload.name, self.duration, f"{started:.1f}", f"{ended:.1f}"]
            )
        figures = figures_of_run(run_dir, arrival_rate=rate, arrival_s=self.duration) if status == "ok" else None
        step = Step(rate, phase, figures, self.objective.failed(figures), name)
        print(f"  {self.series:<10} {self.workload.name:<6} {phase:<8} {describe_step(step)}", file=sys.stderr)
        return step


def describe_step(step: Step) -> str:
    f = step.figures
    verdict = "meets the objective" if step.passed else "fails: " + ", ".join(step.failed)
    if f is None:
        return f"{step.rate:7.1f} req/s offered: no figures ({verdict})"
    return (
        f"{step.rate:7.1f} req/s offered, sent {f.sent_rate:.1f}/s, ok {f.throughput:.1f}/s, "
        f"p50 {f.p50_ms:.0f} p95 {f.p95_ms:.0f} p99 {f.p99_ms:.0f} ms, errors {f.error_rate:.2%} ({verdict})"
    )


def run_jmeter(props: list[str], run_dir: Path) -> int:
    """scripts/jmeter-run.sh in a process group of its own, stopped with us on a signal."""
    with open(run_dir / "console.log", "w") as console:
        process = subprocess.Popen(
            [str(ROOT / "scripts" / "jmeter-run.sh"), *props, "--out", str(run_dir)],
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            return process.wait()
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait()


def ensure_runs_file(out: Path) -> None:
    runs = out / "runs.csv"
    if not runs.is_file():
        out.mkdir(parents=True, exist_ok=True)
        with open(runs, "w", newline="") as handle:
            csv.writer(handle).writerow(RUNS_COLUMNS)


# --- the record of a search --------------------------------------------------------------


def result_record(result: Result, series: str, servers: int | None, workload: Workload, plan: Plan) -> dict:
    """search.json: what the report and the score card read."""

    def figures(step: Step) -> dict | None:
        if step.figures is None:
            return None
        values = {**asdict(step.figures), "throughput": step.figures.throughput, "sent_rate": step.figures.sent_rate}
        return {key: None if isinstance(value, float) and math.isnan(value) else value for key, value in values.items()}

    return {
        "series": series,
        "servers": servers,
        "workload": workload.name,
        "workload_description": workload.describe(),
        "objective": asdict(result.objective),
        "plan": asdict(plan),
        "maximum_rps": result.maximum,
        "failed_first": result.failed_first,
        "failing_rps": result.failing_rate,
        "confirmed_dirs": [step.dir for step in result.confirmed],
        "missed_dirs": [step.dir for step in result.missed],
        "steps": [
            {
                "rate": step.rate,
                "phase": step.phase,
                "dir": step.dir,
                "failed": step.failed,
                "figures": figures(step),
                "extra": step.extra,
            }
            for step in result.steps
        ],
    }


def write_record(record: dict, out: Path) -> Path:
    path = out / record["series"] / record["workload"] / "search.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def read_records(out: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(out.glob("*/*/search.json"))]
