"""tools.loadtest.cpu: the scale test's CPU sampler counts a group's processes that live and
end between two samples (PostgreSQL's backends and autovacuum workers, a replaced gunicorn
worker) through their parent's reaped time, without counting what it saw of them twice."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys

import psutil
import pytest

from tests.lib import harness
from tools.loadtest import cpu

pytestmark = pytest.mark.fast

# Waits for a line, then runs six children one after the other, each spinning for 0.15 s of
# CPU and exiting (most of each life falls between two samples), then prints and waits.
PARENT = """
import subprocess, sys
sys.stdin.readline()
child = "import time\\nwhile time.process_time() < 0.15: pass"
for _ in range(6):
    subprocess.run([sys.executable, "-c", child], check=True)
print("done", flush=True)
sys.stdin.readline()
"""


def samples_in(path) -> int:
    with open(path, newline="") as handle:
        return sum(1 for row in csv.reader(handle) if row[1] == cpu.MACHINE)


def test_children_that_end_between_samples_count_once(tmp_path):
    out = tmp_path / "cpu.csv"
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    monitor = subprocess.Popen(
        [sys.executable, "-m", "tools.loadtest", "monitor", "--out", str(out), "--interval", "0.5", f"db={parent.pid}"]
    )
    try:
        # Two samples before the children: the window starts at the first, and nothing of
        # theirs is taken for CPU used before the monitor began.
        harness.wait_until(lambda: out.exists() and samples_in(out) >= 3, 60, "the monitor's first samples")
        assert parent.stdin is not None and parent.stdout is not None
        parent.stdin.write("go\n")
        parent.stdin.flush()
        assert parent.stdout.readline() == "done\n"
        used = sum(psutil.Process(parent.pid).cpu_times()[2:4])  # the children's, as the parent reaped them
        after = samples_in(out)
        harness.wait_until(lambda: samples_in(out) >= after + 2, 60, "two samples after the children")
    finally:
        monitor.send_signal(signal.SIGTERM)
        monitor.wait(30)
        parent.kill()
        parent.communicate(timeout=10)  # closes its pipes
    series = cpu.read_series(out)
    times = [moment for points in series.values() for moment, _ in points]
    start, end = min(times), max(times)
    cores = cpu.cores_in_window(series, start, end, interval=0.5)["db"]
    # Six times 0.15 s, as each child's clock saw it; the kernel's utime and stime, which the
    # parent reaps, are whole ticks (10 ms), so each child's may show a tick less (0.89999...).
    assert used >= 6 * 0.14
    assert cores * (end - start) == pytest.approx(used, abs=0.1)
    exited = series[("db", -parent.pid)]
    assert exited[-1][1] > 0  # some of it was never seen in a sample


def test_what_was_seen_of_a_child_that_is_gone_is_not_counted_again():
    # pid -> (parent, own CPU, reaped CPU); 1 is the root, 2 and 3 its children.
    before = {1: (0, 1.0, 0.0), 2: (1, 0.4, 0.0), 3: (1, 0.2, 0.1)}
    # 3 ended and was reaped at 0.5 own + 0.1 of its own reaped; a child 4 lived and ended
    # between the samples with 0.3; 2 goes on.
    after = {1: (0, 1.0, 0.9), 2: (1, 0.6, 0.0)}
    # Seen of 3 before: 0.3 of its 0.6; unseen: the other 0.3 and 4's 0.3.
    assert cpu.unseen_exits(before, after) == pytest.approx(0.6)
    assert cpu.unseen_exits({}, after) == 0.0  # the first sample
