"""One JMeter run's results.csv reduced to steady-state figures.

The steady window starts a second after the last virtual user has finished its
once-per-user setup (register, login, read latest), in the open model not before the
requests that fell due during the setup have gone out, and ends with the last chat request. Only "post message"
and "read messages" count: they are the traffic the chat servers scale on.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Sample:
    label: str
    start_ms: int
    elapsed_ms: int
    success: bool

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.elapsed_ms


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


def read_samples(path: Path | str) -> list[Sample]:
    samples = []
    with open(path, newline="", encoding="utf-8") as results:
        for row in csv.DictReader(results):
            try:
                samples.append(
                    Sample(
                        row["label"],
                        int(row["timeStamp"]),
                        int(row["elapsed"]),
                        row["success"].strip().lower() == "true",
                    )
                )
            except (KeyError, ValueError):
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


def step_figures(
    samples: list[Sample], settle_ms: int = SETTLE_MS, arrival_rate: float | None = None
) -> StepFigures | None:
    window = steady_window(samples, settle_ms, arrival_rate)
    if window is None:
        return None
    start, end = window
    inside = [s for s in samples if s.label in STEADY_LABELS and s.start_ms >= start and s.end_ms <= end]
    times = [s.elapsed_ms for s in inside]
    errors = sum(1 for s in inside if not s.success)
    mean = sum(times) / len(times) if times else math.nan
    return StepFigures(
        start, end, len(inside), errors, percentile(times, 50), percentile(times, 95), percentile(times, 99), mean
    )


def figures_of_run(
    run_dir: Path | str, settle_ms: int = SETTLE_MS, arrival_rate: float | None = None
) -> StepFigures | None:
    results = Path(run_dir) / "results.csv"
    if not results.is_file():
        return None
    return step_figures(read_samples(results), settle_ms, arrival_rate)
