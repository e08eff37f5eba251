"""Battle mode: the standard plan aimed at any deployment that speaks the contract
(docs/contract.md), with a pre-flight, the SLO search of each workload and a score card.

Only what the contract gives is used: /health, POST /users, POST /login, POST /rooms,
POST and GET /rooms/<room>/messages, X-Instance (and X-Served-By when the target sends it).
`scripts/battle.sh` is the command; `compare` puts score cards side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tools.loadtest import cpu, search, timeline

PASSED, THRESHOLD_FAILED, PREFLIGHT_FAILED = 0, 1, 3
# What the defending team changes when a limit of theirs would cap the result.
LIMIT_ADVICE = "the defending team turns on the battle profile (docs/conformance.md) or lifts this limit"
TIMEOUT = 10.0


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Limit:
    what: str  # e.g. "registrations and logins per client address"
    requests: str  # the request that met it
    answered_after: int  # requests of the burst before the first 429
    retry_after: str


@dataclass
class Preflight:
    checks: list[Check] = field(default_factory=list)
    limits: list[Limit] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


def _check(preflight: Preflight, name: str, ok: bool, detail: str) -> bool:
    preflight.checks.append(Check(name, ok, detail))
    print(f"  pre-flight: {name}: {'ok' if ok else 'FAILED'} ({detail})", file=sys.stderr)
    return ok


# The probe's bursts, sized on what the plan asks of a target within 10 s (the window of
# the usual limits): every run registers and logs in its whole pool (up to 96 users, 40 in
# a quick run's reach); one user posts at most about 50 times (a pool of rate x 0.2 users
# sends half its requests as posts); reads come from this one address.
PROBE_USERS, PROBE_USERS_QUICK, PROBE_POSTS, PROBE_READS = 40, 20, 60, 150


def preflight(target: str, login: str, profile: str, probe_users: int = PROBE_USERS) -> Preflight:
    """Health, a quick contract check, and a probe for rate limits that would cap the result."""
    import requests

    result = Preflight()
    for name, url in (("chat", target), ("login", login), ("profile", profile)):
        if not url:
            continue
        try:
            answer = requests.get(f"{url}/health", timeout=TIMEOUT)
            _check(result, f"{name} /health", answer.status_code == 200, f"{url}/health answered {answer.status_code}")
        except requests.RequestException as error:
            _check(result, f"{name} /health", False, f"{url}/health: {error.__class__.__name__}")
    if not result.ok:
        return result
    session = requests.Session()
    try:
        account = {"username": f"bt_{uuid.uuid4().hex[:12]}", "password": uuid.uuid4().hex}
        created = session.post(f"{login}/users", json=account, timeout=TIMEOUT)
        if not _check(result, "POST /users", created.status_code == 201, f"{created.status_code}"):
            return result
        answer = session.post(f"{login}/login", json=account, timeout=TIMEOUT)
        token = answer.json().get("token") if answer.status_code == 200 else None
        if not _check(
            result, "POST /login", bool(token), f"{answer.status_code}, token {'given' if token else 'missing'}"
        ):
            return result
        auth = {"Authorization": f"Bearer {token}"}
        room = f"battle-{uuid.uuid4().hex[:8]}"
        made = session.post(f"{target}/rooms", json={"name": room}, headers=auth, timeout=TIMEOUT)
        if not _check(result, "POST /rooms", made.status_code == 201, f"{made.status_code}"):
            return result
        posted = session.post(
            f"{target}/rooms/{room}/messages",
            json={"text": "pre-flight"},
            headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
            timeout=TIMEOUT,
        )
        seq = posted.json().get("seq") if posted.status_code == 201 else None
        if not _check(result, "POST /rooms/<room>/messages", isinstance(seq, int), f"{posted.status_code}, seq {seq}"):
            return result
        read = session.get(f"{target}/rooms/{room}/messages?after=0&limit=5", headers=auth, timeout=TIMEOUT)
        page = read.json() if read.status_code == 200 else {}
        seqs = [message.get("seq") for message in page.get("messages", [])]
        _check(
            result,
            "GET /rooms/<room>/messages",
            seqs == [seq] and page.get("next_after") == seq,
            f"{read.status_code}, seqs {seqs}, next_after {page.get('next_after')}",
        )
        _check(result, "X-Instance", bool(read.headers.get("X-Instance")), read.headers.get("X-Instance", "missing"))
        if result.ok:
            result.limits = probe_limits(target, login, auth, room, probe_users)
    except (requests.RequestException, ValueError) as error:
        _check(result, "contract", False, f"{error.__class__.__name__}: {error}")
    finally:
        session.close()
    return result


def probe_limits(target: str, login: str, auth: dict, room: str, users: int) -> list[Limit]:
    """Bursts like the plan's, faster than one person: registrations and logins from this
    address (the plan registers every virtual user each run), posts with one token, reads.
    Each burst stops at its first 429, which names the limit and its Retry-After. A limit
    above a burst's size is not found here; its 429s show in the search (errors by kind)."""
    import requests

    def burst(what: str, label: str, count: int, send) -> Limit | None:
        answered = 0
        with requests.Session() as session, ThreadPoolExecutor(8) as pool:
            for answer in pool.map(lambda _: send(session), range(count)):
                if answer.status_code == 429:
                    limit = Limit(what, label, answered, answer.headers.get("Retry-After", "not given"))
                    print(
                        f"  pre-flight: rate limit: {what} ({label}: 429 after {answered} requests, "
                        f"Retry-After {limit.retry_after}); {LIMIT_ADVICE}",
                        file=sys.stderr,
                    )
                    return limit
                answered += 1
        print(f"  pre-flight: {label}: {count} requests in a burst, no 429", file=sys.stderr)
        return None

    # Not tests.lib.accounts.register_and_login: tools.loadtest ships without tests/, and
    # this one wants the 429 that ends a burst as an answer, not an assertion error.
    def register(session) -> requests.Response:
        account = {"username": f"bt_{uuid.uuid4().hex[:12]}", "password": uuid.uuid4().hex}
        answer = session.post(f"{login}/users", json=account, timeout=TIMEOUT)
        return answer if answer.status_code != 201 else session.post(f"{login}/login", json=account, timeout=TIMEOUT)

    def post(session) -> requests.Response:
        headers = {**auth, "Idempotency-Key": uuid.uuid4().hex}
        return session.post(f"{target}/rooms/{room}/messages", json={"text": "probe"}, headers=headers, timeout=TIMEOUT)

    def read(session) -> requests.Response:
        return session.get(f"{target}/rooms/{room}/messages?after=0&limit=5", headers=auth, timeout=TIMEOUT)

    found = [
        burst("registrations and logins per client address", "POST /users + /login", users, register),
        burst("posts per token", "POST /rooms/<room>/messages", PROBE_POSTS, post),
        burst("requests per client address", "GET /rooms/<room>/messages", PROBE_READS, read),
    ]
    return [limit for limit in found if limit is not None]


