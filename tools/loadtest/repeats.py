"""Runs of the scale test side by side: each series' maximum, speed-up and CPU per request
in every run, and how far apart the runs' speed-ups are.

Whether the scale test reproduces is a question about several reports at once. This reads
each one's slo.csv and run.info (a results directory of scale_test.sh, or a kept report
under docs/results), prints one table per workload, and says for each server count whether
the speed-ups of all runs lie within TOLERANCE of each other (the largest minus the
smallest). It names what differs between the runs' settings and machines (the CPU model,
the cap, its period, the cores, the idle states, the objective, the length of a run):
runs that differ there are not one measurement repeated, so they never count as
reproduced.

    python -m tools.loadtest repeats DIR DIR DIR [--tolerance 0.1] [--out FILE.md]
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from tools.loadtest.report import _fmt, _number, read_info

# The settings of run.info that make two runs the same measurement when they agree.
SAME_MEASUREMENT = {
    "cpu_model": "CPU model",
    "cores": "cores",
    "cap_cores_applied": "cap (cores per chat server)",
    "cap_period_us": "cap period (µs)",
    "pin": "cores of the chat servers",
    "idle": "idle cores",
    "slo_p99_ms": "p99 objective (ms)",
    "duration": "seconds per run",
    "plan_properties": "plan properties",
}


@dataclass(frozen=True)
class Maximum:
    servers: int
    rps: float | None
    speedup: float | None
    chat_ms: float | None
    ferretdb_ms: float | None
    jmeter_ms: float | None
    valid: str


@dataclass(frozen=True)
class Report:
    name: str
    info: dict[str, str]
    maxima: dict[str, dict[int, Maximum]]  # workload -> servers -> maximum


def read_report(results_dir: Path) -> Report:
    path = results_dir / "slo.csv"
    if not path.is_file():
        raise SystemExit(f"{results_dir}: no slo.csv (not a scale test's results, or its report was never built)")
    maxima: dict[str, dict[int, Maximum]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if not row["servers"]:
                continue
            servers = int(row["servers"])
            maxima.setdefault(row["workload"], {})[servers] = Maximum(
                servers,
                _number(row["max_rps"]),
                _number(row["speedup"]),
                _number(row["chat_ms_per_req"]),
                _number(row["ferretdb_ms_per_req"]),
                _number(row["jmeter_ms_per_req"]),
                row["valid"],
            )
    return Report(results_dir.resolve().name, read_info(results_dir), maxima)


def differences(reports: list[Report]) -> list[str]:
    """What differs between the runs' settings and machines, one line per setting."""
    lines = []
    for key, label in SAME_MEASUREMENT.items():
        runs_of: dict[str, list[str]] = {}
        for report in reports:
            runs_of.setdefault(report.info.get(key, ""), []).append(report.name)
        if len(runs_of) > 1:
            lines.append(
                f"{label}: " + "; ".join(f"{v or '(not recorded)'} ({', '.join(n)})" for v, n in runs_of.items())
            )
    return lines


def spread(values: list[float | None]) -> float | None:
    """Largest minus smallest; None when a run has no such figure."""
    present = [value for value in values if value is not None]
    if not present or len(present) < len(values):
        return None
    return max(present) - min(present)


def workload_table(reports: list[Report], workload: str) -> list[str]:
    counts = sorted({n for report in reports for n in report.maxima.get(workload, {})})
    lines = [
        "| run | date | commit | CPU | "
        + " | ".join(f"{n} server{'s' if n > 1 else ''}" for n in counts)
        + " | chat ms/req | FerretDB ms/req | JMeter ms/req | valid |",
        "|---|---|---|---|" + "---|" * len(counts) + "---|---|---|---|",
    ]
    for report in reports:
        series = report.maxima.get(workload, {})
        cells = []
        for n in counts:
            m = series.get(n)
            if m is None or m.rps is None:
                cells.append("-")
            else:
                cells.append(f"{m.rps:.1f}" + ("" if n == 1 else f" ({_fmt(m.speedup, '{:.2f}')}x)"))
        ordered = [series.get(n) for n in counts]

        def joined(attribute: str, maxima: list[Maximum | None] = ordered) -> str:
            return " / ".join(_fmt(getattr(m, attribute) if m else None, "{:.2f}") for m in maxima)

        lines.append(
            f"| {report.name} | {report.info.get('started', '-')[:10]} | {report.info.get('commit', '-')} | "
            f"{report.info.get('cpu_model', '-')} | "
            + " | ".join(cells)
            + f" | {joined('chat_ms')} | {joined('ferretdb_ms')} | {joined('jmeter_ms')} | "
            + " / ".join((m.valid or "-") if m else "-" for m in ordered)
            + " |"
        )
    return lines


