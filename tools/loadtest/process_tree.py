"""CPU time and resident memory of process trees (a process and all its descendants, e.g. a
gunicorn master and its workers), read with psutil. A process that is gone counts as none.

tools.loadtest.cpu samples the whole process table over time instead; these read a few
trees at one moment, for the benchmarks' before-and-after figures.
"""

from __future__ import annotations

import psutil


def tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants, root first; empty when it is gone."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def cpu_seconds(*pids: int) -> float:
    """User + system CPU seconds of the processes and all their descendants."""
    total = 0.0
    for pid in pids:
        for process in tree(pid):
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
    return total


def resident_mib(pid: int) -> dict[int, float]:
    """pid -> resident memory in MiB, of the process and each of its descendants, root first."""
    found = {}
    for process in tree(pid):
        try:
            found[process.pid] = process.memory_info().rss / 2**20
        except psutil.Error:
            continue
    return found
