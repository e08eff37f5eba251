"""CPU time of named process groups, sampled with psutil, and cores used over a time window.

A group is a process tree (`name=PID`: PID and everything below it, e.g. a gunicorn
master and its workers) or the processes below PID whose command line contains a text
(`name=PID:TEXT`, e.g. the JMeter JVMs a script starts one after the other). The group
`machine` is always recorded: busy CPU time of all cores (all but idle and iowait).

The monitor writes one row per process and sample (time, group, pid, cpu_seconds), so a
process that ends or starts between samples still counts for the time it was seen. What a
process of the group used after its last sample, or in a life between two samples (a
PostgreSQL backend, an autovacuum worker, a gunicorn worker that was replaced), is read from
its parent's CPU of reaped children once the parent has waited for it: the row with the
group's root pid negated, `exited`, counts it up (for a group of the root's tree; a group
by command line has none).
"""

from __future__ import annotations

import csv
import signal
import time
from collections import defaultdict
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import psutil

MACHINE = "machine"


@dataclass(frozen=True)
class Group:
    name: str
    root_pid: int
    command_contains: str = ""

    @classmethod
    def parse(cls, spec: str) -> Group:
        name, _, target = spec.partition("=")
        pid, _, text = target.partition(":")
        if not name or not pid.isdigit():
            raise ValueError(f"a group is NAME=PID or NAME=PID:TEXT, not {spec!r}")
        return cls(name, int(pid), text)


# pid -> (parent pid, CPU seconds used so far, CPU seconds of the children it has reaped),
# each user + system.
Table = dict[int, tuple[int, float, float]]


def _process_table() -> Table:
    table = {}
    for process in psutil.process_iter(["ppid", "cpu_times"]):
        ppid, times = process.info["ppid"], process.info["cpu_times"]
        if ppid is not None and times is not None:  # None: gone or not ours to read
            table[process.pid] = (ppid, times.user + times.system, times.children_user + times.children_system)
    return table


def _command_line(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def _machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    # Linux counts guest time inside user time as well: left out so that nothing counts twice.
    return sum(times) - times.idle - times.iowait - times.guest - times.guest_nice


def members(group: Group, table: Table) -> list[int]:
    children = defaultdict(list)
    for pid, (parent, _, _) in table.items():
        children[parent].append(pid)
    found, pending = [], [group.root_pid] if group.root_pid in table else []
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, ()))
    if group.command_contains:
        found = [pid for pid in found if pid != group.root_pid and group.command_contains in _command_line(pid)]
    return found


def unseen_exits(previous: Table, table: Table) -> float:
    """CPU seconds that processes of a group used unseen between two samples, `previous` and
    `table` (each: the group's members only). A parent's reaped time grows by the whole life
    of each child it waits for (the child's own time and its reaped time), so of that growth,
    what was seen of its children that are gone since counts already; the rest did not."""
    gone: defaultdict[int, float] = defaultdict(float)  # parent -> what was seen of its children now gone
    for pid, (parent, used, reaped) in previous.items():
        if pid not in table:
            gone[parent] += used + reaped
    return sum(
        max(reaped - previous[pid][2] - gone[pid], 0.0) for pid, (_, _, reaped) in table.items() if pid in previous
    )


def monitor(groups: list[Group], out: Path, interval: float = 1.0, max_seconds: float = 7200) -> None:
    """Sample until SIGTERM/SIGINT or max_seconds; the file is flushed after every sample."""
    stop = False

    def request_stop(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    deadline = time.monotonic() + max_seconds
    seen: dict[Group, Table] = {group: {} for group in groups}  # each group's members at the last sample
    exited = dict.fromkeys(groups, 0.0)
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", "group", "pid", "cpu_seconds"])
        while not stop and time.monotonic() < deadline:
            now = time.time()
            table = _process_table()
            writer.writerow([f"{now:.3f}", MACHINE, 0, f"{_machine_busy_seconds():.2f}"])
            for group in groups:
                found = members(group, table)
                for pid in found:
                    writer.writerow([f"{now:.3f}", group.name, pid, f"{table[pid][1]:.2f}"])
                if not group.command_contains:
                    current = {pid: table[pid] for pid in found}
                    exited[group] += unseen_exits(seen[group], current)
                    seen[group] = current
                    writer.writerow([f"{now:.3f}", group.name, -group.root_pid, f"{exited[group]:.2f}"])
            handle.flush()
            time.sleep(interval)


def read_series(path: Path | str) -> dict[tuple[str, int], list[tuple[float, float]]]:
    """(group, pid) -> [(time, cpu_seconds), ...] in time order."""
    series: defaultdict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                series[(row["group"], int(row["pid"]))].append((float(row["time"]), float(row["cpu_seconds"])))
            except (KeyError, ValueError):
                continue
    return dict(series)


def _value_at(points: list[tuple[float, float]], moment: float, monitor_start: float, interval: float) -> float:
    first_time, first_value = points[0]
    if moment <= first_time:
        # Seen from the monitor's first samples on: it ran before, its CPU then is not ours.
        # Seen later: it started between two samples, with (almost) no CPU before.
        return first_value if first_time <= monitor_start + 1.5 * interval else 0.0
    if moment >= points[-1][0]:
        return points[-1][1]
    for (t0, v0), (t1, v1) in pairwise(points):
        if t0 <= moment <= t1:
            return v0 + (v1 - v0) * (moment - t0) / (t1 - t0) if t1 > t0 else v1
    return points[-1][1]


def cores_in_window(
    series: dict[tuple[str, int], list[tuple[float, float]]], start: float, end: float, interval: float = 1.0
) -> dict[str, float]:
    """Group -> average cores used between start and end (epoch seconds)."""
    if end <= start or not series:
        return {}
    monitor_start = min(points[0][0] for points in series.values())
    used: defaultdict[str, float] = defaultdict(float)
    for (group, _pid), points in series.items():
        delta = _value_at(points, end, monitor_start, interval) - _value_at(points, start, monitor_start, interval)
        used[group] += max(delta, 0.0)
    return {group: seconds / (end - start) for group, seconds in used.items()}