# --- the score card ------------------------------------------------------------------


def _versions() -> dict[str, str]:
    def output(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=20, cwd=search.ROOT)
            return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else ""
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "plan": "jmeter/chat_load.jmx (open model, jmeter/request_timer.groovy)",
        "chatsys_commit": output(["git", "rev-parse", "--short", "HEAD"]),
        "jmeter": "5.6.3 (scripts/jmeter-install.sh)",
        "java": output(["java", "-version"]),
        "python": platform.python_version(),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, kernel {platform.release()}",
    }


def _generator_cpu(out: Path, record: dict) -> dict:
    """The load generator's CPU at the maximum: JMeter's cores and ms per successful request
    over the confirmed runs' windows, and the machine's."""
    cpu_file = out / "cpu.csv"
    runs = [s for s in record["steps"] if s["dir"] in record["confirmed_dirs"] and s["figures"]]
    if not cpu_file.is_file() or not runs:
        return {}
    series = cpu.read_series(cpu_file)
    jmeter, machine, rate = [], [], []
    for step in runs:
        f = step["figures"]
        cores = cpu.cores_in_window(series, f["window_start_ms"] / 1000, f["window_end_ms"] / 1000)
        jmeter.append(cores.get("jmeter", 0.0))
        machine.append(cores.get(cpu.MACHINE, 0.0))
        rate.append(f["throughput"])
    jmeter_cores, machine_cores = sum(jmeter) / len(jmeter), sum(machine) / len(machine)
    throughput = sum(rate) / len(rate)
    return {
        "jmeter_cores": round(jmeter_cores, 3),
        "jmeter_ms_per_request": round(jmeter_cores * 1000 / throughput, 3) if throughput else None,
        "machine_busy_cores": round(machine_cores, 3),
        "cores": os.cpu_count(),
    }


