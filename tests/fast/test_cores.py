"""scripts/lib/cores.sh: the scale test's pinning and its hold on idle polling, on real
processes and the kernel's real PM QoS file."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psutil
import pytest

from tests.lib import harness
from tests.lib.harness import ROOT

CORES = ROOT / "scripts/lib/cores.sh"
pytestmark = pytest.mark.fast


def bash(script: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", "-c", f'set -euo pipefail; source "{CORES}"; {script}'],
        stdout=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_cores_list_names_one_core_or_a_range():
    out = subprocess.run(
        ["bash", "-c", f'source "{CORES}"; cores_list 0 0; cores_list 0 2'], capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["0", "0-2"]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning apart needs 2 cores")
def test_pin_tree_moves_a_process_its_threads_and_its_children():
    # A parent with a child that has a child of its own, all sleeping; pin the parent's tree.
    tree = subprocess.Popen(["bash", "-c", "sleep 60 & (sleep 60 & wait) & wait"])
    try:
        parent = psutil.Process(tree.pid)
        harness.wait_until(lambda: len(parent.children(recursive=True)) >= 3, 10, "the tree to start")
        last = max(os.sched_getaffinity(0))
        subprocess.run(["bash", "-c", f'source "{CORES}"; pin_tree {last} {tree.pid}'], check=True)
        for process in [parent, *parent.children(recursive=True)]:
            assert os.sched_getaffinity(process.pid) == {last}, process.cmdline()
    finally:
        for process in psutil.Process(tree.pid).children(recursive=True):
            process.kill()
        tree.kill()
        tree.wait()


def has_open(pid: int, path: str) -> bool:
    """Whether process `pid` has `path` open (psutil's open_files leaves devices out)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                return True
        except FileNotFoundError:
            continue
    return False


@pytest.mark.skipif(not os.access("/dev/cpu_dma_latency", os.W_OK), reason="needs root: /dev/cpu_dma_latency")
def test_the_idle_poll_request_is_held_by_one_process_and_released_when_the_shell_ends():
    # The shell holds the request, starts a child and waits for it; the test ends the child,
    # and with it the shell.
    shell = bash('hold_idle_poll; echo "$idle_poll_pid"; sleep 60 & echo $!; wait $!')
    assert shell.stdout is not None
    holder = int(shell.stdout.readline())
    child = int(shell.stdout.readline())
    try:
        harness.wait_until(lambda: has_open(holder, "/dev/cpu_dma_latency"), 10, "the holder to open the file")
        # What the script starts after it does not inherit the request.
        assert not has_open(child, "/dev/cpu_dma_latency") and not has_open(shell.pid, "/dev/cpu_dma_latency")
    finally:
        psutil.Process(child).kill()
        shell.wait(timeout=30)
        shell.stdout.close()
    # tail --pid looks for its shell once a second.
    harness.wait_until(lambda: not has_open(holder, "/dev/cpu_dma_latency"), 30, "the holder to end with its shell")


def test_idle_state_description_names_the_cpuidle_driver():
    out = subprocess.run(
        ["bash", "-c", f'source "{CORES}"; idle_state_description'], capture_output=True, text=True, check=True
    )
    driver = Path("/sys/devices/system/cpu/cpuidle/current_driver")
    expected = driver.read_text().strip() if driver.exists() else "none"
    assert out.stdout.startswith(f"cpuidle driver {expected}")
