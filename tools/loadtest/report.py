"""The scale-test report: every run of a results directory reduced to tables and plots.

Input, written by scripts/scale_test.sh into the results directory:
  runs.csv    one line per JMeter run: series, servers, phase (warmup|closed|open),
              threads, arrival_rate, fraction, dir, status
  run.info    key=value lines: command, machine, cap, settings
  cpu.csv     CPU time per process group (tools.loadtest.cpu)
  <dir>/results.csv   each run's samples
  <series>/<workload>/search.json   each SLO search (tools.loadtest.search)
Output: slo.csv and slo.png (the maximum within the objective per workload and series,
the headline), steps.csv (every run), summary.md; for results with a closed-model sweep
(reports made before the SLO search) also summary.csv, scaling.png and open_model.png.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tools.loadtest import cpu, search, store_figures, timeline
from tools.loadtest.samples import MAX_ERROR_RATE, MIN_WINDOW_MS, SETTLE_MS, StepFigures, figures_of_run

# Groups the report names, in this order; chat servers are the groups chat-<port>.
# `postgresql` is FerretDB's backend when it runs on PostgreSQL: the postmaster and every
# process below it. The database's CPU is then FerretDB's and PostgreSQL's together.
SERVICE_GROUPS = ("ferretdb", "postgresql", "haproxy", "login", "profile", "jmeter")
DATABASE_GROUPS = ("ferretdb", "postgresql")
SATURATED = 0.9  # share of a limit above which a resource counts as the limit
KEPT_UP = 0.95  # open model: sent/offered below this means the offered load was not delivered
# The chat tier is the bottleneck only if everything else leaves it room: at each maximum,
# what is not a chat server must use under this share of the cores the caps leave.
SHARED_SHARE_LIMIT = 0.5
JMETER_MS_TARGET = 1.0  # the load generator's CPU per request must stay at or under this

# Per-run figures other parts of the project add to the report (e.g. the store's seq
# collisions): NAME -> function(run directory) returning a number or None. Each one becomes
# a column of the SLO table, averaged over the runs at the maximum.
EXTRA_FIGURES: dict[str, Callable[[Path], float | None]] = {
    "extra insert attempts per post": store_figures.figure("extra_attempts_per_post"),
    "seqs per message": store_figures.figure("seqs_per_message"),
}


@dataclass
class Run:
    series: str
    servers: int | None
    phase: str
    threads: int | None
    arrival_rate: float | None
    fraction: float | None
    dir: str
    status: str
    figures: StepFigures | None = None
    cores: dict[str, float] = field(default_factory=dict)
    workload: str = "hot"
    arrival_seconds: float | None = None  # SLO-search runs: seconds of arrivals after setup

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.figures is not None

    @property
    def measured(self) -> StepFigures:
        """The figures of a run known to have them (an `ok` one, or a maximum's)."""
        if self.figures is None:
            raise ValueError(f"the run in {self.dir} has no figures")
        return self.figures

    @property
    def chat_cores(self) -> float:
        return sum(value for group, value in self.cores.items() if group.startswith("chat-"))

    def chat_servers_cores(self) -> list[tuple[str, float]]:
        return sorted((group, value) for group, value in self.cores.items() if group.startswith("chat-"))


@dataclass
class Maximum:
    series: str
    servers: int | None
    run: Run | None  # None: no step of the series had errors under the limit
    speedup: float | None = None

    @property
    def efficiency(self) -> float | None:
        if self.speedup is None or not self.servers:
            return None
        return self.speedup / self.servers


def _number(text: str, kind=float):
    text = (text or "").strip()
    return kind(text) if text not in ("", "-") else None


def read_info(results_dir: Path) -> dict[str, str]:
    info = {}
    path = results_dir / "run.info"
    if path.is_file():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                info[key.strip()] = value.strip()
    return info


def load_runs(results_dir: Path, settle_ms: int = SETTLE_MS) -> list[Run]:
    """Every run of runs.csv with its figures and, when cpu.csv exists, its CPU use."""
    runs = []
    with open(results_dir / "runs.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            run = Run(
                row["series"],
                _number(row["servers"], int),
                row["phase"],
                _number(row["threads"], int),
                _number(row["arrival_rate"]),
                _number(row["fraction"]),
                row["dir"],
                row["status"],
                workload=row.get("workload") or "hot",
                arrival_seconds=_number(row.get("duration") or ""),
            )
            if run.status == "ok":
                rate = run.arrival_rate if run.phase != "closed" else None
                run.figures = figures_of_run(results_dir / run.dir, settle_ms, rate, run.arrival_seconds)
            runs.append(run)
    cpu_file = results_dir / "cpu.csv"
    if cpu_file.is_file():
        series = cpu.read_series(cpu_file)
        for run in runs:
            if run.figures is not None:
                run.cores = cpu.cores_in_window(
                    series, run.figures.window_start_ms / 1000, run.figures.window_end_ms / 1000
                )
    return runs


def series_order(runs: list[Run]) -> list[str]:
    seen = []
    for run in runs:
        if run.series not in seen:
            seen.append(run.series)
    return seen


def find_maxima(runs: list[Run]) -> list[Maximum]:
    """Per series, the closed-model step with the highest throughput among those with an
    error rate under 1 %; speed-up against the series with one server, when there is one."""
    maxima = []
    for series in series_order(runs):
        steps = [r for r in runs if r.series == series and r.phase == "closed" and r.ok and r.measured.qualifies]
        best = max(steps, key=lambda r: r.measured.throughput, default=None)
        servers = next((r.servers for r in runs if r.series == series), None)
        maxima.append(Maximum(series, servers, best))
    baseline = next((m.run for m in maxima if m.servers == 1 and m.run is not None), None)
    if baseline is not None and baseline.measured.throughput > 0:
        for maximum in maxima:
            if maximum.run is not None and maximum.servers:
                maximum.speedup = maximum.run.measured.throughput / baseline.measured.throughput
    return maxima


def limit_reading(run: Run, info: dict[str, str]) -> str:
    """What the CPU figures of the run say limited it (a reading, not a proof)."""
    if not run.cores:
        return "no CPU figures"
    cores = float(info.get("cores") or 0) or None
    cap = _number(info.get("cap_cores_applied", ""))
    readings = []
    if cap and run.servers:
        limit = cap * run.servers
        if run.chat_cores >= SATURATED * limit:
            readings.append(f"chat servers at their CPU cap ({run.chat_cores:.2f} of {limit:.2f} cores)")
    machine = run.cores.get(cpu.MACHINE)
    if cores and machine is not None and machine >= SATURATED * cores:
        ranked = sorted(
            ((value, group) for group, value in _grouped(run).items() if group != cpu.MACHINE), reverse=True
        )[:3]
        names = ", ".join(f"{group} {value:.2f}" for value, group in ranked)
        readings.append(f"machine CPU saturated ({machine:.2f} of {cores:.0f} cores busy; most: {names})")
    if not readings:
        readings.append(
            "no CPU limit reached: requests wait on something else "
            "(database writes, seq collisions in the one room, queues)"
        )
    return "; ".join(readings)


def _grouped(run: Run) -> dict[str, float]:
    """Cores per service, the chat servers summed as `chat`, others = machine - ours."""
    grouped = {group: run.cores.get(group, 0.0) for group in SERVICE_GROUPS if group in run.cores}
    if any(group.startswith("chat-") for group in run.cores):
        grouped["chat"] = run.chat_cores
    if cpu.MACHINE in run.cores:
        grouped[cpu.MACHINE] = run.cores[cpu.MACHINE]
        grouped["other"] = max(run.cores[cpu.MACHINE] - sum(v for g, v in grouped.items() if g != cpu.MACHINE), 0.0)
    return grouped


def _fmt(value, pattern="{:.1f}", empty="-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return empty
    return pattern.format(value)


def _percent(value: float | None) -> str:
    return _fmt(None if value is None else value * 100, "{:.2f} %")


def _servers_text(value: int | None) -> str:
    return str(value) if value else "-"


# --- files ---------------------------------------------------------------------------

STEP_COLUMNS = [
    "series",
    "servers",
    "phase",
    "threads",
    "offered_rps",
    "sent_rps",
    "throughput_rps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "mean_ms",
    "error_rate",
    "window_s",
    "status",
]


def write_steps_csv(runs: list[Run], path: Path) -> None:
    groups = sorted({group for run in runs for group in run.cores})
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(STEP_COLUMNS + [f"cpu_{group}" for group in groups] + ["dir"])
        for run in runs:
            f = run.figures
            row = [
                run.series,
                run.servers or "",
                run.phase,
                run.threads or "",
                _fmt(run.arrival_rate, "{:.1f}", ""),
                _fmt(f and f.sent_rate, "{:.2f}", ""),
                _fmt(f and f.throughput, "{:.2f}", ""),
                _fmt(f and f.p50_ms, "{:.0f}", ""),
                _fmt(f and f.p95_ms, "{:.0f}", ""),
                _fmt(f and f.p99_ms, "{:.0f}", ""),
                _fmt(f and f.mean_ms, "{:.1f}", ""),
                _fmt(f and f.error_rate, "{:.4f}", ""),
                _fmt(f and f.seconds, "{:.1f}", ""),
                run.status if f else "no data",
            ]
            row += [_fmt(run.cores.get(group), "{:.3f}", "") for group in groups]
            writer.writerow(row + [run.dir])


SUMMARY_COLUMNS = [
    "series",
    "servers",
    "cpu_cap_cores",
    "threads",
    "max_rps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "error_rate",
    "speedup",
    "efficiency",
]


def write_summary_csv(maxima: list[Maximum], info: dict[str, str], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SUMMARY_COLUMNS)
        for m in maxima:
            f = m.run.figures if m.run else None
            writer.writerow(
                [
                    m.series,
                    m.servers or "",
                    info.get("cap_cores_applied", ""),
                    m.run.threads if m.run else "",
                    _fmt(f and f.throughput, "{:.2f}", ""),
                    _fmt(f and f.p50_ms, "{:.0f}", ""),
                    _fmt(f and f.p95_ms, "{:.0f}", ""),
                    _fmt(f and f.p99_ms, "{:.0f}", ""),
                    _fmt(f and f.error_rate, "{:.4f}", ""),
                    _fmt(m.speedup, "{:.3f}", ""),
                    _fmt(m.efficiency, "{:.3f}", ""),
                ]
            )


def summary_table(maxima: list[Maximum]) -> list[str]:
    lines = [
        "| servers | max req/s | at threads | p50 ms | p95 ms | p99 ms | errors | speed-up | efficiency |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in maxima:
        if m.run is None:
            lines.append(
                f"| {_servers_text(m.servers) if m.servers else m.series} | no step under "
                f"{MAX_ERROR_RATE:.0%} errors | | | | | | | |"
            )
            continue
        f = m.run.measured
        lines.append(
            f"| {_servers_text(m.servers) if m.servers else m.series} | {f.throughput:.1f} | {m.run.threads} "
            f"| {f.p50_ms:.0f} | {f.p95_ms:.0f} | {f.p99_ms:.0f} | {_percent(f.error_rate)} "
            f"| {_fmt(m.speedup, '{:.2f}x')} | {_fmt(m.efficiency, '{:.2f}')} |"
        )
    return lines


def cpu_table(maxima: list[Maximum], info: dict[str, str]) -> list[str]:
    lines = [
        "| servers | req/s | chat servers (each) | ferretdb | haproxy | login | jmeter | machine busy | "
        "other | ferretdb ms/req | chat ms/req | reading |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in maxima:
        run = m.run
        if run is None or not run.cores:
            continue
        grouped = _grouped(run)
        rate = run.measured.throughput or math.nan
        each = " / ".join(f"{value:.2f}" for _, value in run.chat_servers_cores())
        each = f" ({each})" if each else ""
        lines.append(
            f"| {_servers_text(m.servers) if m.servers else m.series} | {run.measured.throughput:.1f} "
            f"| {_fmt(grouped.get('chat'), '{:.2f}')}{each} | {_fmt(grouped.get('ferretdb'), '{:.2f}')} "
            f"| {_fmt(grouped.get('haproxy'), '{:.2f}')} | {_fmt(grouped.get('login'), '{:.2f}')} "
            f"| {_fmt(grouped.get('jmeter'), '{:.2f}')} | {_fmt(grouped.get(cpu.MACHINE), '{:.2f}')} "
            f"| {_fmt(grouped.get('other'), '{:.2f}')} "
            f"| {_fmt(grouped.get('ferretdb', math.nan) * 1000 / rate if 'ferretdb' in grouped else None)} "
            f"| {_fmt(grouped.get('chat', math.nan) * 1000 / rate if 'chat' in grouped else None)} "
            f"| {limit_reading(run, info)} |"
        )
    return lines


def open_table(runs: list[Run], maxima: list[Maximum]) -> list[str]:
    best = {m.series: m.run.measured.throughput for m in maxima if m.run}
    lines = [
        "| servers | offered req/s | of max | sent req/s | succeeded req/s | p50 ms | p95 ms | p99 ms | errors "
        "| note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [r for r in runs if r.phase == "open"]
    for run in rows:
        f = run.figures
        share = run.fraction or (
            run.arrival_rate / best[run.series] if run.arrival_rate and best.get(run.series) else None
        )
        name = _servers_text(run.servers) if run.servers else run.series
        if f is None:
            lines.append(f"| {name} | {_fmt(run.arrival_rate)} | {_percent(share)} | failed | | | | | | |")
            continue
        note = ""
        if run.arrival_rate and f.sent_rate < KEPT_UP * run.arrival_rate:
            note = "did not keep up: latency here is a lower bound"
        lines.append(
            f"| {name} | {_fmt(run.arrival_rate)} | {_fmt(share and share * 100, '{:.0f} %')} "
            f"| {f.sent_rate:.1f} | {f.throughput:.1f} | {_fmt(f.p50_ms, '{:.0f}')} "
            f"| {_fmt(f.p95_ms, '{:.0f}')} | {_fmt(f.p99_ms, '{:.0f}')} | {_percent(f.error_rate)} "
            f"| {note} |"
        )
    return lines if rows else []


def threads_table(runs: list[Run]) -> list[str]:
    """Closed-model throughput per thread count and series, with the speed-up over the
    one-server series at the same thread count (the same users, so the same work per read)."""
    closed = [r for r in runs if r.phase == "closed" and r.ok]
    names = series_order(closed)
    if len(names) < 2:
        return []
    by_key = {(r.series, r.threads): r for r in closed}
    baseline = next((r.series for r in closed if r.servers == 1), None)
    lines = [
        "| threads | " + " | ".join(_series_label(closed, name) for name in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for threads in sorted({r.threads for r in closed if r.threads is not None}):
        cells = []
        base = by_key.get((baseline, threads)) if baseline is not None else None
        for name in names:
            run = by_key.get((name, threads))
            if run is None:
                cells.append("-")
                continue
            text = f"{run.measured.throughput:.1f}"
            if not run.measured.qualifies:
                text += " (errors)" if run.measured.requests else ""
            if base is not None and name != baseline and base.measured.throughput > 0:
                text += f" ({run.measured.throughput / base.measured.throughput:.2f}x)"
            cells.append(text)
        lines.append(f"| {threads} | " + " | ".join(cells) + " |")
    return lines


def _series_label(runs: list[Run], series: str) -> str:
    servers = next((r.servers for r in runs if r.series == series), None)
    return f"{servers} server{'s' if servers != 1 else ''} req/s" if servers else f"{series} req/s"


def steps_table(runs: list[Run]) -> list[str]:
    groups = sorted(g for g in {g for r in runs for g in _grouped(r)} if g != "other")
    per_request = [group for group in ("chat", "ferretdb", "postgresql", "jmeter") if group in groups]
    header = (
        "| servers | model | threads | offered | window s | req/s | p50 | p95 | p99 | errors | "
        + " | ".join(f"{group} cores" for group in groups)
        + "".join(f" | {group} ms/req" for group in per_request)
        + " |"
    )
    lines = [header, "|" + "---|" * (10 + len(groups) + len(per_request))]
    for run in runs:
        f = run.figures
        grouped = _grouped(run)
        cells = [
            _servers_text(run.servers) if run.servers else run.series,
            run.phase,
            _fmt(run.threads, "{}"),
            _fmt(run.arrival_rate, "{:.0f}"),
        ]
        if f is None:
            cells += ["", "failed" if run.status != "ok" else "no steady window", "", "", "", ""]
        else:
            cells += [
                f"{f.seconds:.1f}",
                f"{f.throughput:.1f}",
                _fmt(f.p50_ms, "{:.0f}"),
                _fmt(f.p95_ms, "{:.0f}"),
                _fmt(f.p99_ms, "{:.0f}"),
                _percent(f.error_rate),
            ]
        cells += [_fmt(grouped.get(group), "{:.2f}") for group in groups]
        rate = f.throughput if f is not None else 0.0
        cells += [_fmt(grouped[group] * 1000 / rate if rate and group in grouped else None) for group in per_request]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _open_settings(info: dict[str, str]) -> str:
    fractions = info.get("open_fractions", "").split()
    if not fractions:
        return "no open-model runs"
    shares = ", ".join(f"{float(f) * 100:.0f} %" for f in fractions)
    users = info.get("open_threads", "")
    users = "3 x the threads of the maximum (24 to 96)" if users == "auto" else users
    return f"open model at {shares} of each maximum, {info.get('open_duration', '')} s, users: {users}"


def write_summary_md(
    runs: list[Run],
    maxima: list[Maximum],
    info: dict[str, str],
    path: Path,
    plots: list[str],
    slo: list[SloMaximum] | None = None,
) -> None:
    cap_line = {
        "off": "none (not requested)",
        "none": f"requested {info.get('cap_cores_requested')} core, NOT APPLIED: no usable cgroup "
        f"({info.get('cap_reason', '')}); the servers shared the machine's CPU freely",
    }.get(
        info.get("cap_mode", "off"),
        f"{info.get('cap_cores_applied')} core per chat server (cgroup {info.get('cap_mode')}, "
        f"gunicorn master and workers of each server in their own cgroup"
        + (
            f", quota granted per {int(info['cap_period_us']) / 1000:g} ms period"
            if info.get("cap_period_us", "").isdigit()
            else ""
        )
        + ")",
    )
    lines = [
        f"# Chat scale test, {info.get('started', '')}",
        "",
        f"- command: `{info.get('command', '')}`",
        f"- machine: {info.get('cores', '?')} cores ({info.get('cpu_model', '?')}), "
        f"{info.get('memory', '?')}, kernel {info.get('kernel', '?')}; JMeter runs on the same machine",
        f"- target: {info.get('target_description', '')}",
        f"- chat server CPU cap: {cap_line}",
        *([f"- cores: {info['pin']}"] if info.get("pin", "off") != "off" else []),
        *([f"- idle cores: {info['idle']}"] if info.get("idle") else []),
        f"- database: {info.get('database_reset', '')}",
    ]
    if slo:
        lines += [
            f"- runs: open model, {info.get('duration', '')} s of arrivals per run after its users' setup, "
            f"a warm-up of {info.get('warmup', '0')} s per series; plan properties "
            f"{info.get('plan_properties', '') or 'defaults'}",
            "",
            *slo_section(slo, info),
        ]
        jmeter = [value for m in slo if (value := m.ms_per_request("jmeter")) is not None]
        if jmeter:
            lines += [
                "",
                f"The load generator: JMeter used {min(jmeter):.2f} to {max(jmeter):.2f} ms of CPU per "
                f"successful request at the maxima (target: at most {JMETER_MS_TARGET:.1f} ms)"
                + (
                    "."
                    if max(jmeter) <= JMETER_MS_TARGET
                    else "; above the target where marked: those maxima may be the generator's, read `limited by`."
                ),
            ]
        write_steps_section(lines, runs, plots, path.parent)
        path.write_text("\n".join(lines) + "\n")
        return
    lines += [
        f"- steps: closed model, threads {info.get('threads', '')}, {info.get('duration', '')} s each "
        f"(ramp-up {info.get('rampup', '')} s), warm-up {info.get('warmup', '')} s per series; "
        f"{_open_settings(info)}; plan properties {info.get('plan_properties', '') or 'defaults'}",
        "",
        'Throughput counts successful "post message" and "read messages" requests per second of '
        "the steady window (from one second after every virtual user finished register, login and "
        "read latest, until "
        "the last request). The maximum of a series is its closed-model step with the highest "
        f"throughput among those with fewer than {MAX_ERROR_RATE:.0%} failed requests (and a steady "
        f"window of {MIN_WINDOW_MS / 1000:.0f} s at least). Percentiles are "
        "nearest-rank over all steady-window requests. Speed-up = max / max with one server; "
        "efficiency = speed-up / servers.",
        "",
        "## Maximum throughput",
        "",
    ]
    lines += summary_table(maxima)
    by_threads = threads_table(runs)
    if by_threads:
        lines += [
            "",
            "## Throughput at each thread count",
            "",
            "Each read returns what the room received since the user's last read, so work per "
            "request grows with the number of users: this compares series at equal users.",
            "",
        ] + by_threads
    cpu_lines = cpu_table(maxima, info)
    if len(cpu_lines) > 2:
        lines += [
            "",
            "## What limited throughput: CPU at the maximum (cores, averaged over the steady window)",
            "",
            "`machine busy` is all CPU in use on the machine; `other` is the part no process of this "
            "test accounts for (other users of the machine, the kernel). `ms/req` is CPU "
            "milliseconds per successful request.",
            "",
        ] + cpu_lines
    table = open_table(runs, maxima)
    if table:
        lines += [
            "",
            "## Open model: latency against offered load",
            "",
            "Requests arrive at a fixed rate (Poisson instants) whatever the response times, so "
            "slow answers cannot hold back the load (no coordinated omission) as long as `sent` "
            "keeps up with `offered`. When it falls short, every user of the pool was busy or the "
            "system could not absorb the load: requests then started late, and the latencies "
            "shown are lower bounds. The window of an open run starts once the arrivals that fell "
            "due during the users' setup have gone out.",
            "",
        ] + table
    write_steps_section(lines, runs, plots, path.parent)
    path.write_text("\n".join(lines) + "\n")


def write_steps_section(lines: list[str], runs: list[Run], plots: list[str], results_dir: Path) -> None:
    # Prometheus scrapes FerretDB's metrics, not PostgreSQL's processes.
    note = (
        "The database's line is FerretDB alone; PostgreSQL's CPU is in the tables only."
        if any("postgresql" in run.cores for run in runs)
        else ""
    )
    lines += ["", *timeline.section(results_dir, note), "## Every step", ""] + steps_table(runs)
    if plots:
        lines += [""] + [f"![{name}]({name})" for name in plots]
    lines += [
        "",
        "Each run's JMeter dashboard: `<series>/<step>/dashboard/index.html` next to this file.",
    ]


def plot_scaling(runs: list[Run], maxima: list[Maximum], path: Path, info: dict[str, str] | None = None) -> bool:
    cap = (info or {}).get("cap_cores_applied")
    title = f"maximum throughput, chat servers capped at {cap} core" if cap else "maximum throughput"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    # (servers, figures, speed-up) of each maximum with a number of servers
    scaled = [(m.servers, m.run.measured, m.speedup) for m in maxima if m.servers and m.run is not None]
    if len(scaled) >= 2:
        servers = [n for n, _, _ in scaled]
        rates = [figures.throughput for _, figures, _ in scaled]
        left.plot(servers, rates, "o-", label="measured maximum")
        base = next((figures.throughput for n, figures, _ in scaled if n == 1), None)
        if base:
            left.plot(servers, [base * n for n in servers], "--", color="grey", label="linear (1 server x N)")
        for n, figures, speedup in scaled:
            left.annotate(
                _fmt(speedup, "{:.2f}x", ""), (n, figures.throughput), textcoords="offset points", xytext=(6, -12)
            )
        left.set_xlabel("chat servers in rotation")
        left.set_xticks(servers)
        right.plot(servers, [figures.p95_ms for _, figures, _ in scaled], "o-", color="tab:red", label="p95")
        right.plot(servers, [figures.p99_ms for _, figures, _ in scaled], "s:", color="tab:red", alpha=0.5, label="p99")
        right.set_xlabel("chat servers in rotation")
        right.set_xticks(servers)
        right.set_title("latency at the maximum")
    else:
        for series in series_order(runs):
            steps = [r for r in runs if r.series == series and r.phase == "closed" and r.ok]
            if not steps:
                continue
            threads = [r.threads for r in steps]
            left.plot(threads, [r.measured.throughput for r in steps], "o-", label=series)
            right.plot(threads, [r.measured.p95_ms for r in steps], "o-", label=f"{series} p95")
        left.set_xlabel("threads (closed model)")
        right.set_xlabel("threads (closed model)")
        right.set_title("latency per step")
    left.set_ylabel("successful requests/s")
    left.set_title(title)
    left.set_ylim(bottom=0)
    left.legend()
    right.set_ylabel("ms")
    right.set_ylim(bottom=0)
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def plot_open_model(runs: list[Run], path: Path) -> bool:
    open_runs = [r for r in runs if r.phase == "open" and r.ok]
    if not open_runs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4))
    for index, series in enumerate(series_order(open_runs)):
        # (offered rate, figures) of the series' open runs, by offered rate; every open run
        # of scripts/scale_test.sh has its rate
        steps = sorted(
            ((r.arrival_rate, r.measured) for r in open_runs if r.series == series and r.arrival_rate is not None),
            key=lambda step: step[0],
        )
        color = f"C{index}"
        name = _series_label(open_runs, series).removesuffix(" req/s")
        offered = [rate for rate, _ in steps]
        axis.plot(offered, [figures.p99_ms for _, figures in steps], "-", color=color, label=f"{name} p99")
        axis.plot(offered, [figures.p50_ms for _, figures in steps], ":", color=color, label=f"{name} p50")
        for rate, figures in steps:
            kept_up = figures.sent_rate >= KEPT_UP * rate
            for value, marker in ((figures.p99_ms, "o"), (figures.p50_ms, "x")):
                axis.plot(
                    [rate], [value], marker, color=color, markerfacecolor=color if kept_up or marker == "x" else "white"
                )
    axis.set_xlabel("offered load (requests/s, open model)\nhollow: load not delivered, latency a lower bound")
    axis.set_ylabel("ms")
    axis.set_ylim(bottom=0)
    axis.set_title("latency against offered load")
    axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


# --- the maximum within the objective (SLO search) ------------------------------------


@dataclass
class SloMaximum:
    """One SLO search's result with the figures of the runs that confirmed it."""

    record: dict  # search.json
    runs: list[Run]  # the confirmed runs at the maximum
    speedup: float | None = None
    shared_check: str = ""  # "" when it holds or does not apply, else why the series is invalid
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def workload(self) -> str:
        return self.record["workload"]

    @property
    def servers(self) -> int | None:
        return self.record["servers"]

    @property
    def maximum(self) -> float | None:
        return self.record["maximum_rps"]

    @property
    def misses(self) -> int:
        """Confirmation runs at the maximum that missed the objective (allowed by the plan)."""
        return len(self.record.get("missed_dirs", []))

    def runs_text(self) -> str:
        return f"{len(self.runs)} of {len(self.runs) + self.misses}" if self.misses else str(len(self.runs))

    def spread(self, attribute: str) -> tuple[float, float] | None:
        values = [getattr(r.figures, attribute) for r in self.runs if r.figures is not None]
        values = [value for value in values if value is not None and not math.isnan(value)]
        return (min(values), max(values)) if values else None

    def mean(self, attribute: str) -> float | None:
        values = [getattr(r.figures, attribute) for r in self.runs if r.figures is not None]
        values = [value for value in values if value is not None and not math.isnan(value)]
        return sum(values) / len(values) if values else None

    def cores(self) -> dict[str, float]:
        """Cores per group (chat servers summed as `chat`), averaged over the runs."""
        grouped = [_grouped(run) for run in self.runs if run.cores]
        names = {name for groups in grouped for name in groups}
        return {name: sum(g.get(name, 0.0) for g in grouped) / len(grouped) for name in names} if grouped else {}

    def ms_per_request(self, group: str) -> float | None:
        cores, rate = self.cores().get(group), self.mean("throughput")
        return cores * 1000 / rate if cores is not None and rate else None


def slo_maxima(results_dir: Path, runs: list[Run], info: dict[str, str]) -> list[SloMaximum]:
    by_dir = {run.dir: run for run in runs}
    maxima = [
        SloMaximum(record, [by_dir[d] for d in record["confirmed_dirs"] if d in by_dir and by_dir[d].ok])
        for record in search.read_records(results_dir)
    ]
    order = {name: index for index, name in enumerate(series_order(runs))}
    maxima.sort(key=lambda m: (m.workload != "hot", m.workload, order.get(m.record["series"], 99)))
    for m in maxima:
        base = next((b for b in maxima if b.workload == m.workload and b.servers == 1 and b.maximum), None)
        if base is not None and m.maximum and base.maximum:
            m.speedup = m.maximum / base.maximum
        m.shared_check = shared_parts_check(m, info)
        for name, figure in EXTRA_FIGURES.items():
            values = [v for v in (figure(results_dir / run.dir) for run in m.runs) if v is not None]
            if values:
                m.extra[name] = sum(values) / len(values)
    return maxima


def shared_parts_check(m: SloMaximum, info: dict[str, str]) -> str:
    """The chat tier is provably the bottleneck only if everything but the chat servers
    (the database, HAProxy, login, JMeter, the kernel, other users) uses under half of the
    cores the caps leave. With the chat servers on a core of their own (`--pin`), what the
    others may use is the other cores (`shared_cores`). Returns why a series is invalid, or ""."""
    cores = _number(info.get("cores", "")) or 0
    cap = _number(info.get("cap_cores_applied", ""))
    pinned = _number(info.get("shared_cores", ""))
    grouped = m.cores()
    if not cores or cpu.MACHINE not in grouped or not m.servers:
        return ""
    chat = grouped.get("chat", 0.0)
    left = pinned if pinned else cores - (cap * m.servers if cap else chat)
    shared = grouped[cpu.MACHINE] - chat
    if left <= 0 or shared < SHARED_SHARE_LIMIT * left:
        return ""
    database = f"; the database {_database_text(grouped)}" if "postgresql" in grouped else ""
    return (
        f"INVALID: all but the chat servers used {shared:.2f} of the {left:.2f} "
        + ("cores beside the chat servers' own " if pinned else "cores the caps leave ")
        + f"(limit 50 %{database})"
    )


def _database_text(grouped: dict[str, float]) -> str:
    """The database's cores, and on PostgreSQL how they split between FerretDB and PostgreSQL."""
    parts = [(group, grouped[group]) for group in DATABASE_GROUPS if group in grouped]
    total = sum(value for _, value in parts)
    if len(parts) < 2:
        return f"{total:.2f}"
    return f"{total:.2f} (" + " + ".join(f"{group} {value:.2f}" for group, value in parts) + ")"


def _ranked_parts(grouped: dict[str, float]) -> list[tuple[float, str]]:
    """(cores, name) of each part but the machine and `other`, busiest first; on PostgreSQL,
    FerretDB and PostgreSQL count as one part, the database, since either's work is the other's."""
    parts = {g: v for g, v in grouped.items() if g not in (cpu.MACHINE, "other")}
    if "postgresql" in parts:
        database = sum(parts.pop(group, 0.0) for group in DATABASE_GROUPS)
        ranked = sorted(((v, f"{g} {v:.2f}") for g, v in parts.items()), reverse=True)
        ranked.append((database, f"database {_database_text(grouped)}"))
        return sorted(ranked, key=lambda part: part[0], reverse=True)
    return sorted(((v, f"{g} {v:.2f}") for g, v in parts.items()), reverse=True)


def slo_limit_reading(m: SloMaximum, info: dict[str, str]) -> str:
    """Which process limited the maximum: the criterion that failed first, read with the
    CPU at the maximum (a reading, not a proof)."""
    failed = ", ".join(m.record["failed_first"]) or "none within the step budget"
    if not m.runs or not m.runs[0].cores:
        return f"{failed} failed first; no CPU figures"
    grouped = m.cores()
    cores = _number(info.get("cores", "")) or 0
    cap = _number(info.get("cap_cores_applied", ""))
    jmeter_ms = m.ms_per_request("jmeter")
    if jmeter_ms is not None and jmeter_ms > JMETER_MS_TARGET * 1.5 and grouped.get("jmeter", 0) > 0.5:
        who = f"the load generator (JMeter {grouped['jmeter']:.2f} cores, {jmeter_ms:.1f} ms/req)"
    elif cap and m.servers and grouped.get("chat", 0) >= SATURATED * cap * m.servers:
        who = f"the chat servers (at their cap, {grouped['chat']:.2f} of {cap * m.servers:.2f} cores)"
    elif cores and grouped.get(cpu.MACHINE, 0) >= SATURATED * cores:
        who = "the machine's CPU (" + ", ".join(text for _, text in _ranked_parts(grouped)[:2]) + " cores)"
    else:
        biggest = next(iter(_ranked_parts(grouped)), None)
        who = "no process at a CPU limit" + (f" (most: {biggest[1]} cores)" if biggest else "")
    return f"{failed} failed first; {who}"


def _range(values: tuple[float, float] | None, pattern: str = "{:.0f}") -> str:
    if values is None:
        return "-"
    low, high = values
    return (
        pattern.format(low)
        if pattern.format(low) == pattern.format(high)
        else f"{pattern.format(low)}-{pattern.format(high)}"
    )


def on_postgresql(maxima: list[SloMaximum]) -> bool:
    """Whether the CPU figures include FerretDB's PostgreSQL backend."""
    return any("postgresql" in run.cores for m in maxima for run in m.runs)


def slo_table(maxima: list[SloMaximum], info: dict[str, str]) -> list[str]:
    extra = sorted({name for m in maxima for name in m.extra})
    postgresql = on_postgresql(maxima)
    lines = [
        "| workload | servers | max req/s | runs | ok req/s | p50 ms | p95 ms | p99 ms | errors | msgs/read "
        "| speed-up | failed first (req/s) | chat ms/req | FerretDB ms/req"
        + (" | PostgreSQL ms/req" if postgresql else "")
        + " | JMeter ms/req"
        + "".join(f" | {name}" for name in extra)
        + " | limited by | valid |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        + "---|" * (1 + postgresql + len(extra))
        + "---|---|",
    ]
    for m in maxima:
        failing = f" ({m.record['failing_rps']:.1f})" if m.record.get("failing_rps") else ""
        errors = m.spread("error_rate")
        valid = (m.shared_check or "yes") if m.runs else "-"
        lines.append(
            f"| {m.workload} | {_servers_text(m.servers) if m.servers else m.record['series']} "
            f"| {_fmt(m.maximum)} | {m.runs_text()} | {_range(m.spread('throughput'), '{:.1f}')} "
            f"| {_range(m.spread('p50_ms'))} | {_range(m.spread('p95_ms'))} | {_range(m.spread('p99_ms'))} "
            f"| {_range(errors and (errors[0] * 100, errors[1] * 100), '{:.2f} %')} "
            f"| {_fmt(m.mean('messages_per_read'))} | {_fmt(m.speedup, '{:.2f}x')} "
            f"| {', '.join(m.record['failed_first']) or '-'}{failing} "
            f"| {_fmt(m.ms_per_request('chat'), '{:.2f}')} | {_fmt(m.ms_per_request('ferretdb'), '{:.2f}')} "
            + (f"| {_fmt(m.ms_per_request('postgresql'), '{:.2f}')} " if postgresql else "")
            + f"| {_fmt(m.ms_per_request('jmeter'), '{:.2f}')}"
            + "".join(f" | {_fmt(m.extra.get(name), '{:.3f}')}" for name in extra)
            + f" | {slo_limit_reading(m, info) if m.runs else '-'} | {valid} |"
        )
    return lines


SLO_COLUMNS = [
    "workload",
    "series",
    "servers",
    "cpu_cap_cores",
    "max_rps",
    "runs_at_max",
    "misses_at_max",
    "throughput_min",
    "throughput_max",
    "p50_ms",
    "p95_ms",
    "p99_ms_min",
    "p99_ms_max",
    "messages_per_read",
    "speedup",
    "failed_first",
    "failing_rps",
    "chat_ms_per_req",
    "ferretdb_ms_per_req",
    "postgresql_ms_per_req",
    "jmeter_ms_per_req",
    "shared_cores",
    "valid",
]


def write_slo_csv(maxima: list[SloMaximum], info: dict[str, str], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SLO_COLUMNS)
        for m in maxima:
            throughput, p99 = m.spread("throughput") or ("", ""), m.spread("p99_ms") or ("", "")
            grouped = m.cores()
            shared = grouped.get(cpu.MACHINE, math.nan) - grouped.get("chat", 0.0) if grouped else None
            writer.writerow(
                [
                    m.workload,
                    m.record["series"],
                    m.servers or "",
                    info.get("cap_cores_applied", ""),
                    _fmt(m.maximum, "{:.2f}", ""),
                    len(m.runs),
                    m.misses,
                    _fmt(throughput[0] or None, "{:.2f}", ""),
                    _fmt(throughput[1] or None, "{:.2f}", ""),
                    _fmt(m.mean("p50_ms"), "{:.0f}", ""),
                    _fmt(m.mean("p95_ms"), "{:.0f}", ""),
                    _fmt(p99[0] or None, "{:.0f}", ""),
                    _fmt(p99[1] or None, "{:.0f}", ""),
                    _fmt(m.mean("messages_per_read"), "{:.1f}", ""),
                    _fmt(m.speedup, "{:.3f}", ""),
                    " ".join(m.record["failed_first"]),
                    _fmt(m.record.get("failing_rps"), "{:.2f}", ""),
                    _fmt(m.ms_per_request("chat"), "{:.3f}", ""),
                    _fmt(m.ms_per_request("ferretdb"), "{:.3f}", ""),
                    _fmt(m.ms_per_request("postgresql"), "{:.3f}", ""),
                    _fmt(m.ms_per_request("jmeter"), "{:.3f}", ""),
                    _fmt(shared, "{:.3f}", ""),
                    ("no" if m.shared_check else "yes") if m.runs else "",
                ]
            )


def plot_slo(maxima: list[SloMaximum], runs: list[Run], path: Path, info: dict[str, str]) -> bool:
    if not maxima:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = sorted({m.workload for m in maxima}, key=lambda name: (name != "hot", name))
    figure, axes = plt.subplots(1, 1 + len(workloads), figsize=(5 * (1 + len(workloads)), 4), squeeze=False)
    left = axes[0][0]
    for index, name in enumerate(workloads):
        # (servers, arrival rate found, (lowest, highest) successful req/s of its runs)
        rows = [
            (m.servers, m.maximum, spread)
            for m in maxima
            if m.workload == name and m.servers and m.maximum and (spread := m.spread("throughput"))
        ]
        if not rows:
            continue
        servers = [n for n, _, _ in rows]
        left.errorbar(
            servers,
            [rate for _, rate, _ in rows],
            yerr=[
                [max(rate - low, 0) for _, rate, (low, _) in rows],
                [max(high - rate, 0) for _, rate, (_, high) in rows],
            ],
            fmt="o-",
            color=f"C{index}",
            capsize=4,
            label=f"{name} (bars: ok req/s of its runs)",
        )
        base = next((rate for n, rate, _ in rows if n == 1), None)
        if base:
            left.plot(servers, [base * n for n in servers], "--", color=f"C{index}", alpha=0.4)
    cap = info.get("cap_cores_applied")
    objective = maxima[0].record["objective"]
    left.set_title(f"maximum at p99 <= {objective['p99_ms']:.0f} ms" + (f", cap {cap} core" if cap else ""))
    left.set_xlabel("chat servers (dashed: linear)")
    left.set_ylabel("arrival rate, req/s")
    left.set_ylim(bottom=0)
    left.legend(fontsize="small")
    for axis, name in zip(axes[0][1:], workloads, strict=True):
        for index, series in enumerate(series_order(runs)):
            steps = sorted(
                (r for r in runs if r.series == series and r.workload == name and r.ok and r.phase in SEARCH_PHASES),
                key=lambda r: r.arrival_rate or 0,
            )
            if steps:
                axis.plot(
                    [r.arrival_rate for r in steps],
                    [r.measured.p99_ms for r in steps],
                    "o-",
                    color=f"C{index}",
                    label=_series_label(steps, series).removesuffix(" req/s"),
                )
        axis.axhline(objective["p99_ms"], color="grey", linestyle="--", label="objective")
        axis.set_title(f"{name}: p99 from scheduled arrival")
        axis.set_xlabel("offered req/s")
        axis.set_ylabel("ms")
        axis.set_ylim(bottom=0, top=objective["p99_ms"] * 3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


SEARCH_PHASES = ("grow", "shrink", "bisect", "confirm")


def slo_section(maxima: list[SloMaximum], info: dict[str, str]) -> list[str]:
    if not maxima:
        return []
    objective = maxima[0].record["objective"]
    plan = maxima[0].record["plan"]
    descriptions = {m.workload: m.record["workload_description"] for m in maxima}
    lines = [
        "## Maximum within the objective",
        "",
        f"The highest open-model arrival rate with p99 <= {objective['p99_ms']:.0f} ms, errors under "
        f"{objective['max_error_rate']:.0%} and at least {objective['min_sent_ratio']:.0%} of the offered requests "
        "sent. Latency counts from each request's scheduled arrival (no coordinated omission). The search "
        f"grows the rate by {plan['growth']:g}x until a criterion fails, bisects to within "
        f"{plan['precision']:.0%}, then runs the rate found until {plan['confirmations']} runs of it pass "
        f'(`runs`; up to {plan.get("misses", 0)} failed run(s) at a rate allowed, shown as "3 of 4": a p99 over '
        "a few seconds is the few slowest requests of that window; one more steps the rate down, each step "
        "twice the one before); ranges are over the passing runs. `failed first` names the criteria that failed at the lowest "
        "failing rate. `valid`: at each maximum everything but the chat servers used under half of the "
        "cores the caps leave (else the chat tier is not shown to be the bottleneck)."
        + (
            " The database runs on PostgreSQL: its CPU is FerretDB's and PostgreSQL's (the postmaster and "
            "every process below it, `PostgreSQL ms/req`), and `limited by` and `valid` count both."
            if on_postgresql(maxima)
            else ""
        ),
        "",
        *[f"- {name}: {text}" for name, text in descriptions.items()],
        "",
    ]
    return lines + slo_table(maxima, info)


def build(results_dir: Path | str, settle_ms: int = SETTLE_MS, plots: bool = True) -> list[Maximum]:
    """Write every report file into results_dir; returns the maxima."""
    results_dir = Path(results_dir)
    info = read_info(results_dir)
    runs = load_runs(results_dir, settle_ms)
    maxima = find_maxima(runs)
    slo = slo_maxima(results_dir, runs, info)
    write_steps_csv(runs, results_dir / "steps.csv")
    made = []
    if slo:
        write_slo_csv(slo, info, results_dir / "slo.csv")
        if plots and plot_slo(slo, runs, results_dir / "slo.png", info):
            made.append("slo.png")
    else:
        write_summary_csv(maxima, info, results_dir / "summary.csv")
        if plots:
            if plot_scaling(runs, maxima, results_dir / "scaling.png", info):
                made.append("scaling.png")
            if plot_open_model(runs, results_dir / "open_model.png"):
                made.append("open_model.png")
    if plots:
        timeline.plot(results_dir)
    write_summary_md(runs, maxima, info, results_dir / "summary.md", made, slo)
    return maxima