def limited_by(generator: dict, failed_first: list[str], rate_limited: bool = False) -> str:
    """Which side limited the maximum, as far as this machine can tell."""
    if rate_limited:
        return f"a rate limit of the target (429 answers during the search): {LIMIT_ADVICE}"
    if not generator:
        return "unknown (no CPU figures)"
    cores = generator.get("cores") or 1
    if generator.get("machine_busy_cores", 0) >= 0.9 * cores or generator.get("jmeter_cores", 0) >= 0.9:
        return "the load generator's machine (CPU saturated): the maximum is a floor, not the target's"
    return f"the target ({', '.join(failed_first) or 'no criterion'} failed first; the load generator had CPU to spare)"


def workload_card(out: Path, record: dict) -> dict:
    confirmed = [s for s in record["steps"] if s["dir"] in record["confirmed_dirs"] and s["figures"]]
    at_max: dict = {}
    if confirmed:
        figures = [s["figures"] for s in confirmed]

        def spread(key: str) -> list[float]:
            values = [f[key] for f in figures if f[key] is not None]
            return [round(min(values), 1), round(max(values), 1)] if values else []

        errors: dict[str, int] = {}
        served: dict[str, int] = {}
        for f in figures:
            for kind, count in f["errors_by_kind"].items():
                errors[kind] = errors.get(kind, 0) + count
            for server, count in f["served_by"].items():
                served[server] = served.get(server, 0) + count
        pages = [f["messages_per_read"] for f in figures if f["messages_per_read"] is not None]
        rates = [f["errors"] / max(f["requests"], 1) for f in figures]
        at_max = {
            "runs": len(figures),
            "missed_runs": len(record.get("missed_dirs", [])),
            "throughput_rps": spread("throughput"),
            "p50_ms": spread("p50_ms"),
            "p95_ms": spread("p95_ms"),
            "p99_ms": spread("p99_ms"),
            "error_rate": [round(min(rates), 4), round(max(rates), 4)],
            "errors_by_kind": errors,
            "served_by": served,
            "messages_per_read": round(sum(pages) / len(pages), 1) if pages else None,
        }
    generator = _generator_cpu(out, record)
    rate_limited = any("HTTP 429" in (s["figures"] or {}).get("errors_by_kind", {}) for s in record["steps"])
    return {
        "workload": record["workload"],
        "description": record["workload_description"],
        "maximum_rps": record["maximum_rps"],
        "failed_first": record["failed_first"],
        "failing_rps": record["failing_rps"],
        "at_maximum": at_max,
        "load_generator": generator,
        "limited_by": limited_by(generator, record["failed_first"], rate_limited),
        "curve": [
            {
                "offered_rps": s["rate"],
                "p50_ms": s["figures"]["p50_ms"] if s["figures"] else None,
                "p99_ms": s["figures"]["p99_ms"] if s["figures"] else None,
                "throughput_rps": s["figures"]["throughput"] if s["figures"] else None,
                "failed": s["failed"],
            }
            for s in sorted(record["steps"], key=lambda s: s["rate"])
        ],
    }


def verdict(card: dict, min_rps: float | None) -> tuple[int, list[str]]:
    """Exit status and reasons: every workload must have a maximum within the objective,
    and at least min_rps when given."""
    reasons = []
    if not card["preflight"]["ok"]:
        return PREFLIGHT_FAILED, ["pre-flight failed"]
    for workload in card["workloads"]:
        maximum = workload["maximum_rps"]
        if maximum is None:
            reasons.append(f"{workload['workload']}: no rate met the objective")
        elif min_rps is not None and maximum < min_rps:
            reasons.append(f"{workload['workload']}: {maximum:.1f} req/s < --min-rps {min_rps:g}")
    return (THRESHOLD_FAILED if reasons else PASSED), reasons


