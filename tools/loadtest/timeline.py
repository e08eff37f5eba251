"""A results directory over time, from the stack's Prometheus (docs/observability.md).

The tables of a report give one figure per run; this shows the whole test as it went:
each chat server's requests per second and p99, and the CPU of each chat server, of the
database and of the whole machine. A server that lags behind the others, or the moment
the database saturates, shows at a glance.

`record` asks Prometheus's range API for the test's time span and keeps the answers in
timeline.csv (one line per sample: time, panel, line, value), so that the report can be
drawn again after the stack, and its Prometheus, are gone. `plot` draws timeline.png from
it, with each run of runs.csv shaded and each series named.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import requests

CSV = "timeline.csv"
PNG = "timeline.png"
STEP_S = 5  # Prometheus scrapes every 5 s (conf/prometheus/prometheus.yml)
WINDOW = "20s"  # four scrapes: short enough to follow a 10-s run, long enough for rate()
# Long polls last up to 30 s by design; they would drown the short requests' p99.
SHORT = 'service="chat", route!~".*\\\\(wait\\\\)"'


@dataclass(frozen=True)
class Query:
    panel: str  # requests, p99_ms, cpu_cores
    expr: str
    label: str  # the series label that names a line, or "" for one line
    name: str = ""  # the line's name when label is ""
    scale: float = 1.0


QUERIES = (
    Query(
        "requests",
        f"sum by (server) (rate(chatsys_http_request_duration_seconds_count{{{SHORT}}}[{WINDOW}]))",
        "server",
    ),
    Query(
        "p99_ms",
        "histogram_quantile(0.99, sum by (server, le) "
        f"(rate(chatsys_http_request_duration_seconds_bucket{{{SHORT}}}[{WINDOW}])))",
        "server",
        scale=1000.0,
    ),
    Query(
        "cpu_cores", f'sum by (server) (rate(chatsys_process_cpu_seconds_total{{service="chat"}}[{WINDOW}]))', "server"
    ),
    Query("cpu_cores", f'sum(rate(process_cpu_seconds_total{{job="ferretdb"}}[{WINDOW}]))', "", "database (FerretDB)"),
    Query(
        "cpu_cores",
        f'sum(rate(chatsys_process_cpu_seconds_total{{service=~"login|profile"}}[{WINDOW}]))',
        "",
        "login + profile",
    ),
    Query(
        "cpu_cores", f'sum(rate(node_cpu_seconds_total{{mode!~"idle|iowait|steal"}}[{WINDOW}]))', "", "whole machine"
    ),
)


def available(prometheus: str) -> bool:
    """Whether a Prometheus answers at that URL."""
    try:
        return requests.get(f"{prometheus}/-/ready", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def record(prometheus: str, start: float, end: float, out_dir: Path, step: int = STEP_S) -> int:
    """Write out_dir/timeline.csv with every query's samples from start to end (Unix
    seconds); returns the number of samples. Raises on a query Prometheus refuses."""
    rows: list[tuple[float, str, str, float]] = []
    for query in QUERIES:
        answer = requests.get(
            f"{prometheus}/api/v1/query_range",
            params={"query": query.expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": str(step)},
            timeout=30,
        )
        answer.raise_for_status()
        for result in answer.json()["data"]["result"]:
            line = result["metric"].get(query.label, "") if query.label else query.name
            for stamp, value in result["values"]:
                number = float(value) * query.scale
                if math.isfinite(number):
                    rows.append((float(stamp), query.panel, line, number))
    with open(out_dir / CSV, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", "panel", "line", "value"])
        writer.writerows((f"{t:.0f}", panel, line, f"{v:.4g}") for t, panel, line, v in sorted(rows))
    return len(rows)


def span(results_dir: Path) -> tuple[float, float] | None:
    """The test's span from runs.csv (the first run's start, the last run's end)."""
    windows = [w for _, _, w in run_windows(results_dir)]
    if not windows:
        return None
    return min(s for s, _ in windows), max(e for _, e in windows)


