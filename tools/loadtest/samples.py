"""One JMeter run's results.csv reduced to steady-state figures.

Closed model: the steady window starts a second after the last virtual user has finished
its once-per-user setup (register, login, read latest) and ends with the last chat request.
Open model (samples carry the arrival the plan scheduled them for, `scheduled_ms`): the
window covers the arrivals scheduled from a second after the schedule began to a grace
period before the run's end; latency is counted from each request's arrival, not from its
actual start, and requests not sent count against `sent` (no coordinated omission).
Only "post message" and "read messages" count: they are the traffic the chat servers scale on.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy

STEADY_LABELS = ("post message", "read messages")
SETUP_LABELS = ("register", "login", "read latest")
# The error rate below which a step may count as the maximum.
MAX_ERROR_RATE = 0.01
# The steady window opens this long after the last setup request: requests that queued
# behind the setup (the open model's timer catching up) drain in that time.
SETTLE_MS = 1000
# A shorter steady window says the step was too short for its setup: it cannot be a maximum.
MIN_WINDOW_MS = 3000
# Open model: arrivals scheduled this close to the run's end are left out, so that a request
# still in flight when JMeter stops is not mistaken for one never answered.
END_GRACE_MS = 1500


@dataclass(frozen=True)
class Sample:
    label: str
    start_ms: int
    elapsed_ms: int
    success: bool
    code: str = ""
    scheduled_ms: int | None = None  # the open model's arrival for this request
    returned: int | None = None  # messages on a read's page
    served_by: str = ""

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.elapsed_ms

    @property
    def latency_ms(self) -> int:
        """From the arrival when the request had one (it may have waited for a free user),
        else from its start."""
        if self.scheduled_ms is not None and self.scheduled_ms < self.start_ms:
            return self.end_ms - self.scheduled_ms
        return self.elapsed_ms

    @property
    def error_kind(self) -> str:
        """What went wrong, for the tables: `HTTP 503`, `assertion` (a 2xx the plan
        rejected, e.g. out of order), or the client-side exception (`SocketTimeoutException`)."""
        code = self.code.strip()
        if code.isdigit():
            return "assertion" if code.startswith("2") else f"HTTP {code}"
        return code.rsplit(".", 1)[-1].rsplit(":", 1)[-1].strip() or "no response"


@dataclass(frozen=True)
class StepFigures:
    """Steady-state figures of one run. Rates are per second of the steady window."""

    window_start_ms: int
    window_end_ms: int
    requests: int  # steady-state requests completed in the window, failed ones included
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    offered_rate: float | None = None  # open model: arrivals scheduled per second of the window
    messages_per_read: float | None = None  # mean messages on a read's page
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    served_by: dict[str, int] = field(default_factory=dict)  # requests per answering server

    @property
    def seconds(self) -> float:
        return max(self.window_end_ms - self.window_start_ms, 1) / 1000.0

    @property
    def throughput(self) -> float:
        """Successful steady-state requests per second."""
        return (self.requests - self.errors) / self.seconds

    @property
    def sent_rate(self) -> float:
        """All steady-state requests per second, failed ones included."""
        return self.requests / self.seconds

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 1.0

    @property
    def sent_ratio(self) -> float | None:
        """Open model: requests sent / requests offered in the window."""
        if not self.offered_rate:
            return None
        return self.sent_rate / self.offered_rate

    @property
    def qualifies(self) -> bool:
        """May count as a maximum: a steady window of MIN_WINDOW_MS at least, some traffic,
        and errors under MAX_ERROR_RATE."""
        return (
            self.window_end_ms - self.window_start_ms >= MIN_WINDOW_MS
            and self.requests > 0
            and self.error_rate < MAX_ERROR_RATE
        )


def percentile(values: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile, the one definition every report here uses: the smallest
    value with at least `percent` % of the values at or below it (numpy's "inverted_cdf",
    so p100 is the maximum and no value is ever interpolated); NaN for no values."""
    if len(values) == 0:
        return math.nan
    return float(numpy.percentile(values, percent, method="inverted_cdf"))


def label_table(samples: Sequence[Sample]) -> str:
    """Per label: samples, errors, mean and p95 of the elapsed time (from each request's
    start), and samples per second over the whole run; then the totals."""
    if not samples:
        return "no samples"
    first = min(sample.start_ms for sample in samples)
    last = max(sample.end_ms for sample in samples)
    span = max((last - first) / 1000, 0.001)
    by_label: dict[str, list[Sample]] = {}
    for sample in samples:
        by_label.setdefault(sample.label, []).append(sample)
    lines = [f"{'label':<16}{'samples':>9}{'errors':>8}{'mean ms':>9}{'p95 ms':>8}{'per s':>9}"]
    for label, group in sorted(by_label.items()):
        elapsed = [sample.elapsed_ms for sample in group]
        errors = sum(not sample.success for sample in group)
        lines.append(
            f"{label:<16}{len(group):>9}{errors:>8}{sum(elapsed) / len(elapsed):>9.1f}"
            f"{percentile(elapsed, 95):>8.0f}{len(group) / span:>9.1f}"
        )
    errors = sum(not sample.success for sample in samples)
    lines.append(f"total: {len(samples)} samples, {errors} errors, over {span:.1f} s")
    return "\n".join(lines)