def _cell(values: list, pattern: str = "{:.0f}") -> str:
    if not values:
        return "-"
    low, high = values
    return pattern.format(low) if low == high else f"{pattern.format(low)}-{pattern.format(high)}"


def card_markdown(card: dict) -> str:
    objective = card["objective"]
    lines = [
        f"# Battle score card: {card['target']}",
        "",
        f"- started {card['started']}, {card['elapsed_seconds']:.0f} s; command `{card['command']}`",
        f"- objective: p99 <= {objective['p99_ms']:.0f} ms (from each request's scheduled arrival), errors < "
        f"{objective['max_error_rate']:.0%}, sent >= {objective['min_sent_ratio']:.0%} of offered",
        f"- verdict: **{'PASS' if card['exit_status'] == 0 else 'FAIL'}** (exit status {card['exit_status']})"
        + ("; " + "; ".join(card["reasons"]) if card["reasons"] else ""),
        "",
        "## Pre-flight",
        "",
        "| check | result | detail |",
        "|---|---|---|",
    ]
    lines += [
        f"| {check['name']} | {'ok' if check['ok'] else 'FAILED'} | {check['detail']} |"
        for check in card["preflight"]["checks"]
    ]
    for limit in card["preflight"]["limits"]:
        lines.append(
            f"| rate limit | found | {limit['what']}: {limit['requests']} answered 429 after "
            f"{limit['answered_after']} requests, Retry-After {limit['retry_after']}; {LIMIT_ADVICE} |"
        )
    if card["workloads"]:
        lines += [
            "",
            "## Maximum within the objective",
            "",
            "| workload | max req/s | failed first (at req/s) | runs at max | ok req/s | p50 ms | p95 ms | p99 ms "
            "| errors by kind | msgs/read | served by | JMeter ms/req | limited by |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for w in card["workloads"]:
            at = w["at_maximum"]
            served = ", ".join(f"{name} {count}" for name, count in at.get("served_by", {}).items()) or "-"
            errors = ", ".join(f"{kind} {count}" for kind, count in at.get("errors_by_kind", {}).items()) or "none"
            failed = ", ".join(w["failed_first"]) or "-"
            failing = f" ({w['failing_rps']:.1f})" if w["failing_rps"] else ""
            runs, missed = at.get("runs", 0), at.get("missed_runs", 0)
            maximum = "-" if w["maximum_rps"] is None else f"{w['maximum_rps']:.1f}"
            lines.append(
                f"| {w['workload']} | {maximum} "
                f"| {failed}{failing} | {f'{runs} of {runs + missed}' if missed else runs} | {_cell(at.get('throughput_rps', []), '{:.1f}')} "
                f"| {_cell(at.get('p50_ms', []))} | {_cell(at.get('p95_ms', []))} | {_cell(at.get('p99_ms', []))} "
                f"| {errors} | {at.get('messages_per_read') or '-'} | {served} "
                f"| {w['load_generator'].get('jmeter_ms_per_request') or '-'} | {w['limited_by']} |"
            )
        lines += ["", "Workloads: " + "; ".join(f"{w['workload']}: {w['description']}" for w in card["workloads"])]
    lines += ["", "## Plan and versions", ""] + [f"- {key}: {value}" for key, value in card["versions"].items()]
    if card.get("plot"):
        lines += ["", f"![latency against offered load]({card['plot']})"]
    if card.get("timeline") == timeline.PNG:
        lines += ["", *timeline.section_lines()]
    elif card.get("timeline"):
        lines += ["", f"Over time: {card['timeline']}."]
    return "\n".join(lines) + "\n"


def plot_cards(cards: list[dict], path: Path) -> None:
    """p99 (and p50) against offered load, one panel per workload, one line per card; the
    objective dashed, each maximum marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = sorted({w["workload"] for card in cards for w in card["workloads"]}) or ["none"]
    figure, axes = plt.subplots(1, len(workloads), figsize=(5.5 * len(workloads), 4), squeeze=False)
    for axis, name in zip(axes[0], workloads, strict=True):
        for index, card in enumerate(cards):
            color = f"C{index}"
            for w in (w for w in card["workloads"] if w["workload"] == name):
                points = [p for p in w["curve"] if p["p99_ms"] is not None]
                label = card.get("name") or card["target"]
                axis.plot(
                    [p["offered_rps"] for p in points],
                    [p["p99_ms"] for p in points],
                    "o-",
                    color=color,
                    label=f"{label} p99",
                )
                axis.plot([p["offered_rps"] for p in points], [p["p50_ms"] for p in points], "x:", color=color)
                if w["maximum_rps"]:
                    axis.axvline(w["maximum_rps"], color=color, alpha=0.4)
        slo = cards[0]["objective"]["p99_ms"] if cards else None
        if slo:
            axis.axhline(slo, color="grey", linestyle="--", label=f"objective {slo:.0f} ms")
        axis.set_title(f"workload: {name}")
        axis.set_xlabel("offered req/s (open model); vertical line: maximum")
        axis.set_ylabel("ms from scheduled arrival (x: p50)")
        axis.set_ylim(bottom=0, top=(slo or 250) * 3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# --- commands ------------------------------------------------------------------------


def record_timeline(prometheus: str, out: Path) -> str:
    """The run over time from the target's Prometheus (tools/loadtest/timeline.py): the name of
    the plot, or why there is none."""
    span = timeline.span(out)
    if span is None or not timeline.available(prometheus):
        return f"none: no Prometheus answered at {prometheus}"
    timeline.wait_scraped(prometheus, span[1])
    if not timeline.record(prometheus, span[0], span[1], out) or not timeline.plot(out):
        return f"none: {prometheus} had no series of this implementation's metrics (docs/observability.md)"
    return timeline.PNG


def _battle(args) -> int:
    out = Path(args.out or search.ROOT / "results" / f"battle-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    out.mkdir(parents=True, exist_ok=True)
    started, clock = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.monotonic()
    target, login, profile = args.target.rstrip("/"), args.login.rstrip("/"), (args.profile or "").rstrip("/")
    objective = args.objective_of(args)
    print(f"battle: {target} (login {login}), results in {out}", file=sys.stderr)
    checked = preflight(target, login, profile, PROBE_USERS_QUICK if args.quick else PROBE_USERS)
    card: dict = {
        "name": args.name or target,
        "target": target,
        "login": login,
        "profile": profile,
        "started": started,
        "command": args.command_line or "scripts/battle.sh",
        "objective": asdict(objective),
        "preflight": {
            "ok": checked.ok and (not checked.limits or args.allow_limits),
            "checks": [asdict(check) for check in checked.checks],
            "limits": [asdict(limit) for limit in checked.limits],
        },
        "workloads": [],
        "versions": _versions(),
        "extra": {},  # per-run figures other tools add (e.g. the store's seq collisions)
    }
    if checked.ok and checked.limits and not args.allow_limits:
        print(f"battle: a rate limit would cap the result; {LIMIT_ADVICE} (or pass --allow-limits)", file=sys.stderr)
    if card["preflight"]["ok"]:
        if checked.limits:  # let the probe's own bursts age out of the target's windows
            time.sleep(
                min(60, max((int(x.retry_after) for x in checked.limits if x.retry_after.isdigit()), default=10))
            )
        search.ensure_runs_file(out)
        monitor = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tools.loadtest",
                "monitor",
                "--out",
                str(out / "cpu.csv"),
                f"jmeter={os.getpid()}:ApacheJMeter.jar",
            ],
            cwd=search.ROOT,
        )
        try:
            start = args.start_rate
            for name in args.workloads.split():
                workload = search.WORKLOADS[name]
                plan = search.Plan(
                    start_rate=start,
                    growth=2.0 if args.quick else 1.5,
                    confirmations=1 if args.quick else 3,
                    misses=0 if args.quick else 1,
                    max_steps=2 if args.quick else 14,
                )
                duration = args.duration or (8 if args.quick else 10)
                runner = search.Runner(out, "target", None, target, login, workload, objective, duration=duration)
                result = search.search(runner, plan, objective)
                record = search.result_record(result, "target", None, workload, plan)
                search.write_record(record, out)
                card["workloads"].append(record)
        finally:
            monitor.terminate()
            monitor.wait(timeout=30)
        card["workloads"] = [workload_card(out, record) for record in card["workloads"]]
    card["elapsed_seconds"] = time.monotonic() - clock
    card["exit_status"], card["reasons"] = verdict(card, args.min_rps)
    card["thresholds"] = {"min_rps": args.min_rps}
    if card["workloads"]:
        plot_cards([card], out / "score.png")
        card["plot"] = "score.png"
        if args.prometheus:
            card["timeline"] = record_timeline(args.prometheus.rstrip("/"), out)
    (out / "score.json").write_text(json.dumps(card, indent=2) + "\n")
    (out / "score.md").write_text(card_markdown(card))
    print(card_markdown(card))
    print(f"battle: score card {out / 'score.md'}", file=sys.stderr)
    return card["exit_status"]


def leaderboard(cards: list[dict]) -> list[str]:
    names = sorted({w["workload"] for card in cards for w in card["workloads"]})
    lines = [
        "| rank | deployment | " + " | ".join(f"{name} max req/s (p99 ms)" for name in names) + " | verdict |",
        "|---|---|" + "---|" * len(names) + "---|",
    ]

    def total(card: dict) -> float:
        return sum(w["maximum_rps"] or 0 for w in card["workloads"])

    for rank, card in enumerate(sorted(cards, key=total, reverse=True), 1):
        cells = []
        for name in names:
            w = next((w for w in card["workloads"] if w["workload"] == name), None)
            if w is None or w["maximum_rps"] is None:
                cells.append("-")
            else:
                p99 = w["at_maximum"].get("p99_ms") or []
                cells.append(f"{w['maximum_rps']:.1f} ({_cell(p99)})")
        lines.append(
            f"| {rank} | {card.get('name') or card['target']} | "
            + " | ".join(cells)
            + f" | {'PASS' if card['exit_status'] == 0 else 'FAIL'} |"
        )
    return lines


def _compare(args) -> int:
    cards = [json.loads(Path(path).read_text()) for path in args.cards]
    for path, card in zip(args.cards, cards, strict=True):
        card.setdefault("name", card["target"])
        if sum(other["target"] == card["target"] for other in cards) > 1:
            card["name"] = f"{card['target']} ({Path(path).parent.name})"
    out = Path(args.out) if args.out else Path(".")
    out.mkdir(parents=True, exist_ok=True)
    lines = leaderboard(cards)
    print("\n".join(lines))
    plot_cards(cards, out / "compare.png")
    (out / "compare.md").write_text(
        "# Battle leaderboard\n\n" + "\n".join(lines) + "\n\n![side by side](compare.png)\n"
    )
    print(f"compare: {out / 'compare.md'}, {out / 'compare.png'}", file=sys.stderr)
    return 0


def add_commands(commands, objective_arguments, objective_of) -> None:
    fight = commands.add_parser("battle", help="pre-flight, SLO search and score card against a deployment")
    fight.add_argument("--target", required=True, help="chat entry point URL")
    fight.add_argument("--login", required=True, help="login service URL")
    fight.add_argument("--profile", default="", help="profile service URL (health checked)")
    fight.add_argument("--out", help="score card directory (results/battle-<UTC time>)")
    fight.add_argument("--quick", action="store_true", help="a smoke run of about a minute")
    fight.add_argument("--min-rps", type=float, help="fail unless every workload's maximum reaches this")
    fight.add_argument("--workloads", default="hot rooms", help='workloads to search ("hot rooms")')
    fight.add_argument("--duration", type=int, help="seconds of arrivals per run, after its setup (10; --quick: 8)")
    fight.add_argument("--start-rate", type=float, default=40.0, help="the search's first rate (40)")
    fight.add_argument("--allow-limits", action="store_true", help="run even when the probe finds a rate limit")
    fight.add_argument("--name", help="the deployment's name on the score card")
    fight.add_argument("--prometheus", help="the target's Prometheus URL: the card then plots each server over time")
    fight.add_argument("--command-line", help=argparse.SUPPRESS)
    objective_arguments(fight)
    fight.set_defaults(run=_battle, objective_of=objective_of)
    compare = commands.add_parser("compare", help="leaderboard and plot of score cards")
    compare.add_argument("cards", nargs="+", help="score.json files")
    compare.add_argument("--out", help="where compare.md and compare.png go (.)")
    compare.set_defaults(run=_compare)