def run_windows(results_dir: Path) -> list[tuple[str, str, tuple[float, float]]]:
    """(series, workload, (started, ended)) of every run in runs.csv that recorded its times."""
    path = results_dir / "runs.csv"
    if not path.exists():
        return []
    windows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                windows.append((row["series"], row.get("workload") or "", (float(row["started"]), float(row["ended"]))))
            except (KeyError, TypeError, ValueError):
                continue  # a results directory from before runs recorded their times
    return windows


def load(results_dir: Path) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """panel -> line -> [(time, value)] from timeline.csv."""
    panels: dict[str, dict[str, list[tuple[float, float]]]] = {}
    with open(results_dir / CSV, newline="") as handle:
        for row in csv.DictReader(handle):
            panels.setdefault(row["panel"], {}).setdefault(row["line"], []).append(
                (float(row["time"]), float(row["value"]))
            )
    return panels


PANELS = (
    ("requests", "chat req/s per server", False),
    ("p99_ms", "p99 ms per chat server\n(short requests)", True),
    ("cpu_cores", "CPU, cores", False),
)


def plot(results_dir: Path) -> bool:
    """Draw timeline.png from timeline.csv; False when there is nothing to draw."""
    if not (results_dir / CSV).exists():
        return False
    panels = load(results_dir)
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    windows = run_windows(results_dir)
    figure, axes = plt.subplots(len(PANELS), 1, figsize=(13, 9), sharex=True)
    for ax, (panel, title, log) in zip(axes, PANELS, strict=True):
        for line, points in sorted(panels.get(panel, {}).items()):
            times = [datetime.fromtimestamp(t, UTC) for t, _ in points]
            ax.plot(times, [v for _, v in points], label=line, linewidth=1.2)
        if log and panels.get(panel):
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.set_ylabel(title)
        ax.grid(True, alpha=0.3)
        if panels.get(panel):
            ax.legend(loc="upper left", fontsize=8, ncol=3)
        for number, (_, _, (started, ended)) in enumerate(windows):
            ax.axvspan(
                datetime.fromtimestamp(started, UTC),
                datetime.fromtimestamp(ended, UTC),
                color="tab:gray",
                alpha=0.12 if number % 2 else 0.22,
                linewidth=0,
            )
    # Each series and workload is named once, above its first run.
    named: set[tuple[str, str]] = set()
    for series, workload, (started, _) in windows:
        if (series, workload) in named:
            continue
        named.add((series, workload))
        axes[0].axvline(datetime.fromtimestamp(started, UTC), color="black", linewidth=0.6)
        axes[0].annotate(
            f"{series} {workload}",
            (mdates.date2num(datetime.fromtimestamp(started, UTC)), 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            va="top",
            ha="right",
        )
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=UTC))
    axes[-1].set_xlabel("UTC (each shaded band is one JMeter run)")
    figure.suptitle("The test over time, from Prometheus (rates over 20 s)")
    figure.tight_layout()
    figure.savefig(results_dir / PNG, dpi=90)
    plt.close(figure)
    return True


def section(results_dir: Path, note: str = "") -> list[str]:
    """The report's lines about the timeline, when there is one (NOTE ends its paragraph)."""
    return section_lines(note) if (results_dir / PNG).exists() else []


def section_lines(note: str = "") -> list[str]:
    return [
        "## Over time",
        "",
        "From the stack's Prometheus (scraping every 5 s): each chat server's requests per second and "
        "p99 of short requests (long polls left out), and the CPU of each chat server, the database, "
        "login and profile together, and the whole machine; rates over 20 s. Shaded bands are the "
        "JMeter runs. The samples are in `timeline.csv`." + (f" {note}" if note else ""),
        "",
        f"![over time]({PNG})",
        "",
    ]


def wait_scraped(prometheus: str, end: float, seconds: float = 30.0) -> None:
    """Wait (bounded) until Prometheus has scraped past `end`, so the last run is in."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            answer = requests.get(
                f"{prometheus}/api/v1/query", params={"query": 'max(timestamp(up{job="services"}))'}, timeout=5
            )
            result = answer.json()["data"]["result"]
            if result and float(result[0]["value"][1]) >= end + STEP_S:
                return
        except (requests.RequestException, KeyError, ValueError, IndexError):
            pass
        time.sleep(1)