def verdicts(reports: list[Report], workload: str, tolerance: float, same: bool) -> list[str]:
    counts = sorted({n for report in reports for n in report.maxima.get(workload, {})} - {1})
    lines = []
    for n in counts:
        values = [
            (report.maxima.get(workload, {}).get(n) or Maximum(n, None, None, None, None, None, "")).speedup
            for report in reports
        ]
        apart = spread(values)
        if apart is None:
            lines.append(f"- {n} servers: a run has no speed-up (no maximum confirmed): not reproduced")
            continue
        shown = ", ".join(f"{value:.2f}x" for value in values if value is not None)
        agree = apart <= tolerance + 1e-9
        verdict = "reproduced" if agree and same else "not reproduced"
        why = "" if agree else f" (more than {tolerance:g} apart)"
        if agree and not same:
            why = " (within the tolerance, but the runs differ in their settings or machine, above)"
        lines.append(f"- {n} servers: speed-ups {shown}, {apart:.2f} apart: {verdict}{why}")
    for report in reports:
        series = report.maxima.get(workload, {})
        one, most = series.get(1), series.get(max(series, default=1))
        if one and most and most is not one and one.chat_ms and most.chat_ms:
            lines.append(
                f"- {report.name}: chat CPU per request with {most.servers} servers is "
                f"{most.chat_ms / one.chat_ms:.2f}x that of one ({most.chat_ms:.2f} / {one.chat_ms:.2f} ms)"
            )
    return lines


def render(reports: list[Report], tolerance: float) -> str:
    lines = [f"# {len(reports)} runs of the scale test side by side", ""]
    differ = differences(reports)
    if differ:
        lines += ["Not one measurement repeated: the runs differ in", ""]
        lines += [f"- {line}" for line in differ]
    else:
        first = reports[0].info
        lines.append(
            f"The same settings and machine in every run: {first.get('cpu_model', '?')}, "
            f"{first.get('cores', '?')} cores, cap {first.get('cap_cores_applied') or 'none'}, "
            f"p99 objective {first.get('slo_p99_ms', '?')} ms, {first.get('duration', '?')} s per run."
        )
    workloads = sorted({w for report in reports for w in report.maxima})
    for workload in workloads:
        measured = [report for report in reports if report.maxima.get(workload)]
        lines += ["", f"## {workload}", ""]
        lines += workload_table(measured, workload)
        lines.append("")
        if len(measured) < len(reports):
            lacking = ", ".join(report.name for report in reports if report not in measured)
            lines.append(f"- not measured in {lacking}; the rest compared")
        if len(measured) > 1:
            lines += verdicts(measured, workload, tolerance, not differ)
    lines += [
        "",
        f"Speed-ups agree when the largest and the smallest of the runs differ by at most {tolerance:g}. "
        "CPU per request: at each maximum, one / two / three servers.",
    ]
    return "\n".join(lines) + "\n"


def add_command(commands) -> None:
    parser = commands.add_parser("repeats", help="runs of the scale test side by side, with their spread")
    parser.add_argument("results_dirs", nargs="+", type=Path)
    parser.add_argument("--tolerance", type=float, default=0.1, help="speed-ups agree within this (0.1)")
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    parser.set_defaults(run=_repeats)


def _repeats(args) -> int:
    text = render([read_report(path) for path in args.results_dirs], args.tolerance)
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return 0
