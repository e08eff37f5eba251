"""tools.loadtest.process_tree: the benchmarks' CPU and memory figures count a process's
descendants (a gunicorn master's workers), and a process that is gone counts as none."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.lib import harness
from tools.loadtest import process_tree

pytestmark = pytest.mark.fast

# A parent that only waits, and a child that spins: the CPU is all the child's.
SPINNING_CHILD = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'while True: pass'])"


def test_cpu_and_memory_of_a_tree_include_its_descendants():
    parent = subprocess.Popen([sys.executable, "-c", SPINNING_CHILD])
    try:
        harness.wait_until(lambda: len(process_tree.tree(parent.pid)) == 2, 30, "the child to start")
        harness.wait_until(lambda: process_tree.cpu_seconds(parent.pid) >= 0.2, 60, "the child to use CPU")
        resident = process_tree.resident_mib(parent.pid)
        assert list(resident)[0] == parent.pid and len(resident) == 2
        assert all(mib > 1 for mib in resident.values())
    finally:
        for process in reversed(process_tree.tree(parent.pid)):
            process.kill()
        parent.wait(10)
    assert process_tree.cpu_seconds(parent.pid) == 0.0
    assert process_tree.resident_mib(parent.pid) == {}