def _optional_int(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None  # JMeter writes "null" for an unset variable


def read_samples(path: Path | str) -> list[Sample]:
    samples = []
    with open(path, newline="", encoding="utf-8") as results:
        for row in csv.DictReader(results):
            try:
                served_by = (row.get("served_by") or "").strip()
                samples.append(
                    Sample(
                        row["label"],
                        int(row["timeStamp"]),
                        int(row["elapsed"]),
                        row["success"].strip().lower() == "true",
                        row.get("responseCode") or "",
                        _optional_int(row.get("scheduled_ms")),
                        _optional_int(row.get("returned")),
                        "" if served_by == "null" else served_by,
                    )
                )
            except (KeyError, ValueError, AttributeError):
                continue  # a truncated last line of an interrupted run
    return samples


def _caught_up(samples: list[Sample], arrival_rate: float, not_before: int) -> int | None:
    """Open model: the first chat request from `not_before` on at which the requests sent
    have caught up with the arrival schedule (to within half a second of arrivals).

    The timer schedules arrivals from the start of the run, so those that fell due while
    the users were still in setup go out in a burst as soon as users are free; counting
    that burst would overstate the offered load. None: the backlog never drained (the
    pool or the system could not keep up with the offered load)."""
    run_start = min(s.start_ms for s in samples)
    allowed = max(arrival_rate * 0.5, 1.0)
    starts = sorted(s.start_ms for s in samples if s.label in STEADY_LABELS)
    for sent, start in enumerate(starts, 1):
        if start >= not_before and arrival_rate * (start - run_start) / 1000.0 - sent <= allowed:
            return start
    return None


def steady_window(
    samples: list[Sample], settle_ms: int = SETTLE_MS, arrival_rate: float | None = None
) -> tuple[int, int] | None:
    """(start, end) in epoch ms, or None when no chat request ends after the setup."""
    steady = [s for s in samples if s.label in STEADY_LABELS]
    if not steady:
        return None
    setup_ends = [s.end_ms for s in samples if s.label in SETUP_LABELS]
    start = (max(setup_ends) if setup_ends else min(s.start_ms for s in steady)) + settle_ms
    if arrival_rate:
        start = _caught_up(samples, arrival_rate, start) or start
    end = max(s.end_ms for s in steady)
    return (start, end) if end > start else None


def _figures(start: int, end: int, inside: list[Sample], offered_rate: float | None = None) -> StepFigures:
    times = [s.latency_ms for s in inside]
    failed = [s for s in inside if not s.success]
    pages = [s.returned for s in inside if s.label == "read messages" and s.success and s.returned is not None]
    servers = Counter(s.served_by for s in inside if s.served_by)
    return StepFigures(
        start,
        end,
        len(inside),
        len(failed),
        percentile(times, 50),
        percentile(times, 95),
        percentile(times, 99),
        sum(times) / len(times) if times else math.nan,
        offered_rate,
        sum(pages) / len(pages) if pages else None,
        dict(Counter(s.error_kind for s in failed).most_common()),
        dict(sorted(servers.items())),
    )


def step_figures(
    samples: list[Sample], settle_ms: int = SETTLE_MS, arrival_rate: float | None = None
) -> StepFigures | None:
    window = steady_window(samples, settle_ms, arrival_rate)
    if window is None:
        return None
    start, end = window
    inside = [s for s in samples if s.label in STEADY_LABELS and s.start_ms >= start and s.end_ms <= end]
    return _figures(start, end, inside)


def scheduled_figures(
    samples: list[Sample], arrival_rate: float, arrival_s: float, settle_ms: int = SETTLE_MS
) -> StepFigures | None:
    """Open-model figures from the arrivals the plan scheduled: the window runs from
    `settle_ms` after the first arrival to END_GRACE_MS before the schedule's end (the first
    arrival + `arrival_s`, the plan's arrival_seconds); every request whose arrival falls in it counts, with its
    latency from that arrival. Sent = those requests per second; offered = the arrivals the
    schedule made in the window per second (about arrival_rate).
    None when the samples carry no arrivals or the window is empty."""
    chat = [s for s in samples if s.label in STEADY_LABELS and s.scheduled_ms is not None]
    if not chat or not samples:
        return None
    origin = min(s.scheduled_ms for s in chat if s.scheduled_ms is not None)
    start, end = origin + settle_ms, origin + int(arrival_s * 1000) - END_GRACE_MS
    if end <= start:
        return None
    inside = [s for s in chat if s.scheduled_ms is not None and start <= s.scheduled_ms < end]
    # Users claim arrivals in order, so every arrival up to the last one claimed was sent;
    # those offered after it (users all busy until the end) are the rate times the rest of
    # the window. Counting the arrivals themselves, not rate x window, keeps the Poisson
    # schedule's own randomness out of the sent/offered ratio.
    last_claimed = max(s.scheduled_ms for s in chat if s.scheduled_ms is not None)
    unsent = arrival_rate * max(end - max(last_claimed, start), 0) / 1000.0
    offered_rate = (len(inside) + unsent) / ((end - start) / 1000.0)
    return _figures(start, end, inside, offered_rate)


def figures_of_run(
    run_dir: Path | str,
    settle_ms: int = SETTLE_MS,
    arrival_rate: float | None = None,
    arrival_s: float | None = None,
) -> StepFigures | None:
    """The figures of a run directory: from the arrivals when the run is an open one whose
    samples carry them (and its arrival_seconds is known), else from the steady window."""
    results = Path(run_dir) / "results.csv"
    if not results.is_file():
        return None
    samples = read_samples(results)
    if arrival_rate and arrival_s:
        figures = scheduled_figures(samples, arrival_rate, arrival_s, settle_ms)
        if figures is not None:
            return figures
    return step_figures(samples, settle_ms, arrival_rate)
